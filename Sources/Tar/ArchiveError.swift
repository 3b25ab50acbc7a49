import Core
import Crypto

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why an archive could not be written or read. Names and paths in the
/// associated values are already escaped to printable ASCII.
public enum ArchiveError: OperatorError, Equatable {
    /// The file ends before the end-of-archive marker.
    case truncated
    /// Bad checksum, bad magic, a malformed number or PAX record.
    case corruptHeader(String)
    /// A member name that could escape the extraction directory or is not a plain relative path.
    case unsafePath(String)
    /// Links, devices, FIFOs, sparse files and other members that are not regular files or directories.
    case unsupportedMember(name: String, type: String)
    case memberTooLarge(String)
    /// The archive to create exists already.
    case alreadyExists(String)
    /// A source given to the writer is not a regular file (or is a symbolic link).
    case notRegularFile(String)
    /// A source file's length differed from what fstat reported when it was opened.
    case sourceChanged(String)
    /// The writer or reader was called out of order (after finish, after a failure, content read twice).
    case invalidUse(String)
    case io(String)

    public var httpStatus: Int {
        switch self {
        case .truncated, .corruptHeader, .unsafePath, .unsupportedMember, .memberTooLarge: 422
        case .alreadyExists: 409
        case .notRegularFile, .sourceChanged, .invalidUse, .io: 500
        }
    }

    public var code: String {
        switch self {
        case .truncated: "archive_truncated"
        case .corruptHeader: "archive_corrupt_header"
        case .unsafePath: "archive_unsafe_path"
        case .unsupportedMember: "archive_unsupported_member"
        case .memberTooLarge: "archive_member_too_large"
        case .alreadyExists: "archive_already_exists"
        case .notRegularFile: "archive_source_not_regular_file"
        case .sourceChanged: "archive_source_changed"
        case .invalidUse: "archive_invalid_use"
        case .io: "archive_io_error"
        }
    }

    public var message: String {
        switch self {
        case .truncated: "the archive is truncated (it ends before its end-of-archive marker)"
        case .corruptHeader(let detail): "corrupt archive header: \(detail)"
        case .unsafePath(let name): "unsafe member name in archive: \(name)"
        case .unsupportedMember(let name, let type):
            "unsupported archive member \(name) of type \(type): only regular files and directories are allowed"
        case .memberTooLarge(let name): "archive member \(name) is larger than allowed"
        case .alreadyExists(let path): "\(path) already exists"
        case .notRegularFile(let path): "\(path) is not a regular file"
        case .sourceChanged(let path): "\(path) changed size while it was being archived"
        case .invalidUse(let detail): "archive used out of order: \(detail)"
        case .io(let detail): "archive I/O error: \(detail)"
        }
    }
}

