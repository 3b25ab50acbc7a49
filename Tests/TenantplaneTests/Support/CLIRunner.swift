import Core
import Foundation
import Testing

/// Runs the real `tenantplane` binary, the way an operator or a script does.
struct CLIRunner: Sendable {
    struct Result: Sendable {
        let exitCode: Int32
        let stdout: String
        let stderr: String

        /// Decodes stdout as the JSON a `--json` command prints.
        func json<T: Decodable>(_ type: T.Type) throws -> T {
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            decoder.dateDecodingStrategy = .iso8601
            return try decoder.decode(type, from: Data(stdout.utf8))
        }

        func jsonObject() throws -> Any {
            try JSONSerialization.jsonObject(with: Data(stdout.utf8))
        }
    }

    var environment: [String: String]

    /// The binary `swift build` put beside this test bundle.
    static var binary: URL {
        get throws {
            let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            var candidates = [beside.appendingPathComponent("tenantplane")]
            var directory = beside
            for _ in 0..<4 {
                candidates.append(directory.appendingPathComponent("debug/tenantplane"))
                directory.deleteLastPathComponent()
            }
            candidates.append(TestCluster.repositoryRoot.appendingPathComponent(".build/debug/tenantplane"))
            guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
                throw SetupError("cannot find the tenantplane binary (looked beside the test bundle and in .build/debug)")
            }
            return found
        }
    }

    /// An environment with a control database, a fresh master key and the
    /// repository's migration folders; no config file is read.
    static func forControlDatabase(_ url: PostgresURL, extra: [String: String] = [:]) throws -> CLIRunner {
        var environment: [String: String] = [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
            "TENANTPLANE_CONFIG_FILE": "/dev/null",
            "TENANTPLANE_CONTROL_URL": url.withPassword,
            "TENANTPLANE_MASTER_KEY": Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString(),
            "TENANTPLANE_CONTROL_MIGRATIONS": TestCluster.controlMigrations,
            "TENANTPLANE_TENANT_MIGRATIONS": TestCluster.tenantMigrations,
            "USER": "tester",
            // Spares cost a template copy each; the spare tests turn them on.
            "TENANTPLANE_WARM_SPARES": "0",
        ]
        environment["TENANTPLANE_PG_BINDIR"] = ProcessInfo.processInfo.environment["TENANTPLANE_TEST_PG_BINDIR"]
        environment.merge(extra) { _, new in new }
        return CLIRunner(environment: environment)
    }

    @discardableResult
    func run(_ arguments: String...) async throws -> Result {
        try await run(arguments)
    }

    /// Runs the command and kills it with SIGKILL after `delay`, as a crash would.
    func runAndKill(_ arguments: [String], after delay: Duration) async throws -> Result {
        try await run(arguments, killAfter: delay)
    }

    func run(_ arguments: [String], killAfter: Duration? = nil) async throws -> Result {
        try await Self.runProcess(try Self.binary, arguments, environment: environment, killAfter: killAfter)
    }

    /// Runs the command with `input` piped to its standard input, as
    /// `printf '%s' "$KEY" | tenantplane …` does.
    func run(_ arguments: [String], standardInput input: String) async throws -> Result {
        try await Self.runProcess(try Self.binary, arguments, environment: environment, standardInput: Data(input.utf8))
    }

    /// Runs any program (the real `tar`, `pg_dump`, …) and collects its output.
    /// `environment` nil inherits this process's. Pipes are drained and the
    /// exit awaited on Dispatch threads: blocking Swift's cooperative pool (two
    /// threads here) would stall other tests.
    /// One `Process.run()` at a time in this process, on a queue of its own
    /// (never blocking Swift's cooperative threads): under the whole suite (a
    /// thousand descriptors open, dozens of commands starting at once)
    /// Foundation's spawn crashed twice in a memcpy inside `Process.run()`.
    private static let spawning = DispatchQueue(label: "tenantplane-tests.spawn")

    static func runProcess(
        _ executable: URL, _ arguments: [String], environment: [String: String]?, killAfter: Duration? = nil,
        standardInput: Data? = nil
    ) async throws -> Result {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if let environment { process.environment = environment }
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        let stdin = standardInput.map { _ in Pipe() }
        process.standardInput = stdin ?? FileHandle.nullDevice
        async let outData = readToEnd(stdout.fileHandleForReading)
        async let errData = readToEnd(stderr.fileHandleForReading)
        let exitCode: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            spawning.async {
                do {
                    try process.run()
                    if let stdin, let standardInput {
                        DispatchQueue.global().async {
                            try? stdin.fileHandleForWriting.write(contentsOf: standardInput)
                            try? stdin.fileHandleForWriting.close()
                        }
                    }
                    // Without a planned kill, a command still running after five
                    // minutes is hung: kill it so the test fails instead of the run hanging.
                    let limit = killAfter ?? .seconds(300)
                    let nanoseconds = limit.components.seconds * 1_000_000_000 + limit.components.attoseconds / 1_000_000_000
                    DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(nanoseconds))) { [process] in
                        if process.isRunning { process.terminate(); kill(process.processIdentifier, SIGKILL) }
                    }
                } catch {
                    process.terminationHandler = nil
                    continuation.resume(throwing: error)
                }
            }
        }
        let (out, err) = await (outData, errData)
        return Result(
            exitCode: exitCode,
            stdout: String(decoding: out, as: UTF8.self),
            stderr: String(decoding: err, as: UTF8.self))
    }

    /// Starts the command and returns at once, for tests that signal it.
    func start(_ arguments: [String]) throws -> RunningCommand {
        let process = Process()
        process.executableURL = try Self.binary
        process.arguments = arguments
        process.environment = environment
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        let (exits, exited) = AsyncStream.makeStream(of: Int32.self, bufferingPolicy: .bufferingNewest(1))
        process.terminationHandler = { exited.yield($0.terminationStatus) }
        // On the same queue as every other spawn of this runner (see `spawning`).
        try Self.spawning.sync { try process.run() }
        let pid = process.processIdentifier
        let finished = Task {
            async let out = Self.readToEnd(stdout.fileHandleForReading)
            async let err = Self.readToEnd(stderr.fileHandleForReading)
            var code: Int32 = -1
            for await status in exits {
                code = status
                break
            }
            let (outData, errData) = await (out, err)
            return Result(
                exitCode: code, stdout: String(decoding: outData, as: UTF8.self),
                stderr: String(decoding: errData, as: UTF8.self))
        }
        return RunningCommand(pid: pid, finished: finished)
    }

    static func readToEnd(_ handle: FileHandle) async -> Data {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: handle.readDataToEndOfFile()) }
        }
    }
}

/// A command started by `CLIRunner.start`.
struct RunningCommand: Sendable {
    let pid: Int32
    let finished: Task<CLIRunner.Result, Never>

    func send(_ signal: Int32) { kill(pid, signal) }

    var result: CLIRunner.Result {
        get async { await finished.value }
    }
}
