import ArtifactStore
import ControlPlane
import Core
import Tar
import Foundation
import Provisioner
import Migrations
import Logging
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// What an export wrote.
public struct ExportReport: Sendable, Codable, Equatable {
    public var tenant: String
    public var file: String
    public var bytes: Int64
    public var databaseBytes: Int64
    public var artifacts: Int
    public var artifactBytes: Int64
    public var schemaVersion: Int
    /// The moment the archive is as of. Writes went on throughout.
    public var snapshotAt: Date
    public var durationMilliseconds: Int
}

/// `tenant export`: one archive with the tenant's database, the files its
/// rows reference and a manifest, all as of one snapshot, with no pause to
/// the tenant's writes. Every file is checked against the digest its row
/// records as it is archived; a mismatch or a missing file fails the export.
/// The tenant's lock is held throughout, which keeps the artifact sweep off
/// its tree, so no file the snapshot references disappears under the export.
public struct TenantExporter: Sendable {
    let context: BackupContext

    public init(context: BackupContext) {
        self.context = context
    }

    public func export(
        _ slug: TenantSlug, to output: String, actor: ControlPlane.Actor, progress: ProgressReporter = { _ in }
    ) async throws -> ExportReport {
        let started = ContinuousClock.now
        let output = URL(fileURLWithPath: output).standardizedFileURL.path
        guard !FileManager.default.fileExists(atPath: output) else { throw BackupError.outputExists(output) }
        let directory = (output as NSString).deletingLastPathComponent
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw BackupError.fileSystem("the directory \(directory) does not exist")
        }
        let context = self.context
        return try await context.withControl { store in
            try await store.withTenantLock(slug) {
                try await store.audited(
                    actor, .tenantExport, resourceId: slug.rawValue,
                    details: ["file": (output as NSString).lastPathComponent]
                ) {
                    try await context.liftAbandonedFence(slug, store: store)
                    let tenant = try await store.requireTenant(slug)
                    guard tenant.status == .active || tenant.status == .suspended else {
                        throw ControlError.conflict("tenant \(slug) is \(tenant.status.rawValue); only active or suspended tenants are exported")
                    }
                    let server = try tenant.requireServer()
                    let work = try context.workDirectory("exports")
                    defer { try? FileManager.default.removeItem(atPath: work) }

                    progress("\(slug): dumping the database (writes go on)")
                    let snapshot = try await context.withTenantLogin(tenant, server: server, store: store) {
                        try await context.snapshot($0, into: work)
                    }
                    progress("\(slug): archiving the database and \(snapshot.references.count) referenced files")
                    let writer = ArchiveWriter(
                        output: output, trees: context.trees, slug: slug,
                        tenant: tenant, snapshot: snapshot, signer: context.signer)
                    let written = try await NIOThreadPool.singleton.runIfActive { try writer.write() }
                    return ExportReport(
                        tenant: slug.rawValue, file: output, bytes: written.archiveBytes,
                        databaseBytes: written.databaseBytes, artifacts: written.artifacts,
                        artifactBytes: written.artifactBytes, schemaVersion: written.schemaVersion,
                        snapshotAt: snapshot.takenAt,
                        durationMilliseconds: (ContinuousClock.now - started).milliseconds)
                }
            }
        }
    }
}

/// Writes the archive (blocking file I/O: run it off the event loops) into a
/// hidden partial file beside `output`, and links it into place only when it
/// is complete, so `output` is either absent or a whole archive.
struct ArchiveWriter: Sendable {
    struct Written: Sendable {
        var archiveBytes: Int64
        var databaseBytes: Int64
        var artifacts: Int
        var artifactBytes: Int64
        var schemaVersion: Int
    }

    let output: String
    let trees: TenantTrees
    let slug: TenantSlug
    let tenant: TenantRecord
    let snapshot: DatabaseSnapshot
    let signer: ArchiveSigner

    func write() throws -> Written {
        let directory = (output as NSString).deletingLastPathComponent
        let partial = URL(fileURLWithPath: directory)
            .appendingPathComponent(".\((output as NSString).lastPathComponent).partial-\(UUID().uuidString.prefix(8))").path
        defer { unlink(partial) }
        let writer = try TarWriter(creating: partial)
        var files: [ArchiveManifest.File] = []
        let database = try writer.addFile(named: ArchiveManifest.databaseFileName, contentsOf: snapshot.dumpFile)
        files.append(.init(path: ArchiveManifest.databaseFileName, size: database.size, sha256: database.sha256))

        // Exactly the files the snapshot's rows reference: a file written
        // since (its row not in the snapshot) is not the archive's.
        var missing: [String] = []
        var differing: [String] = []
        var artifactBytes: Int64 = 0
        let tenantDirectory = trees.layout.tenantDirectory(slug)
        for (path, expected) in snapshot.references.sorted(by: { $0.key < $1.key }) {
            let relative = String(path.dropFirst(slug.rawValue.count + 1))
            let member = "\(ArchiveManifest.artifactsDirectory)/\(relative)"
            let source = "\(tenantDirectory)/\(relative)"
            var info = stat()
            guard lstat(source, &info) == 0 else {
                missing.append(relative)
                continue
            }
            let digest = try writer.addFile(named: member, contentsOf: source)
            files.append(.init(path: member, size: digest.size, sha256: digest.sha256))
            artifactBytes += digest.size
            if !expected.isEmpty, expected != digest.sha256 { differing.append(relative) }
        }
        guard differing.isEmpty, missing.isEmpty else {
            throw BackupError.inconsistentArtifacts(
                [
                    differing.isEmpty ? nil : "\(differing.count) differ from their recorded digest: \(differing.prefix(3).joined(separator: ", "))",
                    missing.isEmpty ? nil : "\(missing.count) referenced but missing: \(missing.prefix(3).joined(separator: ", "))",
                ].compactMap { $0 }.joined(separator: "; "))
        }

        let schemaVersion = snapshot.migrations.last?.version ?? 0
        let manifest = ArchiveManifest(
            format: ArchiveManifest.format, formatVersion: ArchiveManifest.currentFormatVersion, createdAt: Date(),
            snapshotAt: snapshot.takenAt, tenant: .init(
                id: tenant.id, name: tenant.name, status: tenant.status.rawValue, server: tenant.server,
                createdAt: tenant.createdAt),
            schema: .init(
                version: schemaVersion,
                migrations: snapshot.migrations.map { .init(version: $0.version, name: $0.name, sha256: $0.checksum) }),
            database: "pg_dump --format=custom (restore with pg_restore)",
            files: files, referencedArtifacts: snapshot.references.count)
        let manifestBytes = Array(try ArchiveManifest.encoder.encode(manifest))
        _ = try writer.addFile(named: ArchiveManifest.fileName, bytes: manifestBytes)
        _ = try writer.addFile(
            named: ArchiveManifest.signatureFileName, bytes: Array((signer.signature(of: manifestBytes) + "\n").utf8))
        try writer.finish()
        guard link(partial, output) == 0 else {
            let code = errno
            if code == EEXIST { throw BackupError.outputExists(output) }
            throw BackupError.fileSystem("cannot create \(output): \(String(cString: strerror(code)))")
        }
        var info = stat()
        let size = stat(output, &info) == 0 ? Int64(info.st_size) : 0
        return Written(
            archiveBytes: size, databaseBytes: database.size, artifacts: files.count - 1,
            artifactBytes: artifactBytes, schemaVersion: schemaVersion)
    }
}

extension Duration {
    var milliseconds: Int { Int(components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000) }
}
