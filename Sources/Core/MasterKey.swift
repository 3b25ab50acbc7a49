import Crypto
import Foundation

/// The 32-byte key that encrypts secrets at rest (tenant role passwords).
public struct MasterKey: Sendable {
    public let key: SymmetricKey

    public init(base64: String, source: String) throws(ConfigurationError) {
        guard let data = Data(base64Encoded: base64), data.count == 32 else {
            throw .invalid(source, "must be the base64 of exactly 32 bytes (generate one with: head -c 32 /dev/urandom | base64)")
        }
        key = SymmetricKey(data: data)
    }

    public init(key: SymmetricKey) {
        self.key = key
    }
}

extension MasterKey {
    /// A key of its own for one purpose (HKDF-SHA256 with `label` as its
    /// info), so no two uses of the master key share key material.
    public func derivedKey(label: String) -> SymmetricKey {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: key, info: Data(label.utf8), outputByteCount: 32)
    }
}
