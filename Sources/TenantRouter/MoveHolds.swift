import Core
import Foundation
import Synchronization

/// Tenants whose requests wait, instead of failing, while an online move
/// switches their database: a mover's hold queues them for at most its pause;
/// its switch sends them, and every later request, to the new database; its
/// release lets them go on where they were.
///
/// The hold is the courtesy; the safety is in the database, which the mover
/// also makes read-only: a request this process did not hold (it started
/// before the signal came) gets a retryable 503, never a lost write.
final class MoveHolds: Sendable {
    /// Where a tenant's database went: identities still naming `from` (a key
    /// cache entry from before the switch, a run that began there) are sent to
    /// `to` until `until`, long after every cache has caught up.
    private struct Relocation {
        let from: PostgresURL
        let to: PostgresURL
        let until: ContinuousClock.Instant
    }

    private struct Hold {
        let until: ContinuousClock.Instant
        var waiters: [RoomWaiter] = []
    }

    private struct State {
        var holds: [String: Hold] = [:]
        var relocations: [String: Relocation] = [:]
    }

    static let relocationLifetime: Duration = .seconds(600)

    private let state = Mutex(State())

    var heldTenants: Int { state.withLock { $0.holds.count } }

    func hold(_ tenantID: String, for pause: Duration) {
        let until = ContinuousClock.now.advanced(by: pause)
        state.withLock { $0.holds[tenantID] = Hold(until: until) }
    }

    /// Ends the hold; with `relocation`, held and later requests go to its `to`.
    func release(_ tenantID: String, relocation: (from: PostgresURL, to: PostgresURL)? = nil) {
        let now = ContinuousClock.now
        let waiters = state.withLock { state -> [RoomWaiter] in
            state.relocations = state.relocations.filter { $0.value.until > now }
            if let relocation {
                state.relocations[tenantID] = Relocation(
                    from: relocation.from, to: relocation.to, until: now.advanced(by: Self.relocationLifetime))
            }
            return state.holds.removeValue(forKey: tenantID)?.waiters ?? []
        }
        for waiter in waiters { waiter.wake() }
    }

    /// Waits while the tenant is held (never past the hold's end), then the
    /// identity to use: the relocated one when its database moved under it.
    /// On every request: one lock when the tenant is not held.
    func pass(_ tenant: TenantIdentity) async -> TenantIdentity {
        let now = ContinuousClock.now
        let id = tenant.tenantID
        let first = state.withLock { state -> Pass in
            if var hold = state.holds[id] {
                guard hold.until > now else {
                    state.holds[id] = nil
                    return .go(state.relocations[id])
                }
                let waiter = RoomWaiter()
                hold.waiters.append(waiter)
                state.holds[id] = hold
                return .wait(waiter, until: hold.until)
            }
            return .go(state.relocations[id])
        }
        switch first {
        case .go(let relocation):
            return Self.apply(relocation, to: tenant, at: now)
        case .wait(let waiter, let until):
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await waiter.wait() }
                group.addTask {
                    try? await Task.sleep(until: until, clock: .continuous)
                    waiter.wake()
                }
                await group.next()
                waiter.wake()
                group.cancelAll()
            }
            return Self.apply(state.withLock { $0.relocations[id] }, to: tenant, at: .now)
        }
    }

    private enum Pass {
        case go(Relocation?)
        case wait(RoomWaiter, until: ContinuousClock.Instant)
    }

    private static func apply(_ relocation: Relocation?, to tenant: TenantIdentity, at now: ContinuousClock.Instant)
        -> TenantIdentity
    {
        guard let relocation, relocation.until > now, relocation.from.sameDatabase(as: tenant.database) else {
            return tenant
        }
        return TenantIdentity(
            tenantID: tenant.tenantID, keyID: tenant.keyID, status: tenant.status,
            database: relocation.to.with(user: tenant.database.user, password: tenant.database.password))
    }
}

extension PostgresURL {
    /// The same server and database, whoever logs in.
    func sameDatabase(as other: PostgresURL) -> Bool {
        host == other.host && port == other.port && database == other.database
    }
}
