import Core
import Crypto
import Foundation

/// Seals secrets for storage in the control database: AES-GCM under the master
/// key, with the owner's id (tenant slug, server name) as authenticated data, so
/// a sealed secret copied onto another row does not open.
public struct SecretBox: Sendable {
    let masterKey: MasterKey

    public init(masterKey: MasterKey) {
        self.masterKey = masterKey
    }

    public func seal(_ secret: String, owner: String) throws -> Data {
        let box = try AES.GCM.seal(Data(secret.utf8), using: masterKey.key, authenticating: Data(owner.utf8))
        guard let combined = box.combined else { throw SecretBoxError.cannotOpen }
        return combined
    }

    public func open(_ sealed: Data, owner: String) throws(SecretBoxError) -> String {
        do {
            let box = try AES.GCM.SealedBox(combined: sealed)
            let data = try AES.GCM.open(box, using: masterKey.key, authenticating: Data(owner.utf8))
            guard let secret = String(data: data, encoding: .utf8) else { throw SecretBoxError.cannotOpen }
            return secret
        } catch {
            throw .cannotOpen
        }
    }
}

public enum SecretBoxError: OperatorError {
    case cannotOpen

    public var httpStatus: Int { 500 }
    public var code: String { "secret_unreadable" }
    public var message: String {
        "a stored secret does not open with this TENANTPLANE_MASTER_KEY (wrong key, or the row was tampered with)"
    }
}
