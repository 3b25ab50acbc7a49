import Backup
import ControlPlane
import Core
import Foundation
import Hummingbird
import TenantData

/// Exports and moves under `/admin/tenants/{id}/export|move` as jobs, and the
/// jobs under `/admin/jobs`: the same work as `tenantplane tenant export|move`.
struct AdminBackupRoutes {
    let control: ControlAccess
    let context: BackupContext
    let runner: AdminJobRunner
    let tenantChanged: @Sendable (TenantSlug) -> Void

    struct MoveRequest: Decodable {
        let to: String
        /// Dump and restore instead of logical replication.
        let offline: Bool?
    }

    struct Jobs: ResponseEncodable { let jobs: [JobView] }

    /// A job as the API shows it: its result as JSON, not JSON in a string.
    struct JobView: ResponseEncodable {
        let id: UUID
        let kind: AdminJob.Kind
        let tenantId: String
        let status: AdminJob.Status
        let detail: String?
        let result: JSONValue?
        let error: String?
        let createdAt: Date
        let startedAt: Date?
        let finishedAt: Date?

        init(_ job: AdminJob) {
            id = job.id
            kind = job.kind
            tenantId = job.tenantId
            status = job.status
            detail = job.detail
            result = job.result.flatMap { try? APICoding.decoder.decode(JSONValue.self, from: Data($0.utf8)) }
            error = job.error
            createdAt = job.createdAt
            startedAt = job.startedAt
            finishedAt = job.finishedAt
        }
    }

    func register(on admin: RouterGroup<APIRequestContext>) {
        admin.post("tenants/:id/export") { _, context -> EditedResponse<JobView> in
            let slug = try AdminTenantRoutes.slug(context)
            let job = try await control.run { store in
                _ = try await store.requireTenant(slug)
                return try await store.createJob(.export, tenant: slug)
            }
            let file = StorageLayout(root: self.context.storageRoot).exportArchive(job: job.id)
            let exporter = TenantExporter(context: self.context)
            try runner.submit(job) { progress in
                try FileManager.default.createDirectory(
                    atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                    attributes: [.posixPermissions: 0o700])
                let report = try await exporter.export(slug, to: file, actor: .adminToken, progress: progress)
                return try Self.json(report)
            }
            return EditedResponse(status: .accepted, response: JobView(job))
        }
        admin.post("tenants/:id/move") { request, context -> EditedResponse<JobView> in
            let slug = try AdminTenantRoutes.slug(context)
            let body = try await request.decode(as: MoveRequest.self, context: context)
            let job = try await control.run { store in
                _ = try await store.requireTenant(slug)
                _ = try await store.server(named: body.to)
                return try await store.createJob(.move, tenant: slug)
            }
            let mover = TenantMover(context: self.context)
            try runner.submit(job) { [tenantChanged] progress in
                defer { tenantChanged(slug) }
                return try Self.json(try await mover.move(
                    slug, to: body.to, offline: body.offline ?? false, actor: .adminToken, progress: progress))
            }
            return EditedResponse(status: .accepted, response: JobView(job))
        }
        admin.get("jobs") { _, _ in
            Jobs(jobs: try await control.run { try await $0.jobs() }.map(JobView.init))
        }
        admin.get("jobs/:job") { _, context -> JobView in
            let id = try Self.jobID(context)
            guard let job = try await control.run({ try await $0.job(id) }) else { throw ControlError.notFound("no such job") }
            return JobView(job)
        }
        admin.get("jobs/:job/archive") { _, context -> Response in
            let id = try Self.jobID(context)
            guard let job = try await control.run({ try await $0.job(id) }) else { throw ControlError.notFound("no such job") }
            guard job.kind == .export, job.status == .succeeded else {
                throw ControlError.conflict("job \(id) is not a finished export")
            }
            let path = StorageLayout(root: self.context.storageRoot).exportArchive(job: id)
            let body = try await FileIO().loadFile(path: path, context: context)
            return Response(
                status: .ok,
                headers: [
                    .contentType: "application/x-tar",
                    .contentDisposition: "attachment; filename=\"\(job.tenantId)-\(id.uuidString.lowercased()).tar\"",
                ],
                body: body)
        }
    }

    static func jobID(_ context: APIRequestContext) throws -> UUID {
        guard let raw = context.parameters.get("job"), let id = UUID(uuidString: raw) else {
            throw ControlError.notFound("no such job")
        }
        return id
    }

    static func json(_ value: some Encodable) throws -> String {
        String(decoding: try APICoding.encoder.encode(value), as: UTF8.self)
    }
}
