import Core
import Foundation
import Glibc
import HTTPTypes
import Hummingbird
import NIOCore

/// The addresses of the load balancers and proxies in front of the server
/// (`TENANTPLANE_TRUSTED_PROXIES`: addresses and CIDR ranges, comma-separated).
/// Only a connection from one of them may say, in `X-Forwarded-For`, whom it
/// forwards for; anyone else could name any address and so escape the limit on
/// failed authentication.
public struct TrustedProxies: Sendable {
    struct Range: Sendable {
        let network: [UInt8]
        let prefixLength: Int

        func contains(_ address: [UInt8]) -> Bool {
            guard address.count == network.count else { return false }
            var remaining = prefixLength
            for index in network.indices where remaining > 0 {
                let bits = min(8, remaining)
                let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
                if address[index] & mask != network[index] & mask { return false }
                remaining -= bits
            }
            return true
        }
    }

    let ranges: [Range]

    public static let none = TrustedProxies(ranges: [])

    init(ranges: [Range]) {
        self.ranges = ranges
    }

    /// Parses `10.0.0.0/8, 192.168.1.7, ::1`; an entry that is not an address
    /// or a range is an error naming it.
    public init(parsing list: String) throws(ConfigurationError) {
        var ranges: [Range] = []
        for entry in list.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !entry.isEmpty {
            let parts = entry.split(separator: "/", maxSplits: 1).map(String.init)
            guard let network = IPAddressBytes.parse(parts[0]) else {
                throw .invalid("TENANTPLANE_TRUSTED_PROXIES", "\(entry) is not an IP address or CIDR range")
            }
            let length = parts.count == 2 ? Int(parts[1]) : network.count * 8
            guard let length, (0...(network.count * 8)).contains(length) else {
                throw .invalid("TENANTPLANE_TRUSTED_PROXIES", "\(entry) has no valid prefix length")
            }
            ranges.append(Range(network: network, prefixLength: length))
        }
        self.ranges = ranges
    }

    func trusts(_ address: [UInt8]) -> Bool {
        ranges.contains { $0.contains(address) }
    }

    /// Who sent the request: the connection's peer, or, when that peer is a
    /// trusted proxy, the last address in `X-Forwarded-For` that is not one
    /// (the first hop the proxies saw; entries before it are the client's to
    /// write and worth nothing).
    func client(peer: SocketAddress?, forwardedFor: [String]) -> String {
        guard let peerText = peer?.ipAddress else { return "unknown" }
        guard let peerBytes = IPAddressBytes.parse(peerText), trusts(peerBytes) else { return peerText }
        let hops = forwardedFor.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
        for hop in hops.reversed() {
            guard let bytes = IPAddressBytes.parse(hop) else { return peerText }
            if !trusts(bytes) { return hop }
        }
        return peerText
    }
}

enum IPAddressBytes {
    /// The 4 or 16 bytes of an IPv4 or IPv6 address in text, or nil.
    static func parse(_ text: String) -> [UInt8]? {
        var v4 = [UInt8](repeating: 0, count: 4)
        if inet_pton(AF_INET, text, &v4) == 1 { return v4 }
        var v6 = [UInt8](repeating: 0, count: 16)
        if inet_pton(AF_INET6, text, &v6) == 1 { return v6 }
        return nil
    }
}

extension HTTPField.Name {
    public static let xForwardedFor = Self("X-Forwarded-For")!
}
