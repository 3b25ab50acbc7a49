import Core
import Foundation
import Hummingbird
import NIOCore

/// The request context of every route: JSON in snake_case, bodies up to 1 MiB.
public struct APIRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by the tenant middleware on `/v1` routes, nowhere else.
    var tenant: TenantSession?
    /// The connection's peer, which the failed-authentication limit counts by.
    let peer: SocketAddress?

    public init(source: Source) {
        coreContext = .init(source: source)
        peer = source.channel.remoteAddress
    }

    public var maxUploadSize: Int { 1 << 20 }

    public var requestDecoder: JSONDecoder { APICoding.decoder }
    public var responseEncoder: JSONEncoder { APICoding.encoder }
}

enum APICoding {
    static var decoder: JSONDecoder { JSONCoding.snakeCaseDecoder }
    static var encoder: JSONEncoder { JSONCoding.snakeCase }
}
