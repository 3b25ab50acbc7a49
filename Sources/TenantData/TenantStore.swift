import Core
import Foundation
import Logging
import PostgresNIO

/// One tenant's database, reached through a connection the router leased for
/// that tenant. `actor` is who acts (`key:<key id>`), for the audit trail.
public struct TenantStore: Sendable {
    public let connection: LiveConnection
    public let actor: String
    public let logger: Logger

    public init(connection: PostgresConnection, actor: String, logger: Logger) {
        self.connection = LiveConnection(connection)
        self.actor = actor
        self.logger = logger
    }

    /// Timestamps leave the database already as RFC 3339 UTC text with
    /// microseconds, so a cursor built from one compares exactly.
    static func utc(_ column: String) -> String {
        "to_char(\(column) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    }

    /// The same for the specified `TIMESTAMP` (no time zone) columns, which hold
    /// the session's local time.
    static func utcLocal(_ column: String) -> String {
        utc("(\(column) AT TIME ZONE current_setting('TimeZone'))")
    }

    static func json(_ value: some Encodable) throws -> String {
        String(decoding: try JSONCoding.stable.encode(value), as: UTF8.self)
    }

    static func jsonValue(_ text: String?) -> JSONValue? {
        guard let text else { return nil }
        return try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }
}

/// An opaque page cursor: the sort key of the last item of a page.
struct PageCursor {
    let createdAt: String
    let id: String

    init(createdAt: String, id: String) {
        self.createdAt = createdAt
        self.id = id
    }

    init(_ token: String) throws(TenantDataError) {
        var base64 = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard token.utf8.count <= 200, let data = Data(base64Encoded: base64),
            let text = String(data: data, encoding: .utf8)
        else { throw .invalid("cursor is not one this server issued") }
        let parts = text.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, Self.isTimestamp(parts[0]), !parts[1].isEmpty,
            parts[1].utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) || $0 == 0x2D })
        else { throw .invalid("cursor is not one this server issued") }
        createdAt = parts[0]
        id = parts[1]
    }

    var token: String {
        Base64URL.encode(Array("\(createdAt)|\(id)".utf8))
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as `TenantStore.utc` writes it.
    static func isTimestamp(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 27 else { return false }
        let shape = Array("0000-00-00T00:00:00.000000Z".utf8)
        for (byte, expected) in zip(bytes, shape) {
            if expected == 0x30 {
                guard byte >= 0x30 && byte <= 0x39 else { return false }
            } else if byte != expected {
                return false
            }
        }
        return true
    }
}

/// A page size from `?limit=`: 1 to `maximum`, `standard` when absent.
public struct PageLimit: Sendable {
    public let value: Int

    public init(_ raw: String?, standard: Int = 50, maximum: Int = 200) throws(TenantDataError) {
        guard let raw else {
            value = standard
            return
        }
        guard let number = Int(raw), (1...maximum).contains(number) else {
            throw .invalid("limit must be a whole number from 1 to \(maximum)")
        }
        value = number
    }
}
