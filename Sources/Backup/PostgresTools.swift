import Core
import Dispatch
import Foundation

/// The real `pg_dump` and `pg_restore` (not Debian's wrappers on PATH, which
/// pick a version by guessing and add a Perl start-up to every call), run as
/// child processes, always logged in as the tenant. Passwords travel in the child's environment (PGPASSWORD),
/// never on its command line, where `ps` would show them.
public struct PostgresTools: Sendable {
    public let binDirectory: String

    public init(configured: String?) throws(BackupError) {
        func usable(_ directory: String?) -> Bool {
            directory.map { FileManager.default.isExecutableFile(atPath: "\($0)/pg_dump") } ?? false
        }
        // pg_config is asked only when the setting does not do: it is a child
        // process waited for synchronously.
        let found: String? =
            if usable(configured) { configured } else {
                ([Self.pgConfigBinDirectory()].compactMap { $0 } + Self.versionedDirectories()).first(where: usable)
            }
        guard let found else {
            throw .toolMissing(
                "cannot find pg_dump (looked in TENANTPLANE_PG_BINDIR, pg_config --bindir, /usr/lib/postgresql/*/bin)")
        }
        binDirectory = found
    }

    /// `pg_dump -Fc` of the tenant's database into `file`, logged in as the
    /// tenant: dumping reads (and may call) what the tenant defined.
    public func dump(_ login: TenantLogin, to file: String) async throws {
        try await run("pg_dump", ["--format=custom", "--no-password", "--file=\(file)", "--dbname=\(login.url.redacted)"], login)
    }

    /// Restores a custom-format dump into the tenant's (empty) database, logged
    /// in as the tenant: the dump is the tenant's own SQL, so it runs with
    /// nothing more than the tenant's rights, and what it creates is the
    /// tenant role's. One session, never `--jobs`: a parallel restore logs in
    /// again after its data phase, and SQL the dump ran by then (a check
    /// constraint, `ALTER ROLE CURRENT_USER PASSWORD`) may have changed the
    /// password it would log in with.
    public func restore(_ file: String, into login: TenantLogin) async throws {
        try await run(
            "pg_restore",
            [
                "--no-password", "--no-owner", "--no-privileges", "--exit-on-error",
                "--dbname=\(login.url.redacted)", file,
            ],
            login)
    }

    private func run(_ tool: String, _ arguments: [String], _ login: TenantLogin) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "\(binDirectory)/\(tool)")
        process.arguments = arguments
        var environment = ["PGAPPNAME": "tenantplane", "PGCONNECT_TIMEOUT": "10", "LC_ALL": "C"]
        environment["PATH"] = ProcessInfo.processInfo.environment["PATH"]
        environment["PGPASSWORD"] = login.url.password
        // The pinned settings win over any the tenant's database sets for itself.
        environment["PGOPTIONS"] = TenantLogin.startupOptions()
        process.environment = environment
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        let stderr = Pipe()
        process.standardError = stderr
        let (exits, exited) = AsyncStream.makeStream(of: Int32.self, bufferingPolicy: .bufferingNewest(1))
        process.terminationHandler = { exited.yield($0.terminationStatus) }
        do {
            try process.run()
        } catch {
            throw BackupError.toolMissing("cannot start \(tool): \(error.localizedDescription)")
        }
        // The pipe is drained and the exit awaited on Dispatch threads: the
        // cooperative pool must not block on a child for seconds.
        let errorOutput = await Self.readToEnd(stderr.fileHandleForReading)
        var status: Int32 = -1
        for await code in exits {
            status = code
            break
        }
        let text = String(decoding: errorOutput, as: UTF8.self)
        guard status == 0 else {
            let lines = text.split(whereSeparator: \.isNewline).suffix(3).joined(separator: " | ")
            throw BackupError.toolFailed(tool: tool, status: status, stderr: String(lines.prefix(600)))
        }
    }

    private static func readToEnd(_ handle: FileHandle) async -> Data {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: handle.readDataToEndOfFile()) }
        }
    }

    private static func pgConfigBinDirectory() -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["pg_config", "--bindir"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private static func versionedDirectories() -> [String] {
        let base = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []
        return versions.compactMap(Int.init).sorted(by: >).map { "\(base)/\($0)/bin" }
    }
}
