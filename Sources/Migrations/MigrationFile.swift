import Core
import Crypto
import Foundation

/// One `NNN_snake_case.sql` file.
public struct MigrationFile: Sendable, Hashable {
    public let version: Int
    public let name: String
    public let fileName: String
    public let sql: String
    /// Lowercase hex SHA-256 of the file's bytes.
    public let checksum: String
    /// False when the first line is `-- tenantplane:no-transaction` (for
    /// `CREATE INDEX CONCURRENTLY` and the like). Such a file's statements run one
    /// by one in autocommit mode, so they must be safe to run again
    /// (`IF NOT EXISTS`) should the file fail halfway.
    public let runsInTransaction: Bool

    static let noTransactionMarker = "-- tenantplane:no-transaction"

    public init(fileName: String, contents: Data) throws(MigrationError) {
        guard let (version, name) = Self.parse(fileName: fileName) else { throw .invalidFileName(fileName) }
        guard let sql = String(data: contents, encoding: .utf8) else { throw .unreadableFile(fileName, "not UTF-8 text") }
        self.version = version
        self.name = name
        self.fileName = fileName
        self.sql = sql
        self.checksum = Hex.string(SHA256.hash(data: contents))
        let firstLine = sql.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        self.runsInTransaction = firstLine.trimmingCharacters(in: .whitespaces) != Self.noTransactionMarker
    }

    /// `001_create_runs.sql` → (1, "create_runs").
    static func parse(fileName: String) -> (Int, String)? {
        guard fileName.hasSuffix(".sql") else { return nil }
        let stem = fileName.dropLast(4)
        guard let underscore = stem.firstIndex(of: "_") else { return nil }
        let digits = stem[..<underscore]
        let name = stem[stem.index(after: underscore)...]
        guard digits.count >= 3, digits.allSatisfy(\.isASCII), let version = Int(digits), version > 0 else { return nil }
        guard NameRule.migrationName.accepts(name) else { return nil }
        return (version, String(name))
    }
}

/// The ordered migration files of a folder.
public struct MigrationSet: Sendable {
    public let files: [MigrationFile]
    public let directory: String

    public var latestVersion: Int { files.last?.version ?? 0 }

    public init(files: [MigrationFile], directory: String = "") throws(MigrationError) {
        let sorted = files.sorted { $0.version < $1.version }
        for (previous, next) in zip(sorted, sorted.dropFirst()) where previous.version == next.version {
            throw .duplicateVersion(next.version, [previous.fileName, next.fileName])
        }
        self.files = sorted
        self.directory = directory
    }

    /// Reads every `.sql` file of `directory`; other files (a README) are ignored,
    /// but a `.sql` file whose name does not follow the pattern is an error, so a
    /// typo never silently skips a migration.
    public init(directory: String) throws(MigrationError) {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw .unreadableDirectory(directory)
        }
        var files: [MigrationFile] = []
        for name in names where name.hasSuffix(".sql") {
            let path = URL(fileURLWithPath: directory).appendingPathComponent(name).path
            guard let contents = FileManager.default.contents(atPath: path) else {
                throw .unreadableFile(name, "cannot read it")
            }
            files.append(try MigrationFile(fileName: name, contents: contents))
        }
        try self.init(files: files, directory: directory)
    }

    public func file(version: Int) -> MigrationFile? {
        files.first { $0.version == version }
    }
}
