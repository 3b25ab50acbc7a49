import ArtifactStore
import Backup
import Config
import ControlPlane
import Core
import Foundation
import Hummingbird
import LLMProviders
import Logging
import Migrations
import PostgresNIO
import Prometheus
import Provisioner
import RunEngine
import ServiceLifecycle
import TenantRouter

/// The HTTP server and everything it runs: one `Application` whose services
/// (the control pool, then the tenant pools) start before it listens and stop
/// after it drains, in reverse order.
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
        let (router, services) = try build(withWorkers: true)
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "tenantplane"),
            services: services,
            logger: logger
        )
    }

    /// Every route the server answers, as `METHOD /path/{param}`: what the
    /// OpenAPI document must describe.
    public func routes() throws -> [String] {
        try build(withWorkers: false).router.routes.map { "\($0.method.rawValue) \($0.path)" }
    }

    /// The router and the services behind it. The run workers (and the
    /// provider gateway's HTTP client, which must be shut down once made) only
    /// when the application is going to run.
    private func build(withWorkers: Bool) throws -> (router: Router<APIRequestContext>, services: [any Service]) {
        let controlURL = try settings.requireControlURL()
        let adminToken = try settings.requireAdminToken()
        let masterKey = try settings.requireMasterKey()
        let migrations = try MigrationSet(directory: settings.controlMigrationsDirectory)

        var poolConfiguration = controlURL.clientConfiguration()
        poolConfiguration.options.maximumConnections = settings.controlPoolSize
        let controlPool = PostgresClient(configuration: poolConfiguration, backgroundLogger: logger)
        let controlAccess = ControlPool(client: controlPool, wait: settings.poolWait, logger: logger)
        let secrets = SecretBox(masterKey: masterKey)
        let control = ControlAccess(pool: controlAccess, controlURL: controlURL, secrets: secrets)

        let registry = PrometheusCollectorRegistry()
        let pools = TenantPools(
            limits: .init(budget: settings.connectionBudget, perTenant: settings.tenantPoolSize, wait: settings.poolWait),
            metrics: RouterMetrics(registry: registry), logger: logger)
        let artifactStore = ArtifactStore(root: settings.storageRoot, logger: logger)
        let resolver = TenantKeyResolver(control: controlAccess, secrets: secrets, logger: logger)

        let router = Router(context: APIRequestContext.self)
        router.middlewares.add(RequestIDMiddleware())
        router.middlewares.add(MetricsMiddleware(registry: registry))
        router.middlewares.add(ErrorMiddleware())
        HealthRoutes(control: control, controlSchemaVersion: migrations.latestVersion).register(on: router)
        OperationsRoutes(registry: registry, openAPIDocument: try OpenAPIDocument.load()).register(on: router)
        let tenantAPI = router.group("v1").add(
            middleware: TenantAuthMiddleware(
                resolver: resolver, pools: pools, store: artifactStore, runQueue: RunQueueSignal(control: control)))
        TenantRoutes(uploadLimit: settings.maxUploadBytes).register(on: tenantAPI)
        let admin = router.group("admin").add(middleware: AdminAuthMiddleware(adminToken: adminToken))
        AdminLLMRoutes(control: control).register(on: admin)
        AdminServerRoutes(control: control).register(on: admin)
        let provisioner = try Provisioner(settings: settings, logger: logger, controlPool: controlPool)
        let tenantChanged: @Sendable (TenantSlug) -> Void = { slug in
            resolver.forget(tenantID: slug.rawValue)
            pools.close(tenantID: slug.rawValue)
        }
        AdminTenantRoutes(control: control, provisioner: provisioner, tenantChanged: tenantChanged).register(on: admin)
        // Jobs hold their control connection (and the tenant's lock on it)
        // for minutes: their own, never the pool request authentication needs.
        let backup = try BackupContext(settings: settings, logger: logger, controlPool: nil)
        let jobs = AdminJobRunner(control: control, concurrency: settings.adminJobs, logger: logger)
        AdminBackupRoutes(control: control, context: backup, runner: jobs, tenantChanged: tenantChanged).register(on: admin)

        // Stopped in reverse order: the HTTP server first, then the worker
        // (which gives its leases back through the pools), then the pools.
        var services: [any Service] = [controlPool, pools]
        if withWorkers, settings.workers > 0 {
            services += RunWorker.services(
                options: RunWorker.Options(settings: settings), settings: settings, control: controlAccess,
                secrets: secrets, pools: pools, store: artifactStore, logger: logger)
        }
        services.append(ProvisioningReconciler(provisioner: provisioner, logger: logger))
        services.append(
            ArtifactSweeper(
                control: controlAccess, directory: TenantDirectory(control: controlAccess, secrets: secrets), pools: pools,
                store: artifactStore, grace: settings.sweepGrace, logger: logger, interval: settings.sweepInterval))
        services.append(jobs)
        services.append(
            BackupReconciler(
                mover: TenantMover(context: backup), importer: TenantImporter(context: backup), control: control,
                logger: logger))
        return (router, services)
    }
}

/// The control database as request handlers reach it: a pooled connection,
/// waited for at most `wait` (then 503), never longer.
struct ControlAccess: Sendable {
    let pool: ControlPool
    let controlURL: PostgresURL
    let secrets: SecretBox

    func run<Result: Sendable>(_ body: @escaping @Sendable (ControlStore) async throws -> Result) async throws -> Result {
        do {
            return try await pool.run(body)
        } catch let error as ControlUnavailable {
            throw APIError.unavailable(error.message)
        }
    }
}
