import Core

public enum ProvisionerError: OperatorError {
    case creationFailed(slug: String, reason: String)

    public var httpStatus: Int {
        switch self {
        case .creationFailed(_, let reason): reason.hasPrefix("cannot reach") ? 503 : 500
        }
    }

    public var code: String {
        switch self {
        case .creationFailed: "provisioning_failed"
        }
    }

    public var message: String {
        switch self {
        case .creationFailed(let slug, let reason):
            "creating tenant \(slug) failed: \(reason); it is marked failed, run the same create again to resume"
        }
    }
}
