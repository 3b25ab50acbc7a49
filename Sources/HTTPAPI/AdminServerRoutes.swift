import ControlPlane
import Core
import Hummingbird

/// Database servers under `/admin/servers`, the same as `tenantplane server`.
struct AdminServerRoutes {
    let control: ControlAccess

    struct NewServer: Decodable {
        let name: String
        let url: String
        let capacity: Int?
    }

    struct Servers: ResponseEncodable { let servers: [DatabaseServer] }

    func register(on admin: RouterGroup<APIRequestContext>) {
        admin.get("servers") { _, _ in
            Servers(servers: try await control.run { try await $0.servers() })
        }
        admin.post("servers") { request, context -> EditedResponse<DatabaseServer> in
            let body = try await request.decode(as: NewServer.self, context: context)
            let url = try PostgresURL(body.url)
            let server = try await control.run { [secrets = control.secrets] store in
                try await store.addServer(
                    name: body.name, adminURL: url, capacity: body.capacity ?? DatabaseServer.defaultCapacity,
                    secrets: secrets, actor: .adminToken)
            }
            return EditedResponse(status: .created, response: server)
        }
    }
}

extension DatabaseServer: ResponseEncodable {}
