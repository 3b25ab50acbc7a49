// Tar: the archive format of exports — plain, uncompressed POSIX tar (ustar
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

