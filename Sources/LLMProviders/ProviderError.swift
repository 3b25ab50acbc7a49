import Core

/// Why a call to a provider failed. Messages are safe to show: they never hold
/// an API key (texts taken from a provider's answer are redacted and trimmed
/// before they get here), a request body or a URL.
///
/// All are failures of an upstream service, so all answer 502 except a rate
/// limit (503: try again later).
public enum ProviderError: OperatorError, Equatable {
    /// The provider has no API key configured.
    case missingAPIKey(providerID: String)
    /// The endpoint cannot be used: no base URL, a base URL that is not
    /// http(s), a key that cannot go in a header, a non-positive timeout.
    case misconfigured(providerID: String, String)
    /// Connection refused or reset, or no complete answer within the timeout.
    case unreachable(String)
    /// The provider answered 429.
    case rateLimited
    /// The provider answered 5xx.
    case serverError(Int)
    /// The provider refused the request (any other 4xx, or an unfollowed
    /// redirect), with the provider's own explanation; or the request could not
    /// be sent as asked (status 400, e.g. a model name a URL path cannot hold).
    case rejected(Int, String)
    /// A success status with an answer that is not what the style promises.
    case malformedResponse(String)

    /// Whether trying again later may succeed: unreachable, rate limited and
    /// server errors are; everything else would fail the same way again.
    public var isRetryable: Bool {
        switch self {
        case .unreachable, .rateLimited, .serverError: true
        case .missingAPIKey, .misconfigured, .rejected, .malformedResponse: false
        }
    }

    public var httpStatus: Int {
        switch self {
        case .rateLimited: 503
        default: 502
        }
    }

    public var code: String {
        switch self {
        case .missingAPIKey, .misconfigured: "provider_not_configured"
        case .unreachable: "provider_unreachable"
        case .rateLimited: "provider_rate_limited"
        case .serverError: "provider_server_error"
        case .rejected: "provider_rejected"
        case .malformedResponse: "provider_malformed_response"
        }
    }

    public var message: String {
        switch self {
        case .missingAPIKey(let providerID):
            "LLM provider \(providerID) has no API key: set \(ProviderEndpoint.apiKeyVariable(for: providerID))"
        case .misconfigured(let providerID, let reason):
            "LLM provider \(providerID) is misconfigured: \(reason)"
        case .unreachable(let detail):
            "LLM provider unreachable: \(detail)"
        case .rateLimited:
            "LLM provider is rate limiting requests (HTTP 429); try again later"
        case .serverError(let status):
            "LLM provider failed with HTTP \(status)"
        case .rejected(let status, let detail):
            "LLM provider rejected the request (HTTP \(status)): "
                + ProviderText.oneLine(detail, limit: ProviderText.detailLimit)
        case .malformedResponse(let detail):
            "LLM provider sent a malformed answer: \(detail)"
        }
    }
}
