import Core
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import PostgresNIO
import Synchronization
import Testing

/// Every table's rows as JSON text, in a stable order.
private func tableContents(_ url: PostgresURL, renaming: (from: String, to: String)? = nil) async throws -> [String: [String]] {
    var contents: [String: [String]] = [:]
    for table in ["runs", "steps", "artifacts", "audit_logs", "prompts", "schema_migrations"] {
        let rows = try await TestCluster.query(
            url, PostgresQuery(unsafeSQL: "SELECT to_jsonb(t)::text FROM \(table) t ORDER BY 1"))
        contents[table] = try rows.map { row in
            let text = try row.decode(String.self)
            guard let renaming else { return text }
            return text.replacingOccurrences(of: "\"\(renaming.from)/", with: "\"\(renaming.to)/")
        }.sorted()
    }
    return contents
}

/// The files under a tenant's storage directory, relative path → bytes.
private func storedFiles(_ root: URL) throws -> [String: Data] {
    var files: [String: Data] = [:]
    guard let walker = FileManager.default.enumerator(atPath: root.path) else { return files }
    while let relative = walker.nextObject() as? String {
        let url = root.appendingPathComponent(relative)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue,
            !url.lastPathComponent.hasPrefix(".")
        {
            files[relative] = try Data(contentsOf: url)
        }
    }
    return files
}

enum SHA256Hex {
    static func of(_ data: Data) -> String { SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined() }
}

@Suite("Backup, export, import and move")
struct BackupTests {
    @Test func exportThenImportAsACopyReproducesEveryRowAndFile() async throws {
        try await TenantAPIFixture.with { api in
            let fixture = api.provisioning
            let seeded = try await SeededTenant.make(api, prefix: "round")
            let work = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: work) }
            let archive = work.appendingPathComponent("round.tar").path

            let exported = try await fixture.cli.run("tenant", "export", seeded.slug, "--out", archive, "--json")
            #expect(exported.exitCode == 0, "\(exported.stderr)")
            let report = try #require(try exported.jsonObject() as? [String: Any])
            #expect(report["artifacts"] as? Int == 2)
            #expect(report["schema_version"] as? Int == 1)
            // A second export to the same file is refused; the first stays whole.
            let again = try await fixture.cli.run("tenant", "export", seeded.slug, "--out", archive)
            #expect(again.exitCode == 1)
            #expect(again.stderr.contains("already exists"))

            // Plain tar that any tar lists; no secret inside.
            let listing = work.appendingPathComponent("list")
            try FileManager.default.createDirectory(at: listing, withIntermediateDirectories: true)
            try await tar(["-xf", archive, "-C", listing.path])
            #expect(FileManager.default.fileExists(atPath: listing.appendingPathComponent("database.dump").path))
            #expect(FileManager.default.fileExists(atPath: listing.appendingPathComponent("manifest.json").path))
            let bytes = try Data(contentsOf: URL(fileURLWithPath: archive))
            let password = try #require(try await fixture.tenantURL(seeded.slug).password)
            #expect(bytes.range(of: Data(password.utf8)) == nil)
            #expect(bytes.range(of: Data(seeded.key.utf8)) == nil)

            let copy = ProvisioningFixture.slug("copy")
            let imported = try await fixture.cli.run("tenant", "import", archive, "--as", copy, "--json")
            #expect(imported.exitCode == 0, "\(imported.stderr)")
            #expect(try #require(try imported.jsonObject() as? [String: Any])["tenant"] as? String == copy)

            let original = try await tableContents(try await fixture.tenantURL(seeded.slug), renaming: (seeded.slug, copy))
            let restored = try await tableContents(try await fixture.tenantURL(copy))
            #expect(original == restored)
            #expect(original["runs"]?.count == 3)
            #expect(original["artifacts"]?.count == 2)
            let originalFiles = try storedFiles(fixture.storage.appendingPathComponent(seeded.slug))
            #expect(originalFiles.count == 2)
            #expect(try storedFiles(fixture.storage.appendingPathComponent(copy)) == originalFiles)

            // The copy serves with a new key; its files read back verified.
            let key = try await api.client.execute(uri: "/admin/tenants/\(copy)/keys", method: .post, headers: TestServer.adminHeaders)
            let copyKey = try #require(key.json["key"] as? String)
            let runs = try await api.call(.get, "/v1/runs", key: copyKey)
            #expect((runs.json["runs"] as? [Any])?.count == 3)
            let file = try await api.call(.get, "/v1/runs/\(seeded.runs[0])/steps/outline/artifacts/notes.txt", key: copyKey)
            #expect(file.status == .ok)
            #expect(String(buffer: file.body) == seeded.artifactBytes)
            // Importing under the original id, which exists, is refused.
            let clash = try await fixture.cli.run("tenant", "import", archive)
            #expect(clash.exitCode == 1)
            #expect(clash.stderr.contains("already exists"))
        }
    }

    @Test func anExportWhileWritesGoOnPausesNoneAndHoldsExactlyItsSnapshot() async throws {
        try await TenantAPIFixture.with { api in
            let fixture = api.provisioning
            let seeded = try await SeededTenant.make(api, prefix: "livexp")
            let work = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: work) }
            let archive = work.appendingPathComponent("live.tar").path
            let source = try await fixture.tenantURL(seeded.slug)

            let stop = Stopwatch()
            async let writes = Self.keepWriting(api, key: seeded.key, until: stop)
            async let uploads = Self.keepUploading(api, key: seeded.key, run: seeded.runs[0], until: stop)
            try await Task.sleep(for: .milliseconds(300))
            // Committed before the export began: the snapshot must hold them.
            let before = Set(try await TestCluster.query(source, "SELECT id::text FROM runs").map { try $0.decode(String.self) })
            let exported = try await fixture.cli.run("tenant", "export", seeded.slug, "--out", archive, "--json")
            let fence = try await TestCluster.query(
                fixture.controlURL, "SELECT write_fence FROM tenants WHERE id = \(seeded.slug)")
            try await Task.sleep(for: .milliseconds(300))
            stop.stop()
            let (written, uploaded) = try await (writes, uploads)
            try #require(exported.exitCode == 0, "\(exported.stderr)")
            let report = try #require(try exported.jsonObject() as? [String: Any])
            #expect(report["snapshot_at"] is String)
            #expect(try fence.first?.decode(String?.self) == nil)
            // No write met a fence or a 503, and writes did go on.
            #expect(written.paused == 0 && uploaded.paused == 0)
            #expect(written.unexpected.isEmpty && uploaded.unexpected.isEmpty, "\(written.unexpected) \(uploaded.unexpected)")
            #expect(written.acknowledged.count > 0 && uploaded.acknowledged.count > 0)

            let copy = ProvisioningFixture.slug("livecopy")
            let imported = try await fixture.cli.run("tenant", "import", archive, "--as", copy, "--json")
            try #require(imported.exitCode == 0, "\(imported.stderr)")
            let copyURL = try await fixture.tenantURL(copy)
            let copied = Set(try await TestCluster.query(copyURL, "SELECT id::text FROM runs").map { try $0.decode(String.self) })
            let now = Set(try await TestCluster.query(source, "SELECT id::text FROM runs").map { try $0.decode(String.self) })
            #expect(before.isSubset(of: copied))
            #expect(copied.isSubset(of: now))
            // Artifact rows are write-once: the copy's are the source's, renamed, and
            // the archive held exactly the files they name, each with its digest.
            let original = try await tableContents(source, renaming: (seeded.slug, copy))["artifacts"] ?? []
            let restored = try await tableContents(copyURL)["artifacts"] ?? []
            #expect(Set(restored).isSubset(of: Set(original)))
            #expect(restored.count >= 2)
            let rows = try await TestCluster.query(copyURL, "SELECT file_path, digest FROM artifacts")
            let copyFiles = try storedFiles(fixture.storage.appendingPathComponent(copy))
            #expect(copyFiles.count == rows.count)
            for row in rows {
                let (path, digest) = try row.decode((String, String).self)
                let bytes = try #require(copyFiles[String(path.dropFirst(copy.count + 1))], "\(path) is not in the copy")
                #expect(SHA256Hex.of(bytes) == digest)
            }
        }
    }

    /// Uploads one small artifact after another to `run`'s outline step
    /// until stopped: the names acknowledged (201), the 503s, anything else.
    private static func keepUploading(_ api: TenantAPIFixture, key: String, run: String, until stop: Stopwatch) async throws
        -> (acknowledged: [String], paused: Int, unexpected: [String])
    {
        var acknowledged: [String] = []
        var paused = 0
        var unexpected: [String] = []
        var next = 0
        while !stop.stopped {
            next += 1
            let name = "live-\(next).txt"
            let response = try await api.client.execute(
                uri: "/v1/runs/\(run)/steps/outline/artifacts/\(name)", method: .post,
                headers: [.authorization: "Bearer \(key)"], body: ByteBuffer(string: "upload \(next)\n"))
            switch response.status {
            case .created: acknowledged.append(name)
            case .serviceUnavailable: paused += 1
            default: unexpected.append("\(response.status.code) \(String(buffer: response.body))")
            }
        }
        return (acknowledged, paused, unexpected)
    }

    @Test func damagedTamperedOrUnsafeArchivesAreRefusedWithNothingCreated() async throws {
        try await TenantAPIFixture.with { api in
            let fixture = api.provisioning
            let seeded = try await SeededTenant.make(api, prefix: "tamper")
            let work = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: work) }
            let archive = work.appendingPathComponent("good.tar")
            let exported = try await fixture.cli.run("tenant", "export", seeded.slug, "--out", archive.path)
            try #require(exported.exitCode == 0, "\(exported.stderr)")
            let good = try Data(contentsOf: archive)
            let parts = work.appendingPathComponent("parts")
            try FileManager.default.createDirectory(at: parts, withIntermediateDirectories: true)
            try await tar(["-xf", archive.path, "-C", parts.path])
            let manifestURL = parts.appendingPathComponent("manifest.json")
            let manifest = try String(contentsOf: manifestURL, encoding: .utf8)

            var cases: [(name: String, data: Data, expected: String)] = []
            cases.append(("truncated", good.prefix(good.count / 2), "truncated"))
            cases.append(("no end marker", good.prefix(good.count - 1024), "truncated"))
            func flipped(at offset: Int) -> Data {
                var copy = good
                copy[offset] ^= 0x01
                return copy
            }
            // One byte changed inside each member: the dump (first member's
            // content), an artifact and the manifest.
            cases.append(("dump byte", flipped(at: 512 + 100), "does not match"))
            let artifactOffset = try #require(good.range(of: Data(seeded.artifactBytes.prefix(40).utf8))).lowerBound
            cases.append(("artifact byte", flipped(at: artifactOffset + 5), "does not match"))
            let manifestOffset = try #require(good.range(of: Data("\"format\"".utf8))).lowerBound
            cases.append(("manifest byte", flipped(at: manifestOffset + 2), "manifest"))
            // A header byte: its checksum no longer adds up.
            cases.append(("header byte", flipped(at: 10), "header"))

            func repacked(_ name: String, manifest text: String, extra: [String] = []) async throws -> Data {
                try text.write(to: manifestURL, atomically: true, encoding: .utf8)
                let out = work.appendingPathComponent("\(name).tar")
                try await tar(["-cf", out.path, "-C", parts.path, "database.dump", "artifacts", "manifest.json"] + extra)
                try manifest.write(to: manifestURL, atomically: true, encoding: .utf8)
                return try Data(contentsOf: out)
            }
            let dumpDigest = try #require(
                manifest.range(of: #"[0-9a-f]{64}"#, options: .regularExpression).map { String(manifest[$0]) })
            cases.append((
                "lying manifest",
                try await repacked("lying", manifest: manifest.replacingOccurrences(of: dumpDigest, with: String(repeating: "0", count: 64))),
                "does not match"))
            cases.append((
                "newer schema",
                try await repacked("newer", manifest: manifest.replacingOccurrences(of: #""version" : 1"#, with: #""version" : 999"#)),
                "newer than this binary knows"))

            // Paths that leave the archive, and links.
            let outside = work.appendingPathComponent("outside.txt")
            try "x".write(to: outside, atomically: true, encoding: .utf8)
            let escape = work.appendingPathComponent("escape.tar")
            try await tar(["-cf", escape.path, "-P", "-C", parts.path, "manifest.json", "database.dump", "--transform", "s,^database,../database,"])
            cases.append(("dot-dot path", try Data(contentsOf: escape), "unsafe"))
            let absolute = work.appendingPathComponent("absolute.tar")
            try await tar(["-cf", absolute.path, "-P", "-C", parts.path, "manifest.json", outside.path])
            cases.append(("absolute path", try Data(contentsOf: absolute), "unsafe"))
            let linked = work.appendingPathComponent("linked")
            try FileManager.default.createDirectory(at: linked.appendingPathComponent("artifacts"), withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(
                atPath: linked.appendingPathComponent("artifacts/evil").path, withDestinationPath: "/etc/passwd")
            let symlink = work.appendingPathComponent("symlink.tar")
            try await tar(["-cf", symlink.path, "-C", parts.path, "manifest.json", "database.dump", "-C", linked.path, "artifacts/evil"])
            cases.append(("symlink", try Data(contentsOf: symlink), "unsupported archive member"))

            for (index, bad) in cases.enumerated() {
                let file = work.appendingPathComponent("case-\(index).tar")
                try bad.data.write(to: file)
                let slug = ProvisioningFixture.slug("bad")
                let result = try await fixture.cli.run("tenant", "import", file.path, "--as", slug)
                #expect(result.exitCode == 1, "\(bad.name): \(result.stdout)")
                #expect(result.stderr.lowercased().contains(bad.expected), "\(bad.name): \(result.stderr)")
                try await fixture.expectNothingCreated(for: slug)
            }
            #expect(!FileManager.default.fileExists(atPath: work.deletingLastPathComponent().appendingPathComponent("database").path))
            // Nothing was left in the staging area either.
            let staging = fixture.storage.appendingPathComponent(".imports")
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: staging.path)) ?? []).isEmpty)
        }
    }

    @Test func anOlderArchiveIsMigratedForwardOnImport() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = try await Self.cliTenant(fixture, "older")
            let work = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: work) }
            let archive = work.appendingPathComponent("older.tar").path
            let exported = try await fixture.cli.run("tenant", "export", slug, "--out", archive)
            try #require(exported.exitCode == 0, "\(exported.stderr)")

            // A newer release of tenantplane has one more tenant migration.
            let staged = try TestCluster.stagedCopy(of: TestCluster.tenantMigrations)
            defer { try? FileManager.default.removeItem(at: staged) }
            try "ALTER TABLE runs ADD COLUMN label TEXT;\n".write(
                to: staged.appendingPathComponent("002_run_labels.sql"), atomically: true, encoding: .utf8)
            var newer = fixture.cli
            newer.environment["TENANTPLANE_TENANT_MIGRATIONS"] = staged.path
            let copy = ProvisioningFixture.slug("newer")
            let imported = try await newer.run("tenant", "import", archive, "--as", copy, "--json")
            #expect(imported.exitCode == 0, "\(imported.stderr)")
            let report = try #require(try imported.jsonObject() as? [String: Any])
            #expect(report["archive_schema_version"] as? Int == 1)
            #expect(report["schema_version"] as? Int == 2)
            #expect(report["migrated_forward"] as? [String] == ["002_run_labels.sql"])
            let labels = try await TestCluster.query(
                try await fixture.tenantURL(copy), "SELECT count(label)::int, count(*)::int FROM runs")
            #expect(try labels.first?.decode((Int, Int).self) ?? (0, 0) == (0, 3))

            // The other way round: the newer archive cannot go to the older binary.
            let newerArchive = work.appendingPathComponent("newer.tar").path
            #expect(try await newer.run("tenant", "export", copy, "--out", newerArchive).exitCode == 0)
            let third = ProvisioningFixture.slug("third")
            let refused = try await fixture.cli.run("tenant", "import", newerArchive, "--as", third)
            #expect(refused.exitCode == 1)
            #expect(refused.stderr.contains("newer than this binary knows"))
            try await fixture.expectNothingCreated(for: third)
        }
    }

    @Test func anImportThatFailsAfterCreationBeganDropsWhatItCreated() async throws {
        try await ProvisioningFixture.with { fixture in
            let slug = try await Self.cliTenant(fixture, "restore-fails")
            let work = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: work) }
            let archive = work.appendingPathComponent("good.tar").path
            try #require(try await fixture.cli.run("tenant", "export", slug, "--out", archive).exitCode == 0)
            // A dump pg_restore cannot read, under a manifest that vouches for it:
            // every check before creation passes, the restore fails.
            let parts = work.appendingPathComponent("parts")
            try FileManager.default.createDirectory(at: parts, withIntermediateDirectories: true)
            try await tar(["-xf", archive, "-C", parts.path])
            let manifestURL = parts.appendingPathComponent("manifest.json")
            var manifest = try String(contentsOf: manifestURL, encoding: .utf8)
            let dump = parts.appendingPathComponent("database.dump")
            let original = try Data(contentsOf: dump)
            let garbage = Data("PGDMP but not really".utf8)
            try garbage.write(to: dump)
            let oldDigest = SHA256Hex.of(original)
            manifest = manifest.replacingOccurrences(of: oldDigest, with: SHA256Hex.of(garbage))
                .replacingOccurrences(of: #""size" : \#(original.count)"#, with: #""size" : \#(garbage.count)"#)
            try manifest.write(to: manifestURL, atomically: true, encoding: .utf8)
            let bad = work.appendingPathComponent("bad.tar").path
            try await tar(["-cf", bad, "-C", parts.path, "database.dump", "manifest.json"])

            let copy = ProvisioningFixture.slug("restore-copy")
            let result = try await fixture.cli.run("tenant", "import", bad, "--as", copy)
            #expect(result.exitCode == 1)
            #expect(result.stderr.contains("pg_restore"), "\(result.stderr)")
            #expect(try await fixture.status(copy) == "failed")
            #expect(try await fixture.tenantDatabases(copy).isEmpty)
            #expect(try await fixture.tenantRoles(copy).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: fixture.storage.appendingPathComponent(copy).path))
            // The id can be imported again from a good archive.
            let again = try await fixture.cli.run("tenant", "import", archive, "--as", copy)
            #expect(again.exitCode == 0, "\(again.stderr)")
            #expect(try await fixture.status(copy) == "active")
        }
    }

    @Test func backupAllExportsEveryActiveTenantAndReportsTheOneThatFails() async throws {
        try await ProvisioningFixture.with { fixture in
            let good = [ProvisioningFixture.slug("bk"), ProvisioningFixture.slug("bk")]
            let broken = ProvisioningFixture.slug("bk-broken")
            for slug in good + [broken] {
                let created = try await fixture.cli.run("tenant", "create", slug, "--name", slug)
                try #require(created.exitCode == 0, "\(created.stderr)")
            }
            // Its database is dropped behind tenantplane's back.
            try await TestCluster.drop(try TenantSlug(broken).databaseName)
            let out = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: out) }

            let result = try await fixture.cli.run("backup", "--all", "--out", out.path, "--concurrency", "2", "--json")
            #expect(result.exitCode == 1)
            let report = try #require(try result.jsonObject() as? [String: Any])
            #expect(report["succeeded"] as? Int == 2)
            #expect(report["failed"] as? Int == 1)
            let tenants = try #require(report["tenants"] as? [[String: Any]])
            for line in tenants {
                let slug = try #require(line["tenant"] as? String)
                if slug == broken {
                    #expect(line["outcome"] as? String == "failed")
                    #expect((line["error"] as? String)?.isEmpty == false)
                } else {
                    #expect(line["outcome"] as? String == "ok")
                    let file = try #require(line["file"] as? String)
                    #expect(FileManager.default.fileExists(atPath: file))
                    #expect((line["bytes"] as? Int ?? 0) > 0)
                }
            }
            #expect(result.stderr.contains("[3/3]"))
            // No tenant was left fenced.
            let fenced = try await TestCluster.query(fixture.controlURL, "SELECT count(*)::int FROM tenants WHERE write_fence IS NOT NULL")
            #expect(try fenced.first?.decode(Int.self) == 0)
            let bad = try await fixture.cli.run("backup", "--out", out.path)
            #expect(bad.exitCode != 0)
        }
    }

    @Test func moveKeepsEveryAcknowledgedWriteAndAnswers503WhileWritesArePaused() async throws {
        try await TenantAPIFixture.with { api in
            let fixture = api.provisioning
            let seeded = try await SeededTenant.make(api, prefix: "mover")
            try await fixture.addSecondServer()
            try await fixture.cleaningSecondCluster([seeded.slug]) {

            let stop = Stopwatch()
            async let writes = Self.keepWriting(api, key: seeded.key, until: stop)
            try await Task.sleep(for: .milliseconds(300))
            let moved = try await fixture.cli.run("tenant", "move", seeded.slug, "--to", "second", "--offline", "--json")
            try await Task.sleep(for: .seconds(2))
            stop.stop()
            let outcome = try await writes
            #expect(moved.exitCode == 0, "\(moved.stderr)")
            let report = try #require(try moved.jsonObject() as? [String: Any])
            #expect(report["from_server"] as? String == "default")
            #expect(report["to_server"] as? String == "second")
            #expect(report["artifacts_verified"] as? Int == 2)

            #expect(outcome.unexpected.isEmpty, "\(outcome.unexpected)")
            #expect(outcome.acknowledged.count > 0)
            // The fence spans the dump, the restore and the checks: writes meet
            // it, unless the machine is so loaded that the loop barely ran
            // (seen under the whole suite: a handful of writes in a minute).
            print("offline move: writes paused \(report["write_blocked_milliseconds"] ?? "?") ms; \(outcome.acknowledged.count) writes acknowledged, \(outcome.paused) refused (503)")
            #expect(outcome.paused > 0 || outcome.acknowledged.count < 20)
            // Every acknowledged run is in the new database; the old one is gone.
            let url = try await fixture.tenantURL(seeded.slug)
            #expect(url.port == (try ProvisioningFixture.secondClusterURL.port))
            let stored = Set(try await TestCluster.query(url, "SELECT id::text FROM runs").map { try $0.decode(String.self) })
            #expect(Set(outcome.acknowledged).subtracting(stored).isEmpty)
            #expect(stored.count == 3 + outcome.acknowledged.count)
            #expect(try await fixture.tenantDatabases(seeded.slug).isEmpty)
            #expect(try await fixture.secondClusterDatabases(seeded.slug).count == 1)
            // Writes go on on the new server; the artifacts still read back.
            #expect(try await api.eventually(within: .seconds(5)) {
                try await api.call(.post, "/v1/runs", key: seeded.key, body: #"{"steps":["outline"],"input":{}}"#).status == .accepted
            })
            let file = try await api.call(.get, "/v1/runs/\(seeded.runs[0])/steps/outline/artifacts/notes.txt", key: seeded.key)
            #expect(String(buffer: file.body) == seeded.artifactBytes)
            }
        }
    }

    @Test func anOnlineMoveKeepsEveryWriteHoldsRequestsBrieflyAndLeavesNoSlotBehind() async throws {
        try await TenantAPIFixture.with { api in
            let fixture = api.provisioning
            let seeded = try await SeededTenant.make(api, prefix: "online")
            try await fixture.addSecondServer()
            try await fixture.cleaningSecondCluster([seeded.slug]) {
                let database = try TenantSlug(seeded.slug).databaseName
                let stop = Stopwatch()
                async let writes = Self.keepWritingTimed(api, key: seeded.key, until: stop)
                async let reads = Self.keepReading(api, key: seeded.key, run: seeded.runs[0], until: stop)
                try await Task.sleep(for: .milliseconds(300))
                let started = ContinuousClock.now
                let moved = try await fixture.cli.run("tenant", "move", seeded.slug, "--to", "second", "--json")
                let ended = ContinuousClock.now
                try await Task.sleep(for: .seconds(1))
                stop.stop()
                let (written, read) = try await (writes, reads)
                try #require(moved.exitCode == 0, "\(moved.stderr)")
                let report = try #require(try moved.jsonObject() as? [String: Any])
                #expect(report["online"] as? Bool == true)
                let held = try #require(report["write_blocked_milliseconds"] as? Int)
                #expect(held < 1000)
                var gap: Duration = .zero
                var gapStart = started
                for (earlier, later) in zip(written.times, written.times.dropFirst()) where later - earlier > gap {
                    gap = later - earlier
                    gapStart = earlier
                }
                print("online move: \(ended - started) in all; requests held \(held) ms; longest gap between acknowledged writes \(gap), from \(gapStart - started) into the move; \(written.acknowledged.count) writes, \(written.refused) refused (503); \(read.ok) reads, \(read.refused) refused")
                print(moved.stderr)
                #expect(written.unexpected.isEmpty && read.unexpected.isEmpty, "\(written.unexpected) \(read.unexpected)")
                #expect(written.acknowledged.count > 0 && read.ok > 0)

                // Every acknowledged write is on the target; the old database is gone.
                let url = try await fixture.tenantURL(seeded.slug)
                #expect(url.port == (try ProvisioningFixture.secondClusterURL.port))
                let stored = Set(try await TestCluster.query(url, "SELECT id::text FROM runs").map { try $0.decode(String.self) })
                #expect(Set(written.acknowledged).subtracting(stored).isEmpty)
                #expect(try await fixture.tenantDatabases(seeded.slug).isEmpty)
                // The sequences continue: a new artifact row's id is above every
                // earlier one. (On a loaded machine the first connection to the
                // new server may outlast a request: retried a while.)
                #expect(try await api.eventually(within: .seconds(10)) {
                    let upload = try await api.client.execute(
                        uri: "/v1/runs/\(seeded.runs[0])/steps/outline/artifacts/after.txt", method: .post,
                        headers: [.authorization: "Bearer \(seeded.key)"], body: ByteBuffer(string: "after the move\n"))
                    return upload.status == .created
                })
                let ids = try await TestCluster.query(
                    url, "SELECT (max(id) FILTER (WHERE file_path LIKE '%after.txt'))::int, (max(id) FILTER (WHERE file_path NOT LIKE '%after.txt'))::int FROM artifacts"
                ).first?.decode((Int?, Int?).self)
                #expect((ids?.0 ?? 0) > (ids?.1 ?? Int.max))
                // No slot, subscription, publication or mover role is left on either server.
                let tag = try #require(report["move_id"] as? String).lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
                for cluster in [try TestCluster.adminURL, try ProvisioningFixture.secondClusterURL] {
                    let left = try await TestCluster.query(
                        cluster,
                        """
                        SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = \("tp_move_\(tag)") OR database = \(database))::int
                            + (SELECT count(*) FROM pg_subscription WHERE subname = \("tp_move_\(tag)"))::int
                            + (SELECT count(*) FROM pg_roles WHERE rolname = \("tp_mover_\(tag)"))::int
                        """
                    ).first?.decode(Int.self)
                    #expect(left == 0)
                }
                let publications = try await TestCluster.query(url, "SELECT count(*)::int FROM pg_publication").first?.decode(Int.self)
                #expect(publications == 0)
                #expect(try await api.eventually(within: .seconds(10)) {
                    let file = try await api.call(.get, "/v1/runs/\(seeded.runs[0])/steps/outline/artifacts/notes.txt", key: seeded.key)
                    return String(buffer: file.body) == seeded.artifactBytes
                })
            }
        }
    }

    @Test func anOnlineMoveKilledMidwayIsRolledBackWithItsSlotsOrFinished() async throws {
        try await ProvisioningFixture.with { fixture in
            try await fixture.addSecondServer()
            let early = try await Self.cliTenant(fixture, "okill-early")
            let late = try await Self.cliTenant(fixture, "okill-late")
            try await fixture.cleaningSecondCluster([early, late]) {
                var killing = fixture.cli
                killing.environment["TENANTPLANE_FAULT_AFTER_MOVE"] = "synced"
                let killed = try await killing.run("tenant", "move", early, "--to", "second")
                #expect(killed.stderr.contains("fault injection"), "\(killed.stderr)")
                // Streaming when it died: a slot holds WAL on the source.
                let database = try TenantSlug(early).databaseName
                let slots = try await TestCluster.query(
                    TestCluster.adminURL, "SELECT count(*)::int FROM pg_replication_slots WHERE database = \(database)")
                #expect(try slots.first?.decode(Int.self) ?? 0 >= 1)
                #expect(try await Self.writable(fixture, early))
                // The slot is the open move's: `server list` does not call it unknown.
                let listed = try await fixture.cli.run("server", "list")
                // (Other tests' moves, on the shared cluster, belong to other control databases.)
                #expect(!listed.stdout.contains("(database \(database),"), "\(listed.stdout)")

                let rerun = try await fixture.cli.run("tenant", "move", early, "--to", "second", "--json")
                #expect(rerun.exitCode == 0, "\(rerun.stderr)")
                let report = try #require(try rerun.jsonObject() as? [String: Any])
                #expect(report["recovered_earlier_move"] as? String == "rolled back")
                #expect(report["online"] as? Bool == true)
                #expect(try await fixture.tenantDatabases(early).isEmpty)
                // Its three runs and the one the writability probe added, streamed over.
                let rows = try await TestCluster.query(try await fixture.tenantURL(early), "SELECT count(*)::int FROM runs")
                #expect(try rows.first?.decode(Int.self) == 4)
                let leftover = try await TestCluster.query(
                    TestCluster.adminURL, "SELECT count(*)::int FROM pg_replication_slots WHERE database = \(database)")
                #expect(try leftover.first?.decode(Int.self) == 0)

                killing.environment["TENANTPLANE_FAULT_AFTER_MOVE"] = "switched"
                let killedLate = try await killing.run("tenant", "move", late, "--to", "second")
                #expect(killedLate.stderr.contains("fault injection"), "\(killedLate.stderr)")
                #expect(try await fixture.tenantURL(late).port == (try ProvisioningFixture.secondClusterURL.port))
                #expect(try await Self.writable(fixture, late))
                let finished = try await fixture.cli.run("tenant", "move", late, "--to", "second", "--json")
                #expect(finished.exitCode == 0, "\(finished.stderr)")
                #expect(try #require(try finished.jsonObject() as? [String: Any])["recovered_earlier_move"] as? String == "finished")
                #expect(try await fixture.tenantDatabases(late).isEmpty)
                let lateDatabase = try TenantSlug(late).databaseName
                let lateSlots = try await TestCluster.query(
                    TestCluster.adminURL, "SELECT count(*)::int FROM pg_replication_slots WHERE database = \(lateDatabase)")
                #expect(try lateSlots.first?.decode(Int.self) == 0)
            }
        }
    }

    @Test func aTenantSuspendedMidMoveWaitsForTheMoveOrIsToldItIsBusyAndNothingIsLeftHalfway() async throws {
        try await ProvisioningFixture.with { fixture in
            try await fixture.addSecondServer()
            let slug = try await Self.cliTenant(fixture, "suspmove")
            try await fixture.cleaningSecondCluster([slug]) {
                async let moved = fixture.cli.run("tenant", "move", slug, "--to", "second", "--json")
                // The move holds the tenant's lock once its row exists.
                let deadline = ContinuousClock.now.advanced(by: .seconds(30))
                while ContinuousClock.now < deadline {
                    let rows = try await TestCluster.query(
                        fixture.controlURL, "SELECT count(*)::int FROM tenant_moves WHERE tenant_id = \(slug)")
                    if try rows.first?.decode(Int.self) == 1 { break }
                    try await Task.sleep(for: .milliseconds(20))
                }
                let suspended = try await fixture.cli.run("tenant", "suspend", slug)
                let move = try await moved
                #expect(move.exitCode == 0, "\(move.stderr)")
                #expect(try #require(try move.jsonObject() as? [String: Any])["online"] as? Bool == true)
                // Suspension waits for the move's lock (5 s at most), or says what holds it.
                if suspended.exitCode != 0 {
                    #expect(suspended.stderr.contains("a move of \(slug) is running") || suspended.stderr.contains("another operation"),
                            "\(suspended.stderr)")
                }
                let status = try await TestCluster.query(
                    fixture.controlURL, "SELECT status FROM tenants WHERE id = \(slug)").first?.decode(String.self)
                #expect(status == (suspended.exitCode == 0 ? "suspended" : "active"))
                // Either way the tenant lives whole on the target, and nothing of the move is left.
                #expect(try await fixture.tenantURL(slug).port == (try ProvisioningFixture.secondClusterURL.port))
                #expect(try await fixture.tenantDatabases(slug).isEmpty)
                let database = try TenantSlug(slug).databaseName
                let slots = try await TestCluster.query(
                    try TestCluster.adminURL, "SELECT count(*)::int FROM pg_replication_slots WHERE database = \(database)")
                #expect(try slots.first?.decode(Int.self) == 0)
                let open = try await TestCluster.query(
                    fixture.controlURL,
                    "SELECT count(*)::int FROM tenant_moves WHERE tenant_id = \(slug) AND phase NOT IN ('finished', 'rolled_back')")
                #expect(try open.first?.decode(Int.self) == 0)
            }
        }
    }

    /// Creates runs one after another until stopped: the ids acknowledged
    /// (202) with the moment each was, the 503s, anything else.
    private static func keepWritingTimed(_ api: TenantAPIFixture, key: String, until stop: Stopwatch) async throws
        -> (acknowledged: [String], times: [ContinuousClock.Instant], refused: Int, unexpected: [String])
    {
        var acknowledged: [String] = []
        var times: [ContinuousClock.Instant] = []
        var refused = 0
        var unexpected: [String] = []
        while !stop.stopped {
            let response = try await api.call(.post, "/v1/runs", key: key, body: #"{"steps":["outline"],"input":{}}"#)
            switch response.status {
            case .accepted:
                acknowledged.append(try #require(response.json["id"] as? String))
                times.append(.now)
            case .serviceUnavailable where response.headers[.retryAfter] != nil:
                refused += 1
                try await Task.sleep(for: .milliseconds(20))
            default:
                unexpected.append("\(response.status.code) \(String(buffer: response.body))")
            }
        }
        return (acknowledged, times, refused, unexpected)
    }

    /// Reads one run again and again until stopped.
    private static func keepReading(_ api: TenantAPIFixture, key: String, run: String, until stop: Stopwatch) async throws
        -> (ok: Int, refused: Int, unexpected: [String])
    {
        var ok = 0
        var refused = 0
        var unexpected: [String] = []
        while !stop.stopped {
            let response = try await api.call(.get, "/v1/runs/\(run)", key: key)
            switch response.status {
            case .ok: ok += 1
            case .serviceUnavailable: refused += 1
            default: unexpected.append("\(response.status.code) \(String(buffer: response.body))")
            }
        }
        return (ok, refused, unexpected)
    }

    /// Creates runs one after another until stopped: the ids acknowledged
    /// (202) and anything other than 202 or 503-with-Retry-After.
    private static func keepWriting(_ api: TenantAPIFixture, key: String, until stop: Stopwatch) async throws
        -> (acknowledged: [String], paused: Int, unexpected: [String])
    {
        var acknowledged: [String] = []
        var paused = 0
        var unexpected: [String] = []
        while !stop.stopped {
            let response = try await api.call(.post, "/v1/runs", key: key, body: #"{"steps":["outline"],"input":{}}"#)
            switch response.status {
            case .accepted:
                acknowledged.append(try #require(response.json["id"] as? String))
            case .serviceUnavailable where response.headers[.retryAfter] != nil:
                paused += 1
                try await Task.sleep(for: .milliseconds(20))
            default:
                unexpected.append("\(response.status.code) \(String(buffer: response.body))")
            }
        }
        return (acknowledged, paused, unexpected)
    }

    @Test func aMoveThatCannotReachItsTargetLeavesTheTenantWhereItWas() async throws {
        try await TenantAPIFixture.with { api in
            let fixture = api.provisioning
            let seeded = try await SeededTenant.make(api, prefix: "stay")
            // A registered server whose PostgreSQL is down.
            _ = try await TestCluster.query(
                fixture.controlURL,
                "INSERT INTO database_servers (name, admin_url, capacity) VALUES ('down', 'postgres://postgres@127.0.0.1:1/postgres?sslmode=disable', 10)")
            let moved = try await fixture.cli.run("tenant", "move", seeded.slug, "--to", "down")
            #expect(moved.exitCode == 1)
            #expect(!moved.stderr.isEmpty)
            let unknown = try await fixture.cli.run("tenant", "move", seeded.slug, "--to", "nowhere")
            #expect(unknown.exitCode == 1)
            #expect(unknown.stderr.contains("unknown database server"))
            let shown = try await fixture.cli.run("tenant", "show", seeded.slug, "--json")
            let tenant = try #require(try shown.jsonObject() as? [String: Any])
            #expect(tenant["server"] as? String == "default")
            #expect(tenant["status"] as? String == "active")
            #expect(try await api.call(.post, "/v1/runs", key: seeded.key, body: #"{"steps":["outline"],"input":{}}"#).status == .accepted)
        }
    }

    /// A tenant made by the CLI, with three runs.
    private static func cliTenant(_ fixture: ProvisioningFixture, _ prefix: String) async throws -> String {
        let slug = ProvisioningFixture.slug(prefix)
        let created = try await fixture.cli.run("tenant", "create", slug, "--name", slug, "--server", "default")
        try #require(created.exitCode == 0, "\(created.stderr)")
        _ = try await TestCluster.query(
            try await fixture.tenantURL(slug), "INSERT INTO runs (status) SELECT 'pending' FROM generate_series(1, 3)")
        return slug
    }

    /// Whether the tenant's own role may write to its database right now.
    private static func writable(_ fixture: ProvisioningFixture, _ slug: String) async throws -> Bool {
        do {
            _ = try await TestCluster.query(try await fixture.tenantURL(slug), "INSERT INTO runs (status) VALUES ('pending')")
            return true
        } catch where error.sqlState == "25006" {
            return false
        }
    }

    @Test func aMoveKilledMidwayIsRolledBackOrFinishedByTheNextRun() async throws {
        try await ProvisioningFixture.with { fixture in
            try await fixture.addSecondServer()
            let early = try await Self.cliTenant(fixture, "kill-early")
            let late = try await Self.cliTenant(fixture, "kill-late")
            try await fixture.cleaningSecondCluster([early, late]) {
                var killing = fixture.cli
                killing.environment["TENANTPLANE_FAULT_AFTER_MOVE"] = "restored"
                let killed = try await killing.run("tenant", "move", early, "--to", "second", "--offline")
                #expect(killed.exitCode != 0)
                #expect(killed.stderr.contains("fault injection"), "\(killed.stderr)")
                // Killed before the switch: still on its old server, read-only,
                // with a partial copy on the target.
                #expect(try await fixture.tenantURL(early).port == (try TestCluster.adminURL.port))
                #expect(try await fixture.secondClusterDatabases(early).count == 1)
                #expect(try await Self.writable(fixture, early) == false)

                let rerun = try await fixture.cli.run("tenant", "move", early, "--to", "second", "--offline", "--json")
                #expect(rerun.exitCode == 0, "\(rerun.stderr)")
                #expect(try #require(try rerun.jsonObject() as? [String: Any])["recovered_earlier_move"] as? String == "rolled back")
                #expect(try await fixture.tenantDatabases(early).isEmpty)
                #expect(try await fixture.secondClusterDatabases(early).count == 1)
                let rows = try await TestCluster.query(try await fixture.tenantURL(early), "SELECT count(*)::int FROM runs")
                #expect(try rows.first?.decode(Int.self) == 3)
                #expect(try await Self.writable(fixture, early))

                killing.environment["TENANTPLANE_FAULT_AFTER_MOVE"] = "switched"
                let killedLate = try await killing.run("tenant", "move", late, "--to", "second", "--offline")
                #expect(killedLate.exitCode != 0, "\(killedLate.stderr)")
                #expect(killedLate.stderr.contains("fault injection"), "\(killedLate.stderr)")
                // Killed after the switch: it already lives, writable, on the
                // target; the old copy stays until the move is finished.
                #expect(try await fixture.tenantURL(late).port == (try ProvisioningFixture.secondClusterURL.port))
                #expect(try await fixture.tenantDatabases(late).count == 1)
                #expect(try await Self.writable(fixture, late))
                let finished = try await fixture.cli.run("tenant", "move", late, "--to", "second", "--json")
                #expect(finished.exitCode == 0, "\(finished.stderr)")
                #expect(try #require(try finished.jsonObject() as? [String: Any])["recovered_earlier_move"] as? String == "finished")
                #expect(try await fixture.tenantDatabases(late).isEmpty)
                #expect(try await fixture.secondClusterDatabases(late).count == 1)
            }
        }
    }

    @Test func theServerRollsBackAMoveWhoseProcessDied() async throws {
        try await ProvisioningFixture.with { fixture in
            try await fixture.addSecondServer()
            let slug = try await Self.cliTenant(fixture, "kill-serve")
            try await fixture.cleaningSecondCluster([slug]) {
                var killing = fixture.cli
                killing.environment["TENANTPLANE_FAULT_AFTER_MOVE"] = "dumped"
                #expect(try await killing.run("tenant", "move", slug, "--to", "second", "--offline").exitCode != 0)
                #expect(try await Self.writable(fixture, slug) == false)
                let app = try fixture.server(extra: ["TENANTPLANE_WORKERS": "0"])
                try await app.test(.router) { _ in
                    let deadline = ContinuousClock.now.advanced(by: .seconds(15))
                    var phase: String?
                    while ContinuousClock.now < deadline {
                        phase = try await TestCluster.query(
                            fixture.controlURL, "SELECT phase FROM tenant_moves WHERE tenant_id = \(slug)"
                        ).first?.decode(String.self)
                        if phase == "rolled_back" { break }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                    #expect(phase == "rolled_back")
                }
                #expect(try await Self.writable(fixture, slug))
                #expect(try await fixture.tenantURL(slug).port == (try TestCluster.adminURL.port))
            }
        }
    }

    @Test func exportAndMoveRunAsAdminJobsWithAStatusEndpoint() async throws {
        try await TenantAPIFixture.with { api in
            let seeded = try await SeededTenant.make(api, prefix: "job")
            let started = try await api.client.execute(
                uri: "/admin/tenants/\(seeded.slug)/export", method: .post, headers: TestServer.adminHeaders)
            #expect(started.status == .accepted)
            let id = try #require(started.json["id"] as? String)
            var job: [String: Any] = [:]
            #expect(try await api.eventually(within: .seconds(20)) {
                job = try await api.client.execute(uri: "/admin/jobs/\(id)", method: .get, headers: TestServer.adminHeaders).json
                return job["status"] as? String == "succeeded"
            }, "\(job)")
            #expect((job["result"] as? [String: Any])?["artifacts"] as? Int == 2)
            let archive = try await api.client.execute(uri: "/admin/jobs/\(id)/archive", method: .get, headers: TestServer.adminHeaders)
            #expect(archive.status == .ok)
            #expect(archive.headers[.contentType] == "application/x-tar")
            #expect(String(decoding: archive.body.readableBytesView.prefix(13), as: UTF8.self) == "database.dump")

            let unknownServer = try await api.client.execute(
                uri: "/admin/tenants/\(seeded.slug)/move", method: .post, headers: TestServer.adminHeaders,
                body: ByteBuffer(string: #"{"to":"nowhere"}"#))
            #expect(unknownServer.status == .notFound)
            let badBody = try await api.client.execute(
                uri: "/admin/tenants/\(seeded.slug)/move", method: .post, headers: TestServer.adminHeaders,
                body: ByteBuffer(string: #"{"to":"#))
            #expect(badBody.status == .badRequest)
            for path in ["/admin/jobs/not-a-uuid", "/admin/jobs/\(UUID().uuidString)", "/admin/tenants/no-such-tenant/export"] {
                let method: HTTPRequest.Method = path.hasSuffix("export") ? .post : .get
                let missing = try await api.client.execute(uri: path, method: method, headers: TestServer.adminHeaders)
                #expect(missing.status == .notFound, "\(path)")
            }
            let tenantKeyTried = try await api.client.execute(
                uri: "/admin/tenants/\(seeded.slug)/export", method: .post,
                headers: [.authorization: "Bearer \(seeded.key)"])
            #expect(tenantKeyTried.status == .unauthorized)
        }
    }
}

/// A flag one task sets and another polls.
private final class Stopwatch: Sendable {
    private let flag = Atomic<Bool>(false)
    var stopped: Bool { flag.load(ordering: .relaxed) }
    func stop() { flag.store(true, ordering: .relaxed) }
}
