import Core
import Foundation
/// Where and how to reach one provider: its id (`llm_providers.id`), wire
/// style, base URL (`llm_providers.api_base_url`, without the API version:
/// `https://api.openai.com`) and API key (`TENANTPLANE_<ID>_API_KEY`).
///
/// The key never appears in the endpoint's description, debug description or
/// mirror, so logging or dumping an endpoint is safe.
public struct ProviderEndpoint: Sendable {
    public var providerID: String
    public var style: ProviderStyle
    /// `http://` or `https://`; a trailing slash, and a trailing version
    /// segment the style adds anyway (`/v1`, `/v1beta`), are tolerated.
    /// Not needed for `local`.
    public var baseURL: String?
    /// Not needed for `local`.
    public var apiKey: String?
    /// The whole exchange of one attempt — connect, send, read the answer —
    /// must finish within this. Default 60 s.
    public var timeout: Duration

    public init(
        providerID: String, style: ProviderStyle, baseURL: String? = nil, apiKey: String? = nil,
        timeout: Duration = .seconds(60)
    ) {
        self.providerID = providerID
        self.style = style
        self.baseURL = baseURL
        self.apiKey = apiKey
        self.timeout = timeout
    }

    /// The environment variable that holds a provider's API key, as
    /// `Settings.providerKeys` reads it: `TENANTPLANE_<ID>_API_KEY`.
    public static func apiKeyVariable(for providerID: String) -> String {
        "TENANTPLANE_\(providerID.uppercased().replacingOccurrences(of: "-", with: "_"))_API_KEY"
    }
}

extension ProviderEndpoint: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        let key = apiKey.map { $0.isEmpty ? "empty" : "set" } ?? "none"
        return "ProviderEndpoint(\(providerID), \(style.rawValue), baseURL: \(baseURL ?? "none"), apiKey: \(key), "
            + "timeout: \(timeout))"
    }

    public var debugDescription: String { description }

    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "providerID": providerID, "style": style, "baseURL": baseURL as Any,
                "apiKey": apiKey == nil ? "none" : "<redacted>", "timeout": timeout,
            ],
            displayStyle: .struct)
    }
}
