import Core
import Crypto
import Foundation

extension MigrationSet {
    /// One digest over every file's version and checksum: equal fingerprints
    /// mean a database migrated with either set has the same schema.
    public var fingerprint: String {
        var hasher = SHA256()
        for file in files { hasher.update(data: Data("\(file.version):\(file.checksum)\n".utf8)) }
        return Hex.string(hasher.finalize())
    }
}
