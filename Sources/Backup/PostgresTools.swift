import Core
import Foundation
import Subprocess
import SystemPackage

/// The real `pg_dump` and `pg_restore` (not Debian's wrappers on PATH, which
/// pick a version by guessing and add a Perl start-up to every call), run as
/// child processes (swift-subprocess), always logged in as the tenant.
/// Passwords travel in the child's environment (PGPASSWORD), never on its
/// command line, where `ps` would show them. The TLS settings travel in the
/// `--dbname` URL (sslmode, sslrootcert, sslcert, sslkey), as libpq reads them.
public struct PostgresTools: Sendable {
    public let binDirectory: String

    public init(configured: String?) async throws(BackupError) {
        func usable(_ directory: String?) -> Bool {
            directory.map { FileManager.default.isExecutableFile(atPath: "\($0)/pg_dump") } ?? false
        }
        // pg_config is asked only when the setting does not do.
        var found: String? = usable(configured) ? configured : nil
        if found == nil {
            found = ([await Self.pgConfigBinDirectory()].compactMap { $0 } + Self.versionedDirectories()).first(where: usable)
        }
        guard let found else {
            throw .toolMissing(
                "cannot find pg_dump (looked in TENANTPLANE_PG_BINDIR, pg_config --bindir, /usr/lib/postgresql/*/bin)")
        }
        binDirectory = found
    }

    /// `pg_dump -Fc` of the tenant's database into `file`, logged in as the
    /// tenant: dumping reads (and may call) what the tenant defined. With
    /// `snapshot` (a `pg_export_snapshot()` id whose transaction stays open
    /// until this returns) the dump sees exactly what that transaction sees.
    public func dump(_ login: TenantLogin, to file: String, snapshot: String? = nil) async throws {
        let pinned = snapshot.map { ["--snapshot=\($0)"] } ?? []
        try await run(
            "pg_dump",
            ["--format=custom", "--no-password", "--file=\(file)"] + pinned + ["--dbname=\(login.url.redacted)"], login)
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

    /// Runs the tool to its end. A cancelled caller (a shutdown, an
    /// abandoned job) stops it: SIGTERM, then SIGKILL after five seconds.
    /// Only the last lines of its standard error are kept, each bounded.
    private func run(_ tool: String, _ arguments: [String], _ login: TenantLogin) async throws {
        var environment: [Environment.Key: String] = ["PGAPPNAME": "tenantplane", "PGCONNECT_TIMEOUT": "10", "LC_ALL": "C"]
        environment["PATH"] = ProcessInfo.processInfo.environment["PATH"]
        environment["PGPASSWORD"] = login.url.password
        // Without sslrootcert our own connections check against the system's
        // trust store, but libpq 15 looks for ~/.postgresql/root.crt (and
        // has no sslrootcert=system): point it at the same bundle, so that a
        // verify-ca/verify-full URL trusts the same CAs in pg_dump as here.
        if login.url.sslRootCert == nil, [.verifyCA, .verifyFull].contains(login.url.sslMode) {
            environment["PGSSLROOTCERT"] = Self.systemTrustBundles.first(where: FileManager.default.isReadableFile)
        }
        // The pinned settings win over any the tenant's database sets for itself.
        environment["PGOPTIONS"] = TenantLogin.startupOptions()
        var options = PlatformOptions()
        options.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: .seconds(5))]
        let result: ExecutionResult<[String], DiscardedOutput, SequenceOutput>
        do {
            result = try await Subprocess.run(
                .path(FilePath("\(binDirectory)/\(tool)")), arguments: Arguments(arguments),
                environment: .custom(environment), platformOptions: options, input: .none, output: .discarded,
                error: .sequence
            ) { execution in
                var tail: [String] = []
                for try await line in execution.standardError.strings(bufferingPolicy: .maxLineLength(1024)) {
                    tail.append(line)
                    if tail.count > 3 { tail.removeFirst() }
                }
                return tail
            }
        } catch let error as SubprocessError {
            throw BackupError.toolMissing("cannot start \(tool): \(error)")
        }
        try Task.checkCancellation()
        guard result.terminationStatus.isSuccess else {
            let status: Int32 =
                switch result.terminationStatus {
                case .exited(let code): code
                case .signaled(let signal): -signal
                }
            let lines = result.closureResult.map { $0.trimmingCharacters(in: .newlines) }.joined(separator: " | ")
            throw BackupError.toolFailed(tool: tool, status: status, stderr: String(lines.prefix(600)))
        }
    }

    /// `pg_config --bindir`, when `pg_config` is on PATH and answers.
    private static func pgConfigBinDirectory() async -> String? {
        guard let result = try? await Subprocess.run(.name("pg_config"), arguments: ["--bindir"], output: .string(limit: 4096)),
            result.terminationStatus.isSuccess
        else { return nil }
        return result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Where NIOSSL finds the system's trust store on Linux.
    private static let systemTrustBundles = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]

    private static func versionedDirectories() -> [String] {
        let base = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []
        return versions.compactMap(Int.init).sorted(by: >).map { "\(base)/\($0)/bin" }
    }
}
