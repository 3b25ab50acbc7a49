import ArtifactStore
import Core
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
    /// `TENANTPLANE_MAX_UPLOAD_BYTES`: uploads stream to disk up to this size.
    let uploadLimit: Int

    func register(on group: RouterGroup<APIRequestContext>) {
        group.post("runs") { request, context -> Response in
            let body = try await request.body.collect(upTo: context.maxUploadSize)
            let run = try NewRun.parse(Data(body.readableBytesView))
            let tenant = try context.requireTenant()
            let record = try await tenant.queueingRuns { try await tenant.withStore { try await $0.createRun(run) } }
            return TenantJSON.response(json: record.json, status: .accepted)
        }
        for action in RunAction.allCases {
            group.post("runs/{id}/\(action.rawValue)") { _, context -> Response in
                let id = context.parameters.get("id") ?? ""
                let tenant = try context.requireTenant()
                let apply = { try await tenant.withStore { try await $0.apply(action, toRun: id) } }
                let run = action.queuesWork ? try await tenant.queueingRuns(apply) : try await apply()
                return TenantJSON.response(json: run.json)
            }
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
            let run = try await context.requireTenant().withStore { try await $0.runWithInput(id: id) }
            return TenantJSON.response(json: run.json)
        }
        group.get("runs/{id}/steps") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            let steps = try await context.requireTenant().withStore { try await $0.steps(ofRun: id) }
            return try TenantJSON.response(["steps": steps])
        }
        group.get("runs/{id}/steps/{step}/output") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let step = StepName(context.parameters.get("step") ?? "") else { throw TenantDataError.outputNotFound }
            let tenant = try context.requireTenant()
            let reference = try await tenant.withStore { try await $0.output(ofRun: id, step: step) }
            return try await StoredFileResponse.make(
                tenant.artifacts, reference, contentType: "application/json; charset=utf-8", request: request)
        }
        group.get("runs/{id}/steps/{step}/artifacts") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let step = StepName(context.parameters.get("step") ?? "") else { throw TenantDataError.outputNotFound }
            let uploads = try await context.requireTenant().withStore { try await $0.uploads(ofRun: id, step: step) }
            return try TenantJSON.response(["artifacts": uploads])
        }
        group.get("runs/{id}/steps/{step}/artifacts/{name}") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let step = StepName(context.parameters.get("step") ?? "") else { throw TenantDataError.outputNotFound }
            let tenant = try context.requireTenant()
            guard let run = UUID(uuidString: id),
                let path = try? tenant.artifacts.artifactPath(run: run, step: step.rawValue, name: context.parameters.get("name") ?? "")
            else { throw TenantDataError.outputNotFound }
            let reference = try await tenant.withStore { try await $0.upload(ofRun: id, step: step, path: path) }
            return try await StoredFileResponse.make(
                tenant.artifacts, reference, contentType: "application/octet-stream", request: request)
        }
        group.post("runs/{id}/steps/{step}/artifacts/{name}") { request, context -> Response in
            let id = context.parameters.get("id") ?? ""
            guard let step = StepName(context.parameters.get("step") ?? "") else {
                throw TenantDataError.invalid("the step name in the path must match ^[a-z][a-z0-9_-]{0,62}$")
            }
            let name = context.parameters.get("name") ?? ""
            let tenant = try context.requireTenant()
            // The run must exist (and be this tenant's) before a byte is written.
            let run = try await tenant.withStore { store in
                let run = try await store.run(id: id)
                try await store.requireWritable()
                return run
            }
            let stored = try await tenant.artifacts.writeArtifact(
                run: run.id, step: step.rawValue, name: name, from: request.body, limit: uploadLimit)
            do {
                let upload = try await tenant.withStore {
                    try await $0.recordUpload(
                        run: run.id, step: step, name: name, path: stored.path, digest: stored.digest, size: stored.size)
                }
                return try TenantJSON.response(upload, status: .created)
            } catch {
                // The file is this request's own (linked under a name that was
                // free), and no row describes it unless the insert committed and
                // only its answer was lost: asked, and kept when unsure (the
                // sweep clears it later), so the name can be uploaded again.
                if (try? await tenant.withStore({ try await $0.isReferenced(path: stored.path) })) == false {
                    try? await tenant.artifacts.removeUnrecorded(path: stored.path)
                }
                throw error
            }
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

/// A stored file as a response: digest verified before the first byte is sent
/// (409 otherwise), streamed in chunks, `ETag` = digest, 304 when the client
/// already holds it.
enum StoredFileResponse {
    static func make(
        _ artifacts: TenantArtifacts, _ reference: StepOutputReference, contentType: String, request: Request
    ) async throws -> Response {
        let etag = "\"\(reference.digest)\""
        if request.headers[.ifNoneMatch] == etag {
            return Response(status: .notModified, headers: [.eTag: etag])
        }
        let file = try await artifacts.openVerified(path: reference.path, digest: reference.digest)
        return Response(
            status: .ok,
            headers: [.contentType: contentType, .eTag: etag, .contentLength: String(file.size)],
            body: ResponseBody(asyncSequence: file.chunks()))
    }
}

enum TenantJSON {
    static var encoder: JSONEncoder { JSONCoding.stable }

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
