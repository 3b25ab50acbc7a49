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
