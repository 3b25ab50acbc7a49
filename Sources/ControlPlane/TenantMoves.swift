import Core
import Foundation
import PostgresNIO

/// Why a tenant's database is read-only for a while. Exports no longer
/// fence; `export` is still read, as a fence a binary from before may leave.
public enum WriteFence: String, Sendable, Codable {
    case export, move
}

/// How far a `tenant move` got. Before `switched` the tenant still lives on
/// its old server and an interrupted move is rolled back; from `switched` on it
/// lives on the new one and the move is finished.
public enum MovePhase: String, Sendable, Codable, Comparable {
    case started, fenced, dumped
    /// About to create the target database (which did not exist before): from
    /// here a rollback drops it.
    case creatingTarget = "creating_target"
    case restored
    /// Online: the publication, the slots, the subscription and the mover's
    /// role may exist from here on, and a rollback looks for all of them.
    case subscribed
    /// Online: the initial copy is done; changes stream.
    case synced
    case verified, switched, finished
    case rolledBack = "rolled_back"

    static let order: [MovePhase] = [
        .started, .fenced, .dumped, .creatingTarget, .restored, .subscribed, .synced, .verified, .switched, .finished,
        .rolledBack,
    ]

    public static func < (lhs: MovePhase, rhs: MovePhase) -> Bool {
        order.firstIndex(of: lhs)! < order.firstIndex(of: rhs)!
    }
}

public struct TenantMoveRecord: Sendable, Codable, Equatable {
    public var id: UUID
    public var tenantId: String
    public var fromServer: String
    public var toServer: String
    public var phase: MovePhase
    /// By logical replication (the source stays writable until a short fence).
    public var online: Bool
    public var error: String?
    public var startedAt: Date
    public var finishedAt: Date?
}

extension ControlStore {
    /// Records (or clears, with nil) the fence on a tenant's database.
    public func setWriteFence(_ slug: TenantSlug, _ fence: WriteFence?) async throws {
        try await connection.query(
            "UPDATE tenants SET write_fence = \(fence?.rawValue) WHERE id = \(slug.rawValue)", logger: logger)
    }

    public func writeFence(_ slug: TenantSlug) async throws -> WriteFence? {
        let rows = try await connection.query("SELECT write_fence FROM tenants WHERE id = \(slug.rawValue)", logger: logger)
        return try await rows.collect().first?.decode(String?.self).flatMap(WriteFence.init(rawValue:))
    }

    /// Tenants whose database was left fenced (their process may have died).
    public func fencedTenants() async throws -> [String] {
        let rows = try await connection.query(
            "SELECT id FROM tenants WHERE write_fence IS NOT NULL ORDER BY id", logger: logger)
        return try await rows.collect().map { try $0.decode(String.self) }
    }

    static let moveColumns = "id, tenant_id, from_server, to_server, phase, online, error, started_at, finished_at"

    static func decodeMove(_ row: PostgresRow) throws -> TenantMoveRecord {
        let (id, tenant, from, to, phase, online, error, started, finished) = try row.decode(
            (UUID, String, String, String, String, Bool, String?, Date, Date?).self)
        return TenantMoveRecord(
            id: id, tenantId: tenant, fromServer: from, toServer: to, phase: MovePhase(rawValue: phase) ?? .started,
            online: online, error: error, startedAt: started, finishedAt: finished)
    }

    public func startMove(_ slug: TenantSlug, from: String, to: String, online: Bool) async throws -> TenantMoveRecord {
        let rows = try await connection.query(
            """
            INSERT INTO tenant_moves (tenant_id, from_server, to_server, phase, online)
            VALUES (\(slug.rawValue), \(from), \(to), 'started', \(online))
            RETURNING \(unescaped: Self.moveColumns)
            """,
            logger: logger)
        guard let row = try await rows.collect().first else { throw ControlError.conflict("could not record the move") }
        return try Self.decodeMove(row)
    }

    /// The tenant's unfinished move, if one was interrupted.
    public func openMove(_ slug: TenantSlug) async throws -> TenantMoveRecord? {
        let rows = try await connection.query(
            """
            SELECT \(unescaped: Self.moveColumns) FROM tenant_moves
            WHERE tenant_id = \(slug.rawValue) AND phase NOT IN ('finished', 'rolled_back')
            """,
            logger: logger)
        return try await rows.collect().first.map(Self.decodeMove)
    }

    public func openMoves() async throws -> [TenantMoveRecord] {
        let rows = try await connection.query(
            """
            SELECT \(unescaped: Self.moveColumns) FROM tenant_moves
            WHERE phase NOT IN ('finished', 'rolled_back') ORDER BY started_at
            """,
            logger: logger)
        return try await rows.collect().map(Self.decodeMove)
    }

    public func moves(of slug: TenantSlug) async throws -> [TenantMoveRecord] {
        let rows = try await connection.query(
            """
            SELECT \(unescaped: Self.moveColumns) FROM tenant_moves
            WHERE tenant_id = \(slug.rawValue) ORDER BY started_at DESC
            """,
            logger: logger)
        return try await rows.collect().map(Self.decodeMove)
    }

    public func setMovePhase(_ id: UUID, _ phase: MovePhase, error: String? = nil) async throws {
        let finished = phase == .finished || phase == .rolledBack
        try await connection.query(
            """
            UPDATE tenant_moves SET phase = \(phase.rawValue), error = COALESCE(\(error), error), updated_at = now(),
                finished_at = CASE WHEN \(finished) THEN now() END
            WHERE id = \(id)
            """,
            logger: logger)
    }

    /// Points the tenant at its new server and database, and records the
    /// move as switched, in one transaction: the router sees either the old
    /// location or the new one, never a mix.
    public func switchTenantServer(_ slug: TenantSlug, move: UUID, to server: String, databaseURL: String) async throws {
        try await transaction { store in
            try await store.connection.query(
                """
                UPDATE tenants SET server = \(server), database_url = \(databaseURL), write_fence = NULL
                WHERE id = \(slug.rawValue)
                """,
                logger: logger)
            try await store.connection.query(
                "UPDATE tenant_moves SET phase = 'switched', updated_at = now() WHERE id = \(move)", logger: logger)
        }
    }

    /// Runs `body` holding the tenant's lock if it is free right now; nil when
    /// another process holds it (that process is alive and doing the work).
    public func withTenantLockIfFree<Result>(_ slug: TenantSlug, _ body: () async throws -> Result) async throws
        -> Result?
    {
        try await connection.withAdvisoryLockIfFree(named: "tenant:\(slug.rawValue)", logger: logger, body)
    }
}
