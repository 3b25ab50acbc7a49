import ControlPlane
import Core
import Foundation

/// `manifest.json`, the last member of an export: what the archive holds and
/// the size and sha256 of every other member. It carries no secret: no role
/// password, no API key, not even the database URL.
public struct ArchiveManifest: Codable, Sendable, Equatable {
    public static let format = "tenantplane-export"
    public static let currentFormatVersion = 1
    public static let fileName = "manifest.json"
    /// The HMAC-SHA256 of `manifest.json`'s bytes (see `ArchiveSigner`).
    public static let signatureFileName = "manifest.json.hmac-sha256"
    public static let databaseFileName = "database.dump"
    public static let artifactsDirectory = "artifacts"

    public struct Tenant: Codable, Sendable, Equatable {
        public var id: String
        public var name: String
        public var status: String
        public var server: String?
        public var createdAt: Date
    }

    public struct Migration: Codable, Sendable, Equatable {
        public var version: Int
        public var name: String
        public var sha256: String
    }

    public struct Schema: Codable, Sendable, Equatable {
        public var version: Int
        public var migrations: [Migration]
    }

    public struct File: Codable, Sendable, Equatable {
        public var path: String
        public var size: Int64
        public var sha256: String
    }

    public var format: String
    public var formatVersion: Int
    public var createdAt: Date
    /// The moment the database and files are as of: the dump's snapshot,
    /// taken while writes went on (absent in archives made before exports
    /// stopped pausing writes).
    public var snapshotAt: Date?
    public var tenant: Tenant
    public var schema: Schema
    /// How the database member was made, for a reader without tenantplane.
    public var database: String
    public var files: [File]
    /// Artifacts the dump references (newest row per path), every one checked
    /// against its recorded digest while it was archived.
    public var referencedArtifacts: Int

    static var encoder: JSONEncoder { JSONCoding.snakeCasePretty }
    static var decoder: JSONDecoder { JSONCoding.snakeCaseDecoder }
}
