import Core
import Foundation
import PostgresNIO

/// What a server allows for online moves (PostgreSQL 15 logical replication),
/// as `server add` and `server list` show it.
public struct ReplicationCapacity: Sendable, Codable, Equatable {
    public var walLevel: String
    public var superuser: Bool
    public var slots: Int
    public var slotsInUse: Int
    public var walSenders: Int
    public var walSendersInUse: Int
    public var applyWorkers: Int
    public var applyWorkersInUse: Int

    /// A move takes one slot and one WAL sender on its source for streaming,
    /// and up to two more while tables are copied (the subscriber's
    /// `max_sync_workers_per_subscription`, default 2); on its target, an
    /// apply worker and up to two table-sync workers.
    static let perMove = 3

    /// Why this server cannot be the source of an online move; nil when it can.
    public var refusalAsSource: String? {
        if walLevel != "logical" { return "wal_level is \(walLevel) (online moves need logical, which takes a restart)" }
        if !superuser { return "its admin login is not a superuser (it must create the move's replication role)" }
        if slots - slotsInUse < Self.perMove { return "\(slots - slotsInUse) of max_replication_slots \(slots) free (a move needs \(Self.perMove))" }
        if walSenders - walSendersInUse < Self.perMove {
            return "\(walSenders - walSendersInUse) of max_wal_senders \(walSenders) free (a move needs \(Self.perMove))"
        }
        return nil
    }

    /// Why this server cannot be the target of an online move; nil when it can.
    public var refusalAsTarget: String? {
        if !superuser { return "its admin login is not a superuser (PostgreSQL 15 subscriptions need one)" }
        if applyWorkers - applyWorkersInUse < Self.perMove {
            return "\(applyWorkers - applyWorkersInUse) of max_logical_replication_workers \(applyWorkers) free (a move needs \(Self.perMove))"
        }
        return nil
    }

    /// How many more online moves this server can be the source of at once.
    public var movesAsSource: Int {
        refusalAsSource == nil ? min(slots - slotsInUse, walSenders - walSendersInUse) / Self.perMove : 0
    }
}

/// A replication slot on a server, as `server list` reports the ones it does not know.
public struct ReplicationSlot: Sendable, Codable, Equatable {
    public var name: String
    public var database: String?
    public var active: Bool
    /// WAL the slot holds back from removal.
    public var retainedBytes: Int64
}

extension ServerAdmin {
    public func replicationCapacity() async throws -> ReplicationCapacity {
        let rows = try await connection.query(
            """
            SELECT current_setting('wal_level'), (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int,
                current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication)::int,
                current_setting('max_logical_replication_workers')::int,
                (SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL)::int
            """,
            logger: logger)
        guard let row = try await rows.collect().first else { throw DatabaseError.unreachable(server: "", reason: "no answer") }
        let (wal, superuser, slots, slotsUsed, senders, sendersUsed, workers, workersUsed) = try row.decode(
            (String, Bool, Int, Int, Int, Int, Int, Int).self)
        return ReplicationCapacity(
            walLevel: wal, superuser: superuser, slots: slots, slotsInUse: slotsUsed, walSenders: senders,
            walSendersInUse: sendersUsed, applyWorkers: workers, applyWorkersInUse: workersUsed)
    }

    public func replicationSlots() async throws -> [ReplicationSlot] {
        let rows = try await connection.query(
            """
            SELECT slot_name::text, database::text, active,
                coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint
            FROM pg_replication_slots ORDER BY slot_name
            """,
            logger: logger)
        return try await rows.collect().map {
            let (name, database, active, retained) = try $0.decode((String, String?, Bool, Int64).self)
            return ReplicationSlot(name: name, database: database, active: active, retainedBytes: retained)
        }
    }

    /// The move's publisher-side login: may stream and connect to `database`,
    /// nothing else (the tenant grants it SELECT on the published tables).
    public func createMoverRole(_ role: SQLIdentifier, scramVerifier: String, database: SQLIdentifier) async throws {
        try await runWithArguments(
            role.name, scramVerifier,
            """
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = current_setting('tenantplane.arg1')) THEN
                EXECUTE format('ALTER ROLE %I PASSWORD %L', current_setting('tenantplane.arg1'), current_setting('tenantplane.arg2'));
            ELSE
                EXECUTE format('CREATE ROLE %I LOGIN REPLICATION NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD %L',
                    current_setting('tenantplane.arg1'), current_setting('tenantplane.arg2'));
            END IF;
            """)
        try await connection.query(
            PostgresQuery(unsafeSQL: "GRANT CONNECT ON DATABASE \(database.quoted) TO \(role.quoted)"), logger: logger)
    }

    /// Drops the mover's role; `self` is connected to the database it was
    /// granted things in (or to any, when that database is gone).
    public func dropMoverRole(_ role: SQLIdentifier) async throws {
        let exists = try await connection.query(
            "SELECT 1 FROM pg_roles WHERE rolname = \(role.name)", logger: logger
        ).collect().count == 1
        guard exists else { return }
        try await connection.query(PostgresQuery(unsafeSQL: "DROP OWNED BY \(role.quoted)"), logger: logger)
        try await dropRole(role)
    }

    /// The subscription, made by the admin in the target's tenant database
    /// (`self` is connected there). The connection string is quoted by the
    /// server's own `format(%L)`. Its apply worker commits synchronously: with
    /// the default (off) it confirms what it applied only once its own WAL is
    /// flushed and its next loop comes round, about a second, longer than a
    /// move's fence may last.
    public func createSubscription(_ name: SQLIdentifier, connection conninfo: String, publication: SQLIdentifier) async throws {
        let statement = try await subscriptionStatement(
            name, connection: conninfo, publication: publication,
            options: "slot_name = \(name.name), copy_data = true, create_slot = true, synchronous_commit = on")
        try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
    }

    /// `CREATE SUBSCRIPTION` with the connection string quoted by the
    /// server's `format(%L)`: it cannot be a bound parameter, and the statement
    /// cannot run in a DO block (no transaction block for it). `options` is
    /// ours, made of validated names only (bare: it sits inside the format's
    /// own string literal).
    private func subscriptionStatement(
        _ name: SQLIdentifier, connection conninfo: String, publication: SQLIdentifier, options: String
    ) async throws -> String {
        let rows = try await connection.query(
            """
            SELECT format('CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION %I WITH (\(unescaped: options))',
                \(name.name), \(conninfo), \(publication.name))
            """,
            logger: logger)
        guard let statement = try await rows.collect().first?.decode(String.self) else {
            throw DatabaseError.unreachable(server: "", reason: "the server did not format the subscription")
        }
        return statement
    }

    /// Whether a subscription made here can log in to `conninfo`'s server for
    /// replication: a throwaway subscription that connects (so the server
    /// tries the connection) but makes no slot and starts no worker, dropped
    /// at once. The server's refusal, or nil when it connected.
    public func probeSubscription(_ name: SQLIdentifier, connection conninfo: String) async throws -> String? {
        let statement = try await subscriptionStatement(
            name, connection: conninfo, publication: name,
            options: "connect = true, create_slot = false, enabled = false, slot_name = NONE")
        do {
            try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
        } catch let error as PSQLError {
            return error.serverInfo?[.message] ?? "\(error)"
        }
        try await connection.query(PostgresQuery(unsafeSQL: "DROP SUBSCRIPTION \(name.quoted)"), logger: logger)
        return nil
    }

    /// Drops the subscription without reaching its publisher (which may be
    /// down): detached from its slot first, which the caller drops on the
    /// source. Nothing to do when it is not there.
    public func dropSubscription(_ name: SQLIdentifier) async throws {
        let exists = try await connection.query(
            "SELECT 1 FROM pg_subscription WHERE subname = \(name.name)", logger: logger
        ).collect().count == 1
        guard exists else { return }
        try await connection.query(PostgresQuery(unsafeSQL: "ALTER SUBSCRIPTION \(name.quoted) DISABLE"), logger: logger)
        try await connection.query(
            PostgresQuery(unsafeSQL: "ALTER SUBSCRIPTION \(name.quoted) SET (slot_name = NONE)"), logger: logger)
        try await connection.query(PostgresQuery(unsafeSQL: "DROP SUBSCRIPTION \(name.quoted)"), logger: logger)
    }

    /// The subscription's tables: how many there are and how many are not yet
    /// copied and streaming (`pg_subscription_rel` state other than ready).
    public func subscriptionSync(_ name: SQLIdentifier) async throws -> (tables: Int, notReady: Int) {
        let rows = try await connection.query(
            """
            SELECT count(*)::int, (count(*) FILTER (WHERE r.srsubstate <> 'r'))::int
            FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = \(name.name)
            """,
            logger: logger)
        return try await rows.collect().first?.decode((Int, Int).self) ?? (0, 0)
    }

    /// The last error of the subscription's workers, if their failure count grew.
    public func subscriptionFailures(_ name: SQLIdentifier) async throws -> Int64 {
        let rows = try await connection.query(
            """
            SELECT coalesce(apply_error_count + sync_error_count, 0)::bigint
            FROM pg_stat_subscription_stats WHERE subname = \(name.name)
            """,
            logger: logger)
        return try await rows.collect().first?.decode(Int64.self) ?? 0
    }

    /// Rows written to this database's tables since its statistics began
    /// (for a fresh target: the rows copied and applied so far).
    public func rowsInserted() async throws -> Int64 {
        let rows = try await connection.query(
            "SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_user_tables", logger: logger)
        return try await rows.collect().first?.decode(Int64.self) ?? 0
    }

    /// WAL the slot's subscriber has yet to confirm, in bytes; nil when the
    /// slot is missing.
    public func slotLag(_ slot: SQLIdentifier) async throws -> Int64? {
        let rows = try await connection.query(
            """
            SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
            FROM pg_replication_slots WHERE slot_name = \(slot.name)
            """,
            logger: logger)
        return try await rows.collect().first?.decode(Int64?.self) ?? nil
    }

    /// The end of the WAL written so far, flushed (a synchronous commit of
    /// our own flushes everything before it), so a WAL sender can send it.
    public func flushedEndOfWAL() async throws -> String {
        let rows = try await connection.query("SELECT pg_current_wal_insert_lsn()::text", logger: logger)
        let lsn = try await rows.collect().first?.decode(String.self) ?? "0/0"
        try await connection.query("BEGIN", logger: logger)
        try await connection.query("SET LOCAL synchronous_commit = on", logger: logger)
        try await connection.query("SELECT txid_current()", logger: logger)
        try await connection.query("COMMIT", logger: logger)
        return lsn
    }

    /// Whether the subscriber behind `subscription`'s WAL sender confirmed
    /// everything up to `lsn`.
    public func subscriberConfirmed(_ subscription: SQLIdentifier, upTo lsn: String) async throws -> Bool {
        let rows = try await connection.query(
            """
            SELECT coalesce(bool_or(pg_wal_lsn_diff(flush_lsn, \(lsn)::pg_lsn) >= 0), false)
            FROM pg_stat_replication WHERE application_name = \(subscription.name)
            """,
            logger: logger)
        return try await rows.collect().first?.decode(Bool.self) ?? false
    }

    /// Drops every replication slot of `database` (a tenant can make none, so
    /// each is a move's: its stream and its table copies), ending the WAL
    /// senders that hold them first. Returns how many were dropped.
    @discardableResult
    public func dropSlots(of database: SQLIdentifier, within limit: Duration = .seconds(10)) async throws -> Int {
        let deadline = ContinuousClock.now.advanced(by: limit)
        var dropped = 0
        while true {
            try await connection.query(
                """
                SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
                WHERE database = \(database.name) AND active_pid IS NOT NULL
                """,
                logger: logger)
            let rows = try await connection.query(
                """
                SELECT count(pg_drop_replication_slot(slot_name))::int FROM pg_replication_slots
                WHERE database = \(database.name) AND NOT active
                """,
                logger: logger)
            dropped += try await rows.collect().first?.decode(Int.self) ?? 0
            let left = try await connection.query(
                "SELECT count(*)::int FROM pg_replication_slots WHERE database = \(database.name)", logger: logger
            ).collect().first?.decode(Int.self) ?? 0
            if left == 0 { return dropped }
            guard ContinuousClock.now < deadline else {
                throw DatabaseError.unreachable(
                    server: "", reason: "\(left) replication slots of \(database.name) stay in use")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}
