#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Core
import Crypto
import Logging
import NIOCore

/// A file's bytes as a sequence of `ByteBuffer`s, read with `pread` from
/// offset 0 through one open descriptor (so every iteration starts at the
/// beginning and a rename of the path changes nothing). Each iteration reuses
/// its buffer when the consumer has let go of the previous chunk.
///
/// From `VerifiedFile.chunks(size:)` it yields exactly the verified number of
/// bytes and hashes them again on the way: the last chunk is only returned once
/// the digest still matches, so a file rewritten in place after the check ends
/// in `integrityFailure` instead of a complete-looking download.
///
/// Each chunk is read and hashed on the blocking I/O thread pool, not on the
/// iterating task; failures are `ArtifactError`.
public struct FileChunks: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    public typealias Failure = ArtifactError

    let source: ChunkSource
    let chunkSize: Int

    /// Any readable regular file, front to back (the input of
    /// `tenantplane store-artifact --file`); not confined to a storage root.
    public init(path: String, chunkSize: Int = 1 << 20) throws(ArtifactError) {
        let fd = POSIX.retrying { open(path, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { throw .storageFailure("cannot open the input file: \(POSIX.describe(errno))") }
        let file = Descriptor(fd)
        guard let status = file.status(), POSIX.isRegularFile(status) else {
            throw .storageFailure("the input file is not a regular file")
        }
        self.init(source: ChunkSource(descriptor: file, label: "the input file"), chunkSize: chunkSize)
    }

    init(source: ChunkSource, chunkSize: Int) {
        self.source = source
        self.chunkSize = Swift.max(1, chunkSize)
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(source: source, chunkSize: chunkSize)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        public typealias Element = ByteBuffer
        public typealias Failure = ArtifactError

        private let source: ChunkSource
        private let chunkSize: Int
        private var offset = 0
        private var hasher: SHA256?
        private var buffer: ByteBuffer?
        private var isFinished = false

        init(source: ChunkSource, chunkSize: Int) {
            self.source = source
            self.chunkSize = chunkSize
            hasher = source.verification == nil ? nil : SHA256()
        }

        public mutating func next() async throws(ArtifactError) -> ByteBuffer? {
            try await nextChunk(isolation: nil)
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(ArtifactError) -> ByteBuffer? {
            try await nextChunk(isolation: actor)
        }

        private mutating func nextChunk(isolation actor: isolated (any Actor)?) async throws(ArtifactError)
            -> ByteBuffer?
        {
            guard !isFinished else { return nil }
            var wanted = chunkSize
            if let verification = source.verification {
                let remaining = verification.size - offset
                if remaining == 0 {
                    try finish()
                    return nil
                }
                wanted = Swift.min(chunkSize, remaining)
            }
            // The buffer and the running hash move into the read and back
            // (never a second reference, which would make ByteBuffer copy).
            let read = ChunkRead(buffer: buffer.take(), hasher: hasher.take())
            let descriptor = source.descriptor
            let start = off_t(offset)
            let (chunkSize, length) = (chunkSize, wanted)
            let chunk = try await BlockingIO.run(isolation: actor) { () throws(ArtifactError) in
                read.perform(descriptor: descriptor, at: start, wanted: length, capacity: chunkSize)
            }
            hasher = read.hasher.take()
            let count = read.count
            let failure = read.failure
            if failure != 0 {
                isFinished = true
                throw .storageFailure("cannot read \(source.label): \(POSIX.describe(failure))")
            }
            if count == 0 {
                isFinished = true
                if let verification = source.verification {
                    // Shorter than when it was verified: changed in place.
                    source.reportMismatch(expected: verification.digest, actual: "(truncated)")
                    throw .integrityFailure
                }
                return nil
            }
            offset += count
            if let verification = source.verification, offset == verification.size {
                try finish()
            }
            buffer = chunk
            return chunk
        }

        private mutating func finish() throws(ArtifactError) {
            isFinished = true
            guard let verification = source.verification, let hasher else { return }
            let digest = Hex.string(hasher.finalize())
            guard digest == verification.digest else {
                source.reportMismatch(expected: verification.digest, actual: digest)
                throw .integrityFailure
            }
        }
    }
}

/// One chunk's `pread` (and hash update) on the blocking I/O thread pool. It
/// takes the iterator's buffer and hasher in; the filled buffer is returned,
/// the hasher handed back. `@unchecked Sendable` is safe: the iterator fills it, awaits the
/// closure that performs the read, and only then reads it back, so one thread
/// at a time uses it.
private final class ChunkRead: @unchecked Sendable {
    private var buffer: ByteBuffer?
    var hasher: SHA256?
    private(set) var count = 0
    /// The errno of a failed read, 0 otherwise.
    private(set) var failure: CInt = 0

    init(buffer: ByteBuffer?, hasher: SHA256?) {
        self.buffer = buffer
        self.hasher = hasher
    }

    /// Reads up to `wanted` bytes at `start` into the (cleared) buffer,
    /// hashes what was read and returns the buffer.
    func perform(descriptor: Descriptor, at start: off_t, wanted: Int, capacity: Int) -> ByteBuffer {
        var chunk = buffer.take() ?? ByteBufferAllocator().buffer(capacity: capacity)
        chunk.clear()
        var failure: CInt = 0
        let count = chunk.writeWithUnsafeMutableBytes(minimumWritableBytes: wanted) { target in
            let count = POSIX.retrying { pread(descriptor.rawValue, target.baseAddress, wanted, start) }
            if count < 0 {
                failure = errno
                return 0
            }
            return count
        }
        if count > 0, var hasher = hasher.take() {
            chunk.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
            self.hasher = hasher
        }
        self.count = count
        self.failure = failure
        return chunk
    }
}

/// An open file shared by a `VerifiedFile` and the iterations of its chunks;
/// its descriptor closes when the last of them is gone.
final class ChunkSource: Sendable {
    struct Verification: Sendable {
        let size: Int
        let digest: String
    }

    let descriptor: Descriptor
    /// How messages name the file: its relative path, or "the input file".
    let label: String
    let verification: Verification?
    let logger: Logger?

    init(descriptor: Descriptor, label: String, verification: Verification? = nil, logger: Logger? = nil) {
        self.descriptor = descriptor
        self.label = label
        self.verification = verification
        self.logger = logger
    }

    func reportMismatch(expected: String, actual: String) {
        logger?.error(
            "artifact integrity failure: the file changed after it was verified",
            metadata: ["path": "\(label)", "expected_digest": "\(expected)", "actual_digest": "\(actual)"])
    }
}

/// A stored file whose digest was checked through the descriptor it will be
/// read from: `chunks(size:)` yields the bytes that were checked.
public struct VerifiedFile: Sendable {
    /// Relative to the storage root.
    public let path: String
    public let size: Int
    /// sha256 as lowercase hex.
    public let digest: String
    let source: ChunkSource

    init(path: String, size: Int, digest: String, descriptor: Descriptor, logger: Logger) {
        self.path = path
        self.size = size
        self.digest = digest
        source = ChunkSource(
            descriptor: descriptor, label: path, verification: .init(size: size, digest: digest), logger: logger)
    }

    /// The file from its first byte, in chunks of at most `size` bytes.
    public func chunks(size chunkSize: Int = 1 << 20) -> FileChunks {
        FileChunks(source: source, chunkSize: chunkSize)
    }
}
