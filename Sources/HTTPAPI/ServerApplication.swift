import Config
import ControlPlane
import Core
import Foundation
import Hummingbird
import Logging
import Migrations
import PostgresNIO
import Provisioner
import ServiceLifecycle

/// The HTTP server and everything it runs: one `Application` whose services
/// (the control pool first) start before it listens and stop after it drains.
public struct ServerApplication {
    public let settings: Settings
    public let host: String
    public let port: Int
    public let logger: Logger

    public init(settings: Settings, host: String, port: Int, logger: Logger) {
        self.settings = settings
        self.host = host
        self.port = port
        self.logger = logger
    }

    public func make() throws -> some ApplicationProtocol {
        let controlURL = try settings.requireControlURL()
        let adminToken = try settings.requireAdminToken()
        let masterKey = try settings.requireMasterKey()
        let migrations = try MigrationSet(directory: settings.controlMigrationsDirectory)

        var poolConfiguration = controlURL.clientConfiguration()
        poolConfiguration.options.maximumConnections = settings.controlPoolSize
        let controlPool = PostgresClient(configuration: poolConfiguration, backgroundLogger: logger)
        let control = ControlAccess(
            pool: controlPool, controlURL: controlURL, secrets: SecretBox(masterKey: masterKey),
            wait: settings.poolWait, logger: logger)

        let router = Router(context: APIRequestContext.self)
        router.middlewares.add(RequestIDMiddleware())
        router.middlewares.add(ErrorMiddleware())
        HealthRoutes(control: control, controlSchemaVersion: migrations.latestVersion).register(on: router)
        let admin = router.group("admin").add(middleware: AdminAuthMiddleware(adminToken: adminToken))
        AdminLLMRoutes(control: control).register(on: admin)
        AdminServerRoutes(control: control).register(on: admin)
        let provisioner = try Provisioner(settings: settings, logger: logger, controlPool: controlPool)
        AdminTenantRoutes(control: control, provisioner: provisioner).register(on: admin)

        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "tenantplane"),
            services: [controlPool, ProvisioningReconciler(provisioner: provisioner, logger: logger)],
            logger: logger
        )
    }
}

/// The control database as request handlers reach it: a pooled connection,
/// waited for at most `wait` (then 503), never longer.
struct ControlAccess: Sendable {
    let pool: PostgresClient
    let controlURL: PostgresURL
    let secrets: SecretBox
    let wait: Duration
    let logger: Logger

    func run<Result: Sendable>(_ body: @escaping @Sendable (ControlStore) async throws -> Result) async throws -> Result {
        let pool = self.pool
        let logger = self.logger
        do {
            return try await withTimeout(wait) {
                try await pool.withConnection { connection in
                    try await body(ControlStore(connection: connection, logger: logger))
                }
            }
        } catch is TimeoutError {
            throw APIError.unavailable("the control database did not answer in time")
        }
    }
}
