import Foundation
import Testing

@testable import Migrations
@testable import Provisioner

@Suite("Splitting migration files into statements")
struct SQLScriptTests {
    @Test func splitsAtTopLevelSemicolonsOnly() {
        let script = SQLScript(
            """
            -- a comment; with a semicolon
            CREATE TABLE a (t TEXT DEFAULT 'x;y', "we;ird" INT);
            /* block; /* nested; */ still comment; */
            CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$;
            DO $$ BEGIN PERFORM 1; END $$;
            SELECT E'it\\'s; fine', 'it''s; fine'
            """)
        #expect(script.statements.map(\.text) == [
            "CREATE TABLE a (t TEXT DEFAULT 'x;y', \"we;ird\" INT)",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; $body$",
            "DO $$ BEGIN PERFORM 1; END $$",
            "SELECT E'it\\'s; fine', 'it''s; fine'",
        ])
    }

    @Test func commentOnlyAndEmptyPartsAreDropped() {
        #expect(SQLScript("  ;; -- nothing\n/* none */ ;").statements.isEmpty)
    }

    @Test func offsetsMapBackToLinesAndColumns() throws {
        let script = SQLScript("SELECT 1;\n\n  SELECT bogus;")
        let second = try #require(script.statements.last)
        #expect(second.text == "SELECT bogus")
        let location = script.location(ofOffset: second.offset + 7)
        #expect(location.line == 3)
        #expect(location.column == 10)
    }
}

@Suite("Migration file names")
struct MigrationFileNameTests {
    @Test(arguments: ["001_create.sql", "010_add_index_2.sql", "1234_x.sql"])
    func acceptsTheSpecifiedPattern(_ name: String) throws {
        _ = try MigrationFile(fileName: name, contents: .init("SELECT 1".utf8))
    }

    @Test(arguments: ["1_short.sql", "001-dash.sql", "001_Upper.sql", "abc_x.sql", "001_.sql", "000_zero.sql", "001_x.sql.bak"])
    func rejectsAnythingElse(_ name: String) {
        #expect(throws: MigrationError.self) { try MigrationFile(fileName: name, contents: .init("SELECT 1".utf8)) }
    }

    @Test func noTransactionMarkerOnTheFirstLine() throws {
        let marked = try MigrationFile(
            fileName: "002_idx.sql", contents: .init("-- tenantplane:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);".utf8))
        #expect(!marked.runsInTransaction)
        let later = try MigrationFile(
            fileName: "003_idx.sql", contents: .init("SELECT 1;\n-- tenantplane:no-transaction\n".utf8))
        #expect(later.runsInTransaction)
    }

    @Test func duplicateVersionsAreRefused() throws {
        let a = try MigrationFile(fileName: "001_a.sql", contents: .init("SELECT 1".utf8))
        let b = try MigrationFile(fileName: "001_b.sql", contents: .init("SELECT 2".utf8))
        #expect(throws: MigrationError.self) { try MigrationSet(files: [a, b]) }
    }
}

@Suite("SCRAM verifier")
struct ScramVerifierTests {
    /// RFC 7677's example: password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096 rounds.
    @Test func matchesTheRFCTestVector() throws {
        let salt = Array(try #require(Data(base64Encoded: "W22ZaJ0SNY7soEsUEjb6gQ==")))
        let verifier = try ScramVerifier.make(password: "pencil", salt: salt, iterations: 4096)
        #expect(verifier == "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=")
    }
}
