#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Core
import Foundation
import Logging

/// Whole tenant trees, for the lifecycle around the store: provisioning makes
/// a tenant's tree empty, deletion renames it to its tombstone (and back, on
/// undelete) and purges it, an import places a staged tree, an export lists
/// it. Single files are read and written through `TenantArtifacts`. Nothing
/// here replaces a path that exists: every move is `rename(2)` onto a name
/// that was checked to be free, and what stands where a new tree belongs is
/// moved aside to `.orphaned/`, never removed.
public struct TenantTrees: Sendable {
    public let layout: StorageLayout
    let logger: Logger

    public init(root: String, logger: Logger) {
        layout = StorageLayout(root: root)
        self.logger = logger
    }

    /// Whether the tenant's live tree is in place (a stopped, deleted tenant's is not).
    public func hasTree(_ slug: TenantSlug) -> Bool {
        exists(layout.tenantDirectory(slug))
    }

    public func hasTombstone(_ slug: TenantSlug) -> Bool {
        exists(layout.tombstone(slug))
    }

    /// Before a tenant's first activation: its tree exists and is empty.
    /// Anything already at its path (an earlier tenant of the same id, a copy
    /// an operator put there) is moved to `.orphaned/` for the operator.
    public func prepareEmpty(_ slug: TenantSlug) async throws(ArtifactError) {
        let path = layout.tenantDirectory(slug)
        if let contents = try? FileManager.default.contentsOfDirectory(atPath: path), !contents.isEmpty {
            let aside = layout.orphaned(slug)
            logger.warning(
                "files were already where the new tenant's tree belongs; moved aside",
                metadata: ["tenant": "\(slug)", "moved_to": "\(aside)"])
            try move(path, to: aside)
        }
        try await ArtifactStore(root: layout.root, logger: logger).tenant(slug.rawValue).createDirectory()
    }

    /// Renames the live tree to the tombstone, so a late writer finds no
    /// tenant directory. A tree made after the tombstone (by an earlier
    /// version) is moved aside instead. Idempotent.
    public func entomb(_ slug: TenantSlug) throws(ArtifactError) {
        let live = layout.tenantDirectory(slug)
        guard exists(live) else { return }
        try move(live, to: hasTombstone(slug) ? layout.orphaned(slug) : layout.tombstone(slug))
    }

    /// Brings the tombstone back as the live tree (or makes an empty tree when
    /// there is none). The caller has checked that not both exist.
    public func revive(_ slug: TenantSlug) throws(ArtifactError) {
        let live = layout.tenantDirectory(slug)
        if hasTombstone(slug) {
            try move(layout.tombstone(slug), to: live)
        } else if !exists(live) {
            try Storage(root: layout.root, logger: logger).createTenantDirectory(slug.rawValue)
        }
    }

    /// Removes the tenant's live tree and (for a purge) its tombstone;
    /// whether there was any.
    public func remove(_ slug: TenantSlug, tombstoneToo: Bool = true) throws(ArtifactError) -> Bool {
        var removed = false
        let paths = [layout.tenantDirectory(slug)] + (tombstoneToo ? [layout.tombstone(slug)] : [])
        for path in paths where exists(path) {
            do {
                try FileManager.default.removeItem(atPath: path)
            } catch {
                throw .storageFailure("cannot remove \(relative(path)): \(error.localizedDescription)")
            }
            removed = true
        }
        return removed
    }

    /// Removes an export job's kept archive; whether there was one.
    public func removeExportArchive(job: UUID) throws(ArtifactError) -> Bool {
        let archive = layout.exportArchive(job: job)
        if unlink(archive) == 0 { return true }
        guard errno == ENOENT else {
            throw .storageFailure("cannot remove the export archive of job \(job): \(POSIX.describe(errno))")
        }
        return false
    }

    /// Makes `staged` (a directory on the storage root's filesystem) the
    /// tenant's tree, in place of the empty one `prepareEmpty` made. Fails,
    /// changing nothing, when the tree is not empty.
    public func place(_ staged: String, as slug: TenantSlug) throws(ArtifactError) {
        let target = layout.tenantDirectory(slug)
        guard rmdir(target) == 0 else {
            throw .storageFailure("cannot replace the tree of \(slug): \(POSIX.describe(errno))")
        }
        guard rename(staged, target) == 0 else {
            let code = errno
            _ = mkdir(target, Storage.directoryMode)
            throw .storageFailure("cannot place the tree of \(slug) in the storage root: \(POSIX.describe(code))")
        }
    }

    /// Every regular file of the tenant's tree, relative to it, sorted; the
    /// store's own dot-files (partial writes, digest caches keyed to inodes)
    /// stay out. A symbolic link or any other kind of file is refused, as the
    /// store never makes one. Walked by descriptor, never by path.
    public func files(of slug: TenantSlug) throws(ArtifactError) -> [String] {
        let storage = Storage(root: layout.root, logger: logger)
        let top: Descriptor
        do {
            top = try storage.openDirectory([slug.rawValue], creating: false)
        } catch .notFound {
            return []
        }
        var found: [String] = []
        try walk(top, prefix: "", storage: storage, tenant: slug.rawValue, into: &found)
        return found.sorted()
    }

    private func walk(
        _ directory: Descriptor, prefix: String, storage: Storage, tenant: String, into found: inout [String]
    ) throws(ArtifactError) {
        for name in try storage.entries(in: directory, path: "\(tenant)/\(prefix)") where !name.hasPrefix(".") {
            let relative = prefix.isEmpty ? name : "\(prefix)/\(name)"
            var info = stat()
            guard fstatat(directory.rawValue, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else {
                throw .storageFailure("cannot inspect \(tenant)/\(relative): \(POSIX.describe(errno))")
            }
            switch info.st_mode & S_IFMT {
            case S_IFDIR:
                let fd = POSIX.openat(directory.rawValue, name, Storage.directoryFlags)
                guard fd >= 0 else { throw .storageFailure("cannot open \(tenant)/\(relative): \(POSIX.describe(errno))") }
                try walk(Descriptor(fd), prefix: relative, storage: storage, tenant: tenant, into: &found)
            case S_IFREG:
                found.append(relative)
            default:
                throw .storageFailure("\(tenant)/\(relative) in the artifact store is not a regular file or directory")
            }
        }
    }

    /// `rename(2)`, making the target's parent first; never over an existing path.
    private func move(_ path: String, to target: String) throws(ArtifactError) {
        try makeDirectory((target as NSString).deletingLastPathComponent)
        guard !exists(target) else { throw .storageFailure("\(relative(target)) already exists") }
        guard rename(path, target) == 0 else {
            throw .storageFailure("cannot move \(relative(path)) to \(relative(target)): \(POSIX.describe(errno))")
        }
    }

    private func makeDirectory(_ path: String) throws(ArtifactError) {
        do {
            try FileManager.default.createDirectory(
                atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw .storageFailure("cannot create \(relative(path)): \(error.localizedDescription)")
        }
    }

    private func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// Paths in messages are relative to the storage root, as everywhere in the store.
    private func relative(_ path: String) -> String {
        let root = URL(fileURLWithPath: layout.root).path + "/"
        return path.hasPrefix(root) ? String(path.dropFirst(root.count)) : path
    }
}
