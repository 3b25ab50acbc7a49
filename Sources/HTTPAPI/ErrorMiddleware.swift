import Core
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import TenantRouter

/// `{"error": {"code", "message"}}` with the error's status, for every failure:
/// operator errors as they are, Hummingbird's own (404 route, 413 body), bad JSON
/// as 400, and anything unexpected as 500 with the detail in the log only.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch {
            let body = APIErrorBody(error)
            if let detail = body.internalDetail {
                context.logger.error("request failed", metadata: ["error": "\(detail)"])
            }
            return body.response()
        }
    }
}

struct APIErrorBody {
    let status: HTTPResponse.Status
    let code: String
    let message: String
    let internalDetail: String?
    var headers: HTTPFields = [:]

    init(status: HTTPResponse.Status, code: String, message: String) {
        self.status = status
        self.code = code
        self.message = message
        self.internalDetail = nil
    }

    init(_ error: any Error) {
        switch error {
        case let error as HTTPError:
            status = error.status
            code = Self.code(for: error.status)
            message = error.body ?? Self.message(for: error.status)
            internalDetail = nil
            headers = error.headers
        case let error as any HTTPResponseError:
            status = error.status
            code = Self.code(for: error.status)
            message = Self.message(for: error.status)
            internalDetail = nil
        case let error as DecodingError:
            status = .badRequest
            code = "invalid_json"
            message = Self.describe(decodingError: error)
            internalDetail = nil
        default:
            let failure = OperatorFailure(error)
            status = HTTPResponse.Status(code: failure.httpStatus)
            code = failure.code
            message = failure.message
            internalDetail = failure.internalDetail
            if let retry = (error as? TenantAccessError)?.retryAfterSeconds {
                headers[.retryAfter] = String(retry)
            } else if failure.httpStatus == 503 {
                headers[.retryAfter] = "1"
            }
        }
    }

    func response() -> Response {
        struct Envelope: Encodable {
            struct Inner: Encodable {
                let code: String
                let message: String
            }
            let error: Inner
        }
        var headers = self.headers
        headers[.contentType] = "application/json; charset=utf-8"
        let data = (try? APICoding.encoder.encode(Envelope(error: .init(code: code, message: message)))) ?? Data()
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func code(for status: HTTPResponse.Status) -> String {
        switch status.code {
        case 400: "bad_request"
        case 401: "unauthorized"
        case 403: "forbidden"
        case 404: "not_found"
        case 405: "method_not_allowed"
        case 409: "conflict"
        case 413: "body_too_large"
        case 503: "unavailable"
        default: status.code >= 500 ? "internal_error" : "bad_request"
        }
    }

    static func message(for status: HTTPResponse.Status) -> String {
        switch status.code {
        case 404: "no such resource"
        case 413: "request body is too large (JSON bodies are limited to 1 MiB)"
        default: status.reasonPhrase
        }
    }

    /// Says what is wrong with the body without echoing its values.
    static func describe(decodingError: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
            return keys.isEmpty ? "the body" : keys.joined(separator: ".")
        }
        switch decodingError {
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "the body is not valid JSON" : "invalid value at \(path(context))"
        case .keyNotFound(let key, _):
            return "missing field \(key.stringValue)"
        case .typeMismatch(_, let context), .valueNotFound(_, let context):
            return "wrong type at \(path(context))"
        @unknown default:
            return "the body does not match the expected JSON"
        }
    }
}
