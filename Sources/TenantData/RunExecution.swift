import Core
import Foundation
import PostgresNIO

/// A run a worker holds the lease of.
public struct ClaimedRun: Sendable, Equatable {
    public let id: UUID
    public let steps: [String]
    public let input: JSONValue
    public let config: RunConfig
}

/// Where a completed step's output lives, as its `artifacts` row says.
public struct StepOutputReference: Sendable, Equatable {
    public let path: String
    public let digest: String

    public init(path: String, digest: String) {
        self.path = path
        self.digest = digest
    }
}

/// What a finished step leaves in the database: never the content itself.
public struct StepResult: Sendable {
    public var model: String
    public var inputTokens: Int
    public var outputTokens: Int
    public var retries: Int
    public var output: StepOutputReference
    public var summary: String
    public var characters: Int

    public init(
        model: String, inputTokens: Int, outputTokens: Int, retries: Int, output: StepOutputReference, summary: String,
        characters: Int
    ) {
        self.model = model
        self.inputTokens = inputTokens
        self.outputTokens = outputTokens
        self.retries = retries
        self.output = output
        self.summary = summary
        self.characters = characters
    }
}

/// The run engine's side of a tenant database. Every write after the claim is
/// guarded by the lease (`lease_owner`, `status = 'running'`): a worker that
/// lost its run (lease expired and taken over, run paused or cancelled) changes
/// nothing and is told so by a `false`.
extension TenantStore {
    /// Takes up to `limit` runs, oldest first: pending ones, or running ones
    /// whose lease expired. One statement, whatever the batch.
    public func claimRuns(owner: String, lease: Duration, limit: Int) async throws -> [ClaimedRun] {
        let rows = try await connection.query(
            """
            UPDATE runs SET status = 'running', lease_owner = \(owner),
                   lease_expires_at = now() + make_interval(secs => \(lease.seconds)), updated_at = now()
            WHERE id IN (
                SELECT id FROM runs
                WHERE status = 'pending' OR (status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < now()))
                ORDER BY created_at, id
                FOR UPDATE SKIP LOCKED
                LIMIT \(max(1, limit))
            )
            RETURNING id, steps, COALESCE(input, '{}')::text, COALESCE(config, '{}')::text, created_at
            """,
            logger: logger)
        var claimed: [(Date, ClaimedRun)] = []
        for try await (id, steps, input, config, created) in rows.decode((UUID, [String], String, String, Date).self) {
            claimed.append(
                (
                    created,
                    ClaimedRun(
                        id: id, steps: steps, input: Self.jsonValue(input) ?? .object([:]),
                        config: (try? JSONDecoder().decode(RunConfig.self, from: Data(config.utf8))) ?? RunConfig())
                ))
        }
        return claimed.sorted { $0.0 < $1.0 }.map(\.1)
    }

    /// How many runs still wait, and how many run (under some worker's lease).
    public func unfinishedRuns() async throws -> (pending: Int, running: Int) {
        let rows = try await connection.query(
            """
            SELECT count(*) FILTER (WHERE status = 'pending')::int, count(*) FILTER (WHERE status = 'running')::int
            FROM runs WHERE status IN ('pending', 'running')
            """,
            logger: logger)
        return try await rows.collect().first?.decode((Int, Int).self) ?? (0, 0)
    }

    /// The completed steps of a run and their outputs.
    public func completedOutputs(of run: UUID) async throws -> [String: StepOutputReference] {
        let rows = try await connection.query(
            """
            SELECT s.step, o.file_path, o.digest FROM steps s
            JOIN LATERAL (
                SELECT file_path, digest FROM artifacts
                WHERE run_id = s.run_id AND step = s.step AND file_type = 'output' ORDER BY id DESC LIMIT 1
            ) o ON true
            WHERE s.run_id = \(run) AND s.status = 'completed'
            """,
            logger: logger)
        var outputs: [String: StepOutputReference] = [:]
        for try await (step, path, digest) in rows.decode((String, String, String).self) {
            outputs[step] = StepOutputReference(path: path, digest: digest)
        }
        return outputs
    }

    public func activePrompt(step: String) async throws -> PromptRecord? {
        let rows = try await connection.query(
            "SELECT \(unescaped: Self.promptColumns) FROM prompts WHERE step = \(step) AND is_active", logger: logger)
        return try await rows.collect().first.map(Self.decodePrompt)
    }

    /// Marks the step running (one row per run and step, reused on retry) and
    /// makes it the run's current step.
    public func startStep(run: UUID, step: String, owner: String) async throws -> Bool {
        let rows = try await connection.query(
            """
            WITH held AS (
                UPDATE runs SET current_step = \(step), updated_at = now()
                WHERE id = \(run) AND status = 'running' AND lease_owner = \(owner)
                RETURNING id
            )
            INSERT INTO steps (run_id, step, status, started_at)
            SELECT id, \(step), 'running', now() FROM held
            ON CONFLICT (run_id, step) DO UPDATE
                SET status = 'running', started_at = now(), completed_at = NULL, error_message = NULL
            RETURNING id
            """,
            logger: logger)
        return try await !rows.collect().isEmpty
    }

    /// Extends the leases of this worker's runs in one statement; the runs
    /// still held (the others were paused, cancelled or taken over).
    public func renewLeases(runs: [UUID], owner: String, lease: Duration) async throws -> Set<UUID> {
        let rows = try await connection.query(
            """
            UPDATE runs SET lease_expires_at = now() + make_interval(secs => \(lease.seconds))
            WHERE id = ANY(\(runs)) AND status = 'running' AND lease_owner = \(owner)
            RETURNING id
            """,
            logger: logger)
        var held = Set<UUID>()
        for try await id in rows.decode(UUID.self) { held.insert(id) }
        return held
    }

    /// Judges bytes a step writer found under its output's name, under the
    /// run row's lock (which `completeStep` takes too): whether the writer
    /// still holds the lease, and whether a committed row describes them.
    public func judgeFoundOutput(run: UUID, path: String, digest: String, owner: String) async throws
        -> FoundOutputVerdict
    {
        try await connection.transaction(logger: logger) { connection in
            let held = try await connection.query(
                "SELECT 1 FROM runs WHERE id = \(run) AND status = 'running' AND lease_owner = \(owner) FOR UPDATE",
                logger: logger)
            guard try await !held.collect().isEmpty else { return .notHolder }
            let rows = try await connection.query(
                "SELECT 1 FROM artifacts WHERE run_id = \(run) AND file_path = \(path) AND digest = \(digest) LIMIT 1",
                logger: logger)
            return try await rows.collect().isEmpty ? .unrecorded : .recorded
        }
    }

    /// Records a step's result: its output's artifacts row and the completed
    /// steps row, only while the lease is held. One statement (one round trip
    /// on a connection many runs share): the run row is locked first, as
    /// `judgeFoundOutput` locks it, and every write depends on that lock.
    public func completeStep(run: UUID, step: String, owner: String, result: StepResult) async throws -> Bool {
        let usage = try Self.json(["input_tokens": result.inputTokens, "output_tokens": result.outputTokens])
        let metadata = try Self.json(
            StepMetadata(
                summary: result.summary,
                metrics: .init(
                    inputTokens: result.inputTokens, outputTokens: result.outputTokens, characters: result.characters)))
        let rows = try await connection.query(
            """
            WITH held AS (
                SELECT id FROM runs WHERE id = \(run) AND status = 'running' AND lease_owner = \(owner) FOR UPDATE
            ), output AS (
                INSERT INTO artifacts (run_id, step, file_type, file_path, digest, metadata)
                SELECT id, \(step), 'output', \(result.output.path), \(result.output.digest), \(metadata)::jsonb FROM held
            ), completed AS (
                UPDATE steps SET status = 'completed', llm_model = \(result.model), token_usage = \(usage)::jsonb,
                       retry_count = \(result.retries), error_message = NULL, completed_at = now()
                WHERE run_id IN (SELECT id FROM held) AND step = \(step)
            ), touched AS (
                UPDATE runs SET updated_at = now() WHERE id IN (SELECT id FROM held)
            )
            SELECT count(*)::int FROM held
            """,
            logger: logger)
        return try await rows.collect().first?.decode(Int.self) == 1
    }

    /// Records a failed step and fails the run (retryable with `POST …/retry`).
    public func failStep(run: UUID, step: String, owner: String, error: String, model: String?, retries: Int)
        async throws
    {
        try await connection.transaction(logger: logger) { connection in
            let held = try await connection.query(
                """
                UPDATE runs SET status = 'failed', lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                WHERE id = \(run) AND status = 'running' AND lease_owner = \(owner)
                RETURNING id
                """,
                logger: logger)
            guard try await !held.collect().isEmpty else { return }
            try await connection.query(
                """
                UPDATE steps SET status = 'failed', error_message = \(String(error.prefix(2000))),
                       llm_model = COALESCE(\(model), llm_model), retry_count = \(retries), completed_at = now()
                WHERE run_id = \(run) AND step = \(step)
                """,
                logger: logger)
        }
    }

    /// Ends the worker's hold: `paused` (for review after a step) or `completed`.
    public func finishRun(run: UUID, owner: String, as status: RunStatus) async throws {
        try await connection.query(
            """
            UPDATE runs SET status = \(status.rawValue), lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
            WHERE id = \(run) AND status = 'running' AND lease_owner = \(owner)
            """,
            logger: logger)
    }

    /// Gives back the runs a stopping worker holds, so another takes them at once.
    public func releaseLeases(owner: String) async throws {
        try await connection.query(
            "UPDATE runs SET lease_expires_at = now() WHERE status = 'running' AND lease_owner = \(owner)",
            logger: logger)
    }

    /// The step's stored output, when it has one.
    public func output(ofRun id: String, step: StepName) async throws -> StepOutputReference {
        let run = try await run(id: id)
        let rows = try await connection.query(
            """
            SELECT file_path, digest FROM artifacts
            WHERE run_id = \(run.id) AND step = \(step.rawValue) AND file_type = 'output' ORDER BY id DESC LIMIT 1
            """,
            logger: logger)
        guard let row = try await rows.collect().first else { throw TenantDataError.outputNotFound }
        let (path, digest) = try row.decode((String, String).self)
        return StepOutputReference(path: path, digest: digest)
    }
}

extension Duration {
    /// Whole and fractional seconds, for `make_interval(secs => …)`.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// See `judgeFoundOutput`.
public enum FoundOutputVerdict: Sendable {
    case recorded, unrecorded, notHolder
}

struct StepMetadata: Encodable {
    struct Metrics: Encodable {
        let inputTokens: Int
        let outputTokens: Int
        let characters: Int

        enum CodingKeys: String, CodingKey {
            case characters
            case inputTokens = "input_tokens"
            case outputTokens = "output_tokens"
        }
    }

    let summary: String
    let metrics: Metrics
}
