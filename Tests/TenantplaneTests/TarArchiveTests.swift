@testable import Tar
import Core
import Crypto
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("Tar archives")
struct TarArchiveTests {
    // MARK: Round trips

    @Test("files, directories and a long nested name survive a round trip with matching digests")
    func roundTrip() throws {
        let dir = try TarScratch()
        defer { dir.remove() }
        let big = tarRandomBytes(3 << 20)
        let bigSource = dir.path("big.source")
        try Data(big).write(to: URL(fileURLWithPath: bigSource))
        let longName = tarLongName()
        let small: [(String, [UInt8])] = [
            ("empty", []), ("one", [0x41]), ("docs/511", tarRandomBytes(511)),
            ("docs/512", tarRandomBytes(512)), ("docs/513", tarRandomBytes(513)), (longName, tarRandomBytes(77)),
        ]

        let archive = dir.path("round.tar")
        let writer = try TarWriter(creating: archive)
        try writer.addDirectory(named: "docs")
        try writer.addDirectory(named: "empty-dir/")
        var written: [String: ArchivedDigest] = [:]
        for (name, bytes) in small {
            written[name] = try writer.addFile(named: name, bytes: bytes, modificationTime: 1_700_000_000)
        }
        written["dump/db.pgdump"] = try writer.addFile(named: "dump/db.pgdump", contentsOf: bigSource)
        try writer.finish()

        for (name, bytes) in small {
            #expect(written[name] == ArchivedDigest(size: Int64(bytes.count), sha256: tarSHA256(bytes)))
        }
        #expect(written["dump/db.pgdump"] == ArchivedDigest(size: Int64(big.count), sha256: tarSHA256(big)))

        let reader = try TarReader(path: archive)
        #expect(try reader.next() == .init(name: "docs", kind: .directory))
        #expect(try reader.next() == .init(name: "empty-dir", kind: .directory))
        for (name, bytes) in small {
            #expect(try reader.next() == .init(name: name, kind: .file(size: Int64(bytes.count))))
            #expect(try reader.readContent(limit: 1 << 20) == bytes)
        }
        #expect(try reader.next() == .init(name: "dump/db.pgdump", kind: .file(size: Int64(big.count))))
        let copyPath = dir.path("big.copy")
        let output = open(copyPath, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
        try #require(output >= 0)
        let copied = try reader.copyContent(to: output)
        close(output)
        #expect(copied == written["dump/db.pgdump"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: copyPath)) == Data(big))
        #expect(try reader.next() == nil)
        #expect(try reader.next() == nil)
    }

    @Test("skipContent hashes what it skips, and next() skips unread content")
    func skipping() throws {
        let dir = try TarScratch()
        defer { dir.remove() }
        let first = tarRandomBytes(1500)
        let second = tarRandomBytes(700)
        let archive = dir.path("skip.tar")
        let writer = try TarWriter(creating: archive)
        try writer.addFile(named: "a", bytes: first)
        try writer.addFile(named: "b", bytes: second)
        try writer.addFile(named: "c", bytes: [1, 2, 3])
        try writer.finish()

        let reader = try TarReader(path: archive)
        #expect(try reader.next()?.name == "a")
        #expect(try reader.skipContent() == ArchivedDigest(size: 1500, sha256: tarSHA256(first)))
        #expect(try reader.next()?.name == "b")
        #expect(try reader.next()?.name == "c")
        #expect(throws: ArchiveError.memberTooLarge("c")) { try reader.readContent(limit: 2) }
        #expect(try reader.readContent(limit: 3) == [1, 2, 3])
        #expect(throws: ArchiveError.self) { try reader.readContent(limit: 3) }
        #expect(try reader.next() == nil)
    }

    // MARK: Interoperability with GNU tar

    @Test("GNU tar lists and extracts what the writer wrote")
    func gnuTarReadsOurArchives() async throws {
        let dir = try TarScratch()
        defer { dir.remove() }
        let longName = tarLongName()
        let contents: [(String, [UInt8])] = [
            ("manifest.json", Array("{\"tenant\":\"acme\"}\n".utf8)), ("empty", []),
            ("artifacts/x/513", tarRandomBytes(513)), ("artifacts/big", tarRandomBytes(3 << 20)), (longName, tarRandomBytes(512)),
        ]
        let archive = dir.path("ours.tar")
        let writer = try TarWriter(creating: archive)
        try writer.addDirectory(named: "artifacts")
        try writer.addDirectory(named: "artifacts/x")
        for (name, bytes) in contents { try writer.addFile(named: name, bytes: bytes) }
        try writer.finish()

        let listing = try await runGNUTar(["-tvf", archive])
        #expect(listing.exitCode == 0, "\(listing.stderr)")
        #expect(listing.stderr.isEmpty, "\(listing.stderr)")
        let names = listing.stdout.split(separator: "\n").map { String($0.split(separator: " ").last ?? "") }
        #expect(names == ["artifacts/", "artifacts/x/"] + contents.map(\.0))

        let target = dir.path("extracted")
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
        let extraction = try await runGNUTar(["-xf", archive, "-C", target])
        #expect(extraction.exitCode == 0, "\(extraction.stderr)")
        #expect(extraction.stderr.isEmpty, "\(extraction.stderr)")
        for (name, bytes) in contents {
            #expect(try Data(contentsOf: URL(fileURLWithPath: target + "/" + name)) == Data(bytes), "\(name)")
        }
    }

    @Test("the reader reads what GNU tar wrote", arguments: ["pax", "ustar", "gnu"])
    func readsGNUTarArchives(format: String) async throws {
        let dir = try TarScratch()
        defer { dir.remove() }
        let source = dir.path("tree")
        // 60 + 60 + 70 bytes: over 100, so pax needs `path`, gnu an `L` entry and ustar its prefix field.
        let longDirectory = String(repeating: "d", count: 60) + "/" + String(repeating: "e", count: 60)
        let longFile = longDirectory + "/" + String(repeating: "f", count: 70)
        let files: [String: [UInt8]] = [
            "manifest.json": Array("{}".utf8), "empty": [], "sub/513.bin": tarRandomBytes(513),
            "sub/deeper/large": tarRandomBytes(300_000), longFile: tarRandomBytes(10),
        ]
        for (name, bytes) in files {
            let path = source + "/" + name
            try FileManager.default.createDirectory(
                at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true
            )
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        }
        let archive = dir.path("gnu.tar")
        let creation = try await runGNUTar(["--format=\(format)", "-cf", archive, "-C", source, "."])
        try #require(creation.exitCode == 0, "\(creation.stderr)")

        var directories: Set<String> = []
        var fileNames: Set<String> = []
        let reader = try TarReader(path: archive)
        while let entry = try reader.next() {
            switch entry.kind {
            case .directory:
                directories.insert(entry.name)
            case .file(let size):
                let expected = try #require(files[entry.name], "unexpected member \(entry.name)")
                #expect(try reader.skipContent() == ArchivedDigest(size: size, sha256: tarSHA256(expected)))
                fileNames.insert(entry.name)
            }
        }
        #expect(fileNames == Set(files.keys))
        #expect(directories == ["sub", "sub/deeper", String(repeating: "d", count: 60), longDirectory])
    }

    // MARK: Refusals

    @Test("an archive cut in a member, in a header or before its end marker is truncated")
    func truncation() throws {
        let dir = try TarScratch()
        defer { dir.remove() }
        let archive = dir.path("whole.tar")
        let writer = try TarWriter(creating: archive)
        try writer.addFile(named: "first", bytes: tarRandomBytes(3000))  // header 0, content 512..<3512, padded to 3584
        try writer.addFile(named: "second", bytes: tarRandomBytes(10))   // header 3584, content to 4608
        try writer.finish()
        let whole = try [UInt8](Data(contentsOf: URL(fileURLWithPath: archive)))
        #expect(whole.count == 4608 + 1024)

        for cut in [0, 100, 2000, 3584 + 100, 4000, 4608] {
            let path = dir.path("cut-\(cut).tar")
            try Data(whole[..<cut]).write(to: URL(fileURLWithPath: path))
            #expect(throws: ArchiveError.truncated, "cut at \(cut)") { try tarDrain(path) }
        }
        // GNU tar writes two zero blocks, but one marks the end.
        let oneBlock = dir.path("one-zero-block.tar")
        try Data(whole[..<(4608 + 512)]).write(to: URL(fileURLWithPath: oneBlock))
        #expect(try tarDrain(oneBlock) == ["first", "second"])
    }

    @Test("a flipped byte in a header fails its checksum, and the error sticks")
    func checksum() throws {
        let dir = try TarScratch()
        defer { dir.remove() }
        let archive = dir.path("good.tar")
        let writer = try TarWriter(creating: archive)
        try writer.addFile(named: "a", bytes: [1])
        try writer.addFile(named: "b", bytes: [2])
        try writer.finish()
        let whole = try [UInt8](Data(contentsOf: URL(fileURLWithPath: archive)))
        for offset in [0, 124 + 5, 257, 1024 + 0, 1024 + 300] {
            var damaged = whole
            damaged[offset] ^= 0x04
            let path = dir.path("flip-\(offset).tar")
            try Data(damaged).write(to: URL(fileURLWithPath: path))
            let error = #expect(throws: ArchiveError.self, "flip at \(offset)") { try tarDrain(path) }
            #expect(error?.code == "archive_corrupt_header", "flip at \(offset): \(String(describing: error))")
            #expect(error?.httpStatus == 422)
        }
        var damaged = whole
        damaged[0] = UInt8(ascii: "z")
        let path = dir.path("sticky.tar")
        try Data(damaged).write(to: URL(fileURLWithPath: path))
        let reader = try TarReader(path: path)
        #expect(throws: ArchiveError.corruptHeader("checksum mismatch")) { try reader.next() }
        #expect(throws: ArchiveError.corruptHeader("checksum mismatch")) { try reader.next() }
    }

    @Test(
        "unsafe names are refused",
        arguments: [
            TarName("../x"), TarName("a/../../x"), TarName("/etc/passwd"), TarName("a//b"), TarName("a/./b"),
            TarName("a\\b"), TarName("a\nb"), TarName("a\u{0}b"), TarName("invalid UTF-8", [0x61, 0xFF]),
            TarName("1025 bytes", Array(String(repeating: "n/", count: 512).utf8) + [0x6E]),
        ]
    )
    func unsafeNames(name: TarName) throws {
        let dir = try TarScratch()
        defer { dir.remove() }
        let archive = dir.path("unsafe.tar")
        try Data(tarCraftedMember(name: name.bytes, content: [1, 2, 3]) + tarEndBlocks).write(to: URL(fileURLWithPath: archive))
        let reader = try TarReader(path: archive)
        let error = #expect(throws: ArchiveError.self) { try reader.next() }
        #expect(error?.code == "archive_unsafe_path", "\(String(describing: error))")
        #expect(error.map { !$0.message.contains("\n") && !$0.message.contains("\u{0}") } == true)
    }

    @Test("a NUL inside the ustar name field is refused")
    func nulInNameField() throws {
        let dir = try TarScratch()
        defer { dir.remove() }
        let archive = dir.path("nul.tar")
        var header = tarRawHeader(name: Array("ab".utf8), type: UInt8(ascii: "0"), size: 0)
        header[3] = UInt8(ascii: "c")  // "ab\0c": stopping at the NUL or not gives different names
        tarSetChecksum(&header)
        try Data(header + tarEndBlocks).write(to: URL(fileURLWithPath: archive))
        let error = #expect(throws: ArchiveError.self) { try tarDrain(archive) }
        #expect(error?.code == "archive_unsafe_path")
    }

    @Test("symbolic and hard links made by GNU tar are unsupported members")
    func links() async throws {
        let dir = try TarScratch()
        defer { dir.remove() }
        let source = dir.path("tree")
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: false)
        try Data("target".utf8).write(to: URL(fileURLWithPath: source + "/file"))
        try FileManager.default.createSymbolicLink(atPath: source + "/symlink", withDestinationPath: "file")
        try FileManager.default.linkItem(atPath: source + "/file", toPath: source + "/hardlink")

        for (format, members, type) in [("pax", ["symlink"], "2"), ("gnu", ["file", "hardlink"], "1"), ("pax", ["file", "hardlink"], "1")] {
            let archive = dir.path("links-\(format)-\(type).tar")
            let creation = try await runGNUTar(["--format=\(format)", "-cf", archive, "-C", source] + members)
            try #require(creation.exitCode == 0, "\(creation.stderr)")
            #expect(throws: ArchiveError.unsupportedMember(name: members.last!, type: type)) { try tarDrain(archive) }
        }
    }

    @Test("PAX linkpath, devices, FIFOs and directories with content are refused")
    func otherMembers() throws {
        let dir = try TarScratch()
        defer { dir.remove() }
        let cases: [([UInt8], String)] = [
            (tarCraftedMember(name: Array("f".utf8), content: [1], extraRecords: [("linkpath", "/etc/passwd")]), "archive_unsupported_member"),
            (tarRawHeader(name: Array("dev".utf8), type: UInt8(ascii: "3"), size: 0), "archive_unsupported_member"),
            (tarRawHeader(name: Array("fifo".utf8), type: UInt8(ascii: "6"), size: 0), "archive_unsupported_member"),
            (tarRawHeader(name: Array("d/".utf8), type: UInt8(ascii: "5"), size: 1) + [UInt8](repeating: 0, count: 512), "archive_corrupt_header"),
        ]
        for (index, (bytes, code)) in cases.enumerated() {
            let archive = dir.path("other-\(index).tar")
            try Data(bytes + tarEndBlocks).write(to: URL(fileURLWithPath: archive))
            let error = #expect(throws: ArchiveError.self) { try tarDrain(archive) }
            #expect(error?.code == code, "case \(index): \(String(describing: error))")
        }
    }

    @Test("a PAX size record overrides the header's size field")
    func paxSize() throws {
        let dir = try TarScratch()
        defer { dir.remove() }
        let archive = dir.path("paxsize.tar")
        let content = tarRandomBytes(600)
        try Data(tarCraftedMember(name: Array("sized".utf8), content: content, headerSize: 0, extraRecords: [("size", "600")]) + tarEndBlocks)
            .write(to: URL(fileURLWithPath: archive))
        let reader = try TarReader(path: archive)
        #expect(try reader.next() == .init(name: "sized", kind: .file(size: 600)))
        #expect(try reader.readContent(limit: 600) == content)
        #expect(try reader.next() == nil)
    }

    // MARK: Writer

    @Test("the writer refuses an existing path, unsafe names and use after finish")
    func writerRefusals() throws {
        let dir = try TarScratch()
        defer { dir.remove() }
        let archive = dir.path("w.tar")
        let writer = try TarWriter(creating: archive)
        #expect(throws: ArchiveError.alreadyExists(archive)) { try TarWriter(creating: archive) }
        for name in ["../x", "/abs", "a//b", "", "./", "a\u{0}b", "file/"] {
            let error = #expect(throws: ArchiveError.self, "\(name)") { try writer.addFile(named: name, bytes: [1]) }
            #expect(error?.code == "archive_unsafe_path", "\(name)")
            #expect(error?.httpStatus == 422)
        }
        let fresh = try TarWriter(creating: dir.path("fresh.tar"))
        try fresh.addFile(named: "ok", bytes: [])
        try fresh.finish()
        #expect(throws: ArchiveError.self) { try fresh.addFile(named: "late", bytes: []) }
    }

    @Test("sources that are not regular files are refused")
    func nonRegularSources() throws {
        let dir = try TarScratch()
        defer { dir.remove() }
        let fifo = dir.path("fifo")
        try #require(mkfifo(fifo, 0o600) == 0)
        try FileManager.default.createSymbolicLink(atPath: dir.path("link"), withDestinationPath: fifo)
        try Data("x".utf8).write(to: URL(fileURLWithPath: dir.path("real")))
        try FileManager.default.createSymbolicLink(atPath: dir.path("link-to-file"), withDestinationPath: dir.path("real"))
        for source in [dir.root, fifo, dir.path("link"), dir.path("link-to-file")] {
            let archive = dir.path("n-\(UUID().uuidString).tar")
            let writer = try TarWriter(creating: archive)
            #expect(throws: ArchiveError.notRegularFile(source)) { try writer.addFile(named: "x", contentsOf: source) }
            // Nothing was written for the refused source, so the archive is still whole.
            try writer.addFile(named: "after", bytes: [7])
            try writer.finish()
            #expect(try tarDrain(archive) == ["after"])
        }
        let writer = try TarWriter(creating: dir.path("missing.tar"))
        let error = #expect(throws: ArchiveError.self) { try writer.addFile(named: "x", contentsOf: dir.path("absent")) }
        #expect(error?.code == "archive_io_error")
        #expect(error?.httpStatus == 500)
    }

    /// Kernel files whose length differs from what fstat reports stand in for a
    /// source that grows or shrinks between fstat and reading.
    @Test(
        "a source that yields more or fewer bytes than fstat reported is refused",
        .enabled(if: FileManager.default.fileExists(atPath: "/proc/self/status")),
        arguments: ["/proc/self/status", "/sys/devices/system/cpu/online"]
    )
    func sourceChangedSize(source: String) throws {
        guard FileManager.default.fileExists(atPath: source) else { return }
        let dir = try TarScratch()
        defer { dir.remove() }
        let writer = try TarWriter(creating: dir.path("changed.tar"))
        #expect(throws: ArchiveError.sourceChanged(source)) { try writer.addFile(named: "x", contentsOf: source) }
        #expect(throws: ArchiveError.self) { try writer.finish() }
    }

    @Test("error codes and statuses")
    func errorMapping() {
        #expect(ArchiveError.truncated.code == "archive_truncated")
        #expect(ArchiveError.truncated.httpStatus == 422)
        #expect(ArchiveError.unsupportedMember(name: "l", type: "2").httpStatus == 422)
        #expect(ArchiveError.io("disk full").httpStatus == 500)
        #expect(OperatorFailure(ArchiveError.unsafePath("../x")).code == "archive_unsafe_path")
    }
}

// MARK: - Helpers

/// A unique directory under the temporary directory, removed by the test.
private struct TarScratch {
    let root: String

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("tar-tests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: false)
    }

    func path(_ name: String) -> String { root + "/" + name }
    func remove() { try? FileManager.default.removeItem(atPath: root) }
}

private func tarRandomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { raw in
        for offset in stride(from: 0, to: raw.count, by: 8) {
            withUnsafeBytes(of: generator.next()) { word in
                for index in 0..<min(8, raw.count - offset) { raw[offset + index] = word[index] }
            }
        }
    }
    return bytes
}

private func tarSHA256(_ bytes: [UInt8]) -> String {
    SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}

/// A 200-byte nested name: too long for ustar's name field and, with no "/"
/// at a usable place, for its prefix split too.
private func tarLongName() -> String {
    "nested/" + String(repeating: "p", count: 150) + "/" + String(repeating: "q", count: 42)
}

/// Reads every member to the end, returning the names.
@discardableResult
private func tarDrain(_ path: String) throws(ArchiveError) -> [String] {
    let reader = try TarReader(path: path)
    var names: [String] = []
    while let entry = try reader.next() {
        names.append(entry.name)
        if case .file = entry.kind { _ = try reader.skipContent() }
    }
    return names
}

private let tarEndBlocks = [UInt8](repeating: 0, count: 1024)

private func tarRawHeader(name: [UInt8], type: UInt8, size: Int) -> [UInt8] {
    var header = [UInt8](repeating: 0, count: 512)
    func put(_ text: String, at offset: Int) { header.replaceSubrange(offset..<(offset + text.utf8.count), with: text.utf8) }
    header.replaceSubrange(0..<min(name.count, 100), with: name.prefix(100))
    put("0000644\0", at: 100)
    put("0000000\0", at: 108)
    put("0000000\0", at: 116)
    put(tarOctal(size, width: 12), at: 124)
    put("00000000000\0", at: 136)
    header[156] = type
    put("ustar\u{0}00", at: 257)
    tarSetChecksum(&header)
    return header
}

private func tarSetChecksum(_ header: inout [UInt8]) {
    header.replaceSubrange(148..<156, with: Array("        ".utf8))
    let sum = header.reduce(0) { $0 + Int($1) }
    header.replaceSubrange(148..<156, with: Array((tarOctal(sum, width: 7) + " ").utf8))
}

/// `width - 1` zero-padded octal digits and a NUL, as ustar numeric fields are written.
private func tarOctal(_ value: Int, width: Int) -> String {
    let digits = String(value, radix: 8)
    return String(repeating: "0", count: width - 1 - digits.count) + digits + "\u{0}"
}

private func tarPadded(_ bytes: [UInt8]) -> [UInt8] {
    bytes + [UInt8](repeating: 0, count: (512 - bytes.count % 512) % 512)
}

/// A regular-file member whose name travels in a PAX `path` record, as a
/// hostile archive would put it; `headerSize` is what the ustar field claims.
private func tarCraftedMember(
    name: [UInt8], content: [UInt8], headerSize: Int? = nil, extraRecords: [(String, String)] = []
) -> [UInt8] {
    var records: [UInt8] = []
    func record(_ key: [UInt8], _ value: [UInt8]) {
        let body = 1 + key.count + 1 + value.count + 1
        var length = body + String(body).count
        if String(length).count != String(body).count { length = body + String(length).count }
        records += Array("\(length) ".utf8) + key + [UInt8(ascii: "=")] + value + [UInt8(ascii: "\n")]
    }
    record(Array("path".utf8), name)
    for (key, value) in extraRecords { record(Array(key.utf8), Array(value.utf8)) }
    return tarRawHeader(name: Array("PaxHeader".utf8), type: UInt8(ascii: "x"), size: records.count)
        + tarPadded(records)
        + tarRawHeader(name: Array("placeholder".utf8), type: UInt8(ascii: "0"), size: headerSize ?? content.count)
        + tarPadded(content)
}

/// A member name for a parameterised test, labelled readably.
struct TarName: Sendable, CustomTestStringConvertible {
    let testDescription: String
    let bytes: [UInt8]

    init(_ name: String) {
        testDescription = name.debugDescription
        bytes = Array(name.utf8)
    }

    init(_ label: String, _ bytes: [UInt8]) {
        testDescription = label
        self.bytes = bytes
    }
}

/// Runs /usr/bin/tar.
private func runGNUTar(_ arguments: [String]) async throws -> CLIRunner.Result {
    try await CLIRunner.runProcess(URL(fileURLWithPath: "/usr/bin/tar"), arguments, environment: nil)
}
