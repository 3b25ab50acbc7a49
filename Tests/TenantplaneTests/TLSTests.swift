import Core
import Foundation
import PostgresNIO
import Testing

/// The second cluster serves TLS only, with a certificate (IP 127.0.0.1, DNS
/// localhost) from a throwaway CA that ops/test made; it also listens on
/// 127.0.0.2, which the certificate does not name.
enum SecondClusterTLS {
    static var directory: String {
        get throws {
            guard let directory = ProcessInfo.processInfo.environment["TENANTPLANE_TEST_SECOND_TLS"] else {
                throw SetupError("TENANTPLANE_TEST_SECOND_TLS is not set: run the tests with ops/test")
            }
            return directory
        }
    }

    static func file(_ name: String) throws -> String { "\(try directory)/\(name)" }

    /// The second cluster's superuser URL with these TLS settings.
    static func url(
        host: String = "127.0.0.1", sslMode: PostgresURL.SSLMode = .verifyFull, rootCert: String? = "ca.crt",
        clientCertificate: Bool = false
    ) throws -> PostgresURL {
        var url = try ProvisioningFixture.secondClusterURL
        url.host = host
        url.sslMode = sslMode
        url.sslRootCert = try rootCert.map(file)
        url.sslCert = clientCertificate ? try file("client.crt") : nil
        url.sslKey = clientCertificate ? try file("client.key") : nil
        return url
    }

    /// This session's row of `pg_stat_ssl`: whether it uses TLS, and the client certificate's DN.
    static func session(_ url: PostgresURL) async throws -> (ssl: Bool, clientDN: String?) {
        let rows = try await TestCluster.query(
            url, "SELECT ssl, client_dn::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        let row = try #require(rows.first)
        return try row.decode((Bool, String?).self)
    }

    static func refusal(_ url: PostgresURL) async throws -> DatabaseError {
        do {
            _ = try await TestCluster.query(url, "SELECT 1")
        } catch let error as DatabaseError {
            return error
        }
        throw SetupError("\(url) connected")
    }
}

@Suite("PostgreSQL URLs carry libpq's TLS settings")
struct PostgresURLTLSTests {
    @Test func theKeywordValueStringQuotesEveryValueAsLibpqDoes() {
        let url = PostgresURL(
            host: "db.internal", port: 6432, user: "o'brien", password: #"p\a's w"#, database: "tenant db",
            sslMode: .verifyFull, sslRootCert: "/etc/tp/ca dir/root.crt")
        #expect(
            url.libpqConnectionString(startupOptions: "-c row_security=off")
                == #"host='db.internal' port='6432' dbname='tenant db' user='o\'brien' password='p\\a\'s w' "#
                + #"sslmode='verify-full' sslrootcert='/etc/tp/ca dir/root.crt' options='-c row_security=off'"#)

        var bare = url
        bare.password = ""
        bare.sslRootCert = nil
        bare.sslMode = .disable
        #expect(
            bare.libpqConnectionString()
                == #"host='db.internal' port='6432' dbname='tenant db' user='o\'brien' password='' sslmode='disable'"#)
        bare.password = nil
        #expect(!bare.libpqConnectionString().contains("password"))
    }

    @Test func theTLSFilesRoundTripThroughTheStoredFormAndThePasswordStaysOut() throws {
        // A folder name that needs escaping in a URL query.
        let folder = try temporaryDirectory().appendingPathComponent("odd &=+#% name")
        defer { try? FileManager.default.removeItem(at: folder.deletingLastPathComponent()) }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for name in ["ca.crt", "client.crt", "client.key"] {
            let copy = folder.appendingPathComponent(name).path
            try FileManager.default.copyItem(atPath: try SecondClusterTLS.file(name), toPath: copy)
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: copy)
        }
        let url = PostgresURL(
            host: "127.0.0.1", port: 5432, user: "admin", password: "s3cret", database: "postgres", sslMode: .verifyCA,
            sslRootCert: folder.appendingPathComponent("ca.crt").path,
            sslCert: folder.appendingPathComponent("client.crt").path,
            sslKey: folder.appendingPathComponent("client.key").path)

        #expect(try PostgresURL(url.withPassword) == url)
        #expect(!url.redacted.contains("s3cret"))
        var unprotected = url
        unprotected.password = nil
        #expect(try PostgresURL(url.redacted) == unprotected)
        #expect(url.redacted.contains("sslrootcert=") && url.redacted.contains("sslcert=") && url.redacted.contains("sslkey="))
    }

    @Test func unusableTLSSettingsAreRefusedWithTheirReason() throws {
        let work = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: work) }
        let notPEM = work.appendingPathComponent("not.crt").path
        try Data("hello".utf8).write(to: URL(fileURLWithPath: notPEM))
        let openKey = work.appendingPathComponent("open.key").path
        try FileManager.default.copyItem(atPath: try SecondClusterTLS.file("client.key"), toPath: openKey)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: openKey)
        let cert = try SecondClusterTLS.file("client.crt")
        let key = try SecondClusterTLS.file("client.key")
        let base = "postgres://u@127.0.0.1:5432/db?sslmode=verify-full"

        func refusal(_ query: String) -> String? {
            do {
                _ = try PostgresURL(base + query)
                return nil
            } catch {
                return error.message
            }
        }
        #expect(refusal("&sslrootcert=\(work.path)/missing.crt") == "invalid PostgreSQL URL: sslrootcert \(work.path)/missing.crt: no such file")
        #expect(refusal("&sslrootcert=ca.crt") == "invalid PostgreSQL URL: sslrootcert ca.crt: must be an absolute path")
        #expect(refusal("&sslrootcert=\(notPEM)") == "invalid PostgreSQL URL: sslrootcert \(notPEM): holds no PEM certificate")
        #expect(refusal("&sslrootcert=") == "invalid PostgreSQL URL: sslrootcert needs a file path")
        #expect(refusal("&sslcert=\(cert)") == "invalid PostgreSQL URL: sslcert and sslkey go together (sslkey is missing)")
        #expect(refusal("&sslkey=\(key)") == "invalid PostgreSQL URL: sslcert and sslkey go together (sslcert is missing)")
        #expect(refusal("&sslcert=\(cert)&sslkey=\(cert)") == "invalid PostgreSQL URL: sslkey \(cert): holds no unencrypted PEM private key")
        #expect(
            refusal("&sslcert=\(cert)&sslkey=\(openKey)")
                == "invalid PostgreSQL URL: sslkey \(openKey): has group or world access (mode 644): chmod 0600 it")
        #expect(refusal("&sslcert=\(cert)&sslkey=\(key)&sslrootcert=\(try SecondClusterTLS.file("ca.crt"))") == nil)
    }
}

@Suite("TLS to the second server is verified")
struct TLSVerificationTests {
    @Test func verifyFullWithTheRightCAConnectsOverTLS() async throws {
        let session = try await SecondClusterTLS.session(try SecondClusterTLS.url())
        #expect(session.ssl)
        #expect(session.clientDN == nil)
    }

    @Test func aClientCertificateIsPresented() async throws {
        let session = try await SecondClusterTLS.session(try SecondClusterTLS.url(clientCertificate: true))
        #expect(session.ssl)
        #expect(session.clientDN == "/CN=tenantplane-test-client")
    }

    @Test func aCertificateFromAnotherCAIsRefused() async throws {
        let wrongCA = try SecondClusterTLS.file("other-ca.crt")
        for mode in [PostgresURL.SSLMode.verifyFull, .verifyCA, .require] {
            let error = try await SecondClusterTLS.refusal(try SecondClusterTLS.url(sslMode: mode, rootCert: "other-ca.crt"))
            #expect(error.code == "database_tls_refused", "\(mode): \(error.message)")
            #expect(error.message.hasSuffix("its certificate is not signed by a CA in sslrootcert \(wrongCA)"), "\(error.message)")
        }
        // The system's trust store does not hold the throwaway CA either.
        let error = try await SecondClusterTLS.refusal(try SecondClusterTLS.url(rootCert: nil))
        #expect(error.message.hasSuffix("its certificate is not signed by a CA of the system's trust store"), "\(error.message)")
    }

    @Test func verifyFullRefusesAHostTheCertificateDoesNotName() async throws {
        let error = try await SecondClusterTLS.refusal(try SecondClusterTLS.url(host: "127.0.0.2"))
        #expect(error.code == "database_tls_refused")
        #expect(
            error.message.hasSuffix("its certificate does not name 127.0.0.2 (sslmode=verify-full checks the host name)"),
            "\(error.message)")
        // verify-ca checks the chain only; the DNS name in the certificate serves verify-full.
        #expect(try await SecondClusterTLS.session(try SecondClusterTLS.url(host: "127.0.0.2", sslMode: .verifyCA)).ssl)
        #expect(try await SecondClusterTLS.session(try SecondClusterTLS.url(host: "localhost")).ssl)
    }

    @Test func theServerRefusesSessionsWithoutTLS() async throws {
        let error = try await SecondClusterTLS.refusal(try SecondClusterTLS.url(sslMode: .disable, rootCert: nil))
        #expect(error.code == "database_authentication_failed", "\(error.message)")
    }

    @Test func serverAddChecksTheCertificateAndPgDumpExportsOverVerifyFull() async throws {
        try await ProvisioningFixture.with { fixture in
            let wrong = try SecondClusterTLS.url(rootCert: "other-ca.crt")
            let refused = try await fixture.cli.run("server", "add", "wrong-ca", "--url", wrong.withPassword)
            #expect(refused.exitCode == 1)
            #expect(refused.stderr.contains("its certificate is not signed by a CA in sslrootcert"), "\(refused.stderr)")

            try await fixture.addSecondServer()
            let listed = try await fixture.cli.run("server", "list", "--json")
            let servers = try #require(try listed.jsonObject() as? [[String: Any]])
            let second = try #require(servers.first { $0["name"] as? String == "second" }?["admin_url"] as? String)
            #expect(second.contains("sslmode=verify-full") && second.contains("sslrootcert="), "\(second)")
            #expect(!listed.stdout.contains(try #require(try ProvisioningFixture.secondClusterURL.password)))

            let slug = ProvisioningFixture.slug("tls")
            let work = try temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: work) }
            try await fixture.cleaningSecondCluster([slug]) {
                let created = try await fixture.cli.run("tenant", "create", slug, "--name", "TLS", "--server", "second")
                try #require(created.exitCode == 0, "\(created.stderr)")
                let archive = work.appendingPathComponent("tls.tar").path
                let exported = try await fixture.cli.run("tenant", "export", slug, "--out", archive)
                #expect(exported.exitCode == 0, "\(exported.stderr)")
                let imported = try await fixture.cli.run(
                    "tenant", "import", archive, "--as", ProvisioningFixture.slug("tls-copy"), "--server", "default")
                #expect(imported.exitCode == 0, "\(imported.stderr)")
            }
        }
    }
}
