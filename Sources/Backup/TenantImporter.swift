import ArtifactStore
import ControlPlane
import Core
import Foundation
import Logging
import Migrations
import NIOPosix
import PostgresNIO
import Provisioner

#if canImport(Glibc)
import Glibc
#endif

/// What an import created.
public struct ImportReport: Sendable, Codable, Equatable {
    public var tenant: String
    /// The tenant id the archive was exported from.
    public var sourceTenant: String
    public var server: String
    public var archiveSchemaVersion: Int
    public var schemaVersion: Int
    /// Migrations applied after the restore (the archive was older).
    public var migratedForward: [String]
    public var artifacts: Int
    /// Whether the archive's manifest carries this deployment's signature.
    public var signedByThisDeployment: Bool
    public var durationMilliseconds: Int
}

/// `tenant import`: every member of the archive is unpacked into a private
/// staging directory and checked against the manifest, and the manifest's
/// schema against this binary's migrations, before anything is created. Then
/// a new role and database, the restore (as the new role), the artifact
/// paths rewritten to the new tenant id, the migrations the archive lacks, the
/// artifact tree renamed into place, `active`. No API key comes along: the
/// tenant gets new ones. A failure after creation began drops what was created.
public struct TenantImporter: Sendable {
    public static let provisioningStep = Provisioner.importingStep
    let context: BackupContext

    public init(context: BackupContext) {
        self.context = context
    }

    public func importArchive(
        _ archive: String, as requested: TenantSlug?, server requestedServer: String?, requireSigned: Bool = false,
        actor: ControlPlane.Actor, progress: ProgressReporter = { _ in }
    ) async throws -> ImportReport {
        let started = ContinuousClock.now
        let context = self.context
        guard FileManager.default.isReadableFile(atPath: archive) else {
            throw BackupError.fileSystem("cannot read \(archive)")
        }
        let stage = try context.workDirectory("imports")
        defer { try? FileManager.default.removeItem(atPath: stage) }
        progress("verifying \(archive)")
        let stager = ArchiveStager(archive: archive, directory: stage)
        let staged = try await NIOThreadPool.singleton.runIfActive { try stager.stage() }
        let signed = staged.signature.map { context.signer.isValid($0, for: staged.manifestBytes) } ?? false
        if !signed {
            let why = staged.signature == nil ? "it carries no signature" : "its signature does not match this deployment's key"
            guard !requireSigned else { throw BackupError.unsignedArchive(why) }
            progress("note: \(why); importing it anyway, as an untrusted archive (--require-signed refuses such archives)")
        } else {
            progress("the archive carries this deployment's signature")
        }
        try checkSchema(staged.manifest.schema)
        let source: TenantSlug
        do {
            source = try TenantSlug(staged.manifest.tenant.id)
        } catch {
            throw BackupError.invalidArchive("its manifest names an invalid tenant id")
        }
        let slug = requested ?? source

        return try await context.withControl { store in
            try await store.withTenantLock(slug) {
                try await store.audited(
                    actor, .tenantImport, resourceId: slug.rawValue,
                    details: ["source_tenant": source.rawValue, "signed_by_this_deployment": signed ? "true" : "false"]
                ) {
                    let existing = try await store.tenant(slug)
                    if let existing, [.active, .suspended, .deleting].contains(existing.status) {
                        throw ControlError.alreadyExists("tenant \(slug) already exists (import it under another id: --as NEW-ID)")
                    }
                    let server = try await Self.place(requestedServer, store: store)
                    let adminURL = try await context.adminURL(of: server, store: store)
                    let names = try TenantNames(slug)
                    let databaseURL = adminURL.with(user: names.role.name, password: nil).with(database: names.database.name)
                    try await store.registerTenant(
                        slug, name: staged.manifest.tenant.name, server: server, databaseURL: databaseURL.redacted,
                        existing: existing)
                    // A row left by an earlier attempt may name another server.
                    try await store.setTenantLocation(slug, server: server, databaseURL: databaseURL.redacted)
                    try await store.setProvisioningStep(slug, Self.provisioningStep)
                    do {
                        let applied = try await restore(
                            staged, as: slug, from: source, names: names, adminURL: adminURL, store: store,
                            progress: progress)
                        try await store.setSchemaVersion(slug, context.migrations.latestVersion, fingerprint: context.migrations.fingerprint)
                        try await store.activateTenant(slug)
                        return ImportReport(
                            tenant: slug.rawValue, sourceTenant: source.rawValue, server: server,
                            archiveSchemaVersion: staged.manifest.schema.version,
                            schemaVersion: context.migrations.latestVersion, migratedForward: applied,
                            artifacts: staged.artifacts, signedByThisDeployment: signed,
                            durationMilliseconds: (ContinuousClock.now - started).milliseconds)
                    } catch {
                        let reason = OperatorFailure(error).message
                        try? await Self.discard(slug, names: names, adminURL: adminURL, context: context)
                        try? await store.setProvisioningStep(slug, nil)
                        try? await store.setTenantStatus(slug, .failed, error: "import failed: \(reason)")
                        throw BackupError.importFailed(slug: slug.rawValue, reason: reason)
                    }
                }
            }
        }
    }

    /// The archive's schema must be one this binary's migrations continue:
    /// no version it lacks, and the same checksum for every version it has.
    private func checkSchema(_ schema: ArchiveManifest.Schema) throws {
        let known = context.migrations.latestVersion
        guard schema.version <= known else { throw BackupError.newerSchema(archive: schema.version, known: known) }
        for migration in schema.migrations {
            guard let local = context.migrations.file(version: migration.version) else {
                throw BackupError.newerSchema(archive: migration.version, known: known)
            }
            guard local.checksum == migration.sha256 else {
                throw BackupError.invalidArchive(
                    "its migration \(migration.version) (\(migration.name)) differs from this binary's \(local.fileName)")
            }
        }
    }

    static func place(_ requested: String?, store: ControlStore) async throws -> String {
        guard let requested else { return try await store.pickServer().name }
        let server = try await store.server(named: requested)
        try server.requireRoomForATenant()
        return server.name
    }

    /// Role, database, restore, paths, migrations, artifacts. Returns the
    /// migrations applied after the restore.
    ///
    /// The dump is the tenant's own SQL (a customer may hand back an edited
    /// export), so everything that runs inside the new database — the restore,
    /// the path rewrite, the migrations, the check of what was restored — logs
    /// in as the new tenant's role. The admin connection only creates the role
    /// and the database and, after the restore, clears whatever session
    /// defaults and password the dump set for them.
    private func restore(
        _ staged: ArchiveStager.Staged, as slug: TenantSlug, from source: TenantSlug, names: TenantNames,
        adminURL: PostgresURL, store: ControlStore, progress: ProgressReporter
    ) async throws -> [String] {
        let context = self.context
        let logger = context.logger
        let password = RandomToken.urlSafe(bytes: 32)
        try await store.storeSealedRolePassword(slug, try context.secrets.seal(password, owner: slug.rawValue))
        let verifier = try ScramVerifier.make(password: password)
        try await DatabaseConnection.with(adminURL, logger: logger) { connection in
            let admin = ServerAdmin(connection: connection, logger: logger)
            // Left by an import that died here: this id serves nothing (checked above).
            try await admin.terminateConnections(to: names.database)
            try await admin.dropDatabase(names.database)
            try await admin.ensureLoginRole(names.role, scramVerifier: verifier)
            try await admin.createDatabase(names.database, owner: names.role, template: try SQLIdentifier("template0"))
            try await admin.restrictConnect(names.database, to: names.role)
        }
        progress("\(slug): restoring the database")
        let login = TenantLogin(slug: slug, password: password, server: adminURL)
        try await context.tools().restore(staged.databaseFile, into: login)
        // The dump may have set session defaults or a password for the role
        // and database; clear them before tenantplane logs in again.
        try await DatabaseConnection.with(adminURL, logger: logger) { connection in
            try await ServerAdmin(connection: connection, logger: logger)
                .reclaim(names.role, database: names.database, scramVerifier: verifier)
        }
        if slug != source {
            // Artifact rows hold paths under the tenant id. The update fires
            // the tenant's triggers, which may change this session's settings:
            // it is closed afterwards and nothing else runs on it.
            try await DatabaseConnection.with(login, logger: logger) { connection in
                let old = source.rawValue + "/"
                let new = slug.rawValue + "/"
                try await connection.query(
                    """
                    UPDATE artifacts SET file_path = \(new) || substr(file_path, \(old.utf8.count + 1)::int)
                    WHERE left(file_path, \(old.utf8.count)::int) = \(old)
                    """,
                    logger: logger)
            }
        }
        let applied = try await DatabaseConnection.with(login, logger: logger) { connection in
            let report = try await Migrator(migrations: context.migrations).migrate(connection, logger: logger)
            return report.applied.map(\.file)
        }
        // Checked on a session no migration has run on (and so no trigger).
        try await DatabaseConnection.with(login, logger: logger) { connection in
            try await Self.checkReferences(connection, tenant: slug, against: staged.manifest, logger: logger)
        }
        try await DatabaseConnection.with(adminURL, logger: logger) { connection in
            try await ServerAdmin(connection: connection, logger: logger)
                .reclaim(names.role, database: names.database, scramVerifier: verifier)
        }
        // The new tenant's tree starts empty (anything there is moved aside)
        // and then is the archive's.
        try await context.trees.prepareEmpty(slug)
        if let artifacts = staged.artifactsDirectory {
            progress("\(slug): placing \(staged.artifacts) artifacts")
            try context.trees.place(artifacts, as: slug)
        }
        return applied
    }

    /// Every `artifacts` row of the restored database must name a file of the
    /// new tenant's own tree that the archive carries, with the digest the
    /// archive's manifest (checked against its bytes) records for it.
    static func checkReferences(
        _ connection: PostgresConnection, tenant: TenantSlug, against manifest: ArchiveManifest, logger: Logger
    ) async throws {
        let prefix = tenant.rawValue + "/"
        let carried = Dictionary(
            manifest.files.compactMap { file -> (String, String)? in
                guard file.path.hasPrefix(ArchiveManifest.artifactsDirectory + "/") else { return nil }
                return (prefix + file.path.dropFirst(ArchiveManifest.artifactsDirectory.utf8.count + 1), file.sha256.lowercased())
            },
            uniquingKeysWith: { first, _ in first })
        let rows = try await connection.query("SELECT file_path, digest FROM public.artifacts", logger: logger)
        var foreign = 0
        var unmatched = 0
        for try await (path, digest) in rows.decode((String, String?).self) {
            guard StoredArtifactPath.isInside(path, tenant: tenant.rawValue) else {
                foreign += 1
                continue
            }
            if digest == nil || carried[path] != digest { unmatched += 1 }
        }
        guard foreign == 0 else { throw BackupError.foreignArtifactPaths(foreign) }
        guard unmatched == 0 else {
            throw BackupError.invalidArchive(
                "\(unmatched) artifact row(s) name a file the archive does not carry with that digest")
        }
    }

    /// Drops what an import of `slug` created: database, role, artifact tree.
    static func discard(_ slug: TenantSlug, names: TenantNames, adminURL: PostgresURL, context: BackupContext)
        async throws
    {
        _ = try? context.trees.remove(slug, tombstoneToo: false)
        try await DatabaseConnection.with(adminURL, logger: context.logger) { connection in
            let admin = ServerAdmin(connection: connection, logger: context.logger)
            try await admin.terminateConnections(to: names.database)
            try await admin.dropDatabase(names.database)
            try await admin.dropRole(names.role)
        }
    }

    /// Imports a process died in the middle of: their tenant is marked failed
    /// and what they created is dropped, so the id can be imported again.
    /// Skips tenants whose lock is held (an import is running); one that fails
    /// is logged and left for next time, and the others are still done.
    public func abandonInterrupted() async throws -> [String] {
        let context = self.context
        return try await context.withControl { store in
            var abandoned: [String] = []
            for tenant in try await store.tenants()
            where tenant.status == .provisioning && tenant.provisioningStep == Self.provisioningStep {
                let slug = try TenantSlug(tenant.id)
                do {
                    let done: Bool? = try await store.withTenantLockIfFree(slug) {
                        if let server = tenant.server {
                            let adminURL = try await context.adminURL(of: server, store: store)
                            try await Self.discard(slug, names: try TenantNames(slug), adminURL: adminURL, context: context)
                        }
                        try await store.setProvisioningStep(slug, nil)
                        try await store.setTenantStatus(slug, .failed, error: "import interrupted; run tenant import again")
                        return true
                    }
                    if done == true { abandoned.append(tenant.id) }
                } catch {
                    context.logger.error(
                        "could not drop an interrupted import; trying again later",
                        metadata: ["tenant": "\(slug)", "error": "\(OperatorFailure(error).message)"])
                }
            }
            return abandoned
        }
    }
}
