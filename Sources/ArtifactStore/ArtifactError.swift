import Core

/// What can go wrong with a stored file. Messages never echo the tenant's input
/// (a missing artifact and a foreign one read the same); a storage failure names
/// the path relative to the storage root, never the root itself.
public enum ArtifactError: OperatorError, Equatable {
    /// A tenant id, run, step, artifact name or path that breaks its pattern.
    case invalidName
    /// A digest that is not 64 hexadecimal digits.
    case invalidDigest
    case notFound
    /// The file's sha256 differs from the digest it was recorded with.
    case integrityFailure
    /// An upload past its limit (bytes).
    case tooLarge(limit: Int)
    /// The name already holds a file: artifact names are write-once.
    case alreadyExists
    /// A step's `output.json` is taken by bytes a committed row describes, or
    /// the writer no longer holds the run's lease: it leaves them as they are.
    case outputTaken
    /// The tenant has no storage directory (it was deleted, or is being).
    case tenantStorageMissing
    /// The filesystem refused: what failed, with the relative path.
    case storageFailure(String)

    public var httpStatus: Int {
        switch self {
        case .invalidName, .invalidDigest: 400
        case .notFound: 404
        case .integrityFailure, .alreadyExists, .outputTaken: 409
        case .tenantStorageMissing: 404
        case .tooLarge: 413
        case .storageFailure: 500
        }
    }

    public var code: String {
        switch self {
        case .invalidName: "invalid_artifact_name"
        case .invalidDigest: "invalid_digest"
        case .notFound: "not_found"
        case .integrityFailure: "integrity_failure"
        case .alreadyExists: "artifact_exists"
        case .outputTaken: "output_taken"
        case .tenantStorageMissing: "tenant_storage_missing"
        case .tooLarge: "body_too_large"
        case .storageFailure: "storage_failure"
        }
    }

    public var message: String {
        switch self {
        case .invalidName:
            "artifact names are 1-128 characters of A-Z, a-z, 0-9, '.', '_' and '-', start with a letter or digit and"
                + " contain no '..'; paths are {tenant}/{run}/{step}/output.json or {tenant}/{run}/{step}/artifacts/{name}"
        case .invalidDigest:
            "a digest is the sha256 of the file as 64 hexadecimal digits"
        case .notFound:
            "no such artifact"
        case .integrityFailure:
            "the stored file does not match its recorded digest"
        case .tooLarge(let limit):
            "the upload is larger than the limit of \(limit) bytes"
        case .alreadyExists:
            "an artifact of that name already exists; artifact names are write-once (upload under another name)"
        case .outputTaken:
            "the step's output is already recorded, or this worker no longer holds the run"
        case .tenantStorageMissing:
            "the tenant's storage directory does not exist (the tenant is deleted or being deleted)"
        case .storageFailure(let what):
            "storage failure: \(what)"
        }
    }
}
