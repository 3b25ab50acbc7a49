// Provisioner: creates, suspends, resumes, deletes, undeletes and purges
// tenants — the tenant's login role, its database (copied from the server's
// template), its schema, its storage directory — as resumable, idempotent
// steps recorded in the control database.
import ArtifactStore
import ControlPlane
import Core
import Foundation
import Logging
import Migrations
import PostgresNIO

#if canImport(Glibc)
import Glibc
#endif

public struct Provisioner: Sendable {
    public let controlURL: PostgresURL
    public let secrets: SecretBox
    public let migrations: MigrationSet
    public let storageRoot: String
    /// `TENANTPLANE_DELETE_GRACE`: how long a deleted tenant can be undeleted.
    public let deleteGrace: Duration
    /// The server's template database (`TENANTPLANE_TEMPLATE_DATABASE`).
    public let templateDatabase: SQLIdentifier
    /// `TENANTPLANE_WARM_SPARES`: spares each server keeps ready.
    public let warmSpares: Int
    /// Test hook: the process kills itself (SIGKILL) right after this step.
    public let faultAfterStep: ProvisioningStep?
    public let logger: Logger
    /// Told of every spare this process claims, so its keeper refills at once.
    let spareClaimed: SpareWakeups?
    /// The server's control pool; without one, each operation opens its own
    /// control connection (the CLI).
    let controlPool: PostgresClient?

    /// What the provisioner needs, and nothing else (the edge reads it from the settings).
    public struct Configuration: Sendable {
        public var controlURL: PostgresURL
        public var masterKey: MasterKey
        /// The tenant migrations, loaded once by the caller.
        public var migrations: MigrationSet
        public var storageRoot: String
        public var deleteGrace: Duration
        public var templateDatabase: String?
        public var warmSpares: Int
        public var faultAfterStep: String?

        public init(
            controlURL: PostgresURL, masterKey: MasterKey, migrations: MigrationSet, storageRoot: String,
            deleteGrace: Duration, templateDatabase: String?, warmSpares: Int, faultAfterStep: String?
        ) {
            self.controlURL = controlURL
            self.masterKey = masterKey
            self.migrations = migrations
            self.storageRoot = storageRoot
            self.deleteGrace = deleteGrace
            self.templateDatabase = templateDatabase
            self.warmSpares = warmSpares
            self.faultAfterStep = faultAfterStep
        }
    }

    public init(
        configuration: Configuration, logger: Logger, controlPool: PostgresClient? = nil,
        spareClaimed: SpareWakeups? = nil
    ) throws {
        self.controlPool = controlPool
        self.spareClaimed = spareClaimed
        warmSpares = configuration.warmSpares
        controlURL = configuration.controlURL
        secrets = SecretBox(masterKey: configuration.masterKey)
        migrations = configuration.migrations
        storageRoot = configuration.storageRoot
        deleteGrace = configuration.deleteGrace
        templateDatabase = try SQLIdentifier(configuration.templateDatabase ?? TemplateDatabase.defaultName)
        faultAfterStep = configuration.faultAfterStep.flatMap(ProvisioningStep.init(rawValue:))
        self.logger = logger
    }

    /// How a tenant's database came to be.
    public enum DatabaseOrigin: String, Sendable, Codable {
        /// Copied from the server's template, which was already current.
        case template
        /// Copied from the template after bringing it to the latest migration.
        case refreshedTemplate = "refreshed_template"
        /// Created empty and migrated (the template could not be used).
        case migratedFromEmpty = "migrated_from_empty"
        /// It existed already: an interrupted run was finished.
        case existing
        /// A warm spare, renamed: no copy was made at all.
        case spare
    }

    /// The tenant as created, with how its database came to be: the tenant's
    /// fields, then `origin` and `origin_note`, in one object.
    public struct CreateOutcome: Sendable, Encodable {
        public var tenant: TenantRecord
        public var origin: DatabaseOrigin
        /// Why no spare or no template was used, when one was not.
        public var templateNote: String?

        private enum Keys: String, CodingKey { case origin, originNote }

        public func encode(to encoder: any Encoder) throws {
            try tenant.encode(to: encoder)
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode(origin, forKey: .origin)
            try container.encode(templateNote, forKey: .originNote)
        }
    }

    /// The step `tenant import` records while it restores a tenant's database.
    public static let importingStep = "importing"

    // MARK: create

    /// Creates the tenant, or finishes an interrupted creation of it.
    public func create(_ slug: TenantSlug, name: String, server requestedServer: String?, actor: ControlPlane.Actor)
        async throws -> CreateOutcome
    {
        let name = name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty, name.count <= 200 else { throw ControlError.invalid("tenant name must be 1-200 characters") }
        return try await withControl { store in
            try await store.withTenantLock(slug) {
                try await store.audited(actor, .tenantCreate, resourceId: slug.rawValue) {
                    try await create(slug, name: name, requestedServer: requestedServer, store: store)
                }
            }
        }
    }

    private func create(_ slug: TenantSlug, name: String, requestedServer: String?, store: ControlStore) async throws
        -> CreateOutcome
    {
        let started = ContinuousClock.now
        let existing = try await store.tenant(slug)
        if let existing, existing.status == .active || existing.status == .suspended {
            throw ControlError.alreadyExists("tenant \(slug) already exists")
        }
        if let existing, existing.status == .deleting {
            throw ControlError.tenantBeingDeleted(
                "tenant \(slug) already exists and is being deleted: undelete it (tenant undelete), or purge it first "
                    + "(tenant delete \(slug) --confirm \(slug) --purge-now)")
        }
        // Its database may hold half a restore: taking it over would activate a
        // tenant with part of its data.
        if let existing, existing.status == .provisioning, existing.provisioningStep == Self.importingStep {
            throw ControlError.importInterrupted(
                "tenant \(slug) has an import that was cut short: run tenant import again, or let the server's "
                    + "reconciler drop it (within a minute) and then create it")
        }
        let server: DatabaseServer
        let firstAttempt = existing == nil || existing?.status == .deleted
        if let placed = existing?.server, existing?.status != .deleted {
            server = try await store.server(named: placed)
        } else if let requestedServer {
            server = try await store.server(named: requestedServer)
            try server.requireRoomForATenant()
        } else {
            server = try await store.pickServer()
        }
        let serverName = server.name
        let adminURL = try await store.adminURL(ofServer: serverName, secrets: secrets, controlURL: controlURL)
        let names = try TenantNames(slug)
        let databaseURL = adminURL.with(user: names.role.name, password: nil).with(database: names.database.name)
        // A new password on every attempt: the role step sets it on an existing role too.
        let password = RandomToken.urlSafe(bytes: 32)
        let sealedPassword = try secrets.seal(password, owner: slug.rawValue)
        // The steps need not wait for the disk: a step lost in a crash is redone
        // by the next run (each is idempotent). The audit row, written last,
        // commits synchronously and so flushes everything before it (activation
        // included); every path out of here turns it back on (the connection
        // may be pooled). The registration must reach the disk before any role
        // or database exists for it. When the tenant's server is the control
        // database's own cluster, that holds without waiting: PostgreSQL flushes
        // its log in order, so a role or database that survives a crash brings
        // the registration logged before it along.
        let sharesCluster = adminURL.isSameLogin(as: controlURL)
        if existing?.status == .provisioning {
            try await settleCutShortClaim(of: slug, adminURL: adminURL, sharingControl: sharesCluster, store: store)
        }
        do {
            if sharesCluster { try await store.connection.query("SET synchronous_commit = off", logger: logger) }
            try await store.registerTenant(
                slug, name: name, server: serverName, databaseURL: databaseURL.redacted,
                sealedRolePassword: sealedPassword, existing: existing)
        } catch {
            if sharesCluster { _ = try? await store.connection.query("SET synchronous_commit = on", logger: logger) }
            throw error
        }

        var spareNote: String?
        do {
            try finished(.registered, slug: slug, since: started)
            let verifier = try ScramVerifier.make(password: password)
            if firstAttempt {
                switch try await claimSpare(
                    for: slug, names: names, scramVerifier: verifier, server: server, adminURL: adminURL,
                    sharingControl: sharesCluster, store: store, since: started)
                {
                case .claimed(let tenant):
                    return CreateOutcome(tenant: tenant, origin: .spare, templateNote: nil)
                case .none(let reason):
                    spareNote = reason
                }
            }
            if !sharesCluster { try await store.connection.query("SET synchronous_commit = off", logger: logger) }
            let (origin, note) = try await withAdminSession(adminURL, sharingControl: sharesCluster, store: store) {
                connection in
                let admin = ServerAdmin(connection: connection, logger: logger)
                try await admin.ensureLoginRole(names.role, scramVerifier: verifier)
                try await store.setProvisioningStep(slug, ProvisioningStep.role.rawValue)
                try finished(.role, slug: slug, since: started)

                let result = try await ensureDatabase(names, server: server, admin: admin, adminURL: adminURL, store: store)
                try await store.setProvisioningStep(slug, ProvisioningStep.database.rawValue)
                try finished(.database, slug: slug, since: started)
                return result
            }

            let (version, fingerprint) = try await migrateTenantDatabase(
                names, login: TenantLogin(slug: slug, password: password, server: adminURL), adminURL: adminURL,
                origin: origin)
            try await store.setSchemaVersion(slug, version, fingerprint: fingerprint)
            try await store.setProvisioningStep(slug, ProvisioningStep.migrate.rawValue)
            try finished(.migrate, slug: slug, since: started)

            try await trees.prepareEmpty(slug)
            try await store.activateTenant(slug)
            let tenant = try await store.requireTenant(slug)
            try await store.connection.query("SET synchronous_commit = on", logger: logger)
            let notes = [spareNote, note].compactMap { $0 }
            return CreateOutcome(tenant: tenant, origin: origin, templateNote: notes.isEmpty ? nil : notes.joined(separator: "; "))
        } catch {
            let reason = OperatorFailure(error).message
            _ = try? await store.connection.query("SET synchronous_commit = on", logger: logger)
            try? await store.setTenantStatus(slug, .failed, error: reason)
            logger.error("tenant creation failed", metadata: ["tenant": "\(slug)", "error": "\(reason)"])
            throw ProvisionerError.creationFailed(slug: slug.rawValue, reason: reason)
        }
    }

    /// One admin session for the role and database steps: a connection costs
    /// 3-8 ms here, the DDL itself less than one. `CREATE ROLE` and `CREATE
    /// DATABASE` act on the whole cluster from any of its databases, so when
    /// the server's admin is the control connection's own login on the same
    /// cluster (`sharingControl`), that connection is the session.
    func withAdminSession<Result: Sendable>(
        _ adminURL: PostgresURL, sharingControl: Bool, store: ControlStore,
        _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        if sharingControl { return try await body(store.connection.underlying) }
        return try await DatabaseConnection.with(adminURL, logger: logger) { connection in
            // As on the control side: a role or grant lost in a crash is redone by the next run.
            try await connection.query("SET synchronous_commit = off", logger: logger)
            return try await body(connection)
        }
    }

    private func ensureDatabase(
        _ names: TenantNames, server: DatabaseServer, admin: ServerAdmin, adminURL: PostgresURL, store: ControlStore
    ) async throws -> (DatabaseOrigin, String?) {
        if try await admin.databaseExists(names.database) {
            try await admin.restrictConnect(names.database, to: names.role)
            return (.existing, nil)
        }
        var origin = DatabaseOrigin.template
        var note: String?
        switch await refreshTemplateIfStale(server, adminURL: adminURL, store: store) {
        case .recordedCurrent, .ahead: break
        case .refreshed: origin = .refreshedTemplate
        case .unusable(let reason):
            note = "template \(templateDatabase) is unusable (\(reason)); created the database empty and migrated it"
        }
        // A copy fails while anyone is connected to the template (a refresh by
        // another process): wait a moment and try again before falling back.
        for attempt in 1...5 where note == nil {
            do {
                try await admin.createDatabase(names.database, owner: names.role, template: templateDatabase)
                break
            } catch where error.sqlState == "55006" && attempt < 5 {
                try await Task.sleep(for: .milliseconds(100 * attempt))
            } catch where error.sqlState == "55006" || error.sqlState == "3D000" {
                note = "template \(templateDatabase) could not be copied (\(error.serverMessage ?? "busy")); created the database empty and migrated it"
            }
        }
        if note != nil {
            try await admin.createDatabase(names.database, owner: names.role, template: try SQLIdentifier("template0"))
            origin = .migratedFromEmpty
        }
        try await admin.restrictConnect(names.database, to: names.role)
        return (origin, note)
    }

    enum TemplateCheck {
        /// The control database records it at this binary's migrations.
        case recordedCurrent
        /// It was brought to them (and recorded so) just now.
        case refreshed
        /// A newer binary's: copies of it are at its version, not this binary's.
        case ahead
        case unusable(String)
    }

    /// Brings the server's template to this binary's migrations when its
    /// record says it is not there.
    func refreshTemplateIfStale(_ server: DatabaseServer, adminURL: PostgresURL, store: ControlStore) async
        -> TemplateCheck
    {
        guard server.templateFingerprint != migrations.fingerprint else { return .recordedCurrent }
        do {
            let template = TemplateDatabase(database: templateDatabase, migrations: migrations, logger: logger)
            switch try await template.ensureCurrent(adminURL: adminURL) {
            case .ahead:
                // Its record stays the newer binary's.
                return .ahead
            case .current, .migrated, .rebuilt:
                try await store.setTemplate(
                    server: server.name, version: migrations.latestVersion, fingerprint: migrations.fingerprint)
                return .refreshed
            }
        } catch {
            return .unusable(OperatorFailure(error).message)
        }
    }

    /// Applies whatever migrations are pending, logged in as the tenant's
    /// role, and returns the schema version and the fingerprint of the files
    /// it holds (nil when they are a newer binary's, so the next fleet run
    /// connects and looks). A copy of a template is checked, not trusted: the
    /// template may have moved between its check and the copy (another
    /// binary's refresh during a rolling deploy), or be newer than this
    /// binary; the version recorded is the one the copy holds.
    private func migrateTenantDatabase(
        _ names: TenantNames, login: TenantLogin, adminURL: PostgresURL, origin: DatabaseOrigin
    ) async throws -> (version: Int, fingerprint: String?) {
        if origin == .existing {
            // A copy an earlier version left half-made still has the retired
            // template layout: ownership is handed over by the admin, which
            // runs nothing of the database's.
            try await DatabaseConnection.with(adminURL.with(database: names.database.name), logger: logger) { connection in
                let retired = TemplateDatabase.retiredOwner
                try await connection.query(
                    PostgresQuery(
                        unsafeSQL: """
                            DO $handover$ BEGIN
                                IF EXISTS (SELECT FROM pg_roles WHERE rolname = '\(retired.name)') THEN
                                    REASSIGN OWNED BY \(retired.quoted) TO \(names.role.quoted);
                                    DROP OWNED BY \(retired.quoted);
                                END IF;
                            END $handover$
                            """),
                    logger: logger)
            }
        }
        return try await DatabaseConnection.with(login, logger: logger) { connection in
            let migrator = Migrator(migrations: migrations)
            if origin == .template || origin == .refreshedTemplate {
                let state = try await migrator.inspect(connection, logger: logger)
                if state.isAhead { return (state.currentVersion, nil) }
                if state.pending.isEmpty, state.drift.isEmpty { return (state.currentVersion, migrations.fingerprint) }
            }
            return (try await migrator.migrate(connection, logger: logger).toVersion, migrations.fingerprint)
        }
    }

    /// Logs the step's time (debug level) and, under fault injection, dies.
    func finished(_ step: ProvisioningStep, slug: TenantSlug, since started: ContinuousClock.Instant) throws {
        logger.debug(
            "provisioning step done",
            metadata: ["tenant": "\(slug)", "step": "\(step.rawValue)", "elapsed": "\(ContinuousClock.now - started)"])
        guard faultAfterStep == step else { return }
        logger.critical("fault injection: killing the process after step \(step.rawValue)")
        kill(getpid(), SIGKILL)
    }

    // MARK: lifecycle

    /// Blocks the tenant: NOLOGIN on its role, its sessions ended, `suspended`.
    public func suspend(_ slug: TenantSlug, actor: ControlPlane.Actor) async throws -> TenantRecord {
        try await changeLogin(slug, actor: actor, action: .tenantSuspend, from: .active, to: .suspended)
    }

    /// Lifts a suspension: LOGIN again, `active`.
    public func resume(_ slug: TenantSlug, actor: ControlPlane.Actor) async throws -> TenantRecord {
        try await changeLogin(slug, actor: actor, action: .tenantResume, from: .suspended, to: .active)
    }

    private func changeLogin(
        _ slug: TenantSlug, actor: ControlPlane.Actor, action: AdminAction, from: TenantStatus, to: TenantStatus
    ) async throws -> TenantRecord {
        try await withControl { store in
            try await store.withTenantLock(slug) {
                try await store.audited(actor, action, resourceId: slug.rawValue) {
                    let tenant = try await store.requireTenant(slug)
                    guard tenant.status == from || tenant.status == to else {
                        throw ControlError.conflict("tenant \(slug) is \(tenant.status.rawValue), not \(from.rawValue)")
                    }
                    let names = try TenantNames(slug)
                    let adminURL = try await store.adminURL(
                        ofServer: try tenant.requireServer(), secrets: secrets, controlURL: controlURL)
                    try await DatabaseConnection.with(adminURL, logger: logger) { connection in
                        let admin = ServerAdmin(connection: connection, logger: logger)
                        try await admin.setLogin(names.role, allowed: to == .active)
                        if to != .active { try await admin.terminateConnections(to: names.database) }
                    }
                    try await store.setTenantStatus(slug, to)
                    // Runs created before a suspension still wait: wake the workers.
                    if to == .active { try await store.enqueueRuns(of: slug.rawValue) }
                    return try await store.requireTenant(slug)
                }
            }
        }
    }

    /// Finishes every tenant left `provisioning` by an interrupted process.
    public func resumeInterrupted(actor: ControlPlane.Actor) async throws -> [CreateOutcome] {
        let pending = try await withControl { store in
            // An interrupted import is not a creation: the Backup module rolls it back.
            try await store.tenants().filter { $0.status == .provisioning && $0.provisioningStep != "importing" }
        }
        var outcomes: [CreateOutcome] = []
        for tenant in pending {
            let slug = try TenantSlug(tenant.id)
            do {
                outcomes.append(try await create(slug, name: tenant.name, server: tenant.server, actor: actor))
            } catch {
                logger.error("could not finish provisioning", metadata: ["tenant": "\(slug)", "error": "\(OperatorFailure(error).message)"])
            }
        }
        return outcomes
    }

    /// Brings a server's template to the current tenant migrations and records
    /// it; a template that does not exist yet is left to the next `create`.
    public func refreshTemplate(server: String, adminURL: PostgresURL, store: ControlStore) async throws -> Bool {
        let exists = try await DatabaseConnection.with(adminURL, logger: logger) { connection in
            try await ServerAdmin(connection: connection, logger: logger).databaseExists(templateDatabase)
        }
        guard exists else { return false }
        let outcome = try await TemplateDatabase(database: templateDatabase, migrations: migrations, logger: logger)
            .ensureCurrent(adminURL: adminURL)
        if case .ahead(let version) = outcome {
            throw MigrationError.binaryBehindFleet(knows: migrations.latestVersion, fleetAt: version)
        }
        try await store.setTemplate(server: server, version: migrations.latestVersion, fingerprint: migrations.fingerprint)
        return true
    }

    var trees: TenantTrees { TenantTrees(root: storageRoot, logger: logger) }

    func withControl<Result: Sendable>(_ body: (ControlStore) async throws -> Result) async throws -> Result {
        try await ControlStore.withConnection(pool: controlPool, url: controlURL, logger: logger, body)
    }
}

/// The steps of `create`, in order.
public enum ProvisioningStep: String, Sendable, Codable {
    case registered, role, database, migrate
    /// A spare was taken for the tenant (the intent is recorded); not renamed yet.
    case spareTaken = "spare_taken"
    /// The spare is the tenant's database and role; the tenant is not active yet.
    case spareRenamed = "spare_renamed"
}

/// A tenant's database and role names, validated as SQL identifiers.
public struct TenantNames: Sendable {
    public let database: SQLIdentifier
    public let role: SQLIdentifier

    public init(_ slug: TenantSlug) throws {
        database = try SQLIdentifier(slug.databaseName)
        role = try SQLIdentifier(slug.roleName)
    }
}

extension TenantRecord {
    public func requireServer() throws -> String {
        guard let server else { throw ControlError.conflict("tenant \(id) has no database server") }
        return server
    }
}
