import Core

/// Failures that only the HTTP layer knows of.
enum APIError: OperatorError {
    case unauthorized(String)
    case forbidden(String)
    case badRequest(String)
    case notFound
    case unavailable(String)

    var httpStatus: Int {
        switch self {
        case .unauthorized: 401
        case .forbidden: 403
        case .badRequest: 400
        case .notFound: 404
        case .unavailable: 503
        }
    }

    var code: String {
        switch self {
        case .unauthorized: "unauthorized"
        case .forbidden: "forbidden"
        case .badRequest: "bad_request"
        case .notFound: "not_found"
        case .unavailable: "unavailable"
        }
    }

    var message: String {
        switch self {
        case .unauthorized(let why), .forbidden(let why), .badRequest(let why), .unavailable(let why): why
        case .notFound: "no such resource"
        }
    }
}
