import Core
import Crypto

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let tarBlockSize = 512
let tarBufferSize = 1 << 20
let maxNameLength = 1024
/// PAX records in exports hold a path at most; GNU tar adds times. Anything
/// near this size is not an archive we wrote or would accept.
let maxPAXSize = 64 * 1024
/// The largest value of an 11-digit octal field (8 GiB - 1 for sizes).
let maxOctal11: Int64 = 0o77777777777

let typeRegular = UInt8(ascii: "0")
let typeRegularOld: UInt8 = 0
let typeContiguous = UInt8(ascii: "7")
let typeDirectory = UInt8(ascii: "5")
let typePAX = UInt8(ascii: "x")
let typeGlobalPAX = UInt8(ascii: "g")
let typeGNULongName = UInt8(ascii: "L")

func paddingLength(_ size: Int64) -> Int {
    Int((Int64(tarBlockSize) - size % Int64(tarBlockSize)) % Int64(tarBlockSize))
}

struct Header {
    var name: [UInt8]
    var type: UInt8
    var size: Int64
}

func parseHeader(_ block: [UInt8]) throws(ArchiveError) -> Header {
    guard let recorded = parseNumber(block[148..<156]) else { throw .corruptHeader("unreadable checksum field") }
    var unsigned: Int64 = 0
    var signed: Int64 = 0
    for (index, byte) in block.enumerated() {
        let value = (148..<156).contains(index) ? UInt8(ascii: " ") : byte
        unsigned += Int64(value)
        signed += Int64(Int8(bitPattern: value))
    }
    // Some historic writers summed signed bytes; GNU tar accepts either, and so do we.
    guard recorded == unsigned || recorded == signed else { throw .corruptHeader("checksum mismatch") }

    let magic = block[257..<263]
    let isPOSIX = magic.elementsEqual("ustar\0".utf8)
    guard isPOSIX || block[257..<265].elementsEqual("ustar  \0".utf8) else {
        throw .corruptHeader("not a ustar header")
    }
    guard let size = parseNumber(block[124..<136]) else { throw .corruptHeader("invalid size field") }

    var name = try nameField(block[0..<100])
    // Only POSIX ustar has a prefix; the old GNU format keeps times in those bytes.
    if isPOSIX {
        let prefix = try nameField(block[345..<500])
        if !prefix.isEmpty { name = prefix + [UInt8(ascii: "/")] + name }
    }
    return Header(name: name, type: block[156], size: size)
}

/// A NUL-terminated name field. Bytes after the terminator must be NUL too:
/// readers that stop at the first NUL and readers that do not would otherwise
/// see different names.
func nameField(_ field: ArraySlice<UInt8>) throws(ArchiveError) -> [UInt8] {
    guard let end = field.firstIndex(of: 0) else { return Array(field) }
    guard field[end...].allSatisfy({ $0 == 0 }) else { throw .unsafePath(printable(field)) }
    return Array(field[..<end])
}

/// An octal field (optional leading spaces, digits, then NULs or spaces), or
/// GNU's base-256 form (first byte 0x80) for values that do not fit. Negative
/// base-256 values are refused.
func parseNumber(_ field: ArraySlice<UInt8>) -> Int64? {
    if field.first == 0x80 {
        var value: Int64 = 0
        for byte in field.dropFirst() {
            let (shifted, overflow) = value.multipliedReportingOverflow(by: 256)
            guard !overflow else { return nil }
            value = shifted | Int64(byte)
        }
        return value
    }
    var rest = field.drop(while: { $0 == UInt8(ascii: " ") })
    var value: Int64 = 0
    var digits = 0
    while let byte = rest.first, (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(byte) {
        value = value * 8 + Int64(byte - UInt8(ascii: "0"))
        digits += 1
        rest = rest.dropFirst()
    }
    guard digits > 0, rest.allSatisfy({ $0 == 0 || $0 == UInt8(ascii: " ") }) else { return nil }
    return value
}

/// The PAX keys that change how a member is read. `size` is honoured (GNU tar
/// writes it for members of 8 GiB and more, when the octal field cannot hold the
/// size); it is parsed as strictly as the header field it replaces.
struct PAXOverrides {
    var path: [UInt8]?
    var size: Int64?
    var hasLinkpath = false
    var isSparse = false
}

/// Parses "<length> <key>=<value>\n" records; duplicate keys are refused so
/// that no reader can pick a different one than we did.
func parsePAXRecords(_ data: [UInt8]) throws(ArchiveError) -> PAXOverrides {
    var overrides = PAXOverrides()
    var seen = Set<[UInt8]>()
    var start = 0
    while start < data.count {
        var cursor = start
        var length = 0
        while cursor < data.count, cursor - start < 10, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(data[cursor]) {
            length = length * 10 + Int(data[cursor] - UInt8(ascii: "0"))
            cursor += 1
        }
        guard cursor > start, cursor < data.count, data[cursor] == UInt8(ascii: " "),
              length > cursor - start + 1, start + length <= data.count,
              data[start + length - 1] == UInt8(ascii: "\n")
        else { throw .corruptHeader("malformed PAX record") }
        let record = data[(cursor + 1)..<(start + length - 1)]
        guard let equals = record.firstIndex(of: UInt8(ascii: "=")), equals > record.startIndex else {
            throw .corruptHeader("malformed PAX record")
        }
        let key = Array(record[..<equals])
        let value = Array(record[(equals + 1)...])
        guard seen.insert(key).inserted else { throw .corruptHeader("duplicate PAX record \(printable(key))") }
        switch String(decoding: key, as: UTF8.self) {
        case "path":
            overrides.path = value
        case "size":
            guard !value.isEmpty, value.count <= 18, value.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
                throw .corruptHeader("invalid PAX size")
            }
            overrides.size = value.reduce(0) { $0 * 10 + Int64($1 - UInt8(ascii: "0")) }
        case "linkpath":
            overrides.hasLinkpath = true
        case let other where other.hasPrefix("GNU.sparse."):
            overrides.isSparse = true
        default:
            break
        }
        start += length
    }
    return overrides
}

func encodePAX(_ records: [(key: String, value: String)]) -> [UInt8] {
    var out: [UInt8] = []
    for (key, value) in records {
        let body = " \(key)=\(value)\n".utf8.count
        // The length counts its own digits: grow until the digit count is stable.
        var length = body + String(body).count
        if String(length).count != String(body).count { length = body + String(length).count }
        out.append(contentsOf: "\(length) \(key)=\(value)\n".utf8)
    }
    return out
}

func ustarHeader(
    name: ArraySlice<UInt8>, prefix: ArraySlice<UInt8>, type: UInt8,
    size: Int64, modificationTime: Int64, mode: Int
) -> [UInt8] {
    var block = [UInt8](repeating: 0, count: tarBlockSize)
    func put(_ bytes: some Collection<UInt8>, at offset: Int) {
        for (index, byte) in bytes.enumerated() { block[offset + index] = byte }
    }
    func octal(_ value: Int64, width: Int) -> [UInt8] {
        let digits = String(value, radix: 8)
        return Array((String(repeating: "0", count: width - 1 - digits.count) + digits).utf8) + [0]
    }
    put(name, at: 0)
    put(octal(Int64(mode), width: 8), at: 100)
    put(octal(0, width: 8), at: 108)
    put(octal(0, width: 8), at: 116)
    put(octal(size, width: 12), at: 124)
    put(octal(modificationTime, width: 12), at: 136)
    put(Array(repeating: UInt8(ascii: " "), count: 8), at: 148)
    block[156] = type
    put("ustar\0".utf8, at: 257)
    put("00".utf8, at: 263)
    put(octal(0, width: 8), at: 329)
    put(octal(0, width: 8), at: 337)
    put(prefix, at: 345)
    let checksum = block.reduce(0) { $0 + Int64($1) }
    put(octal(checksum, width: 7) + [UInt8(ascii: " ")], at: 148)
    return block
}

/// Where to split a long name into ustar's prefix (≤ 155 bytes) and name (≤ 100
/// bytes) at a "/", if anywhere.
func ustarSplit(_ name: [UInt8]) -> Int? {
    name.indices.first { index in
        name[index] == UInt8(ascii: "/") && index <= 155 && name.count - index - 1 <= 100 && name.count - index - 1 > 0
    }
}

/// The ustar name field under a PAX `path`, for readers that ignore PAX: the
/// name cut at 100 bytes on a character boundary, without trailing "/" or ".",
/// so that the cut never forms a "." or ".." component.
func paxFallbackName(_ name: [UInt8]) -> [UInt8] {
    var cut = 100
    while name[cut] & 0xC0 == 0x80 { cut -= 1 }
    var fallback = Array(name[..<cut])
    while let last = fallback.last, last == UInt8(ascii: "/") || last == UInt8(ascii: ".") { fallback.removeLast() }
    return fallback.isEmpty ? [UInt8(ascii: "_")] : fallback
}


// MARK: - Names

/// Validates a member name and returns it normalised (no leading "./", no
/// trailing "/"), or nil for the archive root "./" itself. Refused: empty or
/// over 1024 bytes, absolute, NUL and other control bytes, backslashes, empty,
/// "." or ".." components, a trailing "/" on a file, and invalid UTF-8. The
/// writer applies the same rules, so what it writes the reader accepts.
func validatedMemberName(_ raw: [UInt8], isDirectory: Bool) throws(ArchiveError) -> String? {
    let unsafe = ArchiveError.unsafePath(printable(raw))
    guard !raw.isEmpty, raw.count <= maxNameLength, raw.first != UInt8(ascii: "/") else { throw unsafe }
    guard !raw.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == UInt8(ascii: "\\") }) else { throw unsafe }
    var name = raw[...]
    if name.starts(with: "./".utf8) { name = name.dropFirst(2) }
    if name.last == UInt8(ascii: "/") {
        guard isDirectory else { throw unsafe }
        name = name.dropLast()
    }
    if name.isEmpty || name.elementsEqual(".".utf8) {
        guard isDirectory, raw.count <= 2 else { throw unsafe }
        return nil
    }
    for component in name.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false) {
        guard !component.isEmpty, !component.elementsEqual(".".utf8), !component.elementsEqual("..".utf8) else {
            throw unsafe
        }
    }
    guard let text = String(validating: name, as: UTF8.self) else { throw unsafe }
    return text
}

/// The writer's check: the reader's rules, and the root itself is not a name one can add.
func writableMemberName(_ name: String, isDirectory: Bool) throws(ArchiveError) -> String {
    guard let normalized = try validatedMemberName(Array(name.utf8), isDirectory: isDirectory) else {
        throw .unsafePath(printable(name))
    }
    return normalized
}

/// Untrusted bytes on one printable line: printable ASCII as is, everything
/// else as \xNN, at most 200 bytes shown.
func printable(_ bytes: some Collection<UInt8>) -> String {
    var out = ""
    for byte in bytes.prefix(200) {
        if byte >= 0x20, byte < 0x7F, byte != UInt8(ascii: "\\") {
            out.unicodeScalars.append(Unicode.Scalar(byte))
        } else {
            out += "\\x" + String(byte, radix: 16, uppercase: false).leftPadded(to: 2)
        }
    }
    if bytes.count > 200 { out += "… (\(bytes.count) bytes)" }
    return out
}

func printable(_ text: String) -> String { printable(Array(text.utf8)) }

func printableType(_ type: UInt8) -> String {
    type >= 0x21 && type < 0x7F ? String(Unicode.Scalar(type)) : "\\x" + String(type, radix: 16).leftPadded(to: 2)
}

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

