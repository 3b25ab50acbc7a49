import ArgumentParser
import Config
import ControlPlane
import Core
import Foundation
import Logging
import PostgresNIO

/// What every command needs: the settings, a logger, the control database.
struct CommandContext {
    let settings: Settings
    let logger: Logger

    /// `TENANTPLANE_LOG_LEVEL` (trace … critical) overrides the command's default.
    init(defaultLogLevel: Logger.Level = .warning) throws {
        settings = try Settings.load()
        var logger = Logger(label: "tenantplane")
        logger.logLevel = settings.logLevel.flatMap(Logger.Level.init(rawValue:)) ?? defaultLogLevel
        self.logger = logger
    }

    var actor: ControlPlane.Actor { .cli(user: settings.operatorName) }

    var secrets: SecretBox? { settings.masterKey.map(SecretBox.init(masterKey:)) }

    /// Runs `body` against the control database on one connection.
    func withControl<Result: Sendable>(_ body: (ControlStore) async throws -> Result) async throws -> Result {
        let url = try settings.requireControlURL()
        return try await DatabaseConnection.with(url, logger: logger) { connection in
            try await body(ControlStore(connection: connection, logger: logger))
        }
    }
}

/// Runs a command's work; a failure becomes one line on stderr and exit code 1.
func reportingFailures(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as ExitCode {
        throw error
    } catch {
        let failure = OperatorFailure(error)
        let text = failure.internalDetail.map { "\(failure.message): \($0)" } ?? failure.message
        FileHandle.standardError.write(Data("tenantplane: \(text)\n".utf8))
        throw ExitCode.failure
    }
}

enum Output {
    static var encoder: JSONEncoder { JSONCoding.snakeCasePretty }

    static func json(_ value: some Encodable) throws {
        var data = try encoder.encode(value)
        data.append(contentsOf: Data("\n".utf8))
        standardOutput(data)
    }

    static func line(_ text: String) {
        standardOutput(Data((text + "\n").utf8))
    }

    /// Stderr, for progress and warnings that scripts reading stdout must not see.
    static func note(_ text: String) {
        standardError(Data((text + "\n").utf8))
    }

    /// A reader that went away (`tenantplane tenant list --json | head`) ends
    /// the command quietly, as SIGPIPE would have, instead of the crash that
    /// `FileHandle.write(_:)` makes of the error.
    static func standardOutput(_ data: Data) {
        do {
            try FileHandle.standardOutput.write(contentsOf: data)
        } catch {
            exit(141)
        }
    }

    static func standardError(_ data: Data) {
        try? FileHandle.standardError.write(contentsOf: data)
    }

    /// Columns padded to the widest cell.
    static func table(_ header: [String], _ rows: [[String]]) {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        for row in all {
            line(
                row.enumerated().map { index, cell in
                    index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
                }.joined(separator: "  "))
        }
    }
}

struct JSONFlag: ParsableArguments {
    @Flag(name: .long, help: "Print JSON instead of text.")
    var json = false
}
