// Runtime: builds the process once from the settings — the control client and
// pool, the secret box, the tenant pools, the artifact store, the key
// resolver, the provisioner and the backup context — and offers what runs on
// them: the HTTP server (routes from HTTPAPI), the run workers (RunEngine) and
// the reconcilers and sweep. `tenantplane serve` and `tenantplane worker` are
// thin shells over it. Settings are read here and nowhere below.
import ArtifactStore
import Backup
import Config
import ControlPlane
import Core
import Foundation
import HTTPAPI
import Hummingbird
import Logging
import Migrations
import PostgresNIO
import Prometheus
import Provisioner
import RunEngine
import ServiceLifecycle
import TenantRouter

public struct Runtime: Sendable {
    public let settings: Settings
    public let logger: Logger
    let controlURL: PostgresURL
    let secrets: SecretBox
    /// Runs as a service (exactly once) and is the control pool's connections.
    let controlClient: PostgresClient
    let control: ControlPool
    let registry: PrometheusCollectorRegistry
    let pools: TenantPools
    let store: ArtifactStore
    /// Loaded once for every component that applies or checks them.
    let tenantMigrations: MigrationSet
    let controlSchemaVersion: Int
    let keyFormat: APIKeyFormat
    let frontDoor: FrontDoor
    /// This process among the live ones an online move waits for.
    let processID = UUID()

    public init(settings: Settings, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        controlURL = try settings.requireControlURL()
        let masterKey = try settings.requireMasterKey()
        secrets = SecretBox(masterKey: masterKey)
        keyFormat = APIKeyFormat(masterKey: masterKey)
        frontDoor = FrontDoor(
            limiter: AuthFailureLimiter(perMinute: settings.authFailuresPerMinute),
            trustedProxies: try settings.trustedProxies.map(TrustedProxies.init(parsing:)) ?? .none,
            metrics: try .init(setting: settings.metricsAddress), idleTimeout: settings.idleTimeout,
            requestHeadTimeout: settings.requestHeadTimeout, requestReadTimeout: settings.requestReadTimeout,
            requestMinimumRate: settings.requestMinimumRate, maxConnections: settings.maxConnections)
        var configuration = controlURL.clientConfiguration()
        configuration.options.maximumConnections = settings.controlPoolSize
        controlClient = PostgresClient(configuration: configuration, backgroundLogger: logger)
        control = ControlPool(client: controlClient, wait: settings.poolWait, logger: logger)
        registry = PrometheusCollectorRegistry()
        pools = TenantPools(
            limits: .init(
                budget: settings.connectionBudget, perTenant: settings.tenantPoolSize, wait: settings.poolWait,
                downtimeBackoff: settings.downtimeBackoff, workerShare: settings.workerBudgetShare),
            metrics: RouterMetrics(registry: registry), logger: logger)
        store = ArtifactStore(root: settings.storageRoot, logger: logger)
        tenantMigrations = try MigrationSet(directory: settings.tenantMigrationsDirectory)
        controlSchemaVersion = try MigrationSet(directory: settings.controlMigrationsDirectory).latestVersion
    }

    /// The HTTP server and everything it runs: one `Application` whose
    /// services (the control pool, then the tenant pools) start before it
    /// listens and stop after it drains, in reverse order.
    public func server(host: String, port: Int) throws -> some ApplicationProtocol {
        var (router, services) = try build(withWorkers: true)
        if case .separate(let metricsHost, let metricsPort) = frontDoor.metrics {
            let metricsRouter = Router()
            MetricsRoute(registry: registry).register(on: metricsRouter.group())
            services.append(
                Application(
                    router: metricsRouter,
                    configuration: .init(address: .hostname(metricsHost, port: metricsPort), serverName: "tenantplane"),
                    logger: logger))
        }
        return Application(
            router: router,
            server: frontDoor.http1Server,
            configuration: .init(
                address: .hostname(host, port: port), serverName: "tenantplane",
                availableConnectionsDelegate: .maximum(frontDoor.maxConnections, logger: logger)),
            services: services,
            logger: logger)
    }

    /// Every route the server answers, as `METHOD /path/{param}`: what the
    /// OpenAPI document must describe.
    public func routes() throws -> [String] {
        try build(withWorkers: false).router.routes.map { "\($0.method.rawValue) \($0.path)" }
    }

    /// The run workers alone, for `tenantplane worker`, with the pools they
    /// run on: the services of a `ServiceGroup`, in start order.
    public func workerServices(maxInflight: Int?) -> [any Service] {
        [controlClient, pools, moveSignals]
            + workers(RunWorker.Options(settings: settings, maxInflight: maxInflight.map { max(1, $0) }))
    }

    private var moveSignals: MoveSignalService {
        MoveSignalService(
            listener: MoveSignalListener(url: controlURL, processID: processID, logger: logger), processID: processID,
            pools: pools, control: control, logger: logger)
    }

    private func workers(_ options: RunWorker.Options) -> [any Service] {
        RunWorker.services(
            options: options, control: control, controlURL: controlURL, secrets: secrets, pools: pools, store: store,
            logger: logger)
    }

    /// The router and the services behind it. The run workers (and the
    /// provider gateway's HTTP client, which must be shut down once made) only
    /// when the application is going to run.
    private func build(withWorkers: Bool) throws -> (router: Router<APIRequestContext>, services: [any Service]) {
        let spareClaims = SpareWakeups()
        let provisioner = try Provisioner(
            configuration: try .init(settings: settings, migrations: tenantMigrations), logger: logger,
            controlPool: controlClient, spareClaimed: spareClaims)
        // Exports and moves hold their control connection (and the tenant's
        // lock on it) for minutes: their own, never the pool requests need.
        let backup = BackupContext(
            configuration: try .init(settings: settings, migrations: tenantMigrations), logger: logger, controlPool: nil)
        let (router, apiServices) = try APIRouter.make(
            APIDependencies(
                adminToken: try settings.requireAdminToken(), controlURL: controlURL, control: control, secrets: secrets,
                controlSchemaVersion: controlSchemaVersion,
                registry: registry, pools: pools, store: store,
                resolver: TenantKeyResolver(control: control, secrets: secrets, format: keyFormat, logger: logger),
                keyFormat: keyFormat, frontDoor: frontDoor,
                provisioner: provisioner, backup: backup, uploadLimit: settings.maxUploadBytes,
                adminJobs: settings.adminJobs, logger: logger))

        // Stopped in reverse order: the HTTP server first, then the worker
        // (which gives its leases back through the pools), then the pools.
        var services: [any Service] = [controlClient, pools, moveSignals]
        if withWorkers, settings.maxInflight > 0 { services += workers(RunWorker.Options(settings: settings)) }
        services.append(
            ConnectionCapacityCheck(
                need: .init(
                    budget: settings.connectionBudget, adminJobs: settings.adminJobs,
                    controlPool: settings.controlPoolSize, listens: withWorkers && settings.maxInflight > 0),
                control: control, controlURL: controlURL, secrets: secrets, logger: logger))
        services.append(ProvisioningReconciler(provisioner: provisioner, logger: logger))
        services.append(SpareKeeper(spares: WarmSpares(provisioner: provisioner), wakeups: spareClaims, logger: logger))
        services.append(
            ArtifactSweeper(
                control: control, directory: TenantDirectory(control: control, secrets: secrets), pools: pools,
                store: store, grace: settings.sweepGrace, logger: logger, interval: settings.sweepInterval))
        services += apiServices
        services.append(
            BackupReconciler(
                mover: TenantMover(context: backup), importer: TenantImporter(context: backup), control: control,
                logger: logger))
        return (router, services)
    }
}
