import Core
import Crypto
import Foundation

/// The shape of a tenant API key, and the tag that proves this control plane
/// issued it.
///
/// A key is `tpk2_<secret>_<tag>`: 32 random bytes, then the first 12 bytes of
/// an HMAC-SHA256 of them under a key derived from the master key, both in
/// base64url. The router checks the tag with one HMAC before any lookup, so a
/// random, mistyped or forged key costs no control query. A public checksum
/// (CRC32, as GitHub's tokens carry) would not do that: anyone can compute it,
/// so a flood of well-formed guesses would still reach the lookup. Keys issued
/// before the tag (`tpk_<secret>`) have no tag and are still looked up.
public struct APIKeyFormat: Sendable {
    public enum Shape: Sendable, Equatable {
        /// Issued here with a valid tag: worth a lookup.
        case signed
        /// Issued before keys carried a tag: only a lookup can tell.
        case unsigned
        /// Not a key this control plane issued.
        case invalid
    }

    static let prefix = "tpk2_"
    static let unsignedPrefix = "tpk_"
    static let secretLength = 43
    static let tagBytes = 12
    static let tagLength = 16
    private let tagKey: SymmetricKey

    public init(masterKey: MasterKey) {
        tagKey = masterKey.derivedKey(label: "tenantplane api key tag v1")
    }

    /// A new key: 256 random bits and their tag.
    func issue() -> String {
        let secret = RandomToken.urlSafe(bytes: 32)
        return Self.prefix + secret + "_" + tag(of: secret)
    }

    public func shape(of key: String) -> Shape {
        let bytes = Array(key.utf8)
        if bytes.count == Self.prefix.utf8.count + Self.secretLength + 1 + Self.tagLength,
            key.hasPrefix(Self.prefix)
        {
            let secret = bytes[Self.prefix.utf8.count..<(Self.prefix.utf8.count + Self.secretLength)]
            let separator = bytes[Self.prefix.utf8.count + Self.secretLength]
            let tag = bytes.suffix(Self.tagLength)
            guard separator == UInt8(ascii: "_"), secret.allSatisfy(Self.isBase64URL), tag.allSatisfy(Self.isBase64URL)
            else { return .invalid }
            let expected = self.tag(of: String(decoding: secret, as: UTF8.self))
            return ConstantTime.equal(expected.utf8, tag) ? .signed : .invalid
        }
        if bytes.count == Self.unsignedPrefix.utf8.count + Self.secretLength, key.hasPrefix(Self.unsignedPrefix),
            bytes.dropFirst(Self.unsignedPrefix.utf8.count).allSatisfy(Self.isBase64URL)
        {
            return .unsigned
        }
        return .invalid
    }

    private func tag(of secret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data(secret.utf8), using: tagKey)
        return Base64URL.encode(Array(mac).prefix(Self.tagBytes))
    }

    private static func isBase64URL(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
            true
        default: false
        }
    }
}
