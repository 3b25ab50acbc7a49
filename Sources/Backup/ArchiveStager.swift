import Core
import Tar
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Unpacks an export into a private staging directory and checks it against
/// its manifest, creating nothing outside that directory. Only four kinds of
/// member are accepted — `manifest.json`, its signature, `database.dump` and
/// files under `artifacts/` — each once; the tar reader has already refused absolute
/// paths, `..`, links and devices. Blocking file I/O: run it off the event loops.
struct ArchiveStager: Sendable {
    struct Staged: Sendable {
        let manifest: ArchiveManifest
        let databaseFile: String
        /// The artifact tree as `{stage}/artifacts`, when the archive has one.
        let artifactsDirectory: String?
        let artifacts: Int
        /// The manifest's exact bytes and the signature the archive carries
        /// for them, if any (checked by the importer, which has the key).
        let manifestBytes: [UInt8]
        let signature: [UInt8]?
    }

    static let manifestLimit = 64 << 20

    let archive: String
    let directory: String

    func stage() throws -> Staged {
        let reader = try TarReader(path: archive)
        var manifestBytes: [UInt8]?
        var signature: [UInt8]?
        var extracted: [String: ArchivedDigest] = [:]
        while let entry = try reader.next() {
            let name = entry.name
            let isArtifact = name.hasPrefix(ArchiveManifest.artifactsDirectory + "/")
            switch entry.kind {
            case .directory:
                guard isArtifact || name == ArchiveManifest.artifactsDirectory else {
                    throw BackupError.invalidArchive("unexpected member \(name)")
                }
                try makeDirectories(name)
            case .file:
                if name == ArchiveManifest.fileName {
                    guard manifestBytes == nil else { throw BackupError.invalidArchive("\(name) appears twice") }
                    manifestBytes = try reader.readContent(limit: Self.manifestLimit)
                    continue
                }
                if name == ArchiveManifest.signatureFileName {
                    guard signature == nil else { throw BackupError.invalidArchive("\(name) appears twice") }
                    signature = try reader.readContent(limit: 256)
                    continue
                }
                guard isArtifact || name == ArchiveManifest.databaseFileName else {
                    throw BackupError.invalidArchive("unexpected member \(name)")
                }
                guard extracted[name] == nil else { throw BackupError.invalidArchive("\(name) appears twice") }
                if let parent = name.range(of: "/", options: .backwards).map({ String(name[..<$0.lowerBound]) }) {
                    try makeDirectories(parent)
                }
                extracted[name] = try extract(reader, to: name)
            }
        }
        guard let manifestBytes else { throw BackupError.invalidArchive("it has no \(ArchiveManifest.fileName)") }
        let manifest: ArchiveManifest
        do {
            manifest = try ArchiveManifest.decoder.decode(ArchiveManifest.self, from: Data(manifestBytes))
        } catch {
            throw BackupError.invalidArchive("\(ArchiveManifest.fileName) is not a valid manifest")
        }
        guard manifest.format == ArchiveManifest.format else {
            throw BackupError.invalidArchive("its manifest is not a \(ArchiveManifest.format) manifest")
        }
        guard manifest.formatVersion <= ArchiveManifest.currentFormatVersion else {
            throw BackupError.invalidArchive(
                "its format version \(manifest.formatVersion) is newer than this binary reads (\(ArchiveManifest.currentFormatVersion))")
        }
        try verify(manifest, against: extracted)
        let artifacts = "\(directory)/\(ArchiveManifest.artifactsDirectory)"
        return Staged(
            manifest: manifest, databaseFile: "\(directory)/\(ArchiveManifest.databaseFileName)",
            artifactsDirectory: FileManager.default.fileExists(atPath: artifacts) ? artifacts : nil,
            artifacts: extracted.count - 1, manifestBytes: manifestBytes, signature: signature)
    }

    /// Every member is listed with its size and digest, and everything listed is there.
    private func verify(_ manifest: ArchiveManifest, against extracted: [String: ArchivedDigest]) throws {
        var listed: Set<String> = []
        for file in manifest.files {
            guard listed.insert(file.path).inserted else {
                throw BackupError.invalidArchive("its manifest lists \(file.path) twice")
            }
            guard let found = extracted[file.path] else {
                throw BackupError.invalidArchive("\(file.path) is listed in the manifest but missing")
            }
            guard found.size == file.size, found.sha256 == file.sha256.lowercased() else {
                throw BackupError.invalidArchive("\(file.path) does not match the size and sha256 its manifest records")
            }
        }
        if let extra = extracted.keys.sorted().first(where: { !listed.contains($0) }) {
            throw BackupError.invalidArchive("\(extra) is not listed in the manifest")
        }
        guard extracted[ArchiveManifest.databaseFileName] != nil else {
            throw BackupError.invalidArchive("it has no \(ArchiveManifest.databaseFileName)")
        }
    }

    private func extract(_ reader: TarReader, to name: String) throws -> ArchivedDigest {
        let path = "\(directory)/\(name)"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw BackupError.invalidArchive("cannot unpack \(name): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        return try reader.copyContent(to: fd)
    }

    /// Creates `relative`'s directories under the stage, one at a time, and
    /// refuses anything in the way that is not a directory we made.
    private func makeDirectories(_ relative: String) throws {
        var path = directory
        for component in relative.split(separator: "/") {
            path += "/\(component)"
            if mkdir(path, 0o700) != 0, errno != EEXIST {
                throw BackupError.fileSystem("cannot create \(relative) while unpacking: \(String(cString: strerror(errno)))")
            }
            var info = stat()
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
                throw BackupError.invalidArchive("\(relative) is both a file and a directory")
            }
        }
    }
}
