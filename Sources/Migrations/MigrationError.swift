import Core

public enum MigrationError: OperatorError {
    case unreadableDirectory(String)
    case unreadableFile(String, String)
    case invalidFileName(String)
    case duplicateVersion(Int, [String])
    case drift([ChecksumDrift])
    case failed(MigrationFailure)

    public var httpStatus: Int {
        switch self {
        case .drift: 409
        default: 500
        }
    }

    public var code: String {
        switch self {
        case .unreadableDirectory, .unreadableFile, .invalidFileName, .duplicateVersion: "invalid_migrations"
        case .drift: "migration_drift"
        case .failed: "migration_failed"
        }
    }

    public var message: String {
        switch self {
        case .unreadableDirectory(let path):
            "cannot read the migration folder \(path)"
        case .unreadableFile(let name, let why):
            "cannot read migration \(name): \(why)"
        case .invalidFileName(let name):
            "migration file \(name) does not match NNN_snake_case.sql (at least three digits, then a-z, 0-9, _)"
        case .duplicateVersion(let version, let names):
            "two migration files share version \(version): \(names.joined(separator: ", "))"
        case .drift(let drift):
            "checksum drift, refusing to migrate: " + drift.map(\.description).joined(separator: "; ")
        case .failed(let failure):
            failure.summary
        }
    }
}
