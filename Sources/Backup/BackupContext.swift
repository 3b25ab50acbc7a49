import ArtifactStore
import ControlPlane
import Core
import Foundation
import Logging
import Migrations
import PostgresNIO
import Provisioner

/// What every backup operation needs, built once.
public struct BackupContext: Sendable {
    public let controlURL: PostgresURL
    public let secrets: SecretBox
    let signer: ArchiveSigner
    public let migrations: MigrationSet
    public let storageRoot: String
    /// `TENANTPLANE_PG_BINDIR`; the tools are looked for when first needed,
    /// so a server without them still serves everything else.
    let postgresBinDirectory: String?
    public let logger: Logger
    /// Test hook: `tenant move` kills its process right after this phase.
    let faultAfterMovePhase: MovePhase?
    /// `TENANTPLANE_MOVE_PAUSE`: the longest an online move holds the
    /// tenant's requests while it switches.
    let movePause: Duration
    /// The server's control pool; the CLI opens a connection per operation.
    let controlPool: PostgresClient?

    /// What backup work needs, and nothing else (the edge reads it from the settings).
    public struct Configuration: Sendable {
        public var controlURL: PostgresURL
        public var masterKey: MasterKey
        /// The tenant migrations, loaded once by the caller.
        public var migrations: MigrationSet
        public var storageRoot: String
        public var postgresBinDirectory: String?
        public var faultAfterMovePhase: String?
        public var movePause: Duration

        public init(
            controlURL: PostgresURL, masterKey: MasterKey, migrations: MigrationSet, storageRoot: String,
            postgresBinDirectory: String?, faultAfterMovePhase: String?, movePause: Duration = .seconds(1)
        ) {
            self.movePause = movePause
            self.controlURL = controlURL
            self.masterKey = masterKey
            self.migrations = migrations
            self.storageRoot = storageRoot
            self.postgresBinDirectory = postgresBinDirectory
            self.faultAfterMovePhase = faultAfterMovePhase
        }
    }

    public init(configuration: Configuration, logger: Logger, controlPool: PostgresClient? = nil) {
        controlURL = configuration.controlURL
        secrets = SecretBox(masterKey: configuration.masterKey)
        signer = ArchiveSigner(masterKey: configuration.masterKey)
        migrations = configuration.migrations
        storageRoot = configuration.storageRoot
        postgresBinDirectory = configuration.postgresBinDirectory
        faultAfterMovePhase = configuration.faultAfterMovePhase.flatMap(MovePhase.init(rawValue:))
        movePause = configuration.movePause
        self.logger = logger
        self.controlPool = controlPool
    }

    /// Runs `body` on one control connection for its whole length (the
    /// tenant's advisory lock lives on it).
    func withControl<Result: Sendable>(_ body: (ControlStore) async throws -> Result) async throws -> Result {
        try await ControlStore.withConnection(pool: controlPool, url: controlURL, logger: logger, body)
    }

    func tools() async throws -> PostgresTools {
        try await PostgresTools(configured: postgresBinDirectory)
    }

    func adminURL(of server: String, store: ControlStore) async throws -> PostgresURL {
        try await store.adminURL(ofServer: server, secrets: secrets, controlURL: controlURL)
    }

    var trees: TenantTrees { TenantTrees(root: storageRoot, logger: logger) }

    /// Hashes each stored file against the digest its row records, reading
    /// through the store (descriptor by descriptor, no link followed); the
    /// number checked.
    func verifyStoredFiles(_ references: [String: String], of slug: TenantSlug) async throws -> Int {
        let files = try ArtifactStore(root: storageRoot, logger: logger).tenant(slug.rawValue)
        for (path, digest) in references.sorted(by: { $0.key < $1.key }) {
            do {
                _ = try await files.openVerified(path: path, digest: digest)
            } catch .notFound {
                throw BackupError.verificationFailed("artifact \(path) is missing")
            } catch {
                throw BackupError.verificationFailed("artifact \(path): \(error.message)")
            }
        }
        return references.count
    }

    /// A private working directory under the storage root (same filesystem as
    /// the tenants' trees, so finished files are renamed into place, not copied).
    /// Its name starts with '.', which no tenant id does.
    func workDirectory(_ purpose: String) throws -> String {
        let path = URL(fileURLWithPath: storageRoot)
            .appendingPathComponent(".\(purpose)", isDirectory: true)
            .appendingPathComponent(UUID().uuidString.lowercased(), isDirectory: true).path
        do {
            try FileManager.default.createDirectory(
                atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw BackupError.fileSystem("cannot create a working directory under the storage root: \(error.localizedDescription)")
        }
        return path
    }
}

/// Progress of a long operation, one line at a time (a terminal, a job row).
public typealias ProgressReporter = @Sendable (String) -> Void
