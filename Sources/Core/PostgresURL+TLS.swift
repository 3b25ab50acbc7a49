import Foundation
import NIOSSL

/// libpq's `sslrootcert`, `sslcert` and `sslkey`: absolute paths of PEM files.
///
/// A root certificate is checked in every mode that uses TLS, as libpq does
/// when it has one: `require` with `sslrootcert` checks the chain like
/// `verify-ca`. `verify-full` also checks the host: an IP address against the
/// certificate's IP addresses, a name against its DNS names. (NIOSSL also
/// accepts a name whose certificate lists the address it connected to; libpq
/// looks at the DNS names only.)
extension PostgresURL {
    /// Checks the files where the URL is given (`server add`, the settings),
    /// so that a path that cannot work is refused there with its reason, not
    /// at the first connection with a handshake error.
    func checkTLSFiles() throws(PostgresURLError) {
        if let sslRootCert {
            let bytes = try Self.contents(of: sslRootCert, parameter: "sslrootcert")
            guard let roots = try? NIOSSLCertificate.fromPEMBytes(bytes), !roots.isEmpty else {
                throw .unusableFile(parameter: "sslrootcert", path: sslRootCert, reason: "holds no PEM certificate")
            }
        }
        switch (sslCert, sslKey) {
        case (nil, nil):
            return
        case (.some, nil):
            throw .incompleteClientCertificate(missing: "sslkey")
        case (nil, .some):
            throw .incompleteClientCertificate(missing: "sslcert")
        case (.some(let sslCert), .some(let sslKey)):
            let chain = try Self.contents(of: sslCert, parameter: "sslcert")
            guard let certificates = try? NIOSSLCertificate.fromPEMBytes(chain), !certificates.isEmpty else {
                throw .unusableFile(parameter: "sslcert", path: sslCert, reason: "holds no PEM certificate")
            }
            let key = try Self.contents(of: sslKey, parameter: "sslkey")
            guard (try? NIOSSLPrivateKey(bytes: key, format: .pem)) != nil else {
                throw .unusableFile(parameter: "sslkey", path: sslKey, reason: "holds no unencrypted PEM private key")
            }
            try Self.checkKeyPermissions(sslKey)
        }
    }

    private static func contents(of path: String, parameter: String) throws(PostgresURLError) -> [UInt8] {
        // The URL is stored and used by other processes (serve, worker,
        // pg_dump), each from its own working directory.
        guard path.hasPrefix("/") else {
            throw .unusableFile(parameter: parameter, path: path, reason: "must be an absolute path")
        }
        guard FileManager.default.fileExists(atPath: path) else {
            throw .unusableFile(parameter: parameter, path: path, reason: "no such file")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .unusableFile(parameter: parameter, path: path, reason: "cannot be read by this process")
        }
        return Array(data)
    }

    /// libpq's rule, checked here because pg_dump would refuse the key
    /// later: a key of one's own is private to its owner (0600 or less), a
    /// key owned by root may also be read by its group (0640 or less).
    private static func checkKeyPermissions(_ path: String) throws(PostgresURLError) {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            let mode = (attributes[.posixPermissions] as? NSNumber)?.uint16Value,
            let owner = (attributes[.ownerAccountID] as? NSNumber)?.uint32Value
        else { return }
        let tooOpen: Bool =
            if owner == geteuid() { mode & 0o077 != 0 } else if owner == 0 { mode & 0o037 != 0 } else { false }
        if tooOpen {
            throw .unusableFile(
                parameter: "sslkey", path: path,
                reason: "has group or world access (mode \(String(mode & 0o777, radix: 8))): chmod 0600 it")
        }
    }

    func tlsConfiguration() -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateVerification =
            switch sslMode {
            case .verifyFull: .fullVerification
            case .verifyCA: .noHostnameVerification
            case .disable, .allow, .prefer, .require: sslRootCert == nil ? .none : .noHostnameVerification
            }
        // A root file that has gone missing fails the handshake: it never
        // falls back to the system's trust store.
        if let sslRootCert { tls.trustRoots = .file(sslRootCert) }
        // Loaded here, not given as `.file`: NIOSSL traps on a chain file it
        // cannot read and takes a `.key` file for DER. The files were checked
        // when the URL was parsed; one that has since gone is not sent, as
        // libpq sends none when its file is missing, and a server that
        // requires a client certificate then refuses the session.
        if let sslCert, let sslKey, let chain = try? NIOSSLCertificate.fromPEMFile(sslCert), !chain.isEmpty,
            let key = try? NIOSSLPrivateKey(file: sslKey, format: .pem)
        {
            tls.certificateChain = chain.map { .certificate($0) }
            tls.privateKey = .privateKey(key)
        }
        return tls
    }
}
