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

/// An uploaded artifact's digest, kept beside it as `.sha256-{name}` so that
/// listing a step does not read every artifact (uploads reach 100 MiB each).
///
/// The sidecar and the artifact are two renames, which no filesystem makes
/// atomic together, so the sidecar also records the artifact's inode, size and
/// modification time (none of which a rename changes). It is renamed into
/// place first; a listing trusts it only while all three still describe the
/// file under the name, and otherwise hashes the file and rewrites it. A crash
/// or a race between the two renames, a restore from backup or an edit by hand
/// therefore costs one re-hash, never a wrong digest. The sidecar is a cache for
/// listings, not a trust anchor: reads are verified against the digest the
/// caller recorded (the `artifacts` row), not against this file.
struct DigestRecord: Equatable {
    let digest: String
    let size: Int
    let inode: UInt64
    let modifiedSeconds: Int
    let modifiedNanoseconds: Int

    static let prefix = ".sha256-"

    static func sidecarName(for name: String) -> String { prefix + name }

    init(digest: String, status: stat) {
        self.digest = digest
        size = Int(status.st_size)
        inode = UInt64(status.st_ino)
        #if canImport(Darwin)
        modifiedSeconds = Int(status.st_mtimespec.tv_sec)
        modifiedNanoseconds = Int(status.st_mtimespec.tv_nsec)
        #else
        modifiedSeconds = Int(status.st_mtim.tv_sec)
        modifiedNanoseconds = Int(status.st_mtim.tv_nsec)
        #endif
    }

    /// Parses `v1 sha256=<hex> size=<n> inode=<n> mtime=<s>.<ns>`.
    init?(line: String) {
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count == 5, fields[0] == "v1" else { return nil }
        var values: [Substring: Substring] = [:]
        for field in fields.dropFirst() {
            guard let equals = field.firstIndex(of: "=") else { return nil }
            values[field[..<equals]] = field[field.index(after: equals)...]
        }
        guard let digest = values["sha256"].map(String.init), (try? ArtifactNames.normalizedDigest(digest)) == digest,
            let size = values["size"].flatMap({ Int($0) }),
            let inode = values["inode"].flatMap({ UInt64($0) }),
            let mtime = values["mtime"]?.split(separator: "."), mtime.count == 2,
            let seconds = Int(mtime[0]), let nanoseconds = Int(mtime[1])
        else { return nil }
        self.digest = digest
        self.size = size
        self.inode = inode
        modifiedSeconds = seconds
        modifiedNanoseconds = nanoseconds
    }

    var line: String {
        "v1 sha256=\(digest) size=\(size) inode=\(inode) mtime=\(modifiedSeconds).\(modifiedNanoseconds)\n"
    }

    /// Whether this record was made for the file `status` describes.
    func describes(_ status: stat) -> Bool {
        let current = DigestRecord(digest: digest, status: status)
        return current == self
    }

    /// Reads the sidecar of `name`, if there is a well-formed one.
    static func read(for name: String, in directory: Descriptor) -> DigestRecord? {
        let fd = POSIX.openat(directory.rawValue, sidecarName(for: name), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        let file = Descriptor(fd)
        guard let status = file.status(), POSIX.isRegularFile(status), status.st_size < 4096 else { return nil }
        var bytes: [UInt8] = []
        guard case .success = POSIX.readAll(file.rawValue, chunkSize: 4096, { bytes.append(contentsOf: $0) }) else {
            return nil
        }
        return DigestRecord(line: String(decoding: bytes, as: UTF8.self))
    }

    /// Writes the sidecar atomically (temporary file, fsync, rename over the
    /// old sidecar: a cache of the store's own, which no row describes); the
    /// caller fsyncs the directory.
    func write(for name: String, in directory: Descriptor, directoryPath: String) throws(ArtifactError) {
        let pending = try PendingFile(in: directory, directoryPath: directoryPath)
        try pending.append(Array(line.utf8))
        _ = try pending.seal()
        try pending.replace(Self.sidecarName(for: name))
    }
}
