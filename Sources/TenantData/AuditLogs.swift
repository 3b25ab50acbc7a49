import Core
import Foundation
import PostgresNIO

/// One entry of the tenant's own audit trail.
public struct AuditLogRecord: Sendable, Equatable, Encodable {
    public var id: Int
    public var userId: String
    public var action: String
    public var resourceType: String
    public var resourceId: String
    public var details: JSONValue?
    public var createdAt: String

    enum CodingKeys: String, CodingKey {
        case id, action, details
        case userId = "user_id"
        case resourceType = "resource_type"
        case resourceId = "resource_id"
        case createdAt = "created_at"
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(userId, forKey: .userId)
        try container.encode(action, forKey: .action)
        try container.encode(resourceType, forKey: .resourceType)
        try container.encode(resourceId, forKey: .resourceId)
        try container.encode(details, forKey: .details)
        try container.encode(createdAt, forKey: .createdAt)
    }
}

public struct AuditLogPage: Sendable, Encodable {
    public var auditLogs: [AuditLogRecord]
    public var nextCursor: String?

    enum CodingKeys: String, CodingKey {
        case auditLogs = "audit_logs"
        case nextCursor = "next_cursor"
    }

    /// `next_cursor` is always there, null on the last page, as the document says.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(auditLogs, forKey: .auditLogs)
        try container.encode(nextCursor, forKey: .nextCursor)
    }
}

/// What a tenant has used: runs by status, and the tokens its steps spent, in
/// all and per model per day (UTC).
public struct UsageRecord: Sendable, Equatable, Encodable {
    public struct Daily: Sendable, Equatable, Encodable {
        public var day: String
        public var model: String
        public var steps: Int
        public var inputTokens: Int
        public var outputTokens: Int

        enum CodingKeys: String, CodingKey {
            case day, model, steps
            case inputTokens = "input_tokens"
            case outputTokens = "output_tokens"
        }
    }

    public var runs: [String: Int]
    public var steps: Int
    public var inputTokens: Int
    public var outputTokens: Int
    public var daily: [Daily]

    enum CodingKeys: String, CodingKey {
        case runs, steps, daily
        case inputTokens = "input_tokens"
        case outputTokens = "output_tokens"
    }
}

extension TenantStore {
    /// Newest first; the cursor is the last id of the previous page.
    public func auditLogs(cursor: String?, limit: PageLimit) async throws -> AuditLogPage {
        var before: Int?
        if let cursor {
            guard let id = Int(cursor), id > 0 else { throw TenantDataError.invalid("cursor is not one this server issued") }
            before = id
        }
        let rows = try await connection.query(
            """
            SELECT id, user_id, action, resource_type, resource_id, details::text, \(unescaped: Self.utc("created_at"))
            FROM audit_logs WHERE (\(before)::int IS NULL OR id < \(before))
            ORDER BY id DESC LIMIT \(limit.value + 1)
            """,
            logger: logger)
        var entries: [AuditLogRecord] = []
        for try await (id, user, action, type, resource, details, created) in rows.decode(
            (Int, String, String, String, String, String?, String).self)
        {
            entries.append(
                AuditLogRecord(
                    id: id, userId: user, action: action, resourceType: type, resourceId: resource,
                    details: Self.jsonValue(details), createdAt: created))
        }
        var next: String?
        if entries.count > limit.value {
            entries.removeLast()
            next = entries.last.map { String($0.id) }
        }
        return AuditLogPage(auditLogs: entries, nextCursor: next)
    }

    public func usage() async throws -> UsageRecord {
        var runs = Dictionary(uniqueKeysWithValues: RunStatus.allCases.map { ($0.rawValue, 0) })
        let counts = try await connection.query("SELECT status, count(*)::int FROM runs GROUP BY status", logger: logger)
        for try await (status, count) in counts.decode((String, Int).self) { runs[status] = count }
        let tokens = """
            COALESCE(sum(CASE WHEN jsonb_typeof(token_usage->'input_tokens') = 'number'
                              THEN (token_usage->>'input_tokens')::numeric END), 0)::bigint,
            COALESCE(sum(CASE WHEN jsonb_typeof(token_usage->'output_tokens') = 'number'
                              THEN (token_usage->>'output_tokens')::numeric END), 0)::bigint
            """
        let totals = try await connection.query(
            "SELECT count(*)::int, \(unescaped: tokens) FROM steps", logger: logger)
        let (steps, input, output) = try await totals.collect().first?.decode((Int, Int, Int).self) ?? (0, 0, 0)
        let days = try await connection.query(
            """
            SELECT to_char(date_trunc('day', COALESCE(completed_at, started_at) AT TIME ZONE current_setting('TimeZone')
                                              AT TIME ZONE 'UTC'), 'YYYY-MM-DD'),
                   llm_model, count(*)::int, \(unescaped: tokens)
            FROM steps WHERE llm_model IS NOT NULL AND token_usage IS NOT NULL
            GROUP BY 1, 2 ORDER BY 1 DESC, 2 LIMIT 1000
            """,
            logger: logger)
        var daily: [UsageRecord.Daily] = []
        for try await (day, model, count, dayInput, dayOutput) in days.decode((String, String, Int, Int, Int).self) {
            daily.append(.init(day: day, model: model, steps: count, inputTokens: dayInput, outputTokens: dayOutput))
        }
        return UsageRecord(runs: runs, steps: steps, inputTokens: input, outputTokens: output, daily: daily)
    }
}
