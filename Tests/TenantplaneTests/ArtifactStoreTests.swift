import ArtifactStore
import Foundation
import Logging
import NIOCore
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Artifact store")
struct ArtifactStoreTests {
    static let run = UUID(uuidString: "6F1C2B3A-0D4E-4F5A-8B6C-7D8E9FA0B1C2")!
    static let runID = "6f1c2b3a-0d4e-4f5a-8b6c-7d8e9fa0b1c2"

    // MARK: Round trips

    @Test func outputRoundTrip() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        let stored = try await acme.writeOutput(run: Self.run, step: "draft", contents: Array("abc".utf8))
        #expect(stored.path == "acme/\(Self.runID)/draft/output.json")
        // sha256("abc"), FIPS 180-2 test vector.
        #expect(stored.digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(stored.size == 3)
        #expect(try fixture.contents(of: stored.path) == Array("abc".utf8))
        #expect(try await sha256sum(fixture.absolute(stored.path)) == stored.digest)
        #expect(try await acme.readVerified(path: stored.path, digest: stored.digest) == Array("abc".utf8))
        #expect(try await acme.readVerified(path: stored.path, digest: stored.digest.uppercased()) == Array("abc".utf8))

        let empty = try await acme.writeOutput(run: Self.run, step: "empty", contents: [])
        #expect(empty.digest == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(try await acme.readVerified(path: empty.path, digest: empty.digest).isEmpty)
        #expect(try fixture.entries(inDirectory: "acme/\(Self.runID)/draft") == ["output.json"])
    }

    @Test func artifactRoundTrip() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        let bytes = randomBytes(2_500_000)
        let stored = try await acme.writeArtifact(
            run: Self.run, step: "draft", name: "report.v1.pdf", from: chunks(bytes, size: 65_536), limit: 3_000_000)
        #expect(stored.path == "acme/\(Self.runID)/draft/artifacts/report.v1.pdf")
        #expect(stored.path == (try acme.artifactPath(run: Self.run, step: "draft", name: "report.v1.pdf")))
        #expect(stored.size == bytes.count)
        #expect(try await sha256sum(fixture.absolute(stored.path)) == stored.digest)
        #expect(try fixture.contents(of: stored.path) == bytes)
        #expect(try await acme.readVerified(path: stored.path, digest: stored.digest) == bytes)

        let verified = try await acme.openVerified(path: stored.path, digest: stored.digest)
        #expect(verified.size == bytes.count)
        #expect(verified.digest == stored.digest)
        #expect(verified.path == stored.path)
        var received: [UInt8] = []
        var sizes: [Int] = []
        for try await chunk in verified.chunks(size: 1 << 20) {
            sizes.append(chunk.readableBytes)
            received.append(contentsOf: chunk.readableBytesView)
        }
        #expect(sizes == [1 << 20, 1 << 20, 2_500_000 - 2 << 20])
        #expect(received == bytes)
        // A second iteration starts from the first byte again.
        var again = 0
        for try await chunk in verified.chunks(size: 700_000) { again += chunk.readableBytes }
        #expect(again == bytes.count)
    }

    @Test func emptyArtifactAndExactLimit() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        let empty = try await acme.writeArtifact(run: Self.run, step: "s", name: "empty", from: chunks([], size: 1), limit: 0)
        #expect(empty.size == 0)
        let verified = try await acme.openVerified(path: empty.path, digest: empty.digest)
        var count = 0
        for try await _ in verified.chunks() { count += 1 }
        #expect(count == 0)
        let exact = try await acme.writeArtifact(
            run: Self.run, step: "s", name: "ten", from: chunks(randomBytes(10), size: 3), limit: 10)
        #expect(exact.size == 10)
    }

    @Test func uploadsFromALocalFileInChunks() async throws {
        let fixture = try Fixture()
        let source = fixture.base + "/input.bin"
        let bytes = randomBytes(3 << 20 + 17)
        try Data(bytes).write(to: URL(fileURLWithPath: source))
        let acme = try await fixture.tenant("acme")
        let stored = try await acme.writeArtifact(
            run: Self.run, step: "upload", name: "input.bin", from: FileChunks(path: source), limit: .max)
        #expect(stored.size == bytes.count)
        #expect(try await sha256sum(source) == stored.digest)
        #expect(try fixture.contents(of: stored.path) == bytes)
        #expect(throws: ArtifactError.self) { try FileChunks(path: fixture.base + "/missing.bin") }
    }

    // MARK: Integrity

    @Test func tamperedFilesAreRefused() async throws {
        let recorder = LogRecorder()
        let fixture = try Fixture(logger: recorder.logger)
        let acme = try await fixture.tenant("acme")
        let output = try await acme.writeOutput(run: Self.run, step: "draft", contents: Array("{\"text\":\"hello\"}".utf8))
        let artifact = try await acme.writeArtifact(
            run: Self.run, step: "draft", name: "data.bin", from: chunks(randomBytes(300_000), size: 4096), limit: 1 << 20)
        for stored in [output, artifact] {
            try fixture.flipByte(at: stored.size / 2, of: stored.path)
            await #expect(throws: ArtifactError.integrityFailure) { try await acme.readVerified(path: stored.path, digest: stored.digest) }
            await #expect(throws: ArtifactError.integrityFailure) { try await acme.openVerified(path: stored.path, digest: stored.digest) }
        }
        let errors = recorder.entries.filter { $0.level == .error && $0.message.contains("integrity failure") }
        #expect(errors.count == 4)
        #expect(errors.allSatisfy { $0.metadata["tenant"] == "acme" })
        await #expect(throws: ArtifactError.invalidDigest) { try await acme.readVerified(path: output.path, digest: "not-a-digest") }
    }

    @Test func aRenameAfterTheCheckDoesNotChangeWhatIsSent() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        let original = randomBytes(200_000)
        let stored = try await acme.writeArtifact(
            run: Self.run, step: "draft", name: "a.txt", from: chunks(original, size: 50_000), limit: 1 << 20)
        let verified = try await acme.openVerified(path: stored.path, digest: stored.digest)
        #expect(rename(fixture.absolute(stored.path), fixture.absolute(stored.path) + ".moved") == 0)
        try Data(randomBytes(200_000)).write(to: URL(fileURLWithPath: fixture.absolute(stored.path)))
        var received: [UInt8] = []
        for try await chunk in verified.chunks(size: 30_000) { received.append(contentsOf: chunk.readableBytesView) }
        #expect(received == original)
    }

    @Test func aChangeInPlaceAfterTheCheckStopsTheStreamBeforeItsEnd() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        let stored = try await acme.writeArtifact(
            run: Self.run, step: "draft", name: "a.txt", from: chunks(randomBytes(100_000), size: 50_000), limit: 1 << 20)
        let verified = try await acme.openVerified(path: stored.path, digest: stored.digest)
        try fixture.flipByte(at: 10, of: stored.path)
        var received = 0
        await #expect(throws: ArtifactError.integrityFailure) {
            for try await chunk in verified.chunks(size: 40_000) { received += chunk.readableBytes }
        }
        #expect(received == 80_000)  // the last chunk is held back
    }

    // MARK: Names and paths

    @Test(arguments: [
        "../../x", "a/b", "", String(repeating: "a", count: 300), String(repeating: "a", count: 129), "a\u{0}b",
        ".hidden", "..", ".", "a..b", "-dash", "é.txt", "a b", "a\\b",
    ])
    func invalidArtifactNames(_ name: String) async throws {
        let fixture = try Fixture()
        let acme = try fixture.store.tenant("acme")
        #expect(throws: ArtifactError.invalidName) { try acme.artifactPath(run: Self.run, step: "draft", name: name) }
        await #expect(throws: ArtifactError.invalidName) {
            try await acme.writeArtifact(run: Self.run, step: "draft", name: name, from: chunks([1], size: 1), limit: 10)
        }
        #expect(!FileManager.default.fileExists(atPath: fixture.root))
    }

    @Test func validNamesAtTheirLimits() throws {
        let fixture = try Fixture()
        let acme = try fixture.store.tenant("a-1")
        let longest = String(repeating: "Z", count: 128)
        #expect(try acme.artifactPath(run: Self.run, step: "s", name: longest) == "a-1/\(Self.runID)/s/artifacts/\(longest)")
        #expect(try acme.artifactPath(run: Self.run, step: "step_2-b", name: "v1.2_final-Copy") != "")
        #expect(try acme.outputPath(run: Self.run, step: "draft") == "a-1/\(Self.runID)/draft/output.json")
        _ = try fixture.store.tenant(String(repeating: "a", count: 40))
    }

    @Test(arguments: ["", "Draft", "1st", "../x", "a/b", "a.b", String(repeating: "s", count: 64), "s\u{0}"])
    func invalidStepNames(_ step: String) async throws {
        let fixture = try Fixture()
        let acme = try fixture.store.tenant("acme")
        await #expect(throws: ArtifactError.invalidName) { try await acme.writeOutput(run: Self.run, step: step, contents: [1]) }
        #expect(throws: ArtifactError.invalidName) { try acme.artifactPath(run: Self.run, step: step, name: "a") }
        await #expect(throws: ArtifactError.invalidName) { try await acme.artifacts(run: Self.run, step: step) }
        #expect(!FileManager.default.fileExists(atPath: fixture.root))
    }

    @Test(arguments: [
        "", "ab", "-abc", "abc-", "Acme", "a/b", "../acme", "acme\u{0}", "acme ", String(repeating: "a", count: 41),
    ])
    func invalidTenantIDs(_ tenant: String) throws {
        let fixture = try Fixture()
        #expect(throws: ArtifactError.invalidName) { try fixture.store.tenant(tenant) }
    }

    @Test func readPathsMustLieUnderTheTenant() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        let globex = try await fixture.tenant("globex")
        let mine = try await acme.writeOutput(run: Self.run, step: "draft", contents: Array("mine".utf8))
        let theirs = try await globex.writeOutput(run: Self.run, step: "draft", contents: Array("theirs".utf8))

        // Another tenant's real file reads as missing.
        await #expect(throws: ArtifactError.notFound) { try await acme.readVerified(path: theirs.path, digest: theirs.digest) }
        await #expect(throws: ArtifactError.notFound) { try await acme.openVerified(path: theirs.path, digest: theirs.digest) }

        let refused = [
            "/" + mine.path,
            fixture.absolute(mine.path),
            fixture.absolute(theirs.path),
            "acme/../globex/\(Self.runID)/draft/output.json",
            "acme/\(Self.runID)/draft/../draft/output.json",
            "acme/\(Self.runID)/draft/artifacts/../output.json",
            "acme/\(Self.runID)/../\(Self.runID)/draft/output.json",
            "acme//\(Self.runID)/draft/output.json",
            "acme/\(Self.runID)/draft/output.json/",
            "./acme/\(Self.runID)/draft/output.json",
            "acme/\(Self.runID.uppercased())/draft/output.json",
            "acme/not-a-uuid/draft/output.json",
            "acme/\(Self.runID)/draft/output.json\u{0}",
            "acme/\(Self.runID)/draft/secret.txt",
            "acme/\(Self.runID)/draft/artifacts/.sha256-x",
            "acme/\(Self.runID)/draft",
            "..",
            "",
        ]
        for path in refused {
            await #expect(throws: ArtifactError.invalidName, "\(path)") { try await acme.readVerified(path: path, digest: mine.digest) }
            await #expect(throws: ArtifactError.invalidName, "\(path)") { try await acme.openVerified(path: path, digest: mine.digest) }
        }
        #expect(try await acme.readVerified(path: mine.path, digest: mine.digest) == Array("mine".utf8))
        await #expect(throws: ArtifactError.notFound) {
            try await acme.readVerified(path: "acme/\(Self.runID)/other/output.json", digest: mine.digest)
        }
    }

    // MARK: Symbolic links and special files

    @Test func aSymlinkAtAnArtifactPathIsRefused() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        let secret = Array("top secret outside the store".utf8)
        let secretPath = fixture.outside + "/secret.txt"
        try Data(secret).write(to: URL(fileURLWithPath: secretPath))
        let secretDigest = try await sha256sum(secretPath)
        let real = try await acme.writeArtifact(
            run: Self.run, step: "draft", name: "real.txt", from: chunks(Array("real".utf8), size: 2), limit: 100)
        let link = try acme.artifactPath(run: Self.run, step: "draft", name: "leak.txt")
        try FileManager.default.createSymbolicLink(atPath: fixture.absolute(link), withDestinationPath: secretPath)

        await #expect(throws: ArtifactError.self) { try await acme.readVerified(path: link, digest: secretDigest) }
        await #expect(throws: ArtifactError.self) { try await acme.openVerified(path: link, digest: secretDigest) }
        do {
            _ = try await acme.readVerified(path: link, digest: secretDigest)
        } catch {
            #expect(error.code == "storage_failure")
            #expect(!error.message.contains(fixture.base))
        }
        #expect(try await acme.artifacts(run: Self.run, step: "draft").map(\.name) == ["real.txt"])
        #expect(try await acme.readVerified(path: real.path, digest: real.digest) == Array("real".utf8))

        // Writing the name is refused (names are write-once); the target is untouched.
        await #expect(throws: ArtifactError.alreadyExists) {
            try await acme.writeArtifact(
                run: Self.run, step: "draft", name: "leak.txt", from: chunks(Array("new".utf8), size: 2), limit: 100)
        }
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: secretPath))) == secret)
    }

    @Test func aSymlinkedDirectoryIsRefused() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        // Outside the store: a step directory's worth of files.
        let outsideStep = fixture.outside + "/step"
        try FileManager.default.createDirectory(atPath: outsideStep + "/artifacts", withIntermediateDirectories: true)
        let secret = Array("{\"secret\":true}".utf8)
        try Data(secret).write(to: URL(fileURLWithPath: outsideStep + "/output.json"))
        try Data(secret).write(to: URL(fileURLWithPath: outsideStep + "/artifacts/x"))
        let digest = try await sha256sum(outsideStep + "/output.json")

        _ = try await acme.writeOutput(run: Self.run, step: "draft", contents: [1])
        let runDirectory = fixture.absolute("acme/\(Self.runID)")
        try FileManager.default.createSymbolicLink(atPath: runDirectory + "/evil", withDestinationPath: outsideStep)

        let outputPath = try acme.outputPath(run: Self.run, step: "evil")
        let artifactPath = try acme.artifactPath(run: Self.run, step: "evil", name: "x")
        await #expect(throws: ArtifactError.self) { try await acme.readVerified(path: outputPath, digest: digest) }
        await #expect(throws: ArtifactError.self) { try await acme.openVerified(path: outputPath, digest: digest) }
        await #expect(throws: ArtifactError.self) { try await acme.readVerified(path: artifactPath, digest: digest) }
        await #expect(throws: ArtifactError.self) { try await acme.artifacts(run: Self.run, step: "evil") }
        await #expect(throws: ArtifactError.self) { try await acme.writeOutput(run: Self.run, step: "evil", contents: [9]) }
        await #expect(throws: ArtifactError.self) {
            try await acme.writeArtifact(run: Self.run, step: "evil", name: "y", from: chunks([9], size: 1), limit: 10)
        }
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: outsideStep + "/output.json"))) == secret)
        #expect(try FileManager.default.contentsOfDirectory(atPath: outsideStep).sorted() == ["artifacts", "output.json"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: outsideStep + "/artifacts") == ["x"])

        // A tenant directory linked to another tenant's does not open it either.
        try FileManager.default.createSymbolicLink(atPath: fixture.absolute("mallory"), withDestinationPath: fixture.absolute("acme"))
        let mallory = try fixture.store.tenant("mallory")
        let acmeOutput = try acme.outputPath(run: Self.run, step: "draft")
        let acmeDigest = try await sha256sum(fixture.absolute(acmeOutput))
        await #expect(throws: ArtifactError.self) {
            try await mallory.readVerified(path: "mallory/\(Self.runID)/draft/output.json", digest: acmeDigest)
        }
    }

    @Test func aFIFOIsRefusedWithoutBlocking() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        _ = try await acme.writeOutput(run: Self.run, step: "draft", contents: [1])
        let path = try acme.artifactPath(run: Self.run, step: "draft", name: "pipe")
        try FileManager.default.createDirectory(
            atPath: fixture.absolute("acme/\(Self.runID)/draft/artifacts"), withIntermediateDirectories: false)
        #expect(mkfifo(fixture.absolute(path), 0o600) == 0)
        await #expect(throws: ArtifactError.self) {
            try await acme.readVerified(path: path, digest: String(repeating: "0", count: 64))
        }
        #expect(try await acme.artifacts(run: Self.run, step: "draft").isEmpty)
    }

    // MARK: Limits and failures

    @Test func anUploadOverTheLimitLeavesNothing() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        await #expect(throws: ArtifactError.tooLarge(limit: 100_000)) {
            try await acme.writeArtifact(
                run: Self.run, step: "draft", name: "big.bin", from: chunks(randomBytes(100_001), size: 8192), limit: 100_000)
        }
        let directory = "acme/\(Self.runID)/draft/artifacts"
        #expect(try fixture.entries(inDirectory: directory) == [])

        // Over the limit on a name that exists: the old artifact stays.
        let old = try await acme.writeArtifact(
            run: Self.run, step: "draft", name: "big.bin", from: chunks(randomBytes(1000), size: 100), limit: 1000)
        await #expect(throws: ArtifactError.tooLarge(limit: 1000)) {
            try await acme.writeArtifact(
                run: Self.run, step: "draft", name: "big.bin", from: chunks(randomBytes(1001), size: 1001), limit: 1000)
        }
        #expect(try await sha256sum(fixture.absolute(old.path)) == old.digest)
        #expect(try fixture.entries(inDirectory: directory) == [".sha256-big.bin", "big.bin"])
        #expect(ArtifactError.tooLarge(limit: 1000).httpStatus == 413)
        #expect(ArtifactError.tooLarge(limit: 1000).code == "body_too_large")
    }

    @Test func aFileWhereTheRunDirectoryBelongsIsAStorageFailure() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        try FileManager.default.createDirectory(atPath: fixture.absolute("acme"), withIntermediateDirectories: true)
        let blocker = Array("not a directory".utf8)
        try Data(blocker).write(to: URL(fileURLWithPath: fixture.absolute("acme/\(Self.runID)")))

        do {
            _ = try await acme.writeOutput(run: Self.run, step: "draft", contents: Array("{}".utf8))
            Issue.record("writeOutput succeeded through a regular file")
        } catch let error as ArtifactError {
            #expect(error.code == "storage_failure")
            #expect(error.httpStatus == 500)
            #expect(error.message.contains("acme/\(Self.runID)"))
            #expect(!error.message.contains(fixture.base))
        }
        await #expect(throws: ArtifactError.self) {
            try await acme.writeArtifact(run: Self.run, step: "draft", name: "a", from: chunks([1, 2], size: 1), limit: 10)
        }
        await #expect(throws: ArtifactError.self) { try await acme.artifacts(run: Self.run, step: "draft") }
        #expect(try fixture.entries(inDirectory: "acme") == [Self.runID])
        #expect(try fixture.contents(of: "acme/\(Self.runID)") == blocker)
    }

    @Test func aFailedOrCancelledUploadKeepsTheOldArtifact() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        let old = try await acme.writeArtifact(
            run: Self.run, step: "draft", name: "a.bin", from: chunks(randomBytes(5000), size: 1000), limit: 1 << 20)
        struct Broken: Error {}
        let failing = HookedChunks(pieces: (0..<4).map { _ in ByteBuffer(bytes: randomBytes(1000)) }) { index in
            if index == 2 { throw Broken() }
        }
        await #expect(throws: Broken.self) {
            try await acme.writeArtifact(run: Self.run, step: "draft", name: "a.bin", from: failing, limit: 1 << 20)
        }
        #expect(try await sha256sum(fixture.absolute(old.path)) == old.digest)
        #expect(try fixture.entries(inDirectory: "acme/\(Self.runID)/draft/artifacts") == [".sha256-a.bin", "a.bin"])

        // A stream that ends early because its task was cancelled is not committed.
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await acme.writeArtifact(
                run: Self.run, step: "draft", name: "a.bin", from: chunks(randomBytes(10), size: 5), limit: 1 << 20)
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(try await sha256sum(fixture.absolute(old.path)) == old.digest)
        #expect(try fixture.entries(inDirectory: "acme/\(Self.runID)/draft/artifacts") == [".sha256-a.bin", "a.bin"])
    }

    @Test func aSecondUploadOfANameIsRefusedAndTheFirstStays() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        let oldBytes = randomBytes(64_000)
        let old = try await acme.writeArtifact(
            run: Self.run, step: "draft", name: "a.bin", from: chunks(oldBytes, size: 8000), limit: 1 << 20)
        let newBytes = randomBytes(48_000)
        let absolute = fixture.absolute(old.path)
        let directory = fixture.absolute("acme/\(Self.runID)/draft/artifacts")
        let observed = ObservedStates()
        let pieces = stride(from: 0, to: newBytes.count, by: 16_000).map { ByteBuffer(bytes: newBytes[$0..<$0 + 16_000]) }
        let upload = HookedChunks(pieces: pieces) { index in
            guard index > 0 else { return }
            // Mid-upload: the name still holds the whole old file; the new bytes sit in a temporary file.
            observed.append(
                content: try Array(Data(contentsOf: URL(fileURLWithPath: absolute))),
                entries: try FileManager.default.contentsOfDirectory(atPath: directory))
        }
        await #expect(throws: ArtifactError.alreadyExists) {
            try await acme.writeArtifact(run: Self.run, step: "draft", name: "a.bin", from: upload, limit: 1 << 20)
        }
        let states = observed.states
        #expect(states.count == 2)
        for state in states {
            #expect(state.content == oldBytes)
            #expect(state.entries.contains { $0.hasPrefix(".tmp-") })
        }
        #expect(try fixture.contents(of: old.path) == oldBytes)
        #expect(try fixture.entries(inDirectory: "acme/\(Self.runID)/draft/artifacts") == [".sha256-a.bin", "a.bin"])
        #expect(try await acme.readVerified(path: old.path, digest: old.digest) == oldBytes)
        #expect(try await acme.artifacts(run: Self.run, step: "draft").map(\.digest) == [old.digest])
    }

    @Test(arguments: [FoundOutput.recorded, .notHolder])
    func anOutputThatIsRecordedOrNotTheWritersStaysAsItIs(_ verdict: FoundOutput) async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        let first = try await acme.writeOutput(run: Self.run, step: "draft", contents: Array("first".utf8))
        let judged = Counter()
        await #expect(throws: ArtifactError.outputTaken) {
            try await acme.writeOutput(run: Self.run, step: "draft", contents: Array("second".utf8)) { digest in
                #expect(digest == first.digest)
                judged.increment()
                return verdict
            }
        }
        #expect(judged.value == 1)
        #expect(try fixture.contents(of: first.path) == Array("first".utf8))
        #expect(try fixture.entries(inDirectory: "acme/\(Self.runID)/draft") == ["output.json"])
    }

    @Test func anUnrecordedOutputIsClearedByTheLeaseHolderAndARowFoundOnTheRecheckBringsItBack() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        let stray = try await acme.writeOutput(run: Self.run, step: "draft", contents: Array("left by a crash".utf8))
        let replaced = try await acme.writeOutput(run: Self.run, step: "draft", contents: Array("mine".utf8))
        #expect(replaced.path == stray.path)
        #expect(try fixture.contents(of: replaced.path) == Array("mine".utf8))
        #expect(try fixture.entries(inDirectory: "acme/\(Self.runID)/draft") == ["output.json"])

        // Unrecorded at the first look, recorded at the look under the lock
        // (a row was committed in between): the bytes go back under the name.
        let judged = Counter()
        await #expect(throws: ArtifactError.outputTaken) {
            try await acme.writeOutput(run: Self.run, step: "draft", contents: Array("late".utf8)) { _ in
                judged.increment()
                return judged.value == 1 ? .unrecorded : .recorded
            }
        }
        #expect(judged.value == 2)
        #expect(try fixture.contents(of: replaced.path) == Array("mine".utf8))
        #expect(try fixture.entries(inDirectory: "acme/\(Self.runID)/draft") == ["output.json"])
    }

    @Test func writesNeverMakeTheTenantsDirectory() async throws {
        let fixture = try Fixture()
        let gone = try fixture.store.tenant("gone")
        await #expect(throws: ArtifactError.tenantStorageMissing) {
            try await gone.writeOutput(run: Self.run, step: "draft", contents: [1])
        }
        await #expect(throws: ArtifactError.tenantStorageMissing) {
            try await gone.writeArtifact(run: Self.run, step: "draft", name: "a", from: chunks([1], size: 1), limit: 10)
        }
        #expect(!FileManager.default.fileExists(atPath: fixture.absolute("gone")))
        _ = try await fixture.tenant("here")
        await #expect(throws: ArtifactError.tenantStorageMissing) {
            try await gone.writeOutput(run: Self.run, step: "draft", contents: [1])
        }
        #expect(!FileManager.default.fileExists(atPath: fixture.absolute("gone")))
    }

    // MARK: Listing

    @Test func listingArtifacts() async throws {
        let fixture = try Fixture()
        let acme = try await fixture.tenant("acme")
        #expect(try await acme.artifacts(run: Self.run, step: "draft") == [])
        var expected: [ArtifactEntry] = []
        for (name, size) in [("zeta.txt", 10), ("Alpha.bin", 1_500_000), ("m-1_2.json", 0)] {
            let stored = try await acme.writeArtifact(
                run: Self.run, step: "draft", name: name, from: chunks(randomBytes(size), size: 4096), limit: 2 << 20)
            expected.append(ArtifactEntry(name: name, path: stored.path, size: size, digest: stored.digest))
        }
        expected.sort { $0.name < $1.name }
        _ = try await acme.writeOutput(run: Self.run, step: "draft", contents: [1])
        #expect(try await acme.artifacts(run: Self.run, step: "draft") == expected)
        #expect(try await acme.artifacts(run: Self.run, step: "other") == [])
        #expect(try await fixture.store.tenant("globex").artifacts(run: Self.run, step: "draft") == [])

        // Replaced behind the store's back: the sidecar no longer describes the file, so it is hashed again.
        let path = fixture.absolute(expected[1].path)
        let replacement = randomBytes(777)
        try Data(replacement).write(to: URL(fileURLWithPath: path + ".new"))
        #expect(rename(path + ".new", path) == 0)
        let digest = try await sha256sum(path)
        let listed = try await acme.artifacts(run: Self.run, step: "draft")
        #expect(listed[1] == ArtifactEntry(name: expected[1].name, path: expected[1].path, size: 777, digest: digest))
        let sidecarPath = fixture.absolute("acme/\(Self.runID)/draft/artifacts/.sha256-\(expected[1].name)")
        let sidecar = try String(contentsOfFile: sidecarPath, encoding: .utf8)
        #expect(sidecar.contains("sha256=\(digest)"))
        #expect(try await acme.artifacts(run: Self.run, step: "draft") == listed)
    }

    // MARK: Errors

    @Test func errorsAreOperatorErrors() {
        let cases: [(ArtifactError, Int, String)] = [
            (.invalidName, 400, "invalid_artifact_name"),
            (.invalidDigest, 400, "invalid_digest"),
            (.notFound, 404, "not_found"),
            (.integrityFailure, 409, "integrity_failure"),
            (.tooLarge(limit: 5), 413, "body_too_large"),
            (.storageFailure("cannot sync x"), 500, "storage_failure"),
        ]
        for (error, status, code) in cases {
            #expect(error.httpStatus == status)
            #expect(error.code == code)
        }
        #expect(ArtifactError.integrityFailure.message == "the stored file does not match its recorded digest")
        #expect(ArtifactError.notFound.message == "no such artifact")
    }
}

// MARK: - Support

/// A storage root and a directory "outside" it, both removed when the fixture goes.
private final class Fixture {
    let base: String
    let root: String
    let outside: String
    let store: ArtifactStore

    init(logger: Logger = Logger(label: "tenantplane.artifacts.test", factory: { _ in SwiftLogNoOpLogHandler() })) throws {
        base = FileManager.default.temporaryDirectory.path + "/tenantplane-artifacts-" + UUID().uuidString.lowercased()
        root = base + "/storage"
        outside = base + "/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        store = ArtifactStore(root: root, logger: logger)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: base)
    }

    /// A tenant's corner, with the directory provisioning would have made.
    func tenant(_ id: String) async throws -> TenantArtifacts {
        let tenant = try store.tenant(id)
        try await tenant.createDirectory()
        return tenant
    }

    func absolute(_ relative: String) -> String { root + "/" + relative }

    func contents(of relative: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: absolute(relative))))
    }

    func entries(inDirectory relative: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: absolute(relative)).sorted()
    }

    /// Changes one byte in place (same inode, same size).
    func flipByte(at offset: Int, of relative: String) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: absolute(relative)))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(offset))
        let byte = try #require(try handle.read(upToCount: 1)?.first)
        try handle.seek(toOffset: UInt64(offset))
        try handle.write(contentsOf: [byte ^ 0x01])
    }
}

/// A step writer that holds the run's lease and finds no committed row.
extension TenantArtifacts {
    func writeOutput(run: UUID, step: String, contents: [UInt8]) async throws -> StoredFile {
        try await writeOutput(run: run, step: step, contents: contents) { _ in .unrecorded }
    }
}

private final class Counter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}

private func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
}

private func chunks(_ bytes: [UInt8], size: Int) -> AsyncStream<ByteBuffer> {
    AsyncStream { continuation in
        for start in stride(from: 0, to: bytes.count, by: size) {
            continuation.yield(ByteBuffer(bytes: bytes[start..<min(start + size, bytes.count)]))
        }
        continuation.finish()
    }
}

/// sha256 of a file by coreutils, independent of the store's own hashing.
private func sha256sum(_ path: String) async throws -> String {
    let result = try await CLIRunner.runProcess(
        URL(fileURLWithPath: "/usr/bin/env"), ["sha256sum", "--", path], environment: nil)
    guard result.exitCode == 0 else { throw SHA256SumFailed() }
    return String(result.stdout.prefix(64))
}

private struct SHA256SumFailed: Error {}

/// Yields `pieces`, calling `beforeEach(index)` before each one (which may throw).
private struct HookedChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let pieces: [ByteBuffer]
    let beforeEach: @Sendable (Int) throws -> Void

    struct AsyncIterator: AsyncIteratorProtocol {
        let pieces: [ByteBuffer]
        let beforeEach: @Sendable (Int) throws -> Void
        var index = 0

        mutating func next() async throws -> ByteBuffer? {
            guard index < pieces.count else { return nil }
            try beforeEach(index)
            defer { index += 1 }
            return pieces[index]
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(pieces: pieces, beforeEach: beforeEach) }
}

private final class ObservedStates: @unchecked Sendable {
    struct State {
        let content: [UInt8]
        let entries: [String]
    }

    private let lock = NSLock()
    private var recorded: [State] = []

    func append(content: [UInt8], entries: [String]) {
        lock.withLock { recorded.append(State(content: content, entries: entries)) }
    }

    var states: [State] { lock.withLock { recorded } }
}

/// Keeps what was logged, to check that integrity failures reach the log.
private final class LogRecorder: @unchecked Sendable {
    struct Entry {
        let level: Logger.Level
        let message: String
        let metadata: [String: String]
    }

    private let lock = NSLock()
    private var recorded: [Entry] = []

    var entries: [Entry] { lock.withLock { recorded } }

    var logger: Logger {
        Logger(label: "tenantplane.artifacts.test") { _ in Handler(recorder: self) }
    }

    fileprivate func record(_ entry: Entry) { lock.withLock { recorded.append(entry) } }

    struct Handler: LogHandler {
        let recorder: LogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
            recorder.record(
                Entry(level: event.level, message: event.message.description, metadata: merged.mapValues { "\($0)" }))
        }
    }
}
