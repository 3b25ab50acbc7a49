import Core
import Crypto

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes an archive sequentially to a new file.
public final class TarWriter {
    private enum State { case open, finished, failed }

    private var descriptor: Int32
    private let path: String
    private let buffer: UnsafeMutableRawBufferPointer
    private var buffered = 0
    /// Bytes handed to the archive so far, to tell a refused call from a half-written member.
    private var archived: Int64 = 0
    private var state = State.open

    /// Creates `path` (O_CREAT|O_EXCL|O_WRONLY|O_CLOEXEC, mode 0600); fails if it exists.
    public init(creating path: String) throws(ArchiveError) {
        let descriptor = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            let code = errno
            if code == EEXIST { throw .alreadyExists(printable(path)) }
            throw .io(describe("cannot create", path, code))
        }
        self.descriptor = descriptor
        self.path = path
        buffer = .allocate(byteCount: tarBufferSize, alignment: tarBlockSize)
    }

    deinit {
        if descriptor >= 0 { close(descriptor) }
        buffer.deallocate()
    }

    /// Adds a regular file whose bytes are read from `sourcePath` (opened O_NOFOLLOW;
    /// must be a regular file), hashing them as they pass through the buffer. The
    /// header carries the size fstat reported at open; a source that then yields
    /// fewer or more bytes throws `.sourceChanged`. Without `modificationTime` the
    /// source's own mtime is recorded.
    @discardableResult
    public func addFile(named name: String, contentsOf sourcePath: String, modificationTime: Int64? = nil) throws(ArchiveError) -> ArchivedDigest {
        try guarded { () throws(ArchiveError) -> ArchivedDigest in
            let member = try writableMemberName(name, isDirectory: false)
            // O_NONBLOCK so that a FIFO given by mistake is refused by fstat instead of blocking open.
            let source = open(sourcePath, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
            guard source >= 0 else {
                let code = errno
                if code == ELOOP { throw .notRegularFile(printable(sourcePath)) }
                throw .io(describe("cannot open", sourcePath, code))
            }
            defer { close(source) }
            var status = stat()
            guard fstat(source, &status) == 0 else { throw .io(describe("cannot stat", sourcePath, errno)) }
            guard status.st_mode & S_IFMT == S_IFREG else { throw .notRegularFile(printable(sourcePath)) }
            let size = Int64(status.st_size)
            #if canImport(Darwin)
            let sourceTime = Int64(status.st_mtimespec.tv_sec)
            #else
            let sourceTime = Int64(status.st_mtim.tv_sec)
            #endif

            try appendHeader(name: member, type: typeRegular, size: size, modificationTime: modificationTime ?? sourceTime)
            var hasher = SHA256()
            var remaining = size
            while remaining > 0 {
                if buffered == buffer.count { try flush() }
                let free = UnsafeMutableRawBufferPointer(
                    start: buffer.baseAddress! + buffered,
                    count: Int(min(Int64(buffer.count - buffered), remaining))
                )
                let count = try readRetryingEINTR(source, into: free, describing: sourcePath)
                guard count > 0 else { throw .sourceChanged(printable(sourcePath)) }
                hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: free[..<count]))
                buffered += count
                archived += Int64(count)
                remaining -= Int64(count)
            }
            var extra: UInt8 = 0
            let grown = try withUnsafeMutableBytes(of: &extra) { (probe) throws(ArchiveError) -> Int in
                try readRetryingEINTR(source, into: probe, describing: sourcePath)
            }
            guard grown == 0 else { throw .sourceChanged(printable(sourcePath)) }
            try appendPadding(after: size)
            return ArchivedDigest(size: size, sha256: Hex.string(hasher.finalize()))
        }
    }

    /// Adds a regular file from memory; without `modificationTime` the current time is recorded.
    @discardableResult
    public func addFile(named name: String, bytes: [UInt8], modificationTime: Int64? = nil) throws(ArchiveError) -> ArchivedDigest {
        try guarded { () throws(ArchiveError) -> ArchivedDigest in
            let member = try writableMemberName(name, isDirectory: false)
            try appendHeader(name: member, type: typeRegular, size: Int64(bytes.count), modificationTime: modificationTime ?? now())
            try append(bytes)
            try appendPadding(after: Int64(bytes.count))
            return ArchivedDigest(size: Int64(bytes.count), sha256: Hex.string(SHA256.hash(data: bytes)))
        }
    }

    /// Adds a directory entry (mode 0755, the current time); a trailing "/" in `name` is optional.
    public func addDirectory(named name: String) throws(ArchiveError) {
        try guarded { () throws(ArchiveError) in
            let member = try writableMemberName(name, isDirectory: true)
            try appendHeader(name: member + "/", type: typeDirectory, size: 0, modificationTime: now())
        }
    }

    /// Writes the two zero end blocks, fsyncs and closes. Without finish() (e.g. on
    /// error), `deinit` closes the descriptor but the archive is left incomplete
    /// (the caller deletes it).
    public func finish() throws(ArchiveError) {
        try guarded { () throws(ArchiveError) in
            try appendZeros(2 * tarBlockSize)
            try flush()
            guard fsync(descriptor) == 0 else { throw .io(describe("cannot fsync", path, errno)) }
            let closing = descriptor
            descriptor = -1
            guard close(closing) == 0 else { throw .io(describe("cannot close", path, errno)) }
        }
        state = .finished
    }

    /// Runs one public operation. A call refused before it wrote anything (bad
    /// name, unreadable source) leaves the archive usable; an error after that
    /// leaves a member half-written, so the writer refuses all further use.
    private func guarded<T>(_ operation: () throws(ArchiveError) -> T) throws(ArchiveError) -> T {
        switch state {
        case .open: break
        case .finished: throw .invalidUse("the archive \(printable(path)) is already finished")
        case .failed: throw .invalidUse("an earlier write to \(printable(path)) failed")
        }
        let before = archived
        do {
            return try operation()
        } catch {
            if archived != before { state = .failed }
            throw error
        }
    }

    /// Appends a ustar header for `name` (already validated; directories end in
    /// "/"), preceded by a PAX header when the name fits neither ustar's name
    /// field nor its prefix/name split, or when `size` exceeds 11 octal digits.
    private func appendHeader(name: String, type: UInt8, size: Int64, modificationTime: Int64) throws(ArchiveError) {
        let nameBytes = Array(name.utf8)
        var records: [(key: String, value: String)] = []
        var prefixField: ArraySlice<UInt8> = []
        var nameField = nameBytes[...]
        if nameBytes.count > 100 {
            if let split = ustarSplit(nameBytes) {
                prefixField = nameBytes[..<split]
                nameField = nameBytes[(split + 1)...]
            } else {
                records.append(("path", name))
                nameField = paxFallbackName(nameBytes)[...]
            }
        }
        var sizeField = size
        if size > maxOctal11 {
            records.append(("size", String(size)))
            sizeField = 0
        }
        // Clamped rather than refused: a timestamp is metadata nobody restores from an export.
        let time = min(max(modificationTime, 0), maxOctal11)
        if !records.isEmpty {
            let pax = encodePAX(records)
            try append(ustarHeader(
                name: Array("././@PaxHeader".utf8)[...], prefix: [], type: typePAX,
                size: Int64(pax.count), modificationTime: time, mode: 0o644
            ))
            try append(pax)
            try appendPadding(after: Int64(pax.count))
        }
        try append(ustarHeader(
            name: nameField, prefix: prefixField, type: type, size: sizeField,
            modificationTime: time, mode: type == typeDirectory ? 0o755 : 0o644
        ))
    }

    private func appendPadding(after size: Int64) throws(ArchiveError) {
        try appendZeros(paddingLength(size))
    }

    private func appendZeros(_ count: Int) throws(ArchiveError) {
        var remaining = count
        while remaining > 0 {
            if buffered == buffer.count { try flush() }
            let chunk = min(buffer.count - buffered, remaining)
            (buffer.baseAddress! + buffered).initializeMemory(as: UInt8.self, repeating: 0, count: chunk)
            buffered += chunk
            archived += Int64(chunk)
            remaining -= chunk
        }
    }

    private func append(_ bytes: [UInt8]) throws(ArchiveError) {
        var offset = 0
        while offset < bytes.count {
            if buffered == buffer.count { try flush() }
            let count = min(buffer.count - buffered, bytes.count - offset)
            bytes.withUnsafeBytes { source in
                (buffer.baseAddress! + buffered).copyMemory(from: source.baseAddress! + offset, byteCount: count)
            }
            buffered += count
            archived += Int64(count)
            offset += count
        }
    }

    private func flush() throws(ArchiveError) {
        do {
            try writeAll(descriptor, UnsafeRawBufferPointer(start: buffer.baseAddress, count: buffered), describing: path)
        } catch {
            // Part of the buffer may be on disk already; writing it again would duplicate bytes.
            state = .failed
            throw error
        }
        buffered = 0
    }
}

