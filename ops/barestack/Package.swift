// swift-tools-version:6.0
// The bare-stack baseline of `ops/bench route`: its own package, so that it
// depends on nothing of tenantplane's and tenantplane's build never sees it.
import PackageDescription

let package = Package(
    name: "barestack",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        .executableTarget(
            name: "barestack",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        )
    ]
)
