import AsyncHTTPClient
import Core
import Foundation
import NIOCore
import NIOHTTP1

/// A request checked and built for one remote endpoint, ready to send (and
/// to send again on a retry).
struct PreparedCall: Sendable {
    let providerID: String
    let style: ProviderStyle
    let apiKey: String
    let timeout: Duration
    let request: HTTPClientRequest

    /// Checks the endpoint (key, base URL, timeout) and the model name before
    /// anything goes on the wire.
    init(_ completion: CompletionRequest, at endpoint: ProviderEndpoint) throws(ProviderError) {
        let format = Self.format(for: endpoint.style)
        providerID = endpoint.providerID
        style = endpoint.style
        guard let apiKey = endpoint.apiKey, !apiKey.isEmpty else {
            throw .missingAPIKey(providerID: endpoint.providerID)
        }
        guard apiKey.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw .misconfigured(
                providerID: providerID,
                "the API key holds characters an HTTP header cannot carry (spaces, control or non-ASCII characters)")
        }
        self.apiKey = apiKey
        guard endpoint.timeout > .zero else {
            throw .misconfigured(providerID: providerID, "the timeout must be positive")
        }
        timeout = endpoint.timeout
        let base = try Self.base(endpoint.baseURL, versionSegment: format.versionSegment, providerID: providerID)
        var request = HTTPClientRequest(url: base + (try format.path(for: completion.model)))
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "tenantplane")
        format.authorize(&request.headers, apiKey: apiKey)
        request.body = .bytes(ByteBuffer(bytes: try format.body(for: completion)))
        self.request = request
    }

    static func format(for style: ProviderStyle) -> any WireFormat.Type {
        switch style {
        case .openai, .local: OpenAIFormat.self  // `local` never goes on the wire
        case .anthropic: AnthropicFormat.self
        case .gemini: GeminiFormat.self
        }
    }

    /// The base URL without trailing slashes, and without a trailing version
    /// segment the style's paths add again. Messages never repeat the URL: it
    /// may hold credentials.
    static func base(_ raw: String?, versionSegment: String, providerID: String) throws(ProviderError) -> String {
        guard var base = raw?.trimmingCharacters(in: .whitespaces), !base.isEmpty else {
            throw .misconfigured(providerID: providerID, "no API base URL (llm_providers.api_base_url)")
        }
        while base.hasSuffix("/") { base.removeLast() }
        let lowered = base.lowercased()
        guard lowered.hasPrefix("http://") || lowered.hasPrefix("https://") else {
            throw .misconfigured(providerID: providerID, "the API base URL must start with http:// or https://")
        }
        guard let components = URLComponents(string: base), let host = components.host, !host.isEmpty,
            components.query == nil, components.fragment == nil
        else {
            throw .misconfigured(
                providerID: providerID,
                "the API base URL must be http(s)://host[:port][/path], without query or fragment")
        }
        if components.path.hasSuffix(versionSegment) { base.removeLast(versionSegment.count) }
        return base
    }

    var timeAmount: TimeAmount { .nanoseconds(Int64(min(timeout.nanoseconds, 9e18))) }

    var timedOut: ProviderError { .unreachable("\(providerID): no complete answer within \(timeout)") }

    func parse(_ body: [UInt8]) throws(ProviderError) -> Completion {
        try Self.format(for: style).completion(from: body)
    }

    /// A failure below HTTP: timeouts, refused or reset connections, TLS.
    func transportFailure(_ error: any Error) -> ProviderError {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout, .writeTimeout, .connectTimeout, .tlsHandshakeTimeout,
                .getConnectionFromPoolTimeout:
                return timedOut
            case .cancelled, .requestStreamCancelled:
                return .unreachable("\(providerID): the request was cancelled")
            case .remoteConnectionClosed:
                return .unreachable("\(providerID): the provider closed the connection")
            default:
                break
            }
        }
        if error is CancellationError { return .unreachable("\(providerID): the request was cancelled") }
        let detail = ProviderText.oneLine(ProviderText.redacting(apiKey, in: String(describing: error)), limit: 160)
        return .unreachable("\(providerID): connection failed: \(detail)")
    }
}
