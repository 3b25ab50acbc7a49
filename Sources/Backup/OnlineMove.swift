import ControlPlane
import Core
import Foundation
import Logging
import Migrations
import PostgresNIO
import Provisioner

/// The names one online move gives what it makes, derived from its id, so a
/// rollback by another process finds them all.
struct OnlineMoveNames {
    /// The publication (source), the subscription (target) and its slot (source).
    let stream: SQLIdentifier
    /// The publisher-side login, dropped afterwards.
    let moverRole: SQLIdentifier

    init(_ move: UUID) throws {
        let tag = move.uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        stream = try SQLIdentifier("tp_move_\(tag)")
        moverRole = try SQLIdentifier("tp_mover_\(tag)")
    }
}

/// Every table and column of a database outside the system schemas: an
/// online move copies only what the template defines, so the two must match.
struct SchemaShape: Equatable {
    let columns: Set<String>
    let tables: [String]

    static func read(_ connection: PostgresConnection, logger: Logger) async throws -> SchemaShape {
        let rows = try await connection.query(
            """
            SELECT c.table_schema::text, c.table_name::text, c.column_name::text, c.data_type::text, t.table_type::text
            FROM information_schema.columns c
            JOIN information_schema.tables t USING (table_schema, table_name)
            WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema')
            """,
            logger: logger)
        var columns: Set<String> = []
        var tables: Set<String> = []
        for try await (schema, table, column, type, kind) in rows.decode((String, String, String, String, String).self) {
            columns.insert("\(schema).\(table).\(column) \(type)")
            if kind == "BASE TABLE", schema == "public" { tables.insert(table) }
        }
        return SchemaShape(columns: columns, tables: tables.sorted())
    }

    /// What `other` (the source) has that this (the template's) lacks, briefly.
    func extras(in other: SchemaShape) -> String {
        let extra = other.columns.subtracting(columns).sorted()
        let missing = columns.subtracting(other.columns).sorted()
        return [
            extra.isEmpty ? nil : "\(extra.count) columns the template lacks (\(extra.prefix(3).joined(separator: ", ")))",
            missing.isEmpty ? nil : "\(missing.count) template columns missing (\(missing.prefix(3).joined(separator: ", ")))",
        ].compactMap { $0 }.joined(separator: "; ")
    }
}

/// The fence could not be closed within the pause (the target lagged):
/// given up, writes flowing again, to be tried once more.
struct FenceMissed: Error {}

extension TenantMover {
    /// Why these two servers cannot carry an online move; nil when they can.
    /// One admin session on each server does all the asking.
    func onlineRefusal(sourceAdmin: PostgresURL, targetAdmin: PostgresURL, from: String, to: String) async throws -> String? {
        let logger = context.logger
        return try await DatabaseConnection.with(sourceAdmin, logger: logger) { sourceConnection in
            let source = ServerAdmin(connection: sourceConnection, logger: logger)
            if let why = try await source.replicationCapacity().refusalAsSource { return "server \(from) cannot publish: \(why)" }
            return try await DatabaseConnection.with(targetAdmin, logger: logger) { targetConnection in
                let target = ServerAdmin(connection: targetConnection, logger: logger)
                if let why = try await target.replicationCapacity().refusalAsTarget { return "server \(to) cannot subscribe: \(why)" }
                if let why = try await probe(source, at: sourceAdmin, from: target) {
                    return "server \(to) cannot reach server \(from) for replication: \(why)"
                }
                return nil
            }
        }
    }

    /// Whether the target can log in to the source for replication (its
    /// network, the source's pg_hba, TLS): a throwaway replication role on
    /// the source and a throwaway subscription on the target that connects
    /// with it, both dropped again. The target's refusal, or nil.
    private func probe(_ source: ServerAdmin, at sourceAdmin: PostgresURL, from target: ServerAdmin) async throws -> String? {
        let tag = UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        let name = try SQLIdentifier("tp_probe_\(tag)")
        let password = RandomToken.urlSafe(bytes: 24)
        try await source.createMoverRole(
            name, scramVerifier: try ScramVerifier.make(password: password), database: try SQLIdentifier(sourceAdmin.database))
        let refusal: String?
        do {
            let conninfo = sourceAdmin.with(user: name.name, password: password).libpqConnectionString()
            refusal = try await target.probeSubscription(name, connection: conninfo)
        } catch {
            try? await source.dropMoverRole(name)
            throw error
        }
        try await source.dropMoverRole(name)
        return refusal
    }

    /// The online move, from an open `move` record: the target built from
    /// the tenant migrations, the source's tables published (by the tenant)
    /// and subscribed to (by the target's admin), the copy and the catch-up,
    /// then a fence of at most `movePause` and the switch.
    func moveOnline(
        _ tenant: TenantRecord, move: TenantMoveRecord, sourceAdmin: PostgresURL, targetAdmin: PostgresURL,
        store: ControlStore, progress: ProgressReporter
    ) async throws -> MoveReport {
        let context = self.context
        let logger = context.logger
        let slug = try TenantSlug(tenant.id)
        let names = try TenantNames(slug)
        let stream = try OnlineMoveNames(move.id)
        let from = move.fromServer
        let target = move.toServer
        try fault(after: .started)

        let sourceLogin = try await store.tenantLogin(slug, server: sourceAdmin, secrets: context.secrets)
        let password = sourceLogin.url.password ?? ""
        let targetLogin = TenantLogin(slug: slug, password: password, server: targetAdmin)
        let targetInDatabase = targetAdmin.with(database: names.database.name)

        // The target's schema is the template's (this binary's migrations),
        // never the source's: nothing of the tenant's runs there.
        try await phase(move.id, .creatingTarget, store: store)
        progress("\(slug): creating its database on \(target) from the tenant migrations")
        let verifier = try ScramVerifier.make(password: password)
        try await DatabaseConnection.with(targetAdmin, logger: logger) { connection in
            let admin = ServerAdmin(connection: connection, logger: logger)
            try await admin.ensureLoginRole(names.role, scramVerifier: verifier)
            try await admin.createDatabase(names.database, owner: names.role, template: try SQLIdentifier("template0"))
            try await admin.restrictConnect(names.database, to: names.role)
        }
        let migrations = context.migrations
        let targetShape = try await DatabaseConnection.with(targetLogin, logger: logger) { connection in
            _ = try await Migrator(migrations: migrations).migrate(connection, logger: logger)
            return try await SchemaShape.read(connection, logger: logger)
        }
        let (applied, sourceShape, references) = try await DatabaseConnection.with(sourceLogin, logger: logger) { connection in
            (
                try await Migrator(migrations: migrations).applied(connection, logger: logger),
                try await SchemaShape.read(connection, logger: logger),
                try await BackupContext.artifactReferences(connection, tenant: slug, logger: logger)
            )
        }
        let known = migrations.files.map { "\($0.version):\($0.checksum)" }
        guard applied.map({ "\($0.version):\($0.checksum)" }) == known else {
            throw BackupError.onlineMoveRefused(
                "its schema is at version \(applied.last?.version ?? 0), not the template's \(migrations.latestVersion) (run `migrate tenants` first)")
        }
        guard sourceShape == targetShape else {
            throw BackupError.onlineMoveRefused("its tables differ from the template's: \(targetShape.extras(in: sourceShape))")
        }
        // The apply worker runs as the target's superuser and fires triggers
        // marked ENABLE REPLICA or ALWAYS, and rules: there must be none.
        let firing = try await DatabaseConnection.with(targetInDatabase, logger: logger) { connection in
            try await connection.query(
                """
                SELECT (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgenabled IN ('R', 'A'))
                    + (SELECT count(*) FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
                        WHERE r.rulename <> '_RETURN' AND c.relnamespace <> 'pg_catalog'::regnamespace)
                    + (SELECT count(*) FROM pg_event_trigger)
                """,
                logger: logger
            ).collect().first?.decode(Int64.self) ?? 0
        }
        guard firing == 0 else {
            throw BackupError.verificationFailed("the new database on \(target) holds \(firing) triggers or rules that replication would fire")
        }
        // Files are write-once on shared storage: checked once, before any fence.
        progress("\(slug): verifying \(references.count) artifact files")
        let verified = try await context.verifyStoredFiles(references, of: slug)

        try await phase(move.id, .subscribed, store: store)
        progress("\(slug): publishing its \(targetShape.tables.count - 1) tables on \(from) and subscribing on \(target)")
        let moverPassword = RandomToken.urlSafe(bytes: 32)
        try await DatabaseConnection.with(sourceAdmin, logger: logger) { connection in
            try await ServerAdmin(connection: connection, logger: logger).createMoverRole(
                stream.moverRole, scramVerifier: try ScramVerifier.make(password: moverPassword), database: names.database)
        }
        // schema_migrations is the template's own, already equal on both sides
        // (checked above) and filled on the target: its copy would collide.
        let tables = try targetShape.tables.filter { $0 != "schema_migrations" }
            .map { try SQLIdentifier($0).quoted }.joined(separator: ", ")
        try await DatabaseConnection.with(sourceLogin, logger: logger) { connection in
            try await connection.query(
                PostgresQuery(unsafeSQL: "CREATE PUBLICATION \(stream.stream.quoted) FOR TABLE \(tables)"), logger: logger)
            try await connection.query(
                PostgresQuery(unsafeSQL: "GRANT USAGE ON SCHEMA public TO \(stream.moverRole.quoted)"), logger: logger)
            try await connection.query(
                PostgresQuery(unsafeSQL: "GRANT SELECT ON \(tables) TO \(stream.moverRole.quoted)"), logger: logger)
        }
        let publisher = sourceAdmin.with(user: stream.moverRole.name, password: moverPassword)
            .with(database: names.database.name)
            .libpqConnectionString(startupOptions: "-c row_security=off")
        try await DatabaseConnection.with(targetInDatabase, logger: logger) { connection in
            try await ServerAdmin(connection: connection, logger: logger)
                .createSubscription(stream.stream, connection: publisher, publication: stream.stream)
        }

        try await awaitCopy(stream.stream, slug: slug, target: targetInDatabase, progress: progress)
        try await phase(move.id, .synced, store: store)
        var pause: Duration = .zero
        var rowCounts: [String: Int64] = [:]
        var attempt = 0
        while true {
            attempt += 1
            try await awaitCatchUp(stream.stream, slug: slug, source: sourceAdmin, progress: progress)
            progress("\(slug): holding its requests (at most \(context.movePause)) to switch, attempt \(attempt) of 3")
            do {
                (pause, rowCounts) = try await fenceAndSwitch(
                    tenant, move: move, stream: stream, sourceAdmin: sourceAdmin, sourceLogin: sourceLogin,
                    targetAdmin: targetAdmin, targetLogin: targetLogin, store: store)
                break
            } catch is FenceMissed where attempt < 3 {
                progress("\(slug): the target did not confirm the last changes within the pause; writes go on, trying again")
            } catch is FenceMissed {
                throw BackupError.verificationFailed(
                    "the target did not confirm the source's last changes within TENANTPLANE_MOVE_PAUSE (\(context.movePause)) in 3 attempts")
            }
        }
        try fault(after: .switched)
        progress("\(slug): switched to \(target) after holding its requests \(pause.milliseconds) ms; cleaning up")
        do {
            try await finishOnline(move, store: store, progress: progress)
        } catch {
            // The tenant lives on the target now; what is left is cleanup.
            logger.error(
                "the move switched, but its cleanup failed; the reconciler finishes it",
                metadata: ["tenant": "\(slug)", "error": "\(OperatorFailure(error).message)"])
            progress("\(slug): switched; cleanup failed (\(OperatorFailure(error).message)); the server's reconciler finishes it")
        }
        return MoveReport(
            tenant: slug.rawValue, moveId: move.id, fromServer: from, toServer: target, online: true,
            rowCounts: rowCounts, artifactsVerified: verified, writeBlockedMilliseconds: pause.milliseconds,
            durationMilliseconds: 0, recoveredEarlierMove: nil)
    }

    /// Waits until every table is copied and streaming, reporting progress;
    /// a subscription whose workers keep failing, or a target that stays
    /// down, ends the move.
    private func awaitCopy(_ subscription: SQLIdentifier, slug: TenantSlug, target: PostgresURL, progress: ProgressReporter)
        async throws
    {
        let logger = context.logger
        var lastReport = ContinuousClock.now
        var unreachableSince: ContinuousClock.Instant?
        while true {
            do {
                let (tables, notReady, rows, failures) = try await DatabaseConnection.with(target, logger: logger) { connection in
                    let admin = ServerAdmin(connection: connection, logger: logger)
                    let (tables, notReady) = try await admin.subscriptionSync(subscription)
                    return (tables, notReady, try await admin.rowsInserted(), try await admin.subscriptionFailures(subscription))
                }
                unreachableSince = nil
                if tables > 0, notReady == 0 {
                    progress("\(slug): copy done: \(tables) tables, \(rows) rows copied; streaming changes")
                    return
                }
                if failures >= 20 {
                    throw BackupError.verificationFailed(
                        "the subscription's workers failed \(failures) times (see the target server's log)")
                }
                if ContinuousClock.now - lastReport >= .seconds(2) {
                    progress("\(slug): copying: \(tables - notReady) of \(tables) tables done, \(rows) rows copied")
                    lastReport = ContinuousClock.now
                }
            } catch let error as DatabaseError {
                let since = unreachableSince ?? ContinuousClock.now
                unreachableSince = since
                if ContinuousClock.now - since > .seconds(30) { throw error }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Waits until the subscriber is within a small lag of the source (a
    /// fence then has little to wait for); a source restarting meanwhile
    /// is waited out for a while.
    private func awaitCatchUp(_ slot: SQLIdentifier, slug: TenantSlug, source: PostgresURL, progress: ProgressReporter)
        async throws
    {
        let logger = context.logger
        var lastReport = ContinuousClock.now
        var unreachableSince: ContinuousClock.Instant?
        let started = ContinuousClock.now
        while true {
            do {
                let lag = try await DatabaseConnection.with(source, logger: logger) {
                    try await ServerAdmin(connection: $0, logger: logger).slotLag(slot)
                }
                unreachableSince = nil
                guard let lag else { throw BackupError.verificationFailed("the move's replication slot \(slot.name) is gone") }
                if lag < 256 * 1024 { return }
                if ContinuousClock.now - lastReport >= .seconds(2) {
                    progress("\(slug): catching up: lag \(lag) bytes")
                    lastReport = ContinuousClock.now
                }
                if ContinuousClock.now - started > .seconds(600) {
                    throw BackupError.verificationFailed("the target stayed \(lag) bytes behind for 10 minutes")
                }
            } catch let error as DatabaseError {
                let since = unreachableSince ?? ContinuousClock.now
                unreachableSince = since
                if ContinuousClock.now - since > .seconds(60) { throw error }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// The fence, at most `movePause` long: every serving process holds the
    /// tenant's requests; the source refuses writes in the database itself;
    /// the target confirms the source's last change; the sequences are carried
    /// over and the row counts compared; the control database points at the
    /// target; the processes send their held requests there. Returns how long
    /// requests were held and the row counts. Throws `FenceMissed` (the fence lifted again) when
    /// the target does not confirm in time.
    private func fenceAndSwitch(
        _ tenant: TenantRecord, move: TenantMoveRecord, stream: OnlineMoveNames, sourceAdmin: PostgresURL,
        sourceLogin: TenantLogin, targetAdmin: PostgresURL, targetLogin: TenantLogin, store: ControlStore
    ) async throws -> (held: Duration, rowCounts: [String: Int64]) {
        let logger = context.logger
        // Every session the fence needs is open before it starts: a login
        // costs more than the rest of the fence together.
        return try await DatabaseConnection.with(sourceAdmin, logger: logger) { admin in
            try await DatabaseConnection.with(sourceLogin, logger: logger) { source in
                try await DatabaseConnection.with(targetLogin, logger: logger) { target in
                    try await fence(
                        tenant, move: move, stream: stream, admin: ServerAdmin(connection: admin, logger: logger),
                        source: source, target: target, targetAdmin: targetAdmin, store: store)
                }
            }
        }
    }

    private func fence(
        _ tenant: TenantRecord, move: TenantMoveRecord, stream: OnlineMoveNames, admin: ServerAdmin,
        source: PostgresConnection, target: PostgresConnection, targetAdmin: PostgresURL, store: ControlStore
    ) async throws -> (held: Duration, rowCounts: [String: Int64]) {
        let logger = context.logger
        let slug = try TenantSlug(tenant.id)
        let names = try TenantNames(slug)
        let pause = context.movePause
        let ownSession = try await source.query("SELECT pg_backend_pid()", logger: logger).collect().first?.decode(Int32.self)
        try await store.setWriteFence(slug, .move)
        let held = ContinuousClock.now
        try await store.send(MoveSignal(move: move.id, tenant: slug.rawValue, kind: .hold, holdMilliseconds: pause.milliseconds))
        let rowCounts: [String: Int64]
        do {
            // A process that has not acknowledged yet is covered by the database's own refusal.
            _ = try await store.awaitAcknowledgements(move.id, .hold, within: pause / 2)
            try await admin.setReadOnly(names.database, true, sparing: ownSession.map { [$0] } ?? [])
            let lsn = try await admin.flushedEndOfWAL()
            // Confirmation may take most of the pause, not all: sequences,
            // counts and the switch come after it, within the same hold.
            let confirmBy = held.advanced(by: pause * 0.6)
            var confirmed = false
            while !confirmed, ContinuousClock.now < confirmBy {
                confirmed = try await admin.subscriberConfirmed(stream.stream, upTo: lsn)
                if !confirmed { try await Task.sleep(for: .milliseconds(2)) }
            }
            guard confirmed else { throw FenceMissed() }
            try await carrySequences(from: source, to: target)
            async let targetCounts = BackupContext.rowCounts(target, logger: logger)
            rowCounts = try await BackupContext.rowCounts(source, logger: logger)
            try Self.compare(try await targetCounts, rowCounts)
        } catch {
            try await liftFence(slug, move: move, store: store)
            throw error
        }
        let databaseURL = targetAdmin.with(user: names.role.name, password: nil).with(database: names.database.name)
        try await store.switchTenantServer(slug, move: move.id, to: move.toServer, databaseURL: databaseURL.redacted)
        try await store.send(
            MoveSignal(
                move: move.id, tenant: slug.rawValue, kind: .switch, from: tenant.databaseUrl, to: databaseURL.redacted))
        return (ContinuousClock.now - held, rowCounts)
    }

    /// Gives up a fence: the source writable again, the processes' holds released.
    func liftFence(_ slug: TenantSlug, move: TenantMoveRecord, store: ControlStore) async throws {
        try await context.lowerFence(slug, server: move.fromServer, store: store)
        try await store.send(MoveSignal(move: move.id, tenant: slug.rawValue, kind: .release))
    }

    /// PostgreSQL 15 does not replicate sequences: each continues on the
    /// target past the source's last value. The names come from the source
    /// (the tenant's) and are only ever bound values.
    private func carrySequences(from source: PostgresConnection, to target: PostgresConnection) async throws {
        let logger = context.logger
        let values = try await source.query(
            """
            SELECT sequencename::text, last_value FROM pg_sequences
            WHERE schemaname = 'public' AND last_value IS NOT NULL
            """,
            logger: logger
        ).collect().map { try $0.decode((String, Int64).self) }
        for (name, value) in values {
            try await target.query(
                """
                SELECT setval(to_regclass(format('public.%I', \(name)::text)), \(value), true)
                WHERE to_regclass(format('public.%I', \(name)::text)) IS NOT NULL
                """,
                logger: logger)
        }
    }

    /// After the switch: the subscription, its slots and the mover's role
    /// dropped, and the old database once every live process has followed
    /// (until then the move stays `switched`, and the reconciler finishes it).
    func finishOnline(_ move: TenantMoveRecord, store: ControlStore, progress: ProgressReporter) async throws {
        let logger = context.logger
        let slug = try TenantSlug(move.tenantId)
        let names = try TenantNames(slug)
        let stream = try OnlineMoveNames(move.id)
        let targetAdmin = try await context.adminURL(of: move.toServer, store: store)
        try await DatabaseConnection.with(targetAdmin.with(database: names.database.name), logger: logger) { connection in
            try await ServerAdmin(connection: connection, logger: logger).dropSubscription(stream.stream)
        }
        let sourceAdmin = try await context.adminURL(of: move.fromServer, store: store)
        try await DatabaseConnection.with(sourceAdmin, logger: logger) { connection in
            try await ServerAdmin(connection: connection, logger: logger).dropSlots(of: names.database)
        }
        let missing = try await store.awaitAcknowledgements(move.id, .switch, within: Self.switchAcknowledgementWait)
        guard missing.isEmpty else {
            logger.warning(
                "live processes have not followed the switch; the old copy is kept until they do",
                metadata: ["tenant": "\(slug)", "processes": "\(missing.sorted().joined(separator: ","))"])
            progress("\(slug): \(missing.count) live processes have not acknowledged the switch; the old copy stays until they do")
            return
        }
        try await dropCopy(slug, server: move.fromServer, store: store)
        try await DatabaseConnection.with(sourceAdmin, logger: logger) { connection in
            try await ServerAdmin(connection: connection, logger: logger).dropMoverRole(stream.moverRole)
        }
        try await store.setMovePhase(move.id, .finished)
        logger.info("old copy dropped after an online move", metadata: ["tenant": "\(slug)", "server": "\(move.fromServer)"])
    }

    /// How long a move waits for every live process to acknowledge its switch.
    static let switchAcknowledgementWait: Duration = .seconds(30)

    /// Rolls back an online move that did not switch: the subscription, the
    /// slots (a slot left behind holds WAL until the source's disk is full),
    /// the publication, the mover's role and the target's database are
    /// dropped, the fence lifted. What could not be reached is reported.
    func rollBackOnline(_ move: TenantMoveRecord, store: ControlStore) async throws -> [String] {
        let logger = context.logger
        let slug = try TenantSlug(move.tenantId)
        let names = try TenantNames(slug)
        let stream = try OnlineMoveNames(move.id)
        var notes: [String] = []
        if try await store.writeFence(slug) != nil {
            try await liftFence(slug, move: move, store: store)
        }
        guard move.phase >= .creatingTarget else { return notes }
        if move.phase >= .subscribed {
            do {
                let targetAdmin = try await context.adminURL(of: move.toServer, store: store)
                let exists = try await DatabaseConnection.with(targetAdmin, logger: logger) {
                    try await ServerAdmin(connection: $0, logger: logger).databaseExists(names.database)
                }
                if exists {
                    try await DatabaseConnection.with(targetAdmin.with(database: names.database.name), logger: logger) {
                        try await ServerAdmin(connection: $0, logger: logger).dropSubscription(stream.stream)
                    }
                }
            } catch {
                notes.append("the subscription on \(move.toServer) could not be dropped (\(OperatorFailure(error).message))")
            }
            do {
                let sourceAdmin = try await context.adminURL(of: move.fromServer, store: store)
                try await DatabaseConnection.with(sourceAdmin, logger: logger) {
                    try await ServerAdmin(connection: $0, logger: logger).dropSlots(of: names.database)
                }
                try await DatabaseConnection.with(sourceAdmin.with(database: names.database.name), logger: logger) { connection in
                    try await connection.query(
                        PostgresQuery(unsafeSQL: "DROP PUBLICATION IF EXISTS \(stream.stream.quoted)"), logger: logger)
                    try await ServerAdmin(connection: connection, logger: logger).dropMoverRole(stream.moverRole)
                }
            } catch {
                notes.append(
                    "the replication slots or publication on \(move.fromServer) could not be dropped (\(OperatorFailure(error).message)); the reconciler tries again")
                throw BackupError.moveFailed(slug: slug.rawValue, reason: notes.joined(separator: "; "))
            }
        }
        return notes
    }
}
