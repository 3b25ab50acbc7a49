import Core
import Foundation
import PostgresNIO

public enum RunStatus: String, Sendable, Codable, CaseIterable {
    case pending, running, paused, completed, failed, cancelled
}

/// A run as the API shows it; its steps' outputs stay in the artifact store.
/// `configJSON` and `inputJSON` are the stored jsonb as PostgreSQL wrote it,
/// passed through rather than decoded and re-encoded (so a number keeps every
/// digit). The input, which may be large, is read only for the one run
/// `GET /v1/runs/{id}` shows, never for lists.
public struct RunRecord: Sendable, Equatable {
    public var id: UUID
    public var status: RunStatus
    public var currentStep: String?
    public var steps: [String]
    public var configJSON: String
    public var inputJSON: String?
    public var createdAt: String
    public var updatedAt: String

    public func write(to json: inout JSONText) {
        json.raw("{")
        json.key("config", first: true)
        json.raw(configJSON)
        json.key("created_at")
        json.string(createdAt)
        json.key("current_step")
        json.optionalString(currentStep)
        json.key("id")
        json.string(id.uuidString.lowercased())
        if let inputJSON {
            json.key("input")
            json.raw(inputJSON)
        }
        json.key("status")
        json.string(status.rawValue)
        json.key("steps")
        json.strings(steps)
        json.key("updated_at")
        json.string(updatedAt)
        json.raw("}")
    }

    public var json: String {
        var json = JSONText()
        write(to: &json)
        return json.text
    }
}

public struct RunPage: Sendable {
    public var runs: [RunRecord]
    public var nextCursor: String?

    public var json: String {
        var json = JSONText()
        json.raw("{")
        json.key("next_cursor", first: true)
        json.optionalString(nextCursor)
        json.key("runs")
        json.raw("[")
        for (index, run) in runs.enumerated() {
            if index > 0 { json.raw(",") }
            run.write(to: &json)
        }
        json.raw("]}")
        return json.text
    }
}

/// A step of a run, with the reference to its stored output when it has one.
public struct StepRecord: Sendable, Equatable, Encodable {
    public var step: String
    public var status: String
    public var llmModel: String?
    public var tokenUsage: JSONValue?
    public var retryCount: Int
    public var errorMessage: String?
    public var startedAt: String?
    public var completedAt: String?
    public var outputPath: String?
    public var outputDigest: String?
    public var summary: String?
    public var metrics: JSONValue?

    enum CodingKeys: String, CodingKey {
        case step, status, summary, metrics
        case llmModel = "llm_model"
        case tokenUsage = "token_usage"
        case retryCount = "retry_count"
        case errorMessage = "error_message"
        case startedAt = "started_at"
        case completedAt = "completed_at"
        case outputPath = "output_path"
        case outputDigest = "output_digest"
    }

    public func encode(to encoder: any Encoder) throws {
        // Every field is present, null when unknown, so clients see one shape.
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(step, forKey: .step)
        try container.encode(status, forKey: .status)
        try container.encode(llmModel, forKey: .llmModel)
        try container.encode(tokenUsage, forKey: .tokenUsage)
        try container.encode(retryCount, forKey: .retryCount)
        try container.encode(errorMessage, forKey: .errorMessage)
        try container.encode(startedAt, forKey: .startedAt)
        try container.encode(completedAt, forKey: .completedAt)
        try container.encode(outputPath, forKey: .outputPath)
        try container.encode(outputDigest, forKey: .outputDigest)
        try container.encode(summary, forKey: .summary)
        try container.encode(metrics, forKey: .metrics)
    }
}

extension TenantStore {
    static let runColumns = """
        id, status, current_step, steps, COALESCE(config, '{"models":{},"pause_after":[]}')::text,
        \(utc("created_at")), \(utc("updated_at"))
        """

    static func decodeRun(_ row: PostgresRow) throws -> RunRecord {
        let (id, status, current, steps, config, created, updated) = try row.decode(
            (UUID, String, String?, [String], String, String, String).self)
        return RunRecord(
            id: id, status: RunStatus(rawValue: status) ?? .failed, currentStep: current, steps: steps,
            configJSON: config, createdAt: created, updatedAt: updated)
    }

    static func decodeRunWithInput(_ row: PostgresRow) throws -> RunRecord {
        let (id, status, current, steps, config, created, updated, input) = try row.decode(
            (UUID, String, String?, [String], String, String, String, String).self)
        return RunRecord(
            id: id, status: RunStatus(rawValue: status) ?? .failed, currentStep: current, steps: steps,
            configJSON: config, inputJSON: input, createdAt: created, updatedAt: updated)
    }

    /// The hot read: prepared once per connection, then only bound and run.
    struct RunByID: RunLookup {
        static let name = "tenantplane_run_by_id"
        static let sql = "SELECT \(runColumns) FROM runs WHERE id = $1"
        let id: UUID

        func decodeRow(_ row: PostgresRow) throws -> RunRecord {
            try TenantStore.decodeRun(row)
        }
    }

    /// The same with the run's input, for `GET /v1/runs/{id}`.
    struct RunWithInputByID: RunLookup {
        static let name = "tenantplane_run_with_input_by_id"
        static let sql = "SELECT \(runColumns), COALESCE(input, '{}')::text FROM runs WHERE id = $1"
        let id: UUID

        func decodeRow(_ row: PostgresRow) throws -> RunRecord {
            try TenantStore.decodeRunWithInput(row)
        }
    }

    /// Stores a `pending` run and its audit row in one statement.
    public func createRun(_ run: NewRun) async throws -> RunRecord {
        let steps = run.steps.map(\.rawValue)
        let input = try Self.json(run.input)
        let config = try Self.json(run.config)
        let details = try Self.json(["steps": steps.count])
        let rows = try await connection.query(
            """
            WITH run AS (
                INSERT INTO runs (status, steps, input, config)
                VALUES ('pending', \(steps), \(input)::jsonb, \(config)::jsonb)
                RETURNING \(unescaped: Self.runColumns)
            ), audit AS (
                INSERT INTO audit_logs (user_id, action, resource_type, resource_id, details)
                SELECT \(actor), 'run.create', 'run', id::text, \(details)::jsonb FROM run
            )
            SELECT * FROM run
            """,
            logger: logger)
        guard let row = try await rows.collect().first else { throw TenantDataError.invalid("the run was not stored") }
        return try Self.decodeRun(row)
    }

    /// The run, or `runNotFound` for a malformed, missing or foreign id alike.
    public func run(id: String) async throws -> RunRecord {
        try await lookUp(id, RunByID.init)
    }

    /// The run with its input, as `GET /v1/runs/{id}` shows it.
    public func runWithInput(id: String) async throws -> RunRecord {
        try await lookUp(id, RunWithInputByID.init)
    }

    private func lookUp<Lookup: RunLookup>(_ id: String, _ lookup: (UUID) -> Lookup) async throws -> RunRecord {
        guard let uuid = UUID(uuidString: id) else { throw TenantDataError.runNotFound }
        for try await run in try await connection.execute(lookup(uuid), logger: logger) {
            return run
        }
        throw TenantDataError.runNotFound
    }

    /// Newest first, `limit` at a time; `cursor` is the previous page's `next_cursor`.
    public func runs(status: String?, cursor: String?, limit: PageLimit) async throws -> RunPage {
        if let status, RunStatus(rawValue: status) == nil {
            throw TenantDataError.invalid(
                "status must be one of \(RunStatus.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let after = try cursor.map { token throws(TenantDataError) in try PageCursor(token) }
        let rows = try await connection.query(
            """
            SELECT \(unescaped: Self.runColumns) FROM runs
            WHERE (\(status)::text IS NULL OR status = \(status))
              AND (\(after?.createdAt)::timestamptz IS NULL
                   OR (created_at, id) < (\(after?.createdAt)::timestamptz, \(after?.id)::uuid))
            ORDER BY created_at DESC, id DESC
            LIMIT \(limit.value + 1)
            """,
            logger: logger)
        var runs: [RunRecord] = []
        for try await row in rows { runs.append(try Self.decodeRun(row)) }
        var next: String?
        if runs.count > limit.value {
            runs.removeLast()
            next = runs.last.map { PageCursor(createdAt: $0.createdAt, id: $0.id.uuidString.lowercased()).token }
        }
        return RunPage(runs: runs, nextCursor: next)
    }

    /// The run's steps in the run's order, each with its output reference.
    public func steps(ofRun id: String) async throws -> [StepRecord] {
        let run = try await run(id: id)
        let rows = try await connection.query(
            """
            SELECT s.step, s.status, s.llm_model, s.token_usage::text, COALESCE(s.retry_count, 0), s.error_message,
                   \(unescaped: Self.utcLocal("s.started_at")), \(unescaped: Self.utcLocal("s.completed_at")),
                   o.file_path, o.digest, o.metadata->>'summary', (o.metadata->'metrics')::text
            FROM steps s
            LEFT JOIN LATERAL (
                SELECT file_path, digest, metadata FROM artifacts
                WHERE run_id = s.run_id AND step = s.step AND file_type = 'output'
                ORDER BY id DESC LIMIT 1
            ) o ON true
            WHERE s.run_id = \(run.id)
            ORDER BY array_position(\(run.steps), s.step), s.id
            """,
            logger: logger)
        var steps: [StepRecord] = []
        for try await row in rows {
            let (step, status, model, usage, retries, error, started, completed, path, digest, summary, metrics) =
                try row.decode(
                    (String, String, String?, String?, Int, String?, String?, String?, String?, String?, String?, String?)
                        .self)
            steps.append(
                StepRecord(
                    step: step, status: status, llmModel: model, tokenUsage: Self.jsonValue(usage),
                    retryCount: retries, errorMessage: error, startedAt: started, completedAt: completed,
                    outputPath: path, outputDigest: digest, summary: summary, metrics: Self.jsonValue(metrics)))
        }
        return steps
    }
}

/// A prepared read of one run by its id.
protocol RunLookup: PostgresPreparedStatement where Row == RunRecord {
    var id: UUID { get }
}

extension RunLookup {
    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings()
        bindings.append(id)
        return bindings
    }
}
