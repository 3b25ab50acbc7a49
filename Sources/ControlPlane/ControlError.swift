import Core

public enum ControlError: OperatorError, Equatable {
    case notFound(String)
    case alreadyExists(String)
    case invalid(String)
    case conflict(String)
    /// Another admin action holds the tenant: what.
    case tenantBusy(String)

    public var httpStatus: Int {
        switch self {
        case .notFound: 404
        case .alreadyExists, .conflict, .tenantBusy: 409
        case .invalid: 400
        }
    }

    public var code: String {
        switch self {
        case .notFound: "not_found"
        case .alreadyExists: "already_exists"
        case .invalid: "invalid_request"
        case .conflict: "conflict"
        case .tenantBusy: "tenant_busy"
        }
    }

    public var message: String {
        switch self {
        case .notFound(let what): what
        case .alreadyExists(let what): what
        case .invalid(let what): what
        case .conflict(let what): what
        case .tenantBusy(let what): what
        }
    }
}
