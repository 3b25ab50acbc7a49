#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Core
import Crypto

/// What the run's lease holder says of bytes found under a step's
/// `output.json` name, judged under the run row's lock.
public enum FoundOutput: Sendable, Equatable {
    /// A committed row describes them: they stay.
    case recorded
    /// The caller holds the lease and no committed row describes them: the
    /// caller may clear them.
    case unrecorded
    /// The caller no longer holds the run: it changes nothing.
    case notHolder
}

/// A file found in the way of a write-once name, and the same file moved
/// aside to a unique name (by `link(2)` there and `unlink(2)` of the name,
/// so nothing is overwritten at either end).
struct FoundFile: Sendable {
    static let asidePrefix = ".aside-"

    let directory: Descriptor
    let directoryPath: String
    let name: String
    let asideName: String
    let digest: String

    static func digest(of name: String, in directory: Descriptor, path: String) throws(ArtifactError) -> String {
        let fd = POSIX.openat(directory.rawValue, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw errno == ENOENT ? .notFound : .storageFailure("cannot open \(path): \(POSIX.describe(errno))") }
        let file = Descriptor(fd)
        var hasher = SHA256()
        if case .failure(let failure) = POSIX.readAll(file.rawValue, { hasher.update(bufferPointer: $0) }) {
            throw .storageFailure("cannot read \(path): \(POSIX.describe(failure.code))")
        }
        return Hex.string(hasher.finalize())
    }

    static func moveAside(_ name: String, in directory: Descriptor, path directoryPath: String) throws(ArtifactError)
        -> FoundFile
    {
        var generator = SystemRandomNumberGenerator()
        let asideName = asidePrefix + String(generator.next() as UInt64, radix: 16)
        guard POSIX.retrying({ linkat(directory.rawValue, name, directory.rawValue, asideName, 0) }) == 0 else {
            throw .storageFailure("cannot move \(directoryPath)/\(name) aside: \(POSIX.describe(errno))")
        }
        let digest = try Self.digest(of: asideName, in: directory, path: "\(directoryPath)/\(asideName)")
        guard POSIX.retrying({ unlinkat(directory.rawValue, name, 0) }) == 0 else {
            _ = POSIX.retrying { unlinkat(directory.rawValue, asideName, 0) }
            throw .storageFailure("cannot move \(directoryPath)/\(name) aside: \(POSIX.describe(errno))")
        }
        return FoundFile(directory: directory, directoryPath: directoryPath, name: name, asideName: asideName, digest: digest)
    }

    /// Links the bytes back under their name. Should the name be taken again
    /// meanwhile, they stay aside (under a dot-name no reader sees) for the
    /// sweep, rather than replace anything.
    func restore() throws(ArtifactError) {
        guard POSIX.retrying({ linkat(directory.rawValue, asideName, directory.rawValue, name, 0) }) == 0 else {
            throw .storageFailure("cannot link \(directoryPath)/\(name) back: \(POSIX.describe(errno))")
        }
        remove()
        try PendingFile.sync(directory, path: directoryPath)
    }

    func remove() {
        _ = POSIX.retrying { unlinkat(directory.rawValue, asideName, 0) }
    }
}
