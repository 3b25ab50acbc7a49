import Core
import PostgresNIO
import Testing

@Suite("Advisory locks on a real database")
struct AdvisoryLockTests {
    let logger = TestCluster.logger

    /// Found once on PostgreSQL 15 by
    /// `SELECT string_agg(s, ' ') FROM (SELECT 'tenant:' || md5(i::text) AS s
    /// FROM generate_series(1, 200000) i) t GROUP BY hashtext(s) HAVING count(*) > 1`
    /// (i = 10419 and i = 198311): two tenant lock names whose 32-bit keys are equal.
    static let collidingNames = ("tenant:4cfbc51c4d39c53146a0064ca373ddef", "tenant:3621eb15e846d1ee725c0e4003f4a88c")

    @Test func namesWhose32BitHashesCollideDoNotBlockEachOther() async throws {
        let (first, second) = Self.collidingNames
        try await TestCluster.withScratchDatabase { url in
            let hashes = try await TestCluster.query(url, "SELECT hashtext(\(first)) = hashtext(\(second))")
            // Without the collision this test would prove nothing.
            try #require(try hashes.first?.decode(Bool.self) == true)

            let (secondTaken, sameRefused) = try await DatabaseConnection.with(url, logger: logger) { holder in
                try await DatabaseConnection.with(url, logger: logger) { connection in
                    let other = LiveConnection(connection)
                    return try await holder.withAdvisoryLock(named: first, logger: logger) {
                        let secondTaken = try await other.withAdvisoryLockIfFree(named: second, logger: logger) { true }
                        let sameTaken = try await other.withAdvisoryLockIfFree(named: first, logger: logger) { true }
                        return (secondTaken == true, sameTaken == nil)
                    }
                }
            }
            #expect(secondTaken)
            // The lock itself still excludes a second holder of the same name.
            #expect(sameRefused)
        }
    }
}
