#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Core
import Logging

/// The filesystem under the storage root, reached only through descriptors:
/// every directory below the root is opened with `O_DIRECTORY | O_NOFOLLOW`
/// relative to its parent's descriptor, and every file with `O_NOFOLLOW`, so a
/// symbolic link planted anywhere below the root is refused rather than
/// followed, and a component swapped after it was checked cannot redirect
/// what is opened next. The root itself is opened as configured (it may be a
/// link the operator made).
struct Storage: Sendable {
    let root: String
    let logger: Logger

    static let directoryFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
    static let directoryMode: mode_t = 0o750
    static let fileMode: mode_t = 0o640

    /// Opens `components` below the root, one level at a time; the first is
    /// a tenant's directory. With `creating`, missing directories below the
    /// tenant's are made (mode 0750) and their parent is fsynced so the new
    /// entry survives a crash. The tenant's own directory is never made here
    /// (only `createTenantDirectory`, at provisioning, makes it): a writer that
    /// comes late, after the tenant's tree was renamed to a tombstone, gets
    /// `tenantStorageMissing` instead of bringing the tree back.
    func openDirectory(_ components: [String], creating: Bool) throws(ArtifactError) -> Descriptor {
        var current: Descriptor
        do {
            current = try openRoot(creating: false)
        } catch .notFound where creating {
            throw .tenantStorageMissing
        }
        for index in components.indices {
            let relative = components[...index].joined(separator: "/")
            do {
                current = try openChild(components[index], of: current, relative: relative, creating: creating && index > 0)
            } catch .notFound where creating && index == 0 {
                throw .tenantStorageMissing
            }
        }
        return current
    }

    /// Makes a tenant's directory (and the storage root), for provisioning.
    func createTenantDirectory(_ tenantID: String) throws(ArtifactError) {
        let root = try openRoot(creating: true)
        _ = try openChild(tenantID, of: root, relative: tenantID, creating: true)
    }

    /// Opens a regular file for reading, refusing symbolic links and anything
    /// that is not a regular file.
    func openRegularFile(_ location: ArtifactLocation) throws(ArtifactError) -> (Descriptor, stat) {
        let directory = try openDirectory(location.directories, creating: false)
        return try openRegularFile(location.fileName, in: directory, relative: location.path)
    }

    func openRegularFile(_ name: String, in directory: Descriptor, relative: String) throws(ArtifactError)
        -> (Descriptor, stat)
    {
        // O_NONBLOCK: a FIFO planted under the name must not block the open.
        let fd = POSIX.openat(directory.rawValue, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw classify(errno, relative: relative, creating: false) }
        let file = Descriptor(fd)
        guard let info = file.status() else {
            throw .storageFailure("cannot inspect \(relative): \(POSIX.describe(errno))")
        }
        guard POSIX.isRegularFile(info) else {
            logger.error("refusing a non-regular file in the artifact store", metadata: ["path": "\(relative)"])
            throw .storageFailure("\(relative) is not a regular file")
        }
        return (file, info)
    }

    private func openRoot(creating: Bool) throws(ArtifactError) -> Descriptor {
        let flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC
        var fd = POSIX.retrying { open(root, flags) }
        if fd < 0, errno == ENOENT, creating {
            if POSIX.retrying({ mkdir(root, Self.directoryMode) }) == 0 {
                try syncParent(ofRoot: root)
            } else if errno != EEXIST {
                throw .storageFailure("cannot create the storage root: \(POSIX.describe(errno))")
            }
            fd = POSIX.retrying { open(root, flags) }
        }
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT, !creating { throw .notFound }
            throw .storageFailure("cannot open the storage root: \(POSIX.describe(code))")
        }
        return Descriptor(fd)
    }

    private func syncParent(ofRoot path: String) throws(ArtifactError) {
        var parent = String(path.reversed().drop(while: { $0 == "/" }).drop(while: { $0 != "/" }).reversed())
        if parent.isEmpty { parent = "." }
        let fd = POSIX.retrying { open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard fd >= 0 else { throw .storageFailure("cannot open the storage root's parent: \(POSIX.describe(errno))") }
        let directory = Descriptor(fd)
        guard fsync(directory.rawValue) == 0 else {
            throw .storageFailure("cannot sync the storage root's parent: \(POSIX.describe(errno))")
        }
    }

    private func openChild(_ name: String, of parent: Descriptor, relative: String, creating: Bool)
        throws(ArtifactError) -> Descriptor
    {
        var fd = POSIX.openat(parent.rawValue, name, Self.directoryFlags)
        if fd < 0, errno == ENOENT, creating {
            if POSIX.retrying({ mkdirat(parent.rawValue, name, Self.directoryMode) }) == 0 {
                guard fsync(parent.rawValue) == 0 else {
                    throw .storageFailure("cannot sync the directory holding \(relative): \(POSIX.describe(errno))")
                }
            } else if errno != EEXIST {
                throw .storageFailure("cannot create the directory \(relative): \(POSIX.describe(errno))")
            }
            fd = POSIX.openat(parent.rawValue, name, Self.directoryFlags)
        }
        guard fd >= 0 else { throw classify(errno, relative: relative, creating: creating, directory: true) }
        return Descriptor(fd)
    }

    /// Turns a failed open into the error a caller should see: a missing
    /// entry is `notFound` on reads; a symbolic link or a file where a
    /// directory belongs is a storage failure, logged, since no input of ours
    /// can make one.
    private func classify(_ code: CInt, relative: String, creating: Bool, directory: Bool = false) -> ArtifactError {
        switch code {
        case ENOENT where !creating:
            return .notFound
        case ELOOP:
            logger.error("refusing a symbolic link in the artifact store", metadata: ["path": "\(relative)"])
            return .storageFailure("refusing the symbolic link at \(relative)")
        case ENOTDIR where directory:
            logger.error("a non-directory stands where the artifact store needs a directory", metadata: ["path": "\(relative)"])
            return .storageFailure("\(relative) exists and is not a directory")
        default:
            return .storageFailure("cannot open \(relative): \(POSIX.describe(code))")
        }
    }
}

extension Storage {
    /// The valid artifact names among a directory's entries (the store's own
    /// dot-files and anything else that breaks the pattern are skipped).
    func names(in directory: Descriptor, path: String) throws(ArtifactError) -> [String] {
        try entries(in: directory, path: path).filter { ArtifactNames.isArtifactName($0) }
    }

    /// Every entry of a directory but `.` and `..`.
    func entries(in directory: Descriptor, path: String) throws(ArtifactError) -> [String] {
        let copy = dup(directory.rawValue)
        guard copy >= 0, let stream = fdopendir(copy) else {
            let code = errno
            if copy >= 0 { _ = close(copy) }
            throw .storageFailure("cannot list \(path): \(POSIX.describe(code))")
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [String] = []
        while true {
            errno = 0
            guard let entry = readdir(stream) else {
                if errno != 0 { throw .storageFailure("cannot list \(path): \(POSIX.describe(errno))") }
                break
            }
            let name = withUnsafePointer(to: entry.pointee.d_name) { tuple in
                tuple.withMemoryRebound(to: CChar.self, capacity: MemoryLayout.size(ofValue: tuple.pointee)) {
                    String(cString: $0)
                }
            }
            if name != ".", name != ".." { names.append(name) }
        }
        return names
    }
}
