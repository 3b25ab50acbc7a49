import Backup
import Config
import ControlPlane
import Core
import Fleet
import Logging
import Migrations
import PostgresNIO
import Provisioner
import RunEngine

/// The edge: each component's configuration read from the settings, here and
/// nowhere below. The CLI builds components through these too.
extension Provisioner.Configuration {
    public init(settings: Settings, migrations: MigrationSet? = nil) throws {
        self.init(
            controlURL: try settings.requireControlURL(), masterKey: try settings.requireMasterKey(),
            migrations: try migrations ?? MigrationSet(directory: settings.tenantMigrationsDirectory),
            storageRoot: settings.storageRoot, deleteGrace: settings.deleteGrace,
            templateDatabase: settings.templateDatabase, warmSpares: settings.warmSpares,
            faultAfterStep: settings.faultAfterStep)
    }
}

extension Provisioner {
    public init(settings: Settings, logger: Logger, controlPool: PostgresClient? = nil) throws {
        try self.init(configuration: try Configuration(settings: settings), logger: logger, controlPool: controlPool)
    }
}

extension BackupContext.Configuration {
    public init(settings: Settings, migrations: MigrationSet? = nil) throws {
        self.init(
            controlURL: try settings.requireControlURL(), masterKey: try settings.requireMasterKey(),
            migrations: try migrations ?? MigrationSet(directory: settings.tenantMigrationsDirectory),
            storageRoot: settings.storageRoot, postgresBinDirectory: settings.postgresBinDirectory,
            faultAfterMovePhase: settings.faultAfterMovePhase, movePause: settings.movePause)
    }
}

extension BackupContext {
    public init(settings: Settings, logger: Logger) throws {
        self.init(configuration: try Configuration(settings: settings), logger: logger)
    }
}

extension FleetMigrator {
    public init(settings: Settings, logger: Logger) throws {
        let migrations = try MigrationSet(directory: settings.tenantMigrationsDirectory)
        self.init(
            controlURL: try settings.requireControlURL(), secrets: settings.masterKey.map(SecretBox.init(masterKey:)),
            migrations: migrations,
            provisioner: try settings.masterKey.map { _ in
                try Provisioner(configuration: try .init(settings: settings, migrations: migrations), logger: logger)
            },
            logger: logger)
    }
}

extension RunWorker.Options {
    /// The worker's options as the process is configured.
    public init(settings: Settings, maxInflight: Int? = nil) {
        self.init(
            maxInflight: maxInflight ?? settings.maxInflight, tenantMaxInflight: settings.tenantMaxInflight,
            lease: settings.runLease, sweep: settings.workerPoll, providerTimeout: settings.providerTimeout,
            providerRetries: settings.providerRetries, providerKey: { settings.providerKey(for: $0) })
    }
}
