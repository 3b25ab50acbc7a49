import ArtifactStore
import Backup
import ControlPlane
import Core
import Foundation
import Hummingbird
import Logging
import PostgresNIO
import Prometheus
import Provisioner
import ServiceLifecycle
import TenantRouter

/// What the routes work with, built once per process by the Runtime.
public struct APIDependencies: Sendable {
    public var adminToken: String
    public var controlURL: PostgresURL
    public var control: ControlPool
    public var secrets: SecretBox
    /// The latest control migration, which `/readyz` expects to find applied.
    public var controlSchemaVersion: Int
    public var registry: PrometheusCollectorRegistry
    public var pools: TenantPools
    public var store: ArtifactStore
    public var resolver: TenantKeyResolver
    public var keyFormat: APIKeyFormat
    public var frontDoor: FrontDoor
    public var provisioner: Provisioner
    /// For exports and moves: jobs hold their control connections for
    /// minutes, so this context has no pool of its own.
    public var backup: BackupContext
    public var uploadLimit: Int
    public var adminJobs: Int
    public var logger: Logger

    public init(
        adminToken: String, controlURL: PostgresURL, control: ControlPool, secrets: SecretBox, controlSchemaVersion: Int,
        registry: PrometheusCollectorRegistry, pools: TenantPools, store: ArtifactStore, resolver: TenantKeyResolver,
        keyFormat: APIKeyFormat, frontDoor: FrontDoor, provisioner: Provisioner, backup: BackupContext, uploadLimit: Int, adminJobs: Int, logger: Logger
    ) {
        self.adminToken = adminToken
        self.controlURL = controlURL
        self.control = control
        self.secrets = secrets
        self.controlSchemaVersion = controlSchemaVersion
        self.registry = registry
        self.pools = pools
        self.store = store
        self.resolver = resolver
        self.keyFormat = keyFormat
        self.frontDoor = frontDoor
        self.provisioner = provisioner
        self.backup = backup
        self.uploadLimit = uploadLimit
        self.adminJobs = adminJobs
        self.logger = logger
    }
}

/// Every route and middleware of the HTTP API, and the one service the
/// routes need running (the admin job runner).
public enum APIRouter {
    public static func make(_ dependencies: APIDependencies) throws -> (
        router: Router<APIRequestContext>, services: [any Service]
    ) {
        let logger = dependencies.logger
        let control = ControlAccess(
            pool: dependencies.control, controlURL: dependencies.controlURL, secrets: dependencies.secrets)
        let router = Router(context: APIRequestContext.self)
        router.middlewares.add(RequestIDMiddleware())
        router.middlewares.add(MetricsMiddleware(registry: dependencies.registry))
        router.middlewares.add(ErrorMiddleware())
        HealthRoutes(control: control, controlSchemaVersion: dependencies.controlSchemaVersion).register(on: router)
        OperationsRoutes(registry: dependencies.registry, openAPIDocument: try OpenAPIDocument.load())
            .register(on: router, metrics: dependencies.frontDoor.metrics)
        let tenantAPI = router.group("v1").add(
            middleware: TenantAuthMiddleware(
                resolver: dependencies.resolver, limiter: dependencies.frontDoor.limiter,
                proxies: dependencies.frontDoor.trustedProxies, pools: dependencies.pools, store: dependencies.store,
                runQueue: RunQueueSignal(control: control), failures: AuthFailureMetrics(registry: dependencies.registry)))
        TenantRoutes(uploadLimit: dependencies.uploadLimit).register(on: tenantAPI)
        let adminAuth = AdminAuthMiddleware(adminToken: dependencies.adminToken)
        let admin = router.group("admin").add(middleware: adminAuth)
        if dependencies.frontDoor.metrics == .admin {
            MetricsRoute(registry: dependencies.registry).register(on: router.group().add(middleware: adminAuth))
        }
        AdminLLMRoutes(control: control).register(on: admin)
        AdminServerRoutes(control: control).register(on: admin)
        let resolver = dependencies.resolver
        let pools = dependencies.pools
        let tenantChanged: @Sendable (TenantSlug) -> Void = { slug in
            resolver.forget(tenantID: slug.rawValue)
            pools.close(tenantID: slug.rawValue)
        }
        AdminTenantRoutes(
            control: control, provisioner: dependencies.provisioner, keyFormat: dependencies.keyFormat,
            tenantChanged: tenantChanged)
            .register(on: admin)
        let jobs = AdminJobRunner(control: control, concurrency: dependencies.adminJobs, logger: logger)
        AdminBackupRoutes(control: control, context: dependencies.backup, runner: jobs, tenantChanged: tenantChanged)
            .register(on: admin)
        return (router, [jobs])
    }
}

/// The control database as request handlers reach it: a pooled connection,
/// waited for at most `wait` (then 503), never longer.
struct ControlAccess: Sendable {
    let pool: ControlPool
    let controlURL: PostgresURL
    let secrets: SecretBox

    /// An unavailable control database is `control_unavailable` (503), on
    /// every route alike.
    func run<Result: Sendable>(_ body: @escaping @Sendable (ControlStore) async throws -> Result) async throws -> Result {
        try await pool.run(body)
    }
}
