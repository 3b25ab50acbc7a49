import Crypto
import Foundation

/// The SCRAM-SHA-256 verifier PostgreSQL stores for a password, computed here
/// so the plain password never reaches the server (nor its statement log).
enum ScramVerifier {
    static let iterations = 4096

    static func make(password: String, salt: [UInt8] = Array(SystemRandomNumberGenerator.bytes(16))) -> String {
        let salted = pbkdf2(password: Array(password.utf8), salt: salt, iterations: iterations)
        let key = SymmetricKey(data: salted)
        let clientKey = Data(HMAC<SHA256>.authenticationCode(for: Data("Client Key".utf8), using: key))
        let storedKey = Data(SHA256.hash(data: clientKey))
        let serverKey = Data(HMAC<SHA256>.authenticationCode(for: Data("Server Key".utf8), using: key))
        return "SCRAM-SHA-256$\(iterations):\(Data(salt).base64EncodedString())$"
            + "\(storedKey.base64EncodedString()):\(serverKey.base64EncodedString())"
    }

    /// PBKDF2-HMAC-SHA256 for one 32-byte block (RFC 8018). The keyed HMAC
    /// state is set up once and copied for each of the 4096 rounds.
    static func pbkdf2(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        let keyed = HMAC<SHA256>(key: SymmetricKey(data: password))
        var round = keyed
        round.update(data: salt + [0, 0, 0, 1])
        var u = Array(round.finalize())
        var result = u
        for _ in 1..<iterations {
            round = keyed
            round.update(data: u)
            u = Array(round.finalize())
            for index in result.indices { result[index] ^= u[index] }
        }
        return result
    }
}

extension SystemRandomNumberGenerator {
    static func bytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }
}
