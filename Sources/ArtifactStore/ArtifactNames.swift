import Core
import Foundation

/// The patterns every path component must match. Checked on bytes, so nothing
/// outside ASCII (and no NUL, '/' or leading '.') ever reaches the filesystem.
enum ArtifactNames {
    static let outputFileName = "output.json"
    static let artifactsDirectory = "artifacts"

    static func isTenantID(_ value: some StringProtocol) -> Bool { NameRule.tenantID.accepts(value) }

    static func isStep(_ value: some StringProtocol) -> Bool { StepName.isValid(value) }

    /// `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$` without `..`. A valid name never
    /// starts with '.', so the store's own files (`.tmp-…`, `.sha256-…`) can
    /// never collide with one.
    static func isArtifactName(_ value: some StringProtocol) -> Bool {
        let bytes = Array(value.utf8)
        guard (1...128).contains(bytes.count), isAlphanumeric(bytes[0]) else { return false }
        var previous: UInt8 = 0
        for byte in bytes {
            guard isAlphanumeric(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_")
                || byte == UInt8(ascii: "-")
            else { return false }
            if byte == UInt8(ascii: "."), previous == UInt8(ascii: ".") { return false }
            previous = byte
        }
        return true
    }

    /// A run id as the store spells it: a UUID in lowercase.
    static func isRunID(_ value: some StringProtocol) -> Bool {
        guard value.utf8.count == 36, let uuid = UUID(uuidString: String(value)) else { return false }
        return runComponent(uuid) == String(value)
    }

    static func runComponent(_ run: UUID) -> String { run.uuidString.lowercased() }

    /// A sha256 digest in lowercase hex, from 64 hex digits of either case.
    static func normalizedDigest(_ value: String) throws(ArtifactError) -> String {
        let bytes = Array(value.utf8)
        guard bytes.count == 64, bytes.allSatisfy({ isDigit($0) || (0x61...0x66).contains($0 | 0x20) }) else {
            throw .invalidDigest
        }
        return value.lowercased()
    }

    private static func isLower(_ byte: UInt8) -> Bool { (0x61...0x7A).contains(byte) }
    private static func isDigit(_ byte: UInt8) -> Bool { (0x30...0x39).contains(byte) }
    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        isLower(byte) || isDigit(byte) || (0x41...0x5A).contains(byte)
    }
}

/// Where a file lives below the storage root: its directories (tenant, run,
/// step and, for uploads, `artifacts`) and its own name, all validated.
struct ArtifactLocation: Sendable, Equatable {
    let directories: [String]
    let fileName: String

    var directoryPath: String { directories.joined(separator: "/") }
    var path: String { directoryPath + "/" + fileName }

    static func output(tenant: String, run: UUID, step: String) throws(ArtifactError) -> ArtifactLocation {
        guard ArtifactNames.isStep(step) else { throw .invalidName }
        return ArtifactLocation(
            directories: [tenant, ArtifactNames.runComponent(run), step], fileName: ArtifactNames.outputFileName)
    }

    static func artifact(tenant: String, run: UUID, step: String, name: String) throws(ArtifactError) -> ArtifactLocation {
        guard ArtifactNames.isStep(step), ArtifactNames.isArtifactName(name) else { throw .invalidName }
        return ArtifactLocation(
            directories: [tenant, ArtifactNames.runComponent(run), step, ArtifactNames.artifactsDirectory],
            fileName: name)
    }

    /// Parses `{tenant}/{run}/{step}/output.json` or
    /// `{tenant}/{run}/{step}/artifacts/{name}`: anything else (absolute paths,
    /// empty components, `.`/`..`, NUL bytes, other shapes) is `invalidName`; a
    /// well-formed path of another tenant is `notFound`, as a missing one would be.
    static func parse(_ path: String, tenant: String) throws(ArtifactError) -> ArtifactLocation {
        let parts = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
        guard parts.count == 4 || parts.count == 5 else { throw .invalidName }
        guard ArtifactNames.isTenantID(parts[0]), ArtifactNames.isRunID(parts[1]), ArtifactNames.isStep(parts[2]) else {
            throw .invalidName
        }
        if parts.count == 4 {
            guard parts[3] == ArtifactNames.outputFileName else { throw .invalidName }
        } else {
            guard parts[3] == ArtifactNames.artifactsDirectory, ArtifactNames.isArtifactName(parts[4]) else {
                throw .invalidName
            }
        }
        guard parts[0].utf8.elementsEqual(tenant.utf8) else { throw .notFound }
        return ArtifactLocation(directories: Array(parts.dropLast()), fileName: parts[parts.count - 1])
    }
}

/// A `file_path` read back from a tenant's database, which the tenant could
/// have written itself: checked each time it is used, not only when it was
/// stored.
public enum StoredArtifactPath {
    /// Whether `path` has the store's shape and names a file of `tenant`'s own tree.
    public static func isInside(_ path: String, tenant: String) -> Bool {
        (try? ArtifactLocation.parse(path, tenant: tenant)) != nil
    }
}
