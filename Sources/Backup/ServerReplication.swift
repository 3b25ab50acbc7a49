import ControlPlane
import Core
import Foundation
import Logging
import Provisioner

/// Whether a server can take part in online moves, as `server add` and
/// `server list` report it, and the replication slots on it that no open
/// move accounts for (an abandoned slot holds WAL until the disk is full).
public struct ServerReplicationStatus: Sendable, Codable, Equatable {
    /// Both as a source and as a target.
    public var onlineMoves: Bool
    /// Why not, when not (or why the server could not be asked).
    public var reason: String?
    /// How many online moves it can be the source of at once.
    public var concurrentMoves: Int
    public var capacity: ReplicationCapacity?
    public var unknownSlots: [ReplicationSlot]
}

extension TenantMover {
    /// Each server's replication status, by name. A server that does not
    /// answer is reported as such; the others are still asked.
    public func replicationStatus(of servers: [DatabaseServer]) async throws -> [String: ServerReplicationStatus] {
        let context = self.context
        let logger = context.logger
        return try await context.withControl { store in
            // A slot of a database with an open online move is that move's.
            var moving: Set<String> = []
            for move in try await store.openMoves() where move.online {
                moving.insert(try TenantNames(try TenantSlug(move.tenantId)).database.name)
            }
            var statuses: [String: ServerReplicationStatus] = [:]
            for server in servers {
                do {
                    let url = try await context.adminURL(of: server.name, store: store)
                    let (capacity, slots) = try await DatabaseConnection.with(url, logger: logger) { connection in
                        let admin = ServerAdmin(connection: connection, logger: logger)
                        return (try await admin.replicationCapacity(), try await admin.replicationSlots())
                    }
                    let reason = capacity.refusalAsSource ?? capacity.refusalAsTarget
                    statuses[server.name] = ServerReplicationStatus(
                        onlineMoves: reason == nil, reason: reason, concurrentMoves: capacity.movesAsSource,
                        capacity: capacity, unknownSlots: slots.filter { !moving.contains($0.database ?? "") })
                } catch {
                    statuses[server.name] = ServerReplicationStatus(
                        onlineMoves: false, reason: "not reachable: \(OperatorFailure(error).message)", concurrentMoves: 0,
                        capacity: nil, unknownSlots: [])
                }
            }
            return statuses
        }
    }
}
