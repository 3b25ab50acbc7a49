import Core

public enum ProvisionerError: OperatorError {
    case creationFailed(slug: String, reason: String)
    /// The storage root refused a step of creating, deleting or purging a
    /// tenant's tree: what, with the path.
    case storage(String)

    public var httpStatus: Int {
        switch self {
        case .creationFailed(_, let reason): reason.hasPrefix("cannot reach") ? 503 : 500
        case .storage: 500
        }
    }

    public var code: String {
        switch self {
        case .creationFailed: "provisioning_failed"
        case .storage: "storage_failure"
        }
    }

    public var message: String {
        switch self {
        case .creationFailed(let slug, let reason):
            "creating tenant \(slug) failed: \(reason); it is marked failed, run the same create again to resume"
        case .storage(let what): "storage failure: \(what)"
        }
    }
}
