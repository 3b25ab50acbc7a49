import Core

/// What a tenant's request can get wrong about its own data. Messages never
/// echo the id that was asked for: a foreign id and a missing one read the same.
public enum TenantDataError: OperatorError, Equatable {
    case runNotFound
    case promptNotFound
    case invalid(String)

    public var httpStatus: Int {
        switch self {
        case .runNotFound, .promptNotFound: 404
        case .invalid: 400
        }
    }

    public var code: String {
        switch self {
        case .runNotFound, .promptNotFound: "not_found"
        case .invalid: "invalid_request"
        }
    }

    public var message: String {
        switch self {
        case .runNotFound: "no such run"
        case .promptNotFound: "no prompt for that step"
        case .invalid(let why): why
        }
    }
}
