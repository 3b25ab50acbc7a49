import Synchronization

/// The process's run slots (`TENANTPLANE_MAX_INFLIGHT`), handed out first come,
/// first served: tenants' feeders queue for them in turn, so when slots are
/// scarce every tenant with work gets the next free one in order.
final class RunSlots: Sendable {
    private final class Waiter: Sendable {
        let wanted: Int
        let granted = Mutex<(count: Int, continuation: CheckedContinuation<Int, Never>?, done: Bool)>((0, nil, false))

        init(wanted: Int) {
            self.wanted = wanted
        }
    }

    private struct State {
        var available: Int
        var queue: [Waiter] = []
    }

    private let state: Mutex<State>

    init(_ count: Int) {
        state = Mutex(State(available: count))
    }

    /// At least one slot and at most `wanted`, waiting in line for the first;
    /// 0 once the caller is cancelled.
    func acquire(upTo wanted: Int) async -> Int {
        let wanted = max(1, wanted)
        let waiter = Waiter(wanted: wanted)
        let immediate = state.withLock { state -> Int? in
            guard state.queue.isEmpty, state.available > 0 else {
                state.queue.append(waiter)
                return nil
            }
            let count = min(wanted, state.available)
            state.available -= count
            return count
        }
        if let immediate { return immediate }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let count = waiter.granted.withLock { granted -> Int? in
                    if granted.done { return granted.count }
                    granted.continuation = continuation
                    return nil
                }
                if let count { continuation.resume(returning: count) }
            }
        } onCancel: {
            let gone = state.withLock { state -> Bool in
                guard let index = state.queue.firstIndex(where: { $0 === waiter }) else { return false }
                state.queue.remove(at: index)
                return true
            }
            // Still in line: it leaves with nothing. Already granted: it keeps
            // what it got, and its caller gives it back.
            if gone { Self.grant(waiter, 0) }
        }
    }

    func release(_ count: Int) {
        guard count > 0 else { return }
        let granted = state.withLock { state -> [(Waiter, Int)] in
            state.available += count
            var granted: [(Waiter, Int)] = []
            while state.available > 0, !state.queue.isEmpty {
                let waiter = state.queue.removeFirst()
                let share = min(waiter.wanted, state.available)
                state.available -= share
                granted.append((waiter, share))
            }
            return granted
        }
        for (waiter, count) in granted { Self.grant(waiter, count) }
    }

    private static func grant(_ waiter: Waiter, _ count: Int) {
        let continuation = waiter.granted.withLock { granted -> CheckedContinuation<Int, Never>? in
            guard !granted.done else { return nil }
            granted.done = true
            granted.count = count
            defer { granted.continuation = nil }
            return granted.continuation
        }
        continuation?.resume(returning: count)
    }
}
