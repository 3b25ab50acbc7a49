import Core
import Tar

/// Why an export, import, backup or move did not happen. Archive format
/// problems are `ArchiveError`s; these are the rest.
public enum BackupError: OperatorError, Equatable {
    /// `pg_dump` or `pg_restore` is not where it should be.
    case toolMissing(String)
    /// `pg_dump` or `pg_restore` exited non-zero: which, its status, its last words.
    case toolFailed(tool: String, status: Int32, stderr: String)
    /// The archive is well-formed tar but not a valid export: what is wrong.
    case invalidArchive(String)
    /// The archive holds a schema this binary does not know.
    case newerSchema(archive: Int, known: Int)
    case outputExists(String)
    case fileSystem(String)
    /// The copy on the target server differs from the source: what differs.
    case verificationFailed(String)
    /// An artifact the dump references is missing or differs (it changed
    /// during the export); the export is refused rather than inconsistent.
    case inconsistentArtifacts(String)
    /// The tenant's database references files outside the tenant's own tree
    /// (how many): its rows are the tenant's to write, so this is refused.
    case foreignArtifactPaths(Int)
    /// `--require-signed` and the archive is not signed by this deployment.
    case unsignedArchive(String)
    case importFailed(slug: String, reason: String)
    case moveFailed(slug: String, reason: String)
    /// The tenant cannot move online (its schema is not the template's, or
    /// the servers do not allow it): why. `--offline` moves it by dump and restore.
    case onlineMoveRefused(String)

    public var httpStatus: Int {
        switch self {
        case .invalidArchive, .newerSchema, .foreignArtifactPaths, .unsignedArchive: 422
        case .outputExists, .onlineMoveRefused: 409
        case .inconsistentArtifacts: 409
        case .toolMissing, .toolFailed, .fileSystem, .verificationFailed, .importFailed, .moveFailed: 500
        }
    }

    public var code: String {
        switch self {
        case .toolMissing: "postgres_tool_missing"
        case .toolFailed: "postgres_tool_failed"
        case .invalidArchive: "invalid_archive"
        case .newerSchema: "archive_schema_too_new"
        case .outputExists: "output_exists"
        case .fileSystem: "file_system_error"
        case .verificationFailed: "verification_failed"
        case .inconsistentArtifacts: "inconsistent_artifacts"
        case .foreignArtifactPaths: "foreign_artifact_paths"
        case .unsignedArchive: "archive_not_signed"
        case .importFailed: "import_failed"
        case .moveFailed: "move_failed"
        case .onlineMoveRefused: "online_move_refused"
        }
    }

    public var message: String {
        switch self {
        case .toolMissing(let what): what
        case .toolFailed(let tool, let status, let stderr):
            "\(tool) exited with status \(status)" + (stderr.isEmpty ? "" : ": \(stderr)")
        case .invalidArchive(let why): "not a valid tenantplane export: \(why)"
        case .newerSchema(let archive, let known):
            "the archive's schema version \(archive) is newer than this binary knows (\(known)); upgrade tenantplane first"
        case .outputExists(let path): "\(path) already exists; choose another --out or remove it"
        case .fileSystem(let what): what
        case .verificationFailed(let what): "the copy does not match the original: \(what)"
        case .inconsistentArtifacts(let what): "artifacts changed while they were exported (\(what)); run the export again"
        case .foreignArtifactPaths(let count):
            "the tenant's database references \(count) file(s) outside the tenant's own storage tree (an artifacts.file_path it changed); refused"
        case .unsignedArchive(let why): "the archive was not made by this deployment (\(why)), and --require-signed refuses it"
        case .importFailed(let slug, let reason):
            "importing \(slug) failed; its database, role and files were dropped (the tenant is marked failed): \(reason)"
        case .moveFailed(let slug, let reason):
            "moving \(slug) failed; it stays on its old server, active: \(reason)"
        case .onlineMoveRefused(let why):
            "cannot move online: \(why); `tenant move --offline` moves it by dump and restore (writes paused meanwhile)"
        }
    }
}
