import ControlPlane
import Foundation

/// A provider key piped in on standard input: never an argument, where `ps`
/// and the shell history would show it, and never typed at a terminal, which
/// would echo it.
enum KeyInput {
    static let usage = #"pipe the key in on standard input, e.g. printf '%s' "$KEY" | tenantplane …"#

    /// All of standard input, less one trailing line break (`\n` or `\r\n`);
    /// the store judges the rest (too long, more than one line).
    static func read() throws -> String {
        guard isatty(STDIN_FILENO) == 0 else { throw ControlError.invalid("standard input is a terminal: \(usage)") }
        // A little over the limit is enough to tell that the key is too long.
        let limit = ControlStore.maximumProviderKeyBytes + 3
        var bytes: [UInt8] = []
        while bytes.count < limit, let chunk = try FileHandle.standardInput.read(upToCount: limit - bytes.count),
            !chunk.isEmpty
        {
            bytes.append(contentsOf: chunk)
        }
        if bytes.last == UInt8(ascii: "\n") {
            bytes.removeLast()
            if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        }
        guard !bytes.isEmpty else { throw ControlError.invalid("no key on standard input: \(usage)") }
        return String(decoding: bytes, as: UTF8.self)
    }
}
