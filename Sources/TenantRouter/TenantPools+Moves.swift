import Core
import Foundation

extension TenantPools {
    /// An online move's hold: the tenant's requests wait (at most `pause`)
    /// instead of reaching its database. Returns once none of this process's
    /// connections to it is in use, or `pause` is half gone, so the mover's
    /// last look at the old database sees everything this process wrote.
    public func holdForMove(_ tenantID: String, pause: Duration) async {
        holds.hold(tenantID, for: pause)
        let give = ContinuousClock.now.advanced(by: pause / 2)
        while connectionsInUse(tenantID: tenantID) > 0, ContinuousClock.now < give {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// The move switched: held and later requests go to `to`, even those
    /// whose identity still names `from`; a pool on the old database closes.
    public func switchAfterMove(_ tenantID: String, from: PostgresURL, to: PostgresURL) {
        closeMoved(tenantID: tenantID, from: from)
        holds.release(tenantID, relocation: (from, to))
    }

    /// The move gave up its fence: held requests go on where they were.
    public func releaseAfterMove(_ tenantID: String) {
        holds.release(tenantID)
    }
}
