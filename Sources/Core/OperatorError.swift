/// An error an operator can act on: one HTTP status, one stable machine code and
/// one line of text that is safe to print (no secrets, no echoed request ids).
public protocol OperatorError: Error, CustomStringConvertible, Sendable {
    var httpStatus: Int { get }
    var code: String { get }
    var message: String { get }
}

extension OperatorError {
    public var description: String { message }
}

/// Any error as an operator should see it: operator errors as they are, server
/// errors by SQLSTATE and message, anything else as an internal error whose
/// detail belongs in the log only.
public struct OperatorFailure: OperatorError {
    public let httpStatus: Int
    public let code: String
    public let message: String
    /// The unexpected error behind an internal failure, for the log.
    public let internalDetail: String?

    public init(_ error: any Error) {
        if let known = error as? any OperatorError {
            httpStatus = known.httpStatus
            code = known.code
            message = known.message
            internalDetail = nil
        } else if let state = error.sqlState, state == "22021" || state == "22P05" {
            // Only a value can cause these: text with U+0000, which PostgreSQL
            // stores neither in text nor in jsonb.
            httpStatus = 400
            code = "invalid_text"
            message = "text values must not contain NUL characters (\\u0000)"
            internalDetail = nil
        } else if let state = error.sqlState {
            httpStatus = 500
            code = "database_error"
            message = "PostgreSQL error \(state): \(error.serverMessage ?? "server error")"
            internalDetail = String(reflecting: error)
        } else {
            httpStatus = 500
            code = "internal_error"
            message = "internal error"
            internalDetail = String(reflecting: error)
        }
    }
}
