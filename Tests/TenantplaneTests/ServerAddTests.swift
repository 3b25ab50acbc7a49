import Core
import Foundation
import Testing

@Suite("server add keeps the admin password off the command line")
struct ServerAddTests {
    @Test func thePasswordComesFromStandardInputOrAFileAndFromTheCommandLineOnlyWithAWarning() async throws {
        try await ProvisioningFixture.with { fixture in
            let url = try ProvisioningFixture.secondClusterURL
            let password = try #require(url.password)
            var bare = url
            bare.password = nil

            let piped = try await CLIRunner.runProcess(
                URL(fileURLWithPath: "/bin/sh"),
                ["-c", #"printf '%s\n' "$PW" | "$TP" server add piped --url "$URL" --password-stdin"#],
                environment: fixture.cli.environment.merging(
                    ["PW": password, "TP": try CLIRunner.binary.path, "URL": bare.withPassword]) { $1 })
            #expect(piped.exitCode == 0, "\(piped.stderr)")
            #expect(!piped.stderr.contains("warning"))

            let file = FileManager.default.temporaryDirectory.appendingPathComponent("tp-url-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: file) }
            try (url.withPassword + "\n").write(to: file, atomically: true, encoding: .utf8)
            let fromFile = try await fixture.cli.run("server", "add", "filed", "--url-file", file.path)
            #expect(fromFile.exitCode == 0, "\(fromFile.stderr)")
            #expect(!fromFile.stderr.contains("warning"))

            let inline = try await fixture.cli.run("server", "add", "inline", "--url", url.withPassword)
            #expect(inline.exitCode == 0, "\(inline.stderr)")
            #expect(inline.stderr.contains("warning"), "\(inline.stderr)")

            let neither = try await fixture.cli.run("server", "add", "neither")
            #expect(neither.exitCode != 0)
            let wrong = try await CLIRunner.runProcess(
                URL(fileURLWithPath: "/bin/sh"),
                ["-c", #"printf 'not-it\n' | "$TP" server add wrong --url "$URL" --password-stdin"#],
                environment: fixture.cli.environment.merging(["TP": try CLIRunner.binary.path, "URL": bare.withPassword]) { $1 })
            #expect(wrong.exitCode == 1)
            #expect(wrong.stderr.contains("refused the login"), "\(wrong.stderr)")

            let listed = try await fixture.cli.run("server", "list", "--json")
            let servers = try #require(try listed.jsonObject() as? [[String: Any]])
            #expect(Set(servers.compactMap { $0["name"] as? String }) == ["default", "piped", "filed", "inline"])
            #expect(!listed.stdout.contains(password))
        }
    }
}
