import Core
import Foundation
import Logging
import PostgresNIO

/// What an online move tells every serving process about its tenant, by
/// NOTIFY on `ControlStore.moveChannel`; each process acknowledges in
/// `tenant_move_acks`.
public struct MoveSignal: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        /// Queue the tenant's requests for at most `holdMilliseconds`.
        case hold
        /// The tenant's database is now `to` (it was `from`): send held and later requests there.
        case `switch`
        /// The fence was given up: let held requests go on where they were.
        case release
    }

    public var move: UUID
    public var tenant: String
    public var kind: Kind
    public var holdMilliseconds: Int?
    /// Database URLs without password (as `tenants.database_url` holds them).
    public var from: String?
    public var to: String?

    public init(
        move: UUID, tenant: String, kind: Kind, holdMilliseconds: Int? = nil, from: String? = nil, to: String? = nil
    ) {
        self.move = move
        self.tenant = tenant
        self.kind = kind
        self.holdMilliseconds = holdMilliseconds
        self.from = from
        self.to = to
    }
}

extension ControlStore {
    public static let moveChannel = "tenantplane_moves"
    /// The `application_name` prefix of every serving process's signal
    /// listener: a process is live exactly while that session is open.
    public static let processNamePrefix = "tenantplane-process "

    public func send(_ signal: MoveSignal) async throws {
        let payload = String(decoding: try JSONCoding.snakeCase.encode(signal), as: UTF8.self)
        try await connection.query("SELECT pg_notify(\(Self.moveChannel), \(payload))", logger: logger)
    }

    public func acknowledge(_ signal: MoveSignal, process: UUID) async throws {
        try await connection.query(
            """
            INSERT INTO tenant_move_acks (move_id, process_id, signal)
            SELECT \(signal.move), \(process.uuidString.lowercased()), \(signal.kind.rawValue)
            WHERE EXISTS (SELECT FROM tenant_moves WHERE id = \(signal.move))
            ON CONFLICT DO NOTHING
            """,
            logger: logger)
    }

    /// The serving processes alive now, by their listener sessions.
    public func liveProcesses() async throws -> Set<String> {
        let rows = try await connection.query(
            """
            SELECT substr(application_name, \(Self.processNamePrefix.count + 1)::int) FROM pg_stat_activity
            WHERE datname = current_database() AND starts_with(application_name, \(Self.processNamePrefix))
            """,
            logger: logger)
        return Set(try await rows.collect().map { try $0.decode(String.self) })
    }

    /// Live processes that have not acknowledged `kind` for `move`.
    public func unacknowledged(_ move: UUID, _ kind: MoveSignal.Kind) async throws -> Set<String> {
        let live = try await liveProcesses()
        guard !live.isEmpty else { return [] }
        let rows = try await connection.query(
            "SELECT process_id FROM tenant_move_acks WHERE move_id = \(move) AND signal = \(kind.rawValue)",
            logger: logger)
        return live.subtracting(try await rows.collect().map { try $0.decode(String.self) })
    }

    /// Waits until every live process acknowledged `kind`, or `limit` passed;
    /// the processes still missing (empty: all acknowledged).
    public func awaitAcknowledgements(_ move: UUID, _ kind: MoveSignal.Kind, within limit: Duration) async throws
        -> Set<String>
    {
        let deadline = ContinuousClock.now.advanced(by: limit)
        while true {
            let missing = try await unacknowledged(move, kind)
            if missing.isEmpty || ContinuousClock.now >= deadline { return missing }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}

/// A serving process's listener for move signals: one dedicated control
/// connection, named so movers can count the live processes. A signal missed
/// while disconnected costs nothing lasting: a hold expires by itself, and
/// key caches pick up a switch within their lifetime.
public struct MoveSignalListener: Sendable {
    let url: PostgresURL
    let processID: UUID
    let logger: Logger

    public init(url: PostgresURL, processID: UUID, logger: Logger) {
        self.url = url
        self.processID = processID
        self.logger = logger
    }

    /// Listens until cancelled, reconnecting after a second when the
    /// connection fails. `onSignal` runs one signal at a time.
    public func listen(onSignal: @Sendable (MoveSignal) async -> Void) async {
        while !Task.isCancelled {
            do {
                try await DatabaseConnection.with(url, logger: logger) { connection in
                    try await connection.query(
                        PostgresQuery(
                            unsafeSQL: "SET application_name = '\(ControlStore.processNamePrefix)\(processID.uuidString.lowercased())'"),
                        logger: logger)
                    try await connection.listen(on: ControlStore.moveChannel) { notifications in
                        for try await notification in notifications {
                            guard
                                let signal = try? JSONCoding.snakeCaseDecoder.decode(
                                    MoveSignal.self, from: Data(notification.payload.utf8))
                            else {
                                logger.warning("ignored a move signal that does not parse")
                                continue
                            }
                            await onSignal(signal)
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning(
                    "the move signal listener lost the control database; reconnecting",
                    metadata: ["error": "\(OperatorFailure(error).message)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}
