import Core

/// What a tenant's request can get wrong about its own data. Messages never
/// echo the id that was asked for: a foreign id and a missing one read the same.
public enum TenantDataError: OperatorError, Equatable {
    case runNotFound
    case promptNotFound
    case outputNotFound
    case invalid(String)
    case conflict(String)

    public var httpStatus: Int {
        switch self {
        case .runNotFound, .promptNotFound, .outputNotFound: 404
        case .invalid: 400
        case .conflict: 409
        }
    }

    public var code: String {
        switch self {
        case .runNotFound, .promptNotFound, .outputNotFound: "not_found"
        case .invalid: "invalid_request"
        case .conflict: "conflict"
        }
    }

    public var message: String {
        switch self {
        case .runNotFound: "no such run"
        case .promptNotFound: "no prompt for that step"
        case .outputNotFound: "no stored output or artifact by that name for that step"
        case .invalid(let why), .conflict(let why): why
        }
    }
}
