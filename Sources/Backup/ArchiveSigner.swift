import Core
import Crypto
import Foundation

/// Signs a manifest's exact bytes with HMAC-SHA256 under a key derived from
/// the master key, so an operator can tell this deployment's archives from
/// foreign or edited ones. The signature is the archive member
/// `manifest.json.hmac-sha256` (64 hex digits); without tenantplane it is
/// checked with `openssl dgst -sha256 -mac HMAC`, given the derived key.
struct ArchiveSigner: Sendable {
    static let label = "tenantplane archive manifest hmac v1"
    let key: SymmetricKey

    init(masterKey: MasterKey) {
        key = masterKey.derivedKey(label: Self.label)
    }

    func signature(of manifest: [UInt8]) -> String {
        Hex.string(HMAC<SHA256>.authenticationCode(for: manifest, using: key))
    }

    /// Compared in constant time (CryptoKit's `isValidAuthenticationCode`).
    func isValid(_ signature: [UInt8], for manifest: [UInt8]) -> Bool {
        guard let code = Self.bytes(hex: signature) else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(code, authenticating: manifest, using: key)
    }

    private static func bytes(hex: [UInt8]) -> [UInt8]? {
        let digits = hex.last == UInt8(ascii: "\n") ? Array(hex.dropLast()) : hex
        guard digits.count == 64 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        for index in stride(from: 0, to: 64, by: 2) {
            guard let high = nibble(digits[index]), let low = nibble(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }

    private static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        default: nil
        }
    }
}
