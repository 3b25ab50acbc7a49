import Backup
import ControlPlane
import Core
import Foundation
import Logging
import ServiceLifecycle

/// Runs the long admin jobs started over HTTP (exports, moves) as children of
/// one task group, at most `concurrency` at once (the rest wait `queued`,
/// their heartbeat beating), recording each job's progress, heartbeat and
/// outcome in the control database for `GET /admin/jobs/{id}`. On shutdown it
/// takes no new jobs and lets the running ones finish: a move cut short would
/// only have to be rolled back at the next start.
public struct AdminJobRunner: Service {
    /// How often a running job's heartbeat is refreshed; `BackupReconciler`
    /// gives up on a job silent for `abandonedAfter`.
    static let heartbeat: Duration = .seconds(10)
    public static let abandonedAfter: Duration = .seconds(60)

    typealias Work = @Sendable (_ progress: @escaping ProgressReporter) async throws -> String

    private struct Submission: Sendable {
        let id: UUID
        let work: Work
    }

    private let submissions: AsyncStream<Submission>
    private let continuation: AsyncStream<Submission>.Continuation
    private let control: ControlAccess
    private let slots: JobSlots
    private let logger: Logger

    init(control: ControlAccess, concurrency: Int, logger: Logger) {
        self.control = control
        slots = JobSlots(count: concurrency)
        self.logger = logger
        (submissions, continuation) = AsyncStream.makeStream(of: Submission.self)
    }

    /// Queues `work` for the recorded job; it returns the job's result as JSON.
    func submit(_ job: AdminJob, _ work: @escaping Work) throws {
        guard case .enqueued = continuation.yield(Submission(id: job.id, work: work)) else {
            throw APIError.unavailable("the server is shutting down")
        }
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for await submission in submissions {
                    group.addTask { await execute(submission) }
                }
            }
        } onGracefulShutdown: {
            continuation.finish()
        }
    }

    private func execute(_ submission: Submission) async {
        let id = submission.id
        let control = self.control
        await whileBeating(id) { await slots.acquire() }
        await perform(submission)
        await slots.release()
    }

    private func perform(_ submission: Submission) async {
        let id = submission.id
        let control = self.control
        do {
            try await control.run { try await $0.startJob(id) }
        } catch {
            logger.error("could not start an admin job", metadata: ["job": "\(id)", "error": "\(OperatorFailure(error).message)"])
        }
        let (lines, reporter) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(1))
        var result: String?
        var failure: String?
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await line in lines { try? await control.run { try await $0.setJobDetail(id, line) } }
            }
            (result, failure) = await whileBeating(id) {
                do {
                    return (try await submission.work { reporter.yield($0) }, nil)
                } catch {
                    return (nil, OperatorFailure(error).message)
                }
            }
            reporter.finish()
        }
        do {
            try await control.run { [result, failure] in try await $0.finishJob(id, result: result, error: failure) }
        } catch {
            logger.error("could not record an admin job's outcome", metadata: ["job": "\(id)", "error": "\(OperatorFailure(error).message)"])
        }
    }

    /// Runs `body` while refreshing the job's heartbeat every `heartbeat`.
    private func whileBeating<Outcome: Sendable>(_ id: UUID, _ body: () async -> Outcome) async -> Outcome {
        let control = self.control
        return await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while (try? await Task.sleep(for: Self.heartbeat)) != nil {
                    try? await control.run { try await $0.beatJob(id) }
                }
            }
            let outcome = await body()
            group.cancelAll()
            return outcome
        }
    }
}

/// Admits at most `count` jobs at once; the others wait in line, in order.
actor JobSlots {
    private var free: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(count: Int) {
        free = count
    }

    func acquire() async {
        if free > 0 {
            free -= 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty {
            free += 1
        } else {
            waiting.removeFirst().resume()
        }
    }
}
