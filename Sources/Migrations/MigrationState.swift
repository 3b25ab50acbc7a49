import Foundation

/// A row of schema_migrations.
public struct AppliedMigration: Sendable, Codable, Equatable {
    public let version: Int
    public let name: String
    public let checksum: String
    public let appliedAt: Date
}

/// An applied migration whose file changed since, or is gone.
public struct ChecksumDrift: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable {
        /// The file's checksum differs from the one recorded when it was applied.
        case changed
        /// The database has a migration this folder does not (it is newer).
        case missingFile = "missing_file"
    }

    public let version: Int
    public let file: String
    public let kind: Kind

    public init(version: Int, file: String, kind: Kind) {
        self.version = version
        self.file = file
        self.kind = kind
    }

    public var description: String {
        switch kind {
        case .changed: "\(file) was changed after it was applied"
        case .missingFile: "version \(version) is applied but \(file) is not in the migration folder"
        }
    }
}

/// One database's migration state.
public struct MigrationState: Sendable, Codable, Equatable {
    public let currentVersion: Int
    public let latestVersion: Int
    /// File names not applied yet, in the order they would run.
    public let pending: [String]
    public let drift: [ChecksumDrift]

    /// The database was migrated by a newer set of files than these (a newer
    /// binary's): it is not drift to repair but a version to leave alone.
    public var isAhead: Bool { currentVersion > latestVersion }

    func pendingFiles(in set: MigrationSet) -> [MigrationFile] {
        let names = Set(pending)
        return set.files.filter { names.contains($0.fileName) }
    }
}

/// What a `migrate` call did.
public struct MigrationReport: Sendable, Codable, Equatable {
    public struct Applied: Sendable, Codable, Equatable {
        public let version: Int
        public let name: String
        public let file: String
        public let durationMilliseconds: Double
    }

    public var fromVersion: Int
    public var toVersion: Int
    public var applied: [Applied]
}

/// Why a file failed, where in it, and how far the database got.
public struct MigrationFailure: Sendable, Codable, Equatable {
    public var file: String
    public var version: Int
    public var sqlState: String?
    public var message: String
    public var line: Int?
    public var column: Int?
    public var fromVersion: Int
    /// The version the database is at now (files before the failing one stay applied).
    public var reachedVersion: Int
    public var applied: [MigrationReport.Applied]

    public var summary: String {
        var text = "migration \(file) failed"
        if let line {
            text += " at line \(line)"
            if let column { text += ", column \(column)" }
        }
        if let sqlState { text += ": SQLSTATE \(sqlState)" }
        text += ": \(message)"
        return text
    }
}
