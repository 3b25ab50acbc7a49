// Backup: the archive format of exports — plain, uncompressed POSIX tar (ustar
// headers, PAX `x` headers where ustar's fields are too small), written and read
// sequentially through one 1 MiB buffer with SHA-256 computed on the way, so a
// large dump costs one read, one write and one hash pass. Imported archives are
// hostile input: every header is checksummed, every name validated, and
// anything but regular files and directories is refused. What the members mean
// (manifest, dump, artifacts) belongs to the export and import code.

import Core
import Crypto

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One file's size and SHA-256 (lowercase hex), as the writer wrote or the reader read it.
public struct ArchivedDigest: Sendable, Equatable {
    public let size: Int64
    public let sha256: String

    public init(size: Int64, sha256: String) {
        self.size = size
        self.sha256 = sha256
    }
}

/// Why an archive could not be written or read. Names and paths in the
/// associated values are already escaped to printable ASCII.
public enum ArchiveError: OperatorError, Equatable {
    /// The file ends before the end-of-archive marker.
    case truncated
    /// Bad checksum, bad magic, a malformed number or PAX record.
    case corruptHeader(String)
    /// A member name that could escape the extraction directory or is not a plain relative path.
    case unsafePath(String)
    /// Links, devices, FIFOs, sparse files and other members that are not regular files or directories.
    case unsupportedMember(name: String, type: String)
    case memberTooLarge(String)
    /// The archive to create exists already.
    case alreadyExists(String)
    /// A source given to the writer is not a regular file (or is a symbolic link).
    case notRegularFile(String)
    /// A source file's length differed from what fstat reported when it was opened.
    case sourceChanged(String)
    /// The writer or reader was called out of order (after finish, after a failure, content read twice).
    case invalidUse(String)
    case io(String)

    public var httpStatus: Int {
        switch self {
        case .truncated, .corruptHeader, .unsafePath, .unsupportedMember, .memberTooLarge: 422
        case .alreadyExists: 409
        case .notRegularFile, .sourceChanged, .invalidUse, .io: 500
        }
    }

    public var code: String {
        switch self {
        case .truncated: "archive_truncated"
        case .corruptHeader: "archive_corrupt_header"
        case .unsafePath: "archive_unsafe_path"
        case .unsupportedMember: "archive_unsupported_member"
        case .memberTooLarge: "archive_member_too_large"
        case .alreadyExists: "archive_already_exists"
        case .notRegularFile: "archive_source_not_regular_file"
        case .sourceChanged: "archive_source_changed"
        case .invalidUse: "archive_invalid_use"
        case .io: "archive_io_error"
        }
    }

    public var message: String {
        switch self {
        case .truncated: "the archive is truncated (it ends before its end-of-archive marker)"
        case .corruptHeader(let detail): "corrupt archive header: \(detail)"
        case .unsafePath(let name): "unsafe member name in archive: \(name)"
        case .unsupportedMember(let name, let type):
            "unsupported archive member \(name) of type \(type): only regular files and directories are allowed"
        case .memberTooLarge(let name): "archive member \(name) is larger than allowed"
        case .alreadyExists(let path): "\(path) already exists"
        case .notRegularFile(let path): "\(path) is not a regular file"
        case .sourceChanged(let path): "\(path) changed size while it was being archived"
        case .invalidUse(let detail): "archive used out of order: \(detail)"
        case .io(let detail): "archive I/O error: \(detail)"
        }
    }
}

// MARK: - Writer

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
            return ArchivedDigest(size: size, sha256: hex(hasher.finalize()))
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
            return ArchivedDigest(size: Int64(bytes.count), sha256: hex(SHA256.hash(data: bytes)))
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

// MARK: - Reader

/// Reads an archive sequentially. Every member name is validated before it is returned.
///
/// Accepted: ustar and GNU-magic headers; regular files (`0`, NUL, `7`) and
/// directories (`5`); PAX `x` headers (`path` and `size` honoured, other keys
/// such as times and owners ignored); PAX `g` headers without `path`, `size`
/// or `linkpath`; GNU `L` long names. Everything else (links, `linkpath`,
/// devices, FIFOs, GNU sparse files, volume labels …) is `.unsupportedMember`.
public final class TarReader {
    public struct Entry: Sendable, Equatable {
        public enum Kind: Sendable, Equatable { case file(size: Int64), directory }
        /// Normalised relative path: no leading "./", no trailing "/", components separated by "/".
        public let name: String
        public let kind: Kind
    }

    private let descriptor: Int32
    private let path: String
    private let buffer: UnsafeMutableRawBufferPointer
    private var bufferStart = 0
    private var bufferEnd = 0
    /// The current member's name, for messages.
    private var memberName = ""
    private var contentRemaining: Int64 = 0
    private var paddingRemaining = 0
    /// Set by next() for a file member, cleared once its content is first touched.
    private var contentAvailable = false
    private var ended = false
    /// An error from next() is final: after a refused header the position is
    /// inside data an attacker controls, which could be shaped like further headers.
    private var failure: ArchiveError?

    public init(path: String) throws(ArchiveError) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw .io(describe("cannot open", path, errno)) }
        self.descriptor = descriptor
        self.path = path
        buffer = .allocate(byteCount: tarBufferSize, alignment: tarBlockSize)
    }

    deinit {
        close(descriptor)
        buffer.deallocate()
    }

    /// The next member, or nil at the end-of-archive marker (one zero block is
    /// enough; what follows it, such as GNU tar's second block and record
    /// padding, is not read). Unconsumed content of the previous file is skipped.
    public func next() throws(ArchiveError) -> Entry? {
        if let failure { throw failure }
        if ended { return nil }
        do {
            contentAvailable = false
            try consumeContent { _ in }
            return try nextMember()
        } catch {
            failure = error
            throw error
        }
    }

    /// Streams the current file member's content to `fileDescriptor` (already
    /// open for writing), returning its size and digest; the reader is then
    /// positioned at the next header.
    public func copyContent(to fileDescriptor: Int32) throws(ArchiveError) -> ArchivedDigest {
        try beginContent()
        let size = contentRemaining
        var hasher = SHA256()
        try consumeContent { (chunk) throws(ArchiveError) in
            hasher.update(bufferPointer: chunk)
            try writeAll(fileDescriptor, chunk, describing: "the output of member \(memberName)")
        }
        return ArchivedDigest(size: size, sha256: hex(hasher.finalize()))
    }

    /// Reads the current file member's content into memory, refusing members
    /// larger than `limit` bytes (.memberTooLarge) without consuming them.
    public func readContent(limit: Int) throws(ArchiveError) -> [UInt8] {
        if let failure { throw failure }
        if contentAvailable, contentRemaining > Int64(max(limit, 0)) { throw .memberTooLarge(memberName) }
        try beginContent()
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(contentRemaining))
        try consumeContent { chunk in bytes.append(contentsOf: chunk) }
        return bytes
    }

    /// Skips the current member's content, returning its digest (it is still read and hashed).
    public func skipContent() throws(ArchiveError) -> ArchivedDigest {
        try beginContent()
        let size = contentRemaining
        var hasher = SHA256()
        try consumeContent { chunk in hasher.update(bufferPointer: chunk) }
        return ArchivedDigest(size: size, sha256: hex(hasher.finalize()))
    }

    private func beginContent() throws(ArchiveError) {
        if let failure { throw failure }
        guard contentAvailable else {
            throw .invalidUse("no unread file content (the current member is a directory, already read, or next() was not called)")
        }
        contentAvailable = false
    }

    /// Reads headers up to and including the next file or directory header,
    /// folding PAX and GNU long-name headers into it.
    private func nextMember() throws(ArchiveError) -> Entry? {
        var extended: PAXOverrides?
        var longName: [UInt8]?
        while true {
            let block = try readBlock()
            if block.allSatisfy({ $0 == 0 }) {
                guard extended == nil, longName == nil else {
                    throw .corruptHeader("an extended header is followed by the end of the archive")
                }
                ended = true
                return nil
            }
            let header = try parseHeader(block)
            switch header.type {
            case typePAX:
                guard extended == nil, longName == nil else { throw .corruptHeader("consecutive extended headers") }
                extended = try parsePAXRecords(readExtension(size: header.size, limit: maxPAXSize))
                continue
            case typeGlobalPAX:
                guard extended == nil, longName == nil else { throw .corruptHeader("global header inside a member's headers") }
                let global = try parsePAXRecords(readExtension(size: header.size, limit: maxPAXSize))
                guard global.path == nil, global.size == nil, !global.hasLinkpath, !global.isSparse else {
                    throw .unsupportedMember(name: "(global header)", type: "g")
                }
                continue
            case typeGNULongName:
                guard extended == nil, longName == nil else { throw .corruptHeader("consecutive extended headers") }
                guard header.size <= Int64(maxNameLength + 1) else {
                    throw .unsafePath("(GNU long name of \(header.size) bytes)")
                }
                var name = try readExtension(size: header.size, limit: maxNameLength + 1)
                while name.last == 0 { name.removeLast() }
                longName = name
                continue
            default:
                break
            }

            let rawName = extended?.path ?? longName ?? header.name
            guard header.type == typeRegular || header.type == typeRegularOld
                || header.type == typeContiguous || header.type == typeDirectory
            else {
                throw .unsupportedMember(name: printable(rawName), type: printableType(header.type))
            }
            if extended?.hasLinkpath == true { throw .unsupportedMember(name: printable(rawName), type: "x (linkpath)") }
            if extended?.isSparse == true { throw .unsupportedMember(name: printable(rawName), type: "x (GNU sparse)") }

            let isDirectory = header.type == typeDirectory
            let size = extended?.size ?? header.size
            if isDirectory, size != 0 { throw .corruptHeader("directory \(printable(rawName)) has content") }
            let name = try validatedMemberName(rawName, isDirectory: isDirectory)
            memberName = printable(rawName)
            contentRemaining = size
            paddingRemaining = paddingLength(size)
            // GNU tar archives `-C dir .` with the root itself as "./"; it names nothing to create.
            guard let name else {
                extended = nil
                longName = nil
                continue
            }
            if isDirectory { return Entry(name: name, kind: .directory) }
            contentAvailable = true
            return Entry(name: name, kind: .file(size: size))
        }
    }

    /// Reads an extension header's content (PAX records or a GNU long name) into memory.
    private func readExtension(size: Int64, limit: Int) throws(ArchiveError) -> [UInt8] {
        guard size <= Int64(limit) else { throw .memberTooLarge("(extended header of \(size) bytes)") }
        contentRemaining = size
        paddingRemaining = paddingLength(size)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(size))
        try consumeContent { chunk in bytes.append(contentsOf: chunk) }
        return bytes
    }

    /// Passes the rest of the current member's content to `body` in buffer-sized
    /// chunks, then skips its padding. Bytes count as consumed before `body`
    /// runs, so a failing output leaves the reader at a consistent position.
    private func consumeContent(_ body: (UnsafeRawBufferPointer) throws(ArchiveError) -> Void) throws(ArchiveError) {
        while contentRemaining > 0 {
            try fill()
            let count = Int(min(Int64(bufferEnd - bufferStart), contentRemaining))
            let chunk = UnsafeRawBufferPointer(start: buffer.baseAddress! + bufferStart, count: count)
            bufferStart += count
            contentRemaining -= Int64(count)
            try body(chunk)
        }
        while paddingRemaining > 0 {
            try fill()
            let count = min(bufferEnd - bufferStart, paddingRemaining)
            bufferStart += count
            paddingRemaining -= count
        }
    }

    private func readBlock() throws(ArchiveError) -> [UInt8] {
        var block: [UInt8] = []
        block.reserveCapacity(tarBlockSize)
        while block.count < tarBlockSize {
            try fill()
            let count = min(tarBlockSize - block.count, bufferEnd - bufferStart)
            block.append(contentsOf: UnsafeRawBufferPointer(start: buffer.baseAddress! + bufferStart, count: count))
            bufferStart += count
        }
        return block
    }

    /// Makes at least one unread byte available; the archive ending first is truncation.
    private func fill() throws(ArchiveError) {
        guard bufferStart == bufferEnd else { return }
        bufferStart = 0
        bufferEnd = try readRetryingEINTR(descriptor, into: buffer, describing: path)
        guard bufferEnd > 0 else { throw .truncated }
    }
}

// MARK: - Header format

private let tarBlockSize = 512
private let tarBufferSize = 1 << 20
private let maxNameLength = 1024
/// PAX records in exports hold a path at most; GNU tar adds times. Anything
/// near this size is not an archive we wrote or would accept.
private let maxPAXSize = 64 * 1024
/// The largest value of an 11-digit octal field (8 GiB - 1 for sizes).
private let maxOctal11: Int64 = 0o77777777777

private let typeRegular = UInt8(ascii: "0")
private let typeRegularOld: UInt8 = 0
private let typeContiguous = UInt8(ascii: "7")
private let typeDirectory = UInt8(ascii: "5")
private let typePAX = UInt8(ascii: "x")
private let typeGlobalPAX = UInt8(ascii: "g")
private let typeGNULongName = UInt8(ascii: "L")

private func paddingLength(_ size: Int64) -> Int {
    Int((Int64(tarBlockSize) - size % Int64(tarBlockSize)) % Int64(tarBlockSize))
}

private struct Header {
    var name: [UInt8]
    var type: UInt8
    var size: Int64
}

private func parseHeader(_ block: [UInt8]) throws(ArchiveError) -> Header {
    guard let recorded = parseNumber(block[148..<156]) else { throw .corruptHeader("unreadable checksum field") }
    var unsigned: Int64 = 0
    var signed: Int64 = 0
    for (index, byte) in block.enumerated() {
        let value = (148..<156).contains(index) ? UInt8(ascii: " ") : byte
        unsigned += Int64(value)
        signed += Int64(Int8(bitPattern: value))
    }
    // Some historic writers summed signed bytes; GNU tar accepts either, and so do we.
    guard recorded == unsigned || recorded == signed else { throw .corruptHeader("checksum mismatch") }

    let magic = block[257..<263]
    let isPOSIX = magic.elementsEqual("ustar\0".utf8)
    guard isPOSIX || block[257..<265].elementsEqual("ustar  \0".utf8) else {
        throw .corruptHeader("not a ustar header")
    }
    guard let size = parseNumber(block[124..<136]) else { throw .corruptHeader("invalid size field") }

    var name = try nameField(block[0..<100])
    // Only POSIX ustar has a prefix; the old GNU format keeps times in those bytes.
    if isPOSIX {
        let prefix = try nameField(block[345..<500])
        if !prefix.isEmpty { name = prefix + [UInt8(ascii: "/")] + name }
    }
    return Header(name: name, type: block[156], size: size)
}

/// A NUL-terminated name field. Bytes after the terminator must be NUL too:
/// readers that stop at the first NUL and readers that do not would otherwise
/// see different names.
private func nameField(_ field: ArraySlice<UInt8>) throws(ArchiveError) -> [UInt8] {
    guard let end = field.firstIndex(of: 0) else { return Array(field) }
    guard field[end...].allSatisfy({ $0 == 0 }) else { throw .unsafePath(printable(field)) }
    return Array(field[..<end])
}

/// An octal field (optional leading spaces, digits, then NULs or spaces), or
/// GNU's base-256 form (first byte 0x80) for values that do not fit. Negative
/// base-256 values are refused.
private func parseNumber(_ field: ArraySlice<UInt8>) -> Int64? {
    if field.first == 0x80 {
        var value: Int64 = 0
        for byte in field.dropFirst() {
            let (shifted, overflow) = value.multipliedReportingOverflow(by: 256)
            guard !overflow else { return nil }
            value = shifted | Int64(byte)
        }
        return value
    }
    var rest = field.drop(while: { $0 == UInt8(ascii: " ") })
    var value: Int64 = 0
    var digits = 0
    while let byte = rest.first, (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(byte) {
        value = value * 8 + Int64(byte - UInt8(ascii: "0"))
        digits += 1
        rest = rest.dropFirst()
    }
    guard digits > 0, rest.allSatisfy({ $0 == 0 || $0 == UInt8(ascii: " ") }) else { return nil }
    return value
}

/// The PAX keys that change how a member is read. `size` is honoured (GNU tar
/// writes it for members of 8 GiB and more, when the octal field cannot hold the
/// size); it is parsed as strictly as the header field it replaces.
private struct PAXOverrides {
    var path: [UInt8]?
    var size: Int64?
    var hasLinkpath = false
    var isSparse = false
}

/// Parses "<length> <key>=<value>\n" records; duplicate keys are refused so
/// that no reader can pick a different one than we did.
private func parsePAXRecords(_ data: [UInt8]) throws(ArchiveError) -> PAXOverrides {
    var overrides = PAXOverrides()
    var seen = Set<[UInt8]>()
    var start = 0
    while start < data.count {
        var cursor = start
        var length = 0
        while cursor < data.count, cursor - start < 10, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(data[cursor]) {
            length = length * 10 + Int(data[cursor] - UInt8(ascii: "0"))
            cursor += 1
        }
        guard cursor > start, cursor < data.count, data[cursor] == UInt8(ascii: " "),
              length > cursor - start + 1, start + length <= data.count,
              data[start + length - 1] == UInt8(ascii: "\n")
        else { throw .corruptHeader("malformed PAX record") }
        let record = data[(cursor + 1)..<(start + length - 1)]
        guard let equals = record.firstIndex(of: UInt8(ascii: "=")), equals > record.startIndex else {
            throw .corruptHeader("malformed PAX record")
        }
        let key = Array(record[..<equals])
        let value = Array(record[(equals + 1)...])
        guard seen.insert(key).inserted else { throw .corruptHeader("duplicate PAX record \(printable(key))") }
        switch String(decoding: key, as: UTF8.self) {
        case "path":
            overrides.path = value
        case "size":
            guard !value.isEmpty, value.count <= 18, value.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
                throw .corruptHeader("invalid PAX size")
            }
            overrides.size = value.reduce(0) { $0 * 10 + Int64($1 - UInt8(ascii: "0")) }
        case "linkpath":
            overrides.hasLinkpath = true
        case let other where other.hasPrefix("GNU.sparse."):
            overrides.isSparse = true
        default:
            break
        }
        start += length
    }
    return overrides
}

private func encodePAX(_ records: [(key: String, value: String)]) -> [UInt8] {
    var out: [UInt8] = []
    for (key, value) in records {
        let body = " \(key)=\(value)\n".utf8.count
        // The length counts its own digits: grow until the digit count is stable.
        var length = body + String(body).count
        if String(length).count != String(body).count { length = body + String(length).count }
        out.append(contentsOf: "\(length) \(key)=\(value)\n".utf8)
    }
    return out
}

private func ustarHeader(
    name: ArraySlice<UInt8>, prefix: ArraySlice<UInt8>, type: UInt8,
    size: Int64, modificationTime: Int64, mode: Int
) -> [UInt8] {
    var block = [UInt8](repeating: 0, count: tarBlockSize)
    func put(_ bytes: some Collection<UInt8>, at offset: Int) {
        for (index, byte) in bytes.enumerated() { block[offset + index] = byte }
    }
    func octal(_ value: Int64, width: Int) -> [UInt8] {
        let digits = String(value, radix: 8)
        return Array((String(repeating: "0", count: width - 1 - digits.count) + digits).utf8) + [0]
    }
    put(name, at: 0)
    put(octal(Int64(mode), width: 8), at: 100)
    put(octal(0, width: 8), at: 108)
    put(octal(0, width: 8), at: 116)
    put(octal(size, width: 12), at: 124)
    put(octal(modificationTime, width: 12), at: 136)
    put(Array(repeating: UInt8(ascii: " "), count: 8), at: 148)
    block[156] = type
    put("ustar\0".utf8, at: 257)
    put("00".utf8, at: 263)
    put(octal(0, width: 8), at: 329)
    put(octal(0, width: 8), at: 337)
    put(prefix, at: 345)
    let checksum = block.reduce(0) { $0 + Int64($1) }
    put(octal(checksum, width: 7) + [UInt8(ascii: " ")], at: 148)
    return block
}

/// Where to split a long name into ustar's prefix (≤ 155 bytes) and name (≤ 100
/// bytes) at a "/", if anywhere.
private func ustarSplit(_ name: [UInt8]) -> Int? {
    name.indices.first { index in
        name[index] == UInt8(ascii: "/") && index <= 155 && name.count - index - 1 <= 100 && name.count - index - 1 > 0
    }
}

/// The ustar name field under a PAX `path`, for readers that ignore PAX: the
/// name cut at 100 bytes on a character boundary, without trailing "/" or ".",
/// so that the cut never forms a "." or ".." component.
private func paxFallbackName(_ name: [UInt8]) -> [UInt8] {
    var cut = 100
    while name[cut] & 0xC0 == 0x80 { cut -= 1 }
    var fallback = Array(name[..<cut])
    while let last = fallback.last, last == UInt8(ascii: "/") || last == UInt8(ascii: ".") { fallback.removeLast() }
    return fallback.isEmpty ? [UInt8(ascii: "_")] : fallback
}

// MARK: - Names

/// Validates a member name and returns it normalised (no leading "./", no
/// trailing "/"), or nil for the archive root "./" itself. Refused: empty or
/// over 1024 bytes, absolute, NUL and other control bytes, backslashes, empty,
/// "." or ".." components, a trailing "/" on a file, and invalid UTF-8. The
/// writer applies the same rules, so what it writes the reader accepts.
private func validatedMemberName(_ raw: [UInt8], isDirectory: Bool) throws(ArchiveError) -> String? {
    let unsafe = ArchiveError.unsafePath(printable(raw))
    guard !raw.isEmpty, raw.count <= maxNameLength, raw.first != UInt8(ascii: "/") else { throw unsafe }
    guard !raw.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: "\\") }) else { throw unsafe }
    var name = raw[...]
    if name.starts(with: "./".utf8) { name = name.dropFirst(2) }
    if name.last == UInt8(ascii: "/") {
        guard isDirectory else { throw unsafe }
        name = name.dropLast()
    }
    if name.isEmpty || name.elementsEqual(".".utf8) {
        guard isDirectory, raw.count <= 2 else { throw unsafe }
        return nil
    }
    for component in name.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false) {
        guard !component.isEmpty, !component.elementsEqual(".".utf8), !component.elementsEqual("..".utf8) else {
            throw unsafe
        }
    }
    guard let text = String(validating: name, as: UTF8.self) else { throw unsafe }
    return text
}

/// The writer's check: the reader's rules, and the root itself is not a name one can add.
private func writableMemberName(_ name: String, isDirectory: Bool) throws(ArchiveError) -> String {
    guard let normalized = try validatedMemberName(Array(name.utf8), isDirectory: isDirectory) else {
        throw .unsafePath(printable(name))
    }
    return normalized
}

/// Untrusted bytes on one printable line: printable ASCII as is, everything
/// else as \xNN, at most 200 bytes shown.
private func printable(_ bytes: some Collection<UInt8>) -> String {
    var out = ""
    for byte in bytes.prefix(200) {
        if byte >= 0x20, byte < 0x7F, byte != UInt8(ascii: "\\") {
            out.unicodeScalars.append(Unicode.Scalar(byte))
        } else {
            out += "\\x" + String(byte, radix: 16, uppercase: false).leftPadded(to: 2)
        }
    }
    if bytes.count > 200 { out += "… (\(bytes.count) bytes)" }
    return out
}

private func printable(_ text: String) -> String { printable(Array(text.utf8)) }

private func printableType(_ type: UInt8) -> String {
    type >= 0x21 && type < 0x7F ? String(Unicode.Scalar(type)) : "\\x" + String(type, radix: 16).leftPadded(to: 2)
}

private extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

// MARK: - POSIX I/O and hashing

private let hexDigits = Array("0123456789abcdef".utf8)

private func hex(_ digest: SHA256.Digest) -> String {
    var out: [UInt8] = []
    out.reserveCapacity(64)
    for byte in digest {
        out.append(hexDigits[Int(byte >> 4)])
        out.append(hexDigits[Int(byte & 0x0F)])
    }
    return String(decoding: out, as: UTF8.self)
}

private func now() -> Int64 { Int64(time(nil)) }

private func describe(_ operation: String, _ path: String, _ code: Int32) -> String {
    "\(operation) \(printable(path)): \(String(cString: strerror(code)))"
}

private func readRetryingEINTR(_ descriptor: Int32, into buffer: UnsafeMutableRawBufferPointer, describing what: String) throws(ArchiveError) -> Int {
    while true {
        let count = read(descriptor, buffer.baseAddress, buffer.count)
        if count >= 0 { return count }
        let code = errno
        if code != EINTR { throw .io(describe("cannot read", what, code)) }
    }
}

private func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, describing what: String) throws(ArchiveError) {
    var offset = 0
    while offset < bytes.count {
        let count = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
        if count >= 0 {
            offset += count
        } else {
            let code = errno
            if code != EINTR { throw .io(describe("cannot write", what, code)) }
        }
    }
}
