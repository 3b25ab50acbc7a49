import Hummingbird
import HTTPTypes
import Logging

/// Gives every request an id (the caller's `X-Request-ID` when sane), echoes it
/// in the response and puts it on every log line of the request.
struct RequestIDMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        var context = context
        let given = request.headers[.requestID].flatMap { value in
            value.utf8.count <= 64 && value.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F } ? value : nil
        }
        let id = given ?? context.id
        context.logger[metadataKey: "request_id"] = "\(id)"
        var response = try await next(request, context)
        response.headers[.requestID] = id
        return response
    }
}

extension HTTPField.Name {
    static let requestID = Self("X-Request-ID")!
}
