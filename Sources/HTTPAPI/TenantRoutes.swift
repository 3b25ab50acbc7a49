import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import TenantData

/// The tenant API under `/v1`. Every handler works through `requireTenant()`,
/// the session of the key's own tenant; no handler reads a tenant id from the
/// path, the query or the body. Tenant JSON is written with explicit snake_case
/// keys (no key conversion), so keys inside `input` and `config` stay as sent.
struct TenantRoutes {
    func register(on group: RouterGroup<APIRequestContext>) {
        group.post("runs") { request, context -> Response in
            let body = try await request.body.collect(upTo: context.maxUploadSize)
            let run = try NewRun.parse(Data(body.readableBytesView))
            let record = try await context.requireTenant().withStore { try await $0.createRun(run) }
            return TenantJSON.response(json: record.json, status: .accepted)
        }
        group.get("runs") { request, context -> Response in
            let query = request.uri.queryParameters
            let status = query.get("status")
            let cursor = query.get("cursor")
            let limit = try PageLimit(query.get("limit"))
            let page = try await context.requireTenant().withStore {
                try await $0.runs(status: status, cursor: cursor, limit: limit)
            }
            return TenantJSON.response(json: page.json)
        }
        group.get("runs/{id}") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            let run = try await context.requireTenant().withStore { try await $0.run(id: id) }
            return TenantJSON.response(json: run.json)
        }
        group.get("runs/{id}/steps") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            let steps = try await context.requireTenant().withStore { try await $0.steps(ofRun: id) }
            return try TenantJSON.response(["steps": steps])
        }
        group.get("prompts") { _, context -> Response in
            let prompts = try await context.requireTenant().withStore { try await $0.activePrompts() }
            return try TenantJSON.response(["prompts": prompts])
        }
        group.get("prompts/{step}") { _, context -> Response in
            guard let step = StepName(context.parameters.get("step") ?? "") else { throw TenantDataError.promptNotFound }
            let versions = try await context.requireTenant().withStore { try await $0.promptVersions(step: step) }
            return try TenantJSON.response(PromptVersions(step: step.rawValue, versions: versions))
        }
        group.put("prompts/{step}") { request, context -> Response in
            guard let step = StepName(context.parameters.get("step") ?? "") else {
                throw TenantDataError.invalid("the step name in the path must match ^[a-z][a-z0-9_-]{0,62}$")
            }
            let body = try await request.body.collect(upTo: context.maxUploadSize)
            let prompt = try NewPrompt.parse(Data(body.readableBytesView))
            let stored = try await context.requireTenant().withStore { try await $0.putPrompt(step: step, prompt) }
            return try TenantJSON.response(stored, status: .created)
        }
        group.get("audit-logs") { request, context -> Response in
            let query = request.uri.queryParameters
            let cursor = query.get("cursor")
            let limit = try PageLimit(query.get("limit"))
            let page = try await context.requireTenant().withStore { try await $0.auditLogs(cursor: cursor, limit: limit) }
            return try TenantJSON.response(page)
        }
        group.get("usage") { _, context -> Response in
            let usage = try await context.requireTenant().withStore { try await $0.usage() }
            return try TenantJSON.response(usage)
        }
    }

    struct PromptVersions: Encodable {
        let step: String
        let versions: [PromptRecord]
    }
}

enum TenantJSON {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    static func response(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try encoder.encode(value)
        return Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func response(json: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: json)))
    }
}
