import Core
import Foundation
import PostgresNIO

/// An uploaded artifact as its `artifacts` row describes it.
public struct UploadedArtifact: Sendable, Equatable, Encodable {
    public var name: String
    public var path: String
    public var digest: String
    public var size: Int
    public var createdAt: String

    enum CodingKeys: String, CodingKey {
        case name, path, digest, size
        case createdAt = "created_at"
    }
}

extension TenantStore {
    /// Fails with SQLSTATE 25006 while the tenant's database is fenced
    /// (read-only for an export or a move), touching nothing otherwise: an
    /// upload asks before it writes a file that its row could not describe.
    public func requireWritable() async throws {
        try await connection.query("UPDATE artifacts SET id = id WHERE false", logger: logger)
    }

    /// Records an upload stored at `path`, with its audit row. Names are
    /// write-once, so a path has at most one upload row.
    public func recordUpload(run: UUID, step: StepName, name: String, path: String, digest: String, size: Int)
        async throws -> UploadedArtifact
    {
        let metadata = try Self.json(["name": JSONValue.string(name), "size": .integer(Int64(size))])
        let details = try Self.json(["step": step.rawValue, "name": name, "digest": digest])
        let rows = try await connection.query(
            """
            WITH stored AS (
                INSERT INTO artifacts (run_id, step, file_type, file_path, digest, metadata)
                VALUES (\(run), \(step.rawValue), 'artifact', \(path), \(digest), \(metadata)::jsonb)
                RETURNING \(unescaped: Self.utc("created_at"))
            ), audit AS (
                INSERT INTO audit_logs (user_id, action, resource_type, resource_id, details)
                SELECT \(actor), 'artifact.upload', 'run', \(run.uuidString.lowercased()), \(details)::jsonb FROM stored
            )
            SELECT * FROM stored
            """,
            logger: logger)
        let created = try await rows.collect().first?.decode(String.self) ?? ""
        return UploadedArtifact(name: name, path: path, digest: digest, size: size, createdAt: created)
    }

    /// Whether any row refers to the file at `path`.
    public func isReferenced(path: String) async throws -> Bool {
        try await !connection.query("SELECT 1 FROM artifacts WHERE file_path = \(path) LIMIT 1", logger: logger)
            .collect().isEmpty
    }

    /// The step's uploads, newest version of each name, by name.
    public func uploads(ofRun id: String, step: StepName) async throws -> [UploadedArtifact] {
        let run = try await run(id: id)
        let rows = try await connection.query(
            """
            SELECT DISTINCT ON (file_path) metadata->>'name', file_path, digest,
                   COALESCE((metadata->>'size')::bigint, 0), \(unescaped: Self.utc("created_at"))
            FROM artifacts
            WHERE run_id = \(run.id) AND step = \(step.rawValue) AND file_type = 'artifact'
            ORDER BY file_path, id DESC
            """,
            logger: logger)
        var uploads: [UploadedArtifact] = []
        for try await (name, path, digest, size, created) in rows.decode((String?, String, String?, Int, String).self) {
            guard let digest else { continue }
            uploads.append(UploadedArtifact(name: name ?? "", path: path, digest: digest, size: size, createdAt: created))
        }
        return uploads.sorted { $0.name < $1.name }
    }

    /// The newest upload at `path` of this run and step.
    public func upload(ofRun id: String, step: StepName, path: String) async throws -> StepOutputReference {
        let run = try await run(id: id)
        let rows = try await connection.query(
            """
            SELECT file_path, digest FROM artifacts
            WHERE run_id = \(run.id) AND step = \(step.rawValue) AND file_type = 'artifact' AND file_path = \(path)
              AND digest IS NOT NULL
            ORDER BY id DESC LIMIT 1
            """,
            logger: logger)
        guard let row = try await rows.collect().first else { throw TenantDataError.outputNotFound }
        let (found, digest) = try row.decode((String, String).self)
        return StepOutputReference(path: found, digest: digest)
    }
}
