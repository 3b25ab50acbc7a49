import Synchronization

/// Who asks the router for a connection. A request answers a customer now; a
/// run worker's statement can wait a moment. Requests go first in the wait for
/// room under the budget, and workers hold at most their share of it
/// (`TenantPools.Limits.workerShare`).
public enum ConnectionPriority: Sendable {
    case request
    case worker
}

/// Checkouts waiting for room under the connection budget: first come, first
/// served across tenants, requests ahead of workers.
///
/// Each waiter holds a ticket, which it keeps when it has to wait again, so a
/// checkout that just arrived never takes room ahead of one that has waited.
/// A checkout that finds no room enrols in the same critical section, so room
/// freed between the look and the wait still wakes it. Whatever may free room
/// (a checkin, a closed pool giving its reservation back) wakes the first
/// waiter only; a waiter that gets its connection, or gives up, passes the turn
/// on (`roomMayHaveFreed` again), so one freed connection never wakes a herd.
struct RoomWaiters {
    struct Enrolled {
        let ticket: UInt64
        let waiter: RoomWaiter
    }

    private var requests: [Enrolled] = []
    private var workers: [Enrolled] = []
    private var issued: UInt64 = 0

    var waitingRequests: Int { requests.count }
    var waitingWorkers: Int { workers.count }

    /// Whether a checkout holding `ticket` (nil: it has not waited yet) must
    /// let earlier waiters of its priority go first.
    func mustQueue(_ ticket: UInt64?, _ priority: ConnectionPriority) -> Bool {
        guard let first = (priority == .request ? requests : workers).first else { return false }
        return ticket.map { $0 > first.ticket } ?? true
    }

    /// Enrols a checkout; one that waited before keeps its place.
    mutating func enrol(_ priority: ConnectionPriority, ticket: UInt64?) -> Enrolled {
        let ticket = ticket ?? {
            issued += 1
            return issued
        }()
        let enrolled = Enrolled(ticket: ticket, waiter: RoomWaiter())
        switch priority {
        case .request: Self.insert(enrolled, into: &requests)
        case .worker: Self.insert(enrolled, into: &workers)
        }
        return enrolled
    }

    private static func insert(_ enrolled: Enrolled, into queue: inout [Enrolled]) {
        let index = queue.lastIndex { $0.ticket < enrolled.ticket }.map { $0 + 1 } ?? 0
        queue.insert(enrolled, at: index)
    }

    /// A waiter that gave up (timed out or cancelled).
    mutating func remove(_ waiter: RoomWaiter) {
        requests.removeAll { $0.waiter === waiter }
        workers.removeAll { $0.waiter === waiter }
    }

    /// The waiter to wake now that room may be free (the first request, else
    /// the first worker); wake it after leaving the lock.
    mutating func roomMayHaveFreed() -> RoomWaiter? {
        if !requests.isEmpty { return requests.removeFirst().waiter }
        if !workers.isEmpty { return workers.removeFirst().waiter }
        return nil
    }
}

/// One checkout's wait: woken (by room or by giving up) exactly once, whether
/// that comes before or after it parks.
final class RoomWaiter: Sendable {
    private enum Phase {
        case enrolled
        case parked(CheckedContinuation<Void, Never>)
        case woken
    }

    private let phase = Mutex(Phase.enrolled)

    /// Returns once woken; at once if that already happened.
    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = phase.withLock { phase -> Bool in
                guard case .enrolled = phase else { return true }
                phase = .parked(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    func wake() {
        let parked = phase.withLock { phase -> CheckedContinuation<Void, Never>? in
            defer { phase = .woken }
            if case .parked(let continuation) = phase { return continuation }
            return nil
        }
        parked?.resume()
    }
}
