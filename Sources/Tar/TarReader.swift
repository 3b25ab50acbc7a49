import Core
import Crypto

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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
        return ArchivedDigest(size: size, sha256: Hex.string(hasher.finalize()))
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
        return ArchivedDigest(size: size, sha256: Hex.string(hasher.finalize()))
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

