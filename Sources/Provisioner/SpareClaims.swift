import ArtifactStore
import ControlPlane
import Core
import Foundation
import Logging
import Migrations
import PostgresNIO

/// Tells a process's spare keeper that a spare was claimed, so it refills
/// now instead of at its next pass. Only the latest wake-up is kept.
public struct SpareWakeups: Sendable {
    public let stream: AsyncStream<Void>
    let continuation: AsyncStream<Void>.Continuation

    public init() {
        (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public func wake() { continuation.yield() }
}

extension Provisioner {
    enum SpareClaim {
        case claimed(TenantRecord)
        /// No spare was handed over; why, when the operator should know.
        case none(String?)
    }

    /// Hands the tenant a ready spare of its server at this binary's
    /// migrations, when there is one. The intent (the spare marked
    /// `claiming` for the tenant) commits before the renames, so a crash at
    /// any point leaves a spare or a tenant that `settleCutShortClaim` or the
    /// keeper can tell apart. The caller holds the tenant's lock and has
    /// registered it.
    func claimSpare(
        for slug: TenantSlug, names: TenantNames, scramVerifier: String, server: DatabaseServer, adminURL: PostgresURL,
        sharingControl: Bool, store: ControlStore, since started: ContinuousClock.Instant
    ) async throws -> SpareClaim {
        guard
            let spare = try await store.takeSpare(server: server.name, fingerprint: migrations.fingerprint, for: slug),
            let version = spare.schemaVersion
        else {
            return .none(
                warmSpares > 0
                    ? "no warm spare was ready on server \(server.name); copied the template instead" : nil)
        }
        let spareName = try SpareName(spare.name)
        spareClaimed?.wake()
        try finished(.spareTaken, slug: slug, since: started)
        do {
            try await withAdminSession(adminURL, sharingControl: sharingControl, store: store) { connection in
                try await ServerAdmin(connection: connection, logger: logger)
                    .claimSpare(
                        spareName.identifier, database: names.database, role: names.role, scramVerifier: scramVerifier,
                        durable: !sharingControl)
            }
        } catch {
            // The renames are one transaction: it failed whole, the spare
            // is as it was (or was never there).
            let reason = OperatorFailure(error).message
            logger.warning("could not claim a warm spare", metadata: ["spare": "\(spareName)", "error": "\(reason)"])
            try await settleCutShortClaim(of: slug, adminURL: adminURL, sharingControl: sharingControl, store: store)
            return .none("warm spare \(spareName) could not be claimed (\(reason)); copied the template instead")
        }
        try finished(.spareRenamed, slug: slug, since: started)
        try await trees.prepareEmpty(slug)
        try await store.finishClaim(spareName, tenant: slug, version: version, fingerprint: migrations.fingerprint)
        try await store.connection.query("SET synchronous_commit = on", logger: logger)
        return .claimed(try await store.requireTenant(slug))
    }

    /// A claim of a spare for `slug` that was cut short: whether its renames
    /// committed shows on the server. Not renamed, it is a spare again;
    /// renamed, it is the tenant's database, finished by the normal steps
    /// (which find it existing). The caller holds the tenant's lock, so no
    /// live claim is between its intent and its renames.
    func settleCutShortClaim(
        of slug: TenantSlug, adminURL: PostgresURL, sharingControl: Bool, store: ControlStore
    ) async throws {
        guard let spare = try await store.spareClaimed(by: slug) else { return }
        let spareName = try SpareName(spare.name)
        let stillASpare = try await withAdminSession(adminURL, sharingControl: sharingControl, store: store) {
            connection in
            try await ServerAdmin(connection: connection, logger: logger).databaseExists(spareName.identifier)
        }
        if stillASpare {
            try await store.returnSpare(spareName)
        } else {
            try await store.forgetSpare(spareName)
        }
        logger.notice(
            "settled a cut-short spare claim",
            metadata: ["tenant": "\(slug)", "spare": "\(spareName)", "outcome": "\(stillASpare ? "returned" : "renamed")"])
    }
}
