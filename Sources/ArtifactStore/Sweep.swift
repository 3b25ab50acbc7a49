#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Core
import Foundation

/// A file the sweep may remove, if no row refers to it.
public struct SweepCandidate: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// `output.json` or an upload: removed only when no row refers to its path.
        case stored
        /// The store's own leftovers of a crash (`.tmp-*`, `.aside-*`) and
        /// digest sidecars whose file is gone: never referenced by a row.
        case leftover
    }

    /// Relative to the storage root (`{tenant}/{run}/{step}/…`).
    public let path: String
    public let kind: Kind
}

extension TenantArtifacts {
    /// The tenant's files last changed before `cutoff`: stored files (to be
    /// checked against the rows) and the store's leftovers. Blocking
    /// directory walks run on the I/O thread pool.
    public func sweepCandidates(changedBefore cutoff: Date) async throws(ArtifactError) -> [SweepCandidate] {
        let storage = self.storage
        let tenantID = self.tenantID
        return try await BlockingIO.run { () throws(ArtifactError) in
            try Sweep(storage: storage, tenantID: tenantID, cutoff: cutoff.timeIntervalSince1970).candidates()
        }
    }

    /// Removes a candidate. The caller checked, for a stored file, that no
    /// row refers to it; a leftover needs no check.
    public func sweep(_ candidate: SweepCandidate) async throws(ArtifactError) {
        let storage = self.storage
        let tenantID = self.tenantID
        try await BlockingIO.run { () throws(ArtifactError) in
            let parts = candidate.path.split(separator: "/").map(String.init)
            guard parts.count >= 4, parts[0] == tenantID else { throw .invalidName }
            let directory = try storage.openDirectory(Array(parts.dropLast()), creating: false)
            guard POSIX.retrying({ unlinkat(directory.rawValue, parts[parts.count - 1], 0) }) == 0 || errno == ENOENT else {
                throw .storageFailure("cannot remove \(candidate.path): \(POSIX.describe(errno))")
            }
        }
    }
}

/// One walk of a tenant's tree, through descriptors like every other access:
/// `{run}/{step}/output.json`, `{run}/{step}/artifacts/{name}`, and the
/// store's own dot-files beside them. Anything else is left alone.
private struct Sweep {
    let storage: Storage
    let tenantID: String
    let cutoff: Double

    func candidates() throws(ArtifactError) -> [SweepCandidate] {
        let root: Descriptor
        do {
            root = try storage.openDirectory([tenantID], creating: false)
        } catch .notFound {
            return []
        }
        var found: [SweepCandidate] = []
        for run in try storage.entries(in: root, path: tenantID) where ArtifactNames.isRunID(run) {
            guard let runDirectory = try? storage.openDirectory([tenantID, run], creating: false) else { continue }
            for step in try storage.entries(in: runDirectory, path: "\(tenantID)/\(run)") where ArtifactNames.isStep(step) {
                let stepPath = [tenantID, run, step]
                guard let stepDirectory = try? storage.openDirectory(stepPath, creating: false) else { continue }
                found += try files(in: stepDirectory, path: stepPath, stored: { $0 == ArtifactNames.outputFileName })
                let uploads = stepPath + [ArtifactNames.artifactsDirectory]
                if let directory = try? storage.openDirectory(uploads, creating: false) {
                    found += try files(in: directory, path: uploads, stored: ArtifactNames.isArtifactName)
                }
            }
        }
        return found
    }

    private func files(in directory: Descriptor, path: [String], stored isStored: (String) -> Bool)
        throws(ArtifactError) -> [SweepCandidate]
    {
        let relative = path.joined(separator: "/")
        let names = try storage.entries(in: directory, path: relative)
        var found: [SweepCandidate] = []
        for name in names {
            var info = stat()
            guard fstatat(directory.rawValue, name, &info, AT_SYMLINK_NOFOLLOW) == 0, POSIX.isRegularFile(info),
                Double(info.st_mtim.tv_sec) < cutoff
            else { continue }
            let kind: SweepCandidate.Kind
            if isStored(name) {
                kind = .stored
            } else if name.hasPrefix(PendingFile.temporaryPrefix) || name.hasPrefix(FoundFile.asidePrefix) {
                kind = .leftover
            } else if name.hasPrefix(DigestRecord.prefix), !names.contains(String(name.dropFirst(DigestRecord.prefix.count))) {
                kind = .leftover
            } else {
                continue
            }
            found.append(SweepCandidate(path: "\(relative)/\(name)", kind: kind))
        }
        return found
    }
}
