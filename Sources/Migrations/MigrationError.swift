import Core

public enum MigrationError: OperatorError {
    case unreadableDirectory(String)
    case unreadableFile(String, String)
    case invalidFileName(String)
    case duplicateVersion(Int, [String])
    case drift([ChecksumDrift])
    case failed(MigrationFailure)
    /// The fleet (a tenant database or a template) holds migrations newer than
    /// this binary's files: an older binary during a rolling deploy, which must
    /// not migrate, rebuild or record anything backwards.
    case binaryBehindFleet(knows: Int, fleetAt: Int)

    public var httpStatus: Int {
        switch self {
        case .drift, .binaryBehindFleet: 409
        default: 500
        }
    }

    public var code: String {
        switch self {
        case .unreadableDirectory, .unreadableFile, .invalidFileName, .duplicateVersion: "invalid_migrations"
        case .drift: "migration_drift"
        case .failed: "migration_failed"
        case .binaryBehindFleet: "binary_behind_fleet"
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
        case .binaryBehindFleet(let knows, let fleetAt):
            "this binary knows migrations up to \(knows); the fleet is at \(fleetAt)"
        }
    }
}
