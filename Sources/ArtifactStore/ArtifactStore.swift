// ArtifactStore: step outputs and uploaded artifacts on disk, by path and
// sha256 digest, under storage/{tenant_id}/{run_id}/{step}/. Writes are atomic
// and write-once (temporary file, fsync, link(2) under a name that must be
// free, fsync of the directory): bytes a row describes are never replaced;
// reads verify the
// digest before the first byte leaves; every path component is validated so no
// input can leave its tenant's directory. It knows nothing of databases or HTTP.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Core
import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix

/// The artifact store under one storage root (`TENANTPLANE_STORAGE`). All
/// access goes through a tenant: `store.tenant("acme")`.
public struct ArtifactStore: Sendable {
    public let root: String
    let logger: Logger

    /// - Parameters:
    ///   - root: the storage root; created (one level, mode 0750) on the first write.
    ///   - logger: where integrity failures and refused files are reported.
    public init(root: String, logger: Logger = Logger(label: "tenantplane.artifacts")) {
        self.root = root
        self.logger = logger
    }

    /// A tenant's own corner of the store; the tenant id must match
    /// `^[a-z][a-z0-9-]{1,38}[a-z0-9]$`.
    public func tenant(_ tenantID: String) throws(ArtifactError) -> TenantArtifacts {
        guard ArtifactNames.isTenantID(tenantID) else { throw .invalidName }
        var logger = logger
        logger[metadataKey: "tenant"] = "\(tenantID)"
        return TenantArtifacts(tenantID: tenantID, storage: Storage(root: root, logger: logger))
    }
}

/// One tenant's files: `{tenant}/{run}/{step}/output.json` and
/// `{tenant}/{run}/{step}/artifacts/{name}`. Every path it takes or returns is
/// relative to the storage root and is checked to lie under this tenant.
public struct TenantArtifacts: Sendable {
    public let tenantID: String
    let storage: Storage

    /// Where a step's output lives: `{tenant}/{run}/{step}/output.json`.
    public func outputPath(run: UUID, step: String) throws(ArtifactError) -> String {
        try ArtifactLocation.output(tenant: tenantID, run: run, step: step).path
    }

    /// Where an artifact lives: `{tenant}/{run}/{step}/artifacts/{name}`.
    public func artifactPath(run: UUID, step: String, name: String) throws(ArtifactError) -> String {
        try ArtifactLocation.artifact(tenant: tenantID, run: run, step: step, name: name).path
    }

    /// Makes the tenant's directory (idempotent): provisioning's job, and
    /// only its; the store's writes never make it (see `Storage.openDirectory`).
    public func createDirectory() async throws(ArtifactError) {
        let storage = self.storage
        let tenantID = self.tenantID
        try await BlockingIO.run { () throws(ArtifactError) in try storage.createTenantDirectory(tenantID) }
    }

    /// Atomically writes a step's output.json; returns where and its digest.
    /// Runs on the blocking I/O thread pool (it fsyncs); failures are `ArtifactError`.
    ///
    /// The name is write-once. When it is taken — by bytes a crash left
    /// between the write and the row, or by a worker that lost the run — the
    /// writer asks `judge` (which looks under the run row's lock whether it
    /// still holds the lease and whether a committed row describes those
    /// bytes). Bytes no row describes are cleared only while the lease is
    /// held: they are moved aside to a unique name, judged again, and linked
    /// back if a row describes them after all. A writer whose lease has ended
    /// changes nothing the current holder recorded: `outputTaken`.
    public func writeOutput(
        run: UUID, step: String, contents: [UInt8], judge: @escaping @Sendable (_ digest: String) async throws -> FoundOutput
    ) async throws -> StoredFile {
        let location = try ArtifactLocation.output(tenant: tenantID, run: run, step: step)
        let storage = self.storage
        let (pending, digest) = try await BlockingIO.run { () throws(ArtifactError) in
            let directory = try storage.openDirectory(location.directories, creating: true)
            let pending = try PendingFile(in: directory, directoryPath: location.directoryPath)
            try pending.append(contents)
            return (PendingFileBox(pending), try pending.seal().digest)
        }
        defer { pending.file.discard() }
        for _ in 0..<3 {
            do {
                return try await BlockingIO.run { () throws(ArtifactError) in
                    try pending.file.commit(as: location.fileName, syncDirectory: true)
                    return StoredFile(path: location.path, digest: digest, size: pending.file.size)
                }
            } catch .alreadyExists {
                let found = try await BlockingIO.run { () throws(ArtifactError) in
                    try FoundFile.digest(of: location.fileName, in: pending.file.directory, path: location.path)
                }
                guard try await judge(found) == .unrecorded else { throw ArtifactError.outputTaken }
                let aside = try await BlockingIO.run { () throws(ArtifactError) in
                    try FoundFile.moveAside(location.fileName, in: pending.file.directory, path: location.directoryPath)
                }
                let verdict: FoundOutput
                do {
                    verdict = try await judge(aside.digest)
                } catch {
                    try? await BlockingIO.run { () throws(ArtifactError) in try aside.restore() }
                    throw error
                }
                try await BlockingIO.run { () throws(ArtifactError) in
                    if verdict == .unrecorded { aside.remove() } else { try aside.restore() }
                }
                guard verdict == .unrecorded else { throw ArtifactError.outputTaken }
                storage.logger.notice(
                    "cleared an output.json no committed row describes (left by a crash)",
                    metadata: ["path": "\(location.path)", "digest": "\(aside.digest)"])
            }
        }
        throw ArtifactError.outputTaken
    }

    /// Streams an upload into `{run}/{step}/artifacts/{name}`, hashing while
    /// writing. Refuses with `tooLarge` (leaving nothing under the name, and no
    /// temporary file) as soon as the upload passes `limit` bytes, and with
    /// `alreadyExists` when the name holds a file (names are write-once; that
    /// file and its sidecar stay as they were). Errors of `chunks` and
    /// cancellation are rethrown and leave nothing; the store's own failures
    /// are `ArtifactError`.
    ///
    /// Opening (and creating) the directories, the fsync, the digest sidecar
    /// and the rename run on the blocking I/O thread pool; each chunk is
    /// written from the calling task (a write to the page cache), so chunks of
    /// 64 KiB to 1 MiB keep the system calls few.
    public func writeArtifact<Chunks: AsyncSequence>(
        run: UUID, step: String, name: String, from chunks: Chunks, limit: Int
    ) async throws -> StoredFile where Chunks.Element == ByteBuffer {
        let location = try ArtifactLocation.artifact(tenant: tenantID, run: run, step: step, name: name)
        let storage = self.storage
        let pending = try await BlockingIO.run { () throws(ArtifactError) in
            let directory = try storage.openDirectory(location.directories, creating: true)
            return PendingFileBox(try PendingFile(in: directory, directoryPath: location.directoryPath))
        }.file
        defer { pending.discard() }
        for try await chunk in chunks {
            guard chunk.readableBytes <= limit - pending.size else { throw ArtifactError.tooLarge(limit: limit) }
            try chunk.withUnsafeReadableBytes { (bytes) throws(ArtifactError) in try pending.append(bytes) }
        }
        // A sequence that ends because its task was cancelled may have ended early.
        try Task.checkCancellation()
        let box = PendingFileBox(pending)
        return try await BlockingIO.run { () throws(ArtifactError) in
            let pending = box.file
            let (digest, status) = try pending.seal()
            try pending.commit(as: location.fileName, syncDirectory: false)
            // Written after the link, so a refused upload leaves the existing
            // file's sidecar alone; one lost in a crash is rebuilt on listing.
            try DigestRecord(digest: digest, status: status)
                .write(for: location.fileName, in: pending.directory, directoryPath: location.directoryPath)
            try PendingFile.sync(pending.directory, path: location.directoryPath)
            return StoredFile(path: location.path, digest: digest, size: pending.size)
        }
    }

    /// Removes a file that no committed row describes: an upload whose row
    /// could not be written. The caller has checked that no row refers to it.
    public func removeUnrecorded(path: String) async throws(ArtifactError) {
        let location = try ArtifactLocation.parse(path, tenant: tenantID)
        let storage = self.storage
        try await BlockingIO.run { () throws(ArtifactError) in
            let directory = try storage.openDirectory(location.directories, creating: false)
            guard POSIX.retrying({ unlinkat(directory.rawValue, location.fileName, 0) }) == 0 || errno == ENOENT else {
                throw .storageFailure("cannot remove \(location.path): \(POSIX.describe(errno))")
            }
            _ = POSIX.retrying { unlinkat(directory.rawValue, DigestRecord.sidecarName(for: location.fileName), 0) }
        }
    }

    /// Reads a whole (small) file after checking its sha256 against `digest`:
    /// nothing is returned unless every byte matches. For large files use
    /// `openVerified`, which does not hold the file in memory. Runs on the
    /// blocking I/O thread pool; failures are `ArtifactError`.
    public func readVerified(path: String, digest: String) async throws(ArtifactError) -> [UInt8] {
        try await BlockingIO.run { () throws(ArtifactError) in try readVerifiedBlocking(path: path, digest: digest) }
    }

    private func readVerifiedBlocking(path: String, digest: String) throws(ArtifactError) -> [UInt8] {
        let expected = try ArtifactNames.normalizedDigest(digest)
        let location = try ArtifactLocation.parse(path, tenant: tenantID)
        let (file, status) = try storage.openRegularFile(location)
        var contents: [UInt8] = []
        contents.reserveCapacity(Int(status.st_size))
        var hasher = SHA256()
        let result = POSIX.readAll(file.rawValue) { bytes in
            hasher.update(bufferPointer: bytes)
            contents.append(contentsOf: bytes)
        }
        if case .failure(let failure) = result {
            throw .storageFailure("cannot read \(location.path): \(POSIX.describe(failure.code))")
        }
        try check(Hex.string(hasher.finalize()), against: expected, path: location.path)
        return contents
    }

    /// Opens a file for streaming: hashes it first through the same open
    /// descriptor and refuses on a mismatch; `chunks(size:)` of the result then
    /// yields its bytes from the start, so a rename after the check cannot
    /// change what is sent. The opening and the hashing pass run on the
    /// blocking I/O thread pool; failures are `ArtifactError`.
    public func openVerified(path: String, digest: String) async throws(ArtifactError) -> VerifiedFile {
        try await BlockingIO.run { () throws(ArtifactError) in try openVerifiedBlocking(path: path, digest: digest) }
    }

    private func openVerifiedBlocking(path: String, digest: String) throws(ArtifactError) -> VerifiedFile {
        let expected = try ArtifactNames.normalizedDigest(digest)
        let location = try ArtifactLocation.parse(path, tenant: tenantID)
        let (file, _) = try storage.openRegularFile(location)
        var hasher = SHA256()
        let size: Int
        switch POSIX.readAll(file.rawValue, { hasher.update(bufferPointer: $0) }) {
        case .success(let count): size = count
        case .failure(let failure): throw .storageFailure("cannot read \(location.path): \(POSIX.describe(failure.code))")
        }
        try check(Hex.string(hasher.finalize()), against: expected, path: location.path)
        return VerifiedFile(path: location.path, size: size, digest: expected, descriptor: file, logger: storage.logger)
    }

    /// The artifacts of a step, by name: size and digest. The digest comes from
    /// the `.sha256-{name}` sidecar written with the upload while that still
    /// describes the file (same inode, size and modification time); otherwise
    /// the file is hashed and the sidecar rewritten. A step without artifacts
    /// has an empty list; entries that are not regular files are left out and logged.
    /// Runs on the blocking I/O thread pool (it may hash and rewrite sidecars);
    /// failures are `ArtifactError`.
    public func artifacts(run: UUID, step: String) async throws(ArtifactError) -> [ArtifactEntry] {
        try await BlockingIO.run { () throws(ArtifactError) in try artifactsBlocking(run: run, step: step) }
    }

    private func artifactsBlocking(run: UUID, step: String) throws(ArtifactError) -> [ArtifactEntry] {
        guard ArtifactNames.isStep(step) else { throw .invalidName }
        let directories = [tenantID, ArtifactNames.runComponent(run), step, ArtifactNames.artifactsDirectory]
        let directoryPath = directories.joined(separator: "/")
        let directory: Descriptor
        do {
            directory = try storage.openDirectory(directories, creating: false)
        } catch .notFound {
            return []
        }
        var entries: [ArtifactEntry] = []
        for name in try storage.names(in: directory, path: directoryPath).sorted() {
            let path = directoryPath + "/" + name
            let file: Descriptor
            let status: stat
            do {
                (file, status) = try storage.openRegularFile(name, in: directory, relative: path)
            } catch {
                // Removed since the directory was read, or a symbolic link or
                // special file (refused and logged): not an artifact.
                continue
            }
            let digest: String
            if let record = DigestRecord.read(for: name, in: directory), record.describes(status) {
                digest = record.digest
            } else {
                var hasher = SHA256()
                if case .failure(let failure) = POSIX.readAll(file.rawValue, { hasher.update(bufferPointer: $0) }) {
                    throw .storageFailure("cannot read \(path): \(POSIX.describe(failure.code))")
                }
                digest = Hex.string(hasher.finalize())
                repairSidecar(DigestRecord(digest: digest, status: status), name: name, in: directory, path: directoryPath)
            }
            entries.append(ArtifactEntry(name: name, path: path, size: Int(status.st_size), digest: digest))
        }
        return entries
    }

    private func repairSidecar(_ record: DigestRecord, name: String, in directory: Descriptor, path: String) {
        do {
            try record.write(for: name, in: directory, directoryPath: path)
            try PendingFile.sync(directory, path: path)
        } catch {
            storage.logger.warning(
                "could not rewrite an artifact's digest sidecar", metadata: ["path": "\(path)/\(name)", "error": "\(error)"])
        }
    }

    private func check(_ actual: String, against expected: String, path: String) throws(ArtifactError) {
        guard actual == expected else {
            storage.logger.error(
                "artifact integrity failure: the stored file does not match its recorded digest",
                metadata: ["path": "\(path)", "expected_digest": "\(expected)", "actual_digest": "\(actual)"])
            throw .integrityFailure
        }
    }
}

/// Runs the store's blocking system calls (fsync above all, which can take
/// hundreds of milliseconds) on NIO's blocking I/O thread pool, so that they
/// never hold one of the few threads of Swift's cooperative pool.
///
/// Unlike `NIOThreadPool.runIfActive`, the work is not skipped when the
/// calling task is cancelled: the store's operations behave as they did when
/// they ran inline (a cancelled caller still gets the result or the
/// `ArtifactError`, never a `CancellationError` from here), and the caller
/// always waits for the work to end, so nothing it handed over is used after
/// the call returns.
enum BlockingIO {
    static func run<Value: Sendable>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: @escaping @Sendable () throws(ArtifactError) -> Value
    ) async throws(ArtifactError) -> Value {
        let result: Result<Value, ArtifactError> = await withCheckedContinuation(isolation: isolation) { continuation in
            NIOThreadPool.singleton.submit { state in
                switch state {
                case .active:
                    continuation.resume(returning: Result { () throws(ArtifactError) in try body() })
                case .cancelled:
                    // Only a pool that was shut down; the singleton never is.
                    continuation.resume(returning: .failure(.storageFailure("the blocking I/O thread pool is shut down")))
                }
            }
        }
        return try result.get()
    }
}

/// Carries a `PendingFile` (a non-Sendable class) into and out of the
/// thread-pool closures of `writeArtifact`. `@unchecked Sendable` is safe:
/// the task that owns the upload hands the file over and awaits the closure
/// before touching it again, so one thread at a time uses it.
final class PendingFileBox: @unchecked Sendable {
    let file: PendingFile

    init(_ file: PendingFile) {
        self.file = file
    }
}
