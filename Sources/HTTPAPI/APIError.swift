import Core

/// Failures that only the HTTP layer knows of.
enum APIError: OperatorError {
    case unauthorized(String)
    case unavailable(String)

    var httpStatus: Int {
        switch self {
        case .unauthorized: 401
        case .unavailable: 503
        }
    }

    var code: String {
        switch self {
        case .unauthorized: "unauthorized"
        case .unavailable: "unavailable"
        }
    }

    var message: String {
        switch self {
        case .unauthorized(let why), .unavailable(let why): why
        }
    }
}
