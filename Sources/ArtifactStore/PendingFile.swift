#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Core
import Crypto

/// A file being written: a `.tmp-<16 hex digits>` file in the directory of its
/// final name (valid names never start with '.', so it cannot collide with
/// one), hashed as it is written. `commit` links it in under its final name,
/// which must be free; until then nothing is visible under that name, and a
/// pending file that is never committed removes itself.
final class PendingFile {
    let directory: Descriptor
    let directoryPath: String
    let temporaryName: String
    private var descriptor: Descriptor?
    private var hasher = SHA256()
    private(set) var size = 0
    private var isSettled = false

    static let temporaryPrefix = ".tmp-"

    init(in directory: Descriptor, directoryPath: String) throws(ArtifactError) {
        self.directory = directory
        self.directoryPath = directoryPath
        let flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<8 {
            let name = Self.temporaryPrefix + Self.hex(generator.next())
            let fd = POSIX.openat(directory.rawValue, name, flags, Storage.fileMode)
            if fd >= 0 {
                temporaryName = name
                descriptor = Descriptor(fd)
                return
            }
            guard errno == EEXIST else {
                throw .storageFailure("cannot create a temporary file in \(directoryPath): \(POSIX.describe(errno))")
            }
        }
        throw .storageFailure("cannot find a free temporary file name in \(directoryPath)")
    }

    deinit {
        if !isSettled { removeTemporary() }
    }

    /// Appends and hashes `bytes`.
    func append(_ bytes: UnsafeRawBufferPointer) throws(ArtifactError) {
        guard let descriptor else { throw .storageFailure("write to a closed temporary file in \(directoryPath)") }
        let code = POSIX.writeAll(descriptor.rawValue, bytes)
        guard code == 0 else {
            throw .storageFailure("cannot write a temporary file in \(directoryPath): \(POSIX.describe(code))")
        }
        hasher.update(bufferPointer: bytes)
        size += bytes.count
    }

    func append(_ bytes: [UInt8]) throws(ArtifactError) {
        var failure: ArtifactError?
        bytes.withUnsafeBytes { buffer in
            do throws(ArtifactError) { try append(buffer) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Makes the written bytes durable: fsync of the file; returns its digest
    /// and status (for the digest sidecar). The file stays pending.
    func seal() throws(ArtifactError) -> (digest: String, status: stat) {
        guard let descriptor else { throw .storageFailure("sealing a closed temporary file in \(directoryPath)") }
        guard fsync(descriptor.rawValue) == 0 else {
            throw .storageFailure("cannot sync a temporary file in \(directoryPath): \(POSIX.describe(errno))")
        }
        guard let status = descriptor.status() else {
            throw .storageFailure("cannot inspect a temporary file in \(directoryPath): \(POSIX.describe(errno))")
        }
        return (Hex.string(hasher.finalize()), status)
    }

    /// Links the sealed file in as `name`, which must not exist yet: bytes
    /// under a name are never replaced (`link(2)` fails with EEXIST where a
    /// rename would overwrite), so a file a committed row describes stays as
    /// it is. With `syncDirectory`, fsyncs the directory so the new entry
    /// survives a crash. `alreadyExists` when the name is taken.
    func commit(as name: String, syncDirectory: Bool) throws(ArtifactError) {
        descriptor = nil
        let relative = directoryPath + "/" + name
        guard POSIX.retrying({ linkat(directory.rawValue, temporaryName, directory.rawValue, name, 0) }) == 0 else {
            if errno == EEXIST { throw .alreadyExists }
            throw .storageFailure("cannot link the new file into place at \(relative): \(POSIX.describe(errno))")
        }
        removeTemporary()
        if syncDirectory { try Self.sync(directory, path: directoryPath) }
    }

    /// Renames the sealed file over `name`: only for the store's own files
    /// (digest sidecars), never for bytes a row describes.
    func replace(_ name: String) throws(ArtifactError) {
        descriptor = nil
        guard POSIX.retrying({ renameat(directory.rawValue, temporaryName, directory.rawValue, name) }) == 0 else {
            throw .storageFailure("cannot move the new file into place at \(directoryPath)/\(name): \(POSIX.describe(errno))")
        }
        isSettled = true
    }

    /// Removes the temporary file (idempotent).
    func discard() {
        guard !isSettled else { return }
        removeTemporary()
    }

    static func sync(_ directory: Descriptor, path: String) throws(ArtifactError) {
        guard fsync(directory.rawValue) == 0 else {
            throw .storageFailure("cannot sync the directory \(path): \(POSIX.describe(errno))")
        }
    }

    private func removeTemporary() {
        descriptor = nil
        _ = POSIX.retrying { unlinkat(directory.rawValue, temporaryName, 0) }
        isSettled = true
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

