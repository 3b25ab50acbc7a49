import Synchronization

/// Who asks the router for a connection. A request answers a customer now; a
/// run worker's statement can wait a moment. Requests go first in the wait for
/// room under the budget, and workers hold at most their share of it
/// (`TenantPools.Limits.workerShare`).
public enum ConnectionPriority: Sendable {
    case request
    case worker
}

/// Checkouts waiting for room under the connection budget, requests ahead of
/// workers. A checkout that finds no room enrols a `RoomWaiter` in the same
/// critical section, so room freed between the look and the wait still wakes
/// it. Whatever may free room (a checkin, a closed pool giving its reservation
/// back) calls `roomMayHaveFreed`, which wakes every waiting request, or every
/// waiting worker when no request waits; the woken look again.
struct RoomWaiters {
    private var requests: [ObjectIdentifier: RoomWaiter] = [:]
    private var workers: [ObjectIdentifier: RoomWaiter] = [:]

    var waitingRequests: Int { requests.count }
    var waitingWorkers: Int { workers.count }

    mutating func enrol(_ priority: ConnectionPriority) -> RoomWaiter {
        let waiter = RoomWaiter()
        switch priority {
        case .request: requests[ObjectIdentifier(waiter)] = waiter
        case .worker: workers[ObjectIdentifier(waiter)] = waiter
        }
        return waiter
    }

    /// A waiter that gave up (timed out or cancelled).
    mutating func remove(_ waiter: RoomWaiter) {
        requests[ObjectIdentifier(waiter)] = nil
        workers[ObjectIdentifier(waiter)] = nil
    }

    /// The waiters to wake now that room may be free; wake them after
    /// leaving the lock.
    mutating func roomMayHaveFreed() -> [RoomWaiter] {
        if !requests.isEmpty {
            defer { requests.removeAll(keepingCapacity: true) }
            return Array(requests.values)
        }
        defer { workers.removeAll(keepingCapacity: true) }
        return Array(workers.values)
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
