import ControlPlane
import Core
import Foundation
import Logging
import Migrations
import PostgresNIO

/// Keeps each server's warm spares: settles work a crash cut short, retires
/// spares that are stale (an older schema), excess or on an inactive server,
/// and fills up to the target, one spare at a time per server (under the
/// server's spare lock, so replicas take turns). `serve` runs it in the
/// background; `tenantplane spares fill|drain` runs it by hand.
public struct WarmSpares: Sendable {
    let provisioner: Provisioner

    public init(provisioner: Provisioner) {
        self.provisioner = provisioner
    }

    var logger: Logger { provisioner.logger }
    var migrations: MigrationSet { provisioner.migrations }

    /// A server's spares, as `spares status` shows them.
    public struct ServerSpares: Sendable, Encodable {
        public var server: String
        public var active: Bool
        public var target: Int
        /// Claimable: ready at this binary's migrations.
        public var ready: Int
        /// Ready, but at other migrations: never handed out by this binary.
        public var stale: Int
        public var filling: Int
        public var claiming: Int
        public var retiring: Int
        public var roomForSpares: Int
        public var spares: [SpareRecord]
    }

    public func status() async throws -> [ServerSpares] {
        try await provisioner.withControl { store in
            let spares = try await store.spares()
            return try await store.servers().map { server in
                let own = spares.filter { $0.server == server.name }
                func count(_ state: SpareRecord.State) -> Int { own.filter { $0.state == state }.count }
                let ready = own.filter { $0.state == .ready && $0.schemaFingerprint == migrations.fingerprint }.count
                return ServerSpares(
                    server: server.name, active: server.isActive, target: server.isActive ? provisioner.warmSpares : 0,
                    ready: ready, stale: count(.ready) - ready, filling: count(.filling), claiming: count(.claiming),
                    retiring: count(.retiring), roomForSpares: server.roomForSpares, spares: own)
            }
        }
    }

    /// What one pass over one server did.
    public struct Pass: Sendable, Encodable {
        public var server: String
        public var created: [String] = []
        public var retired: [String] = []
        /// Cut-short fills, retirements and claims put right.
        public var settled: [String] = []
        /// Why the pass did not run or stopped short.
        public var note: String?

        public var didWork: Bool { !created.isEmpty || !retired.isEmpty || !settled.isEmpty }
    }

    /// Brings every server (or the one named) to `target` spares (the
    /// server's setting when nil; none on an inactive server). Audited as
    /// `server.spares.fill` for each server it changed. `onlyWhenNeeded`
    /// (the keeper's passes) skips, with no admin session, a server whose
    /// records show nothing to do.
    public func fill(
        server name: String? = nil, target: Int? = nil, onlyWhenNeeded: Bool = false, actor: ControlPlane.Actor
    ) async throws -> [Pass] {
        try await provisioner.withControl { store in
            var passes: [Pass] = []
            let spares = try await store.spares()
            for server in try await servers(named: name, store: store) {
                let goal = server.isActive ? (target ?? provisioner.warmSpares) : 0
                let own = spares.filter { $0.server == server.name }
                if onlyWhenNeeded, !needsWork(server, own, target: goal) { continue }
                let pass = try await tend(server, target: goal, store: store)
                if pass.didWork {
                    try await store.audit(
                        actor, .sparesFill, resourceId: server.name, succeeded: pass.note == nil,
                        details: details(pass))
                }
                passes.append(pass)
            }
            return passes
        }
    }

    /// Drops every spare not being claimed, on every server or the one named.
    public func drain(server name: String? = nil, actor: ControlPlane.Actor) async throws -> [Pass] {
        try await provisioner.withControl { store in
            var passes: [Pass] = []
            for server in try await servers(named: name, store: store) {
                let pass = try await store.audited(actor, .sparesDrain, resourceId: server.name) {
                    try await tend(server, target: 0, store: store)
                }
                passes.append(pass)
            }
            return passes
        }
    }

    /// Drops the spares at older migrations than this binary's (or drifted
    /// at the same version), for `migrate tenants`: the keeper makes new
    /// ones from the refreshed template. A newer binary's are left alone.
    public func retireStale(store: ControlStore) async throws -> [Pass] {
        var passes: [Pass] = []
        for server in try await store.servers() {
            let goal = server.isActive ? provisioner.warmSpares : 0
            passes.append(try await tend(server, target: goal, store: store, filling: false))
        }
        return passes
    }

    private func needsWork(_ server: DatabaseServer, _ spares: [SpareRecord], target: Int) -> Bool {
        let ready = spares.filter { $0.state == .ready && $0.schemaFingerprint == migrations.fingerprint }.count
        let unsettled = spares.contains { $0.state != .ready && $0.state != .claiming }
        let stale = spares.contains {
            $0.state == .ready && $0.schemaFingerprint != migrations.fingerprint
                && ($0.schemaVersion ?? 0) <= migrations.latestVersion
        }
        let overCapacity = server.tenantCount + server.spareCount > server.capacity
        let short = ready < target && server.roomForSpares > 0
        return unsettled || stale || overCapacity || ready > target || short
    }

    private func servers(named name: String?, store: ControlStore) async throws -> [DatabaseServer] {
        guard let name else { return try await store.servers() }
        return [try await store.server(named: name)]
    }

    private func details(_ pass: Pass) -> [String: String] {
        var details = ["created": "\(pass.created.count)", "retired": "\(pass.retired.count)", "settled": "\(pass.settled.count)"]
        if let note = pass.note { details["note"] = note }
        return details
    }

    /// One server, under its spare lock (another process tending it makes
    /// this pass a no-op that says so).
    func tend(_ server: DatabaseServer, target: Int, store: ControlStore, filling: Bool = true) async throws -> Pass {
        var pass = Pass(server: server.name)
        let adminURL = try await store.adminURL(
            ofServer: server.name, secrets: provisioner.secrets, controlURL: provisioner.controlURL)
        let done = try await store.withSpareLockIfFree(server: server.name) { () async throws -> Pass in
            try await DatabaseConnection.with(adminURL, logger: logger) { connection in
                let admin = ServerAdmin(connection: connection, logger: logger)
                try await settle(server.name, admin: admin, store: store, pass: &pass)
                try await retire(server, keeping: target, admin: admin, store: store, pass: &pass)
                guard filling else { return pass }
                try await fill(server.name, to: target, admin: admin, adminURL: adminURL, store: store, pass: &pass)
                return pass
            }
        }
        guard let done else {
            pass.note = "another process is tending the spares of server \(server.name)"
            return pass
        }
        return done
    }

    /// Fills and retirements a crash cut short are dropped (no claim takes
    /// a spare in those states); claims cut short are settled under their
    /// tenant's lock, skipped while a live claim holds it.
    private func settle(_ server: String, admin: ServerAdmin, store: ControlStore, pass: inout Pass) async throws {
        for spare in try await store.spares(server: server) {
            let name = try SpareName(spare.name)
            switch spare.state {
            case .ready:
                continue
            case .filling, .retiring:
                try await admin.dropSpare(name.identifier)
                try await store.forgetSpare(name)
                pass.settled.append(spare.name)
            case .claiming:
                guard let tenant = spare.claimedBy.flatMap({ try? TenantSlug($0) }) else { continue }
                let settled = try await store.withTenantLockIfFree(tenant) {
                    guard try await store.spareClaimed(by: tenant) != nil else { return false }
                    if try await admin.databaseExists(name.identifier) {
                        try await store.returnSpare(name)
                    } else {
                        try await store.forgetSpare(name)
                    }
                    return true
                }
                if settled == true { pass.settled.append(spare.name) }
            }
        }
    }

    private func retire(
        _ server: DatabaseServer, keeping target: Int, admin: ServerAdmin, store: ControlStore, pass: inout Pass
    ) async throws {
        let ready = try await store.spares(server: server.name).filter { $0.state == .ready }
        let (current, others) = (
            ready.filter { $0.schemaFingerprint == migrations.fingerprint },
            ready.filter { $0.schemaFingerprint != migrations.fingerprint }
        )
        let stale = others.filter { ($0.schemaVersion ?? 0) <= migrations.latestVersion }
        // Tenants and spares together stay within the server's capacity.
        let overCapacity = max(0, server.tenantCount + server.spareCount - server.capacity)
        let excess = max(current.count - target, overCapacity)
        for spare in stale + current.suffix(min(excess, current.count)) {
            let name = try SpareName(spare.name)
            try await store.markSpareRetiring(name)
            try await admin.dropSpare(name.identifier)
            try await store.forgetSpare(name)
            pass.retired.append(spare.name)
        }
    }

    private func fill(
        _ serverName: String, to target: Int, admin: ServerAdmin, adminURL: PostgresURL, store: ControlStore,
        pass: inout Pass
    ) async throws {
        while !Task.isCancelled {
            let server = try await store.server(named: serverName)
            let ready = try await store.spares(server: serverName)
                .filter { $0.state == .ready && $0.schemaFingerprint == migrations.fingerprint }.count
            guard ready < target else { return }
            guard server.roomForSpares > 0 else {
                pass.note = "server \(serverName) is at capacity (\(server.tenantCount) tenants and \(server.spareCount) spares of \(server.capacity))"
                return
            }
            switch await provisioner.refreshTemplateIfStale(server, adminURL: adminURL, store: store) {
            case .recordedCurrent, .refreshed: break
            case .ahead:
                pass.note = "the template of server \(serverName) holds newer migrations than this binary: no spares made"
                return
            case .unusable(let reason):
                pass.note = "the template of server \(serverName) is unusable (\(reason)): no spares made"
                return
            }
            pass.created.append(try await fillOne(serverName, admin: admin, adminURL: adminURL, store: store).name)
        }
    }

    /// Records the spare, copies the template, and checks the copy's schema
    /// before it becomes claimable: a tenant is never handed one at other
    /// migrations. The check is an admin session in a database only the
    /// template's own objects are in (no tenant has ever logged in to it).
    private func fillOne(_ server: String, admin: ServerAdmin, adminURL: PostgresURL, store: ControlStore)
        async throws -> SpareName
    {
        let name = SpareName.random()
        try await store.recordSpareFilling(name, server: server)
        try await admin.createSpare(name.identifier, template: provisioner.templateDatabase)
        let state = try await DatabaseConnection.with(adminURL.with(database: name.name), logger: logger) { connection in
            try await Migrator(migrations: migrations).inspect(connection, logger: logger)
        }
        guard state.pending.isEmpty, state.drift.isEmpty, !state.isAhead else {
            try await store.markSpareRetiring(name)
            try await admin.dropSpare(name.identifier)
            try await store.forgetSpare(name)
            throw ProvisionerError.spareNotCurrent(
                spare: name.name, version: state.currentVersion, expected: migrations.latestVersion)
        }
        try await store.markSpareReady(name, version: state.currentVersion, fingerprint: migrations.fingerprint)
        logger.info("warm spare ready", metadata: ["server": "\(server)", "spare": "\(name)"])
        return name
    }
}
