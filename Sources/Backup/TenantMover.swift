import ArtifactStore
import ControlPlane
import Core
import Foundation
import Migrations
import Logging
import PostgresNIO
import Provisioner

#if canImport(Glibc)
import Glibc
#endif

/// What a move did.
public struct MoveReport: Sendable, Codable, Equatable {
    public var tenant: String
    public var moveId: UUID
    public var fromServer: String
    public var toServer: String
    /// By logical replication, with writes held only for the switch.
    public var online: Bool
    /// Rows per table, equal on both servers before the switch.
    public var rowCounts: [String: Int64]
    public var artifactsVerified: Int
    public var writeBlockedMilliseconds: Int
    public var durationMilliseconds: Int
    /// What became of an earlier move of this tenant that was interrupted.
    public var recoveredEarlierMove: String?
}

/// `tenant move`: online by logical replication where both servers allow it
/// (`OnlineMove.swift`: writes go on until a fence of at most
/// `TENANTPLANE_MOVE_PAUSE`), otherwise, or with `--offline`, by dump and
/// restore under a write fence (reads go on, writes get 503): restored on the
/// target as the tenant's own role, compared (row counts per table, artifact
/// digests), and then the control database points at the new copy in one
/// transaction. The old copy is dropped once routers have followed.
///
/// Every phase is recorded. A failure before the switch drops the new copy (and
/// an online move's subscription, slots, publication and role) and lifts the
/// fence: the tenant stays where it was, active. A move interrupted by a crash
/// is rolled back (before the switch) or finished (after it) by the next
/// `tenant move` of that tenant or by the server's reconciler.
public struct TenantMover: Sendable {
    /// How long routers may still send a moved tenant's requests to its old
    /// database (their key cache lives 1 s).
    public static let routerPickup: Duration = .seconds(2)

    let context: BackupContext

    public init(context: BackupContext) {
        self.context = context
    }

    public func move(
        _ slug: TenantSlug, to target: String, offline: Bool = false, actor: ControlPlane.Actor,
        progress: ProgressReporter = { _ in }
    ) async throws -> MoveReport {
        let started = ContinuousClock.now
        let context = self.context
        return try await context.withControl { store in
            try await store.withTenantLock(slug) {
                try await store.audited(
                    actor, .tenantMove, resourceId: slug.rawValue,
                    details: ["to_server": target, "offline": "\(offline)"]
                ) {
                    var recovered: String?
                    if let open = try await store.openMove(slug) {
                        progress("\(slug): an earlier move to \(open.toServer) was interrupted at \(open.phase.rawValue)")
                        recovered = try await recover(open, store: store)
                        progress("\(slug): the earlier move was \(recovered ?? "")")
                    }
                    try await context.liftAbandonedFence(slug, store: store)
                    let tenant = try await store.requireTenant(slug)
                    let from = try tenant.requireServer()
                    if from == target, let recovered {
                        return MoveReport(
                            tenant: slug.rawValue, moveId: UUID(), fromServer: from, toServer: target, online: false,
                            rowCounts: [:],
                            artifactsVerified: 0, writeBlockedMilliseconds: 0,
                            durationMilliseconds: (ContinuousClock.now - started).milliseconds,
                            recoveredEarlierMove: recovered)
                    }
                    var report = try await move(
                        tenant, slug: slug, from: from, to: target, offline: offline, store: store, progress: progress)
                    report.recoveredEarlierMove = recovered
                    report.durationMilliseconds = (ContinuousClock.now - started).milliseconds
                    return report
                }
            }
        }
    }

    private func move(
        _ tenant: TenantRecord, slug: TenantSlug, from: String, to target: String, offline: Bool, store: ControlStore,
        progress: ProgressReporter
    ) async throws -> MoveReport {
        let context = self.context
        let logger = context.logger
        guard tenant.status == .active else {
            throw ControlError.conflict("tenant \(slug) is \(tenant.status.rawValue); only active tenants are moved")
        }
        guard from != target else { throw ControlError.conflict("tenant \(slug) is already on server \(target)") }
        let targetServer = try await store.server(named: target)
        try targetServer.requireRoomForATenant()
        let names = try TenantNames(slug)
        let sourceAdmin = try await context.adminURL(of: from, store: store)
        let targetAdmin = try await context.adminURL(of: target, store: store)

        // Nothing is touched until both servers answer and are two clusters.
        let sourceCluster = try await DatabaseConnection.with(sourceAdmin, logger: logger) {
            try await ServerAdmin(connection: $0, logger: logger).systemIdentifier()
        }
        let (targetCluster, occupied) = try await DatabaseConnection.with(targetAdmin, logger: logger) { connection in
            let admin = ServerAdmin(connection: connection, logger: logger)
            return (try await admin.systemIdentifier(), try await admin.databaseExists(names.database))
        }
        guard sourceCluster != targetCluster else {
            throw ControlError.conflict("servers \(from) and \(target) are the same PostgreSQL cluster")
        }
        guard !occupied else {
            throw ControlError.conflict(
                "server \(target) already has a database \(names.database.name); drop it there first if it is a leftover")
        }

        var online = !offline
        if online, let why = try await onlineRefusal(sourceAdmin: sourceAdmin, targetAdmin: targetAdmin, from: from, to: target) {
            progress("\(slug): moving offline (writes paused for the copy): \(why)")
            online = false
        }
        let move = try await store.startMove(slug, from: from, to: target, online: online)
        if online {
            do {
                return try await moveOnline(
                    tenant, move: move, sourceAdmin: sourceAdmin, targetAdmin: targetAdmin, store: store, progress: progress)
            } catch {
                let reason = OperatorFailure(error).message
                logger.error("online move failed; rolling back", metadata: ["tenant": "\(slug)", "error": "\(reason)"])
                var current = try await store.openMove(slug) ?? move
                current.error = reason
                _ = try await recover(current, store: store)
                if let refused = error as? BackupError, case .onlineMoveRefused = refused { throw refused }
                throw BackupError.moveFailed(slug: slug.rawValue, reason: reason)
            }
        }
        var moveLogger = logger
        moveLogger[metadataKey: "tenant"] = "\(slug)"
        moveLogger[metadataKey: "move"] = "\(move.id)"
        let fenced: ContinuousClock.Instant
        let snapshot: DatabaseSnapshot
        var verified = 0
        do {
            try fault(after: .started)
            progress("\(slug): blocking writes")
            try await context.raiseFence(slug, .move, server: from, store: store)
            fenced = ContinuousClock.now
            try await phase(move.id, .fenced, store: store)

            let work = try context.workDirectory("moves")
            defer { try? FileManager.default.removeItem(atPath: work) }
            progress("\(slug): dumping the database on \(from)")
            let sourceLogin = try await store.tenantLogin(slug, server: sourceAdmin, secrets: context.secrets)
            snapshot = try await context.snapshot(sourceLogin, into: work)
            try await phase(move.id, .dumped, store: store)

            try await phase(move.id, .creatingTarget, store: store)
            let verifier = try ScramVerifier.make(password: sourceLogin.url.password ?? "")
            try await DatabaseConnection.with(targetAdmin, logger: logger) { connection in
                let admin = ServerAdmin(connection: connection, logger: logger)
                try await admin.ensureLoginRole(names.role, scramVerifier: verifier)
                try await admin.createDatabase(names.database, owner: names.role, template: try SQLIdentifier("template0"))
                try await admin.restrictConnect(names.database, to: names.role)
            }
            progress("\(slug): restoring on \(target)")
            // The dump is the tenant's SQL: restored, and the copy read back, as the tenant.
            let targetLogin = TenantLogin(slug: slug, password: sourceLogin.url.password ?? "", server: targetAdmin)
            try await context.tools().restore(snapshot.dumpFile, into: targetLogin)
            try await DatabaseConnection.with(targetAdmin, logger: logger) { connection in
                try await ServerAdmin(connection: connection, logger: logger)
                    .reclaim(names.role, database: names.database, scramVerifier: verifier)
            }
            try await phase(move.id, .restored, store: store)

            progress("\(slug): verifying the copy")
            let (counts, references) = try await DatabaseConnection.with(targetLogin, logger: logger) { connection in
                (
                    try await BackupContext.rowCounts(connection, logger: logger),
                    try await BackupContext.artifactReferences(connection, tenant: slug, logger: logger)
                )
            }
            try Self.compare(counts, snapshot.rowCounts)
            guard references == snapshot.references else {
                throw BackupError.verificationFailed("the artifact references differ")
            }
            verified = try await context.verifyStoredFiles(references, of: slug)
            try await phase(move.id, .verified, store: store)

            let databaseURL = targetAdmin.with(user: names.role.name, password: nil).with(database: names.database.name)
            try await store.switchTenantServer(slug, move: move.id, to: target, databaseURL: databaseURL.redacted)
            try fault(after: .switched)
        } catch {
            let reason = OperatorFailure(error).message
            moveLogger.error("move failed; rolling back", metadata: ["error": "\(reason)"])
            var current = try await store.openMove(slug) ?? move
            current.error = reason
            _ = try await recover(current, store: store)
            throw BackupError.moveFailed(slug: slug.rawValue, reason: reason)
        }
        let blocked = ContinuousClock.now - fenced
        progress("\(slug): switched to \(target); dropping the old copy on \(from) once routers follow")
        try await Task.sleep(for: Self.routerPickup)
        try await dropOldCopy(slug, server: from, store: store)
        try await phase(move.id, .finished, store: store)
        return MoveReport(
            tenant: slug.rawValue, moveId: move.id, fromServer: from, toServer: target, online: false,
            rowCounts: snapshot.rowCounts,
            artifactsVerified: verified, writeBlockedMilliseconds: blocked.milliseconds, durationMilliseconds: 0,
            recoveredEarlierMove: nil)
    }

    /// Finishes (switched) or rolls back (anything earlier) an open move.
    /// The caller holds the tenant's lock. Returns what it did.
    func recover(_ move: TenantMoveRecord, store: ControlStore) async throws -> String {
        let slug = try TenantSlug(move.tenantId)
        if move.phase >= .switched, move.online {
            try await finishOnline(move, store: store, progress: { _ in })
            return try await store.openMove(slug) == nil
                ? "finished" : "switched; the old copy waits until every live process acknowledges the switch"
        }
        if move.phase >= .switched {
            try await dropOldCopy(slug, server: move.fromServer, store: store)
            try await store.setMovePhase(move.id, .finished)
            return "finished"
        }
        var notes: [String] = []
        if move.online { notes += try await rollBackOnline(move, store: store) }
        if move.phase >= .creatingTarget {
            do {
                try await dropCopy(slug, server: move.toServer, store: store)
            } catch {
                notes.append(
                    "the partial copy on \(move.toServer) could not be dropped (\(OperatorFailure(error).message)); drop \(try TenantNames(slug).database.name) there by hand")
            }
        }
        let fenced = try await store.writeFence(slug) != nil
        if move.phase >= .fenced || fenced {
            try await context.lowerFence(slug, server: move.fromServer, store: store)
        }
        let error = ([move.error].compactMap { $0 } + notes).joined(separator: "; ")
        try await store.setMovePhase(move.id, .rolledBack, error: error.isEmpty ? "interrupted" : error)
        return notes.isEmpty ? "rolled back" : "rolled back; " + notes.joined(separator: "; ")
    }

    /// Moves other processes abandoned (their tenant's lock is free), rolled
    /// back or finished, and fences they left, lifted; for the server's
    /// reconciler. One tenant at a time: one that fails (its database dropped
    /// behind our back, its server down) is logged and tried again next time,
    /// and every other is still recovered.
    public func recoverAbandoned() async throws -> [String] {
        let logger = context.logger
        return try await context.withControl { store in
            var recovered: [String] = []
            for move in try await store.openMoves() {
                let slug = try TenantSlug(move.tenantId)
                do {
                    let outcome = try await store.withTenantLockIfFree(slug) { () async throws -> String? in
                        // Re-read under the lock: its process may have just finished it.
                        guard let current = try await store.openMove(slug) else { return nil }
                        return try await recover(current, store: store)
                    }
                    if let outcome = outcome ?? nil { recovered.append("\(slug): \(outcome)") }
                } catch {
                    logger.error(
                        "could not recover an interrupted move; trying again later",
                        metadata: ["tenant": "\(slug)", "error": "\(OperatorFailure(error).message)"])
                }
            }
            for tenant in try await store.fencedTenants() {
                let slug = try TenantSlug(tenant)
                do {
                    let lifted: Bool? = try await store.withTenantLockIfFree(slug) {
                        guard try await store.openMove(slug) == nil else { return false }
                        try await context.liftAbandonedFence(slug, store: store)
                        return true
                    }
                    if lifted == true { recovered.append("\(slug): write fence lifted") }
                } catch {
                    logger.error(
                        "could not lift an abandoned write fence; trying again later",
                        metadata: ["tenant": "\(slug)", "error": "\(OperatorFailure(error).message)"])
                }
            }
            return recovered
        }
    }

    private func dropOldCopy(_ slug: TenantSlug, server: String, store: ControlStore) async throws {
        try await dropCopy(slug, server: server, store: store)
        context.logger.info("old copy dropped after a move", metadata: ["tenant": "\(slug)", "server": "\(server)"])
    }

    func dropCopy(_ slug: TenantSlug, server: String, store: ControlStore) async throws {
        let names = try TenantNames(slug)
        let logger = context.logger
        try await DatabaseConnection.with(try await context.adminURL(of: server, store: store), logger: logger) { connection in
            let admin = ServerAdmin(connection: connection, logger: logger)
            try await admin.terminateConnections(to: names.database)
            try await admin.dropDatabase(names.database)
            do {
                try await admin.dropRole(names.role)
            } catch where error.sqlState == "2BP01" {
                logger.warning("the tenant role still owns objects on the old server; kept", metadata: ["tenant": "\(slug)"])
            }
        }
    }

    func phase(_ id: UUID, _ phase: MovePhase, store: ControlStore) async throws {
        try await store.setMovePhase(id, phase)
        try fault(after: phase)
    }

    func fault(after phase: MovePhase) throws {
        guard context.faultAfterMovePhase == phase else { return }
        context.logger.critical("fault injection: killing the process after move phase \(phase.rawValue)")
        kill(getpid(), SIGKILL)
    }

    static func compare(_ copy: [String: Int64], _ original: [String: Int64]) throws {
        guard copy != original else { return }
        let tables = Set(copy.keys).union(original.keys).sorted()
        let differing = tables.filter { copy[$0] != original[$0] }.map {
            "\($0): \(original[$0].map(String.init) ?? "missing") → \(copy[$0].map(String.init) ?? "missing")"
        }
        throw BackupError.verificationFailed("row counts differ (\(differing.prefix(5).joined(separator: ", ")))")
    }
}
