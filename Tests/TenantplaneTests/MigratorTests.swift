import Core
import Foundation
import Migrations
import PostgresNIO
import Testing

@Suite("Migration engine on a real database")
struct MigratorTests {
    let logger = TestCluster.logger

    func set(_ files: [(String, String)]) throws -> MigrationSet {
        try MigrationSet(files: files.map { try MigrationFile(fileName: $0.0, contents: Data($0.1.utf8)) })
    }

    func appliedVersions(_ url: PostgresURL) async throws -> [Int] {
        try await TestCluster.query(url, "SELECT version FROM schema_migrations ORDER BY version").map {
            try $0.decode(Int.self)
        }
    }

    func tableExists(_ url: PostgresURL, _ name: String) async throws -> Bool {
        try await TestCluster.query(url, "SELECT to_regclass(\(name)) IS NOT NULL").first?.decode(Bool.self) ?? false
    }

    @Test func appliesPendingFilesInOrderAndRecordsThem() async throws {
        try await TestCluster.withScratchDatabase { url in
            // Listed out of order: 002 depends on 001.
            let migrations = try set([
                ("002_add_column.sql", "ALTER TABLE things ADD COLUMN size INT;"),
                ("001_create_things.sql", "CREATE TABLE things (id INT);\nINSERT INTO things VALUES (1);"),
            ])
            let report = try await DatabaseConnection.with(url, logger: logger) {
                try await Migrator(migrations: migrations).migrate($0, logger: logger)
            }
            #expect(report.fromVersion == 0)
            #expect(report.toVersion == 2)
            #expect(report.applied.map(\.version) == [1, 2])
            #expect(try await appliedVersions(url) == [1, 2])
            let rows = try await TestCluster.query(url, "SELECT name, checksum FROM schema_migrations ORDER BY version")
            let (name, checksum) = try rows[0].decode((String, String).self)
            #expect(name == "create_things")
            #expect(checksum == migrations.files[0].checksum)
            #expect(checksum.count == 64)
        }
    }

    @Test func secondRunAppliesNothing() async throws {
        try await TestCluster.withScratchDatabase { url in
            let migrations = try set([("001_create.sql", "CREATE TABLE t (id INT);")])
            let (first, second) = try await DatabaseConnection.with(url, logger: logger) { connection in
                let migrator = Migrator(migrations: migrations)
                return (
                    try await migrator.migrate(connection, logger: logger),
                    try await migrator.migrate(connection, logger: logger)
                )
            }
            #expect(first.applied.count == 1)
            #expect(second.applied.isEmpty)
            #expect(second.fromVersion == 1 && second.toVersion == 1)
        }
    }

    @Test func checksumDriftIsReportedAndNothingIsApplied() async throws {
        try await TestCluster.withScratchDatabase { url in
            let original = try set([("001_create.sql", "CREATE TABLE t (id INT);")])
            let changed = try set([
                ("001_create.sql", "CREATE TABLE t (id BIGINT);"),
                ("002_more.sql", "CREATE TABLE u (id INT);"),
            ])
            try await DatabaseConnection.with(url, logger: logger) { connection in
                try await Migrator(migrations: original).migrate(connection, logger: logger)
                let state = try await Migrator(migrations: changed).inspect(connection, logger: logger)
                #expect(state.drift == [ChecksumDrift(version: 1, file: "001_create.sql", kind: .changed)])
                #expect(state.pending == ["002_more.sql"])
                await #expect {
                    try await Migrator(migrations: changed).migrate(connection, logger: logger)
                } throws: { error in
                    guard case MigrationError.drift(let drift) = error else { return false }
                    return drift.count == 1 && (error as? MigrationError)?.message.contains("001_create.sql") == true
                }
            }
            #expect(try await tableExists(url, "u") == false)
            #expect(try await appliedVersions(url) == [1])
        }
    }

    @Test func aFailingFileIsRolledBackAndNamedWithItsSQLState() async throws {
        try await TestCluster.withScratchDatabase { url in
            let migrations = try set([
                ("001_ok.sql", "CREATE TABLE ok (id INT);"),
                ("002_broken.sql", "CREATE TABLE half (id INT);\n\nINSERT INTO missing_table VALUES (1);"),
                ("003_never.sql", "CREATE TABLE never (id INT);"),
            ])
            await #expect {
                try await DatabaseConnection.with(url, logger: logger) {
                    try await Migrator(migrations: migrations).migrate($0, logger: logger)
                }
            } throws: { error in
                guard case MigrationError.failed(let failure) = error else { return false }
                return failure.file == "002_broken.sql" && failure.sqlState == "42P01" && failure.line == 3
                    && failure.reachedVersion == 1
                    && failure.summary.contains("002_broken.sql") && failure.summary.contains("42P01")
                    && failure.summary.contains("missing_table")
            }
            #expect(try await appliedVersions(url) == [1])
            #expect(try await tableExists(url, "half") == false)
            #expect(try await tableExists(url, "never") == false)
        }
    }

    @Test func aSyntaxErrorReportsLineAndColumn() async throws {
        try await TestCluster.withScratchDatabase { url in
            let migrations = try set([("001_typo.sql", "CREATE TABLE a (id INT);\nCREAT TABLE b (id INT);")])
            await #expect {
                try await DatabaseConnection.with(url, logger: logger) {
                    try await Migrator(migrations: migrations).migrate($0, logger: logger)
                }
            } throws: { error in
                guard case MigrationError.failed(let failure) = error else { return false }
                return failure.sqlState == "42601" && failure.line == 2 && failure.column == 1
            }
            #expect(try await appliedVersions(url).isEmpty)
        }
    }

    @Test func twoConcurrentRunnersApplyEachFileOnce() async throws {
        try await TestCluster.withScratchDatabase { url in
            // The first file is slow, so the second runner arrives while the lock is held.
            let migrations = try set([
                ("001_slow.sql", "SELECT pg_sleep(0.4);\nCREATE TABLE counter (n INT);\nINSERT INTO counter VALUES (1);"),
                ("002_bump.sql", "UPDATE counter SET n = n + 1;"),
            ])
            let logger = self.logger
            let reports = try await withThrowingTaskGroup(of: MigrationReport.self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        try await DatabaseConnection.with(url, logger: logger) {
                            try await Migrator(migrations: migrations).migrate($0, logger: logger)
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(reports.map(\.applied.count).sorted() == [0, 2])
            #expect(try await appliedVersions(url) == [1, 2])
            #expect(try await TestCluster.query(url, "SELECT n FROM counter").first?.decode(Int.self) == 2)
        }
    }

    @Test func noTransactionFileRunsConcurrentIndexBuilds() async throws {
        try await TestCluster.withScratchDatabase { url in
            let migrations = try set([
                ("001_table.sql", "CREATE TABLE t (a INT);"),
                (
                    "002_index.sql",
                    "-- tenantplane:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_a_idx ON t (a);\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_a2_idx ON t (a);"
                ),
            ])
            let report = try await DatabaseConnection.with(url, logger: logger) {
                try await Migrator(migrations: migrations).migrate($0, logger: logger)
            }
            #expect(report.toVersion == 2)
            #expect(try await tableExists(url, "t_a_idx"))
            #expect(try await tableExists(url, "t_a2_idx"))
        }
    }

    @Test func aMigrationInsideATransactionCannotBuildConcurrently() async throws {
        try await TestCluster.withScratchDatabase { url in
            let migrations = try set([
                ("001_table.sql", "CREATE TABLE t (a INT);"),
                ("002_index.sql", "CREATE INDEX CONCURRENTLY t_a_idx ON t (a);"),
            ])
            await #expect {
                try await DatabaseConnection.with(url, logger: logger) {
                    try await Migrator(migrations: migrations).migrate($0, logger: logger)
                }
            } throws: { error in
                guard case MigrationError.failed(let failure) = error else { return false }
                return failure.sqlState == "25001"
            }
            #expect(try await appliedVersions(url) == [1])
        }
    }
}
