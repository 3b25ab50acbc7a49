import Crypto
import CryptoExtras
import Foundation

/// The SCRAM-SHA-256 verifier PostgreSQL stores for a password, computed here
/// so the plain password never reaches the server (nor its statement log).
public enum ScramVerifier {
    /// Rounds for tenant roles. Every connection's client side pays them
    /// (postgres-nio runs PBKDF2 in Swift, ~4096 HMACs at PostgreSQL's default
    /// count), and the router opens connections on the hot path. Rounds only
    /// slow offline guessing of a weak password; a tenant role's password is
    /// 256 random bits that no guessing reaches, and the verifier is readable
    /// by superusers only, so 32 rounds lose nothing.
    static let tenantRoleIterations = 32

    /// A verifier for a tenant role: a fresh salt, `tenantRoleIterations` rounds.
    public static func make(password: String) throws -> String {
        try make(password: password, salt: Array(SystemRandomNumberGenerator.bytes(16)), iterations: tenantRoleIterations)
    }

    static func make(password: String, salt: [UInt8], iterations: Int) throws -> String {
        // BoringSSL's PBKDF2 through swift-crypto.
        let key = try KDF.Insecure.PBKDF2.deriveKey(
            from: Array(password.utf8), salt: salt, using: .sha256, outputByteCount: 32,
            unsafeUncheckedRounds: iterations)
        let clientKey = Data(HMAC<SHA256>.authenticationCode(for: Data("Client Key".utf8), using: key))
        let storedKey = Data(SHA256.hash(data: clientKey))
        let serverKey = Data(HMAC<SHA256>.authenticationCode(for: Data("Server Key".utf8), using: key))
        return "SCRAM-SHA-256$\(iterations):\(Data(salt).base64EncodedString())$"
            + "\(storedKey.base64EncodedString()):\(serverKey.base64EncodedString())"
    }
}

extension SystemRandomNumberGenerator {
    static func bytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }
}
