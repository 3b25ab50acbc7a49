import Core
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import LLMProviders
import Logging
import Synchronization
import Testing

/// A provider API of one style, served live on loopback. Its behaviour is
/// chosen by the request's model name:
///
/// - `ok`: answers `echo(<max tokens>): <prompt>`, 11 tokens in, 7 out
/// - `slow`: the same, after `slowDelay`
/// - `flaky`: 429 on this fake's first two `flaky` requests, then as `ok`
/// - `down`: always 500
/// - `garbage`: 200 with a body that is not JSON
/// - `wrong-shape`: 200 with JSON that has the text but no usage
/// - `big`: 200 with a 64 KiB answer
/// - `redirect`: 302 to another path
/// - `bad-request`: 400 with the style's error JSON, whose message echoes the
///   key (in full and partly masked, as some providers do) and runs long
///
/// A wrong or missing key gets 401 with an error that echoes what was sent.
final class FakeProvider: Sendable {
    static let apiKey = "sk-fake-4f9a2c7e1b8d6053SECRET"
    static let providerID = "fake-provider"

    let style: ProviderStyle
    let apiKey: String
    let slowDelay: Duration
    private let counts = Mutex<[String: Int]>([:])
    private let slowAnswers = Mutex(0)
    private let slowInFlight = Mutex((now: 0, peak: 0))

    init(style: ProviderStyle, apiKey: String = FakeProvider.apiKey, slowDelay: Duration = .seconds(1)) {
        self.style = style
        self.apiKey = apiKey
        self.slowDelay = slowDelay
    }

    /// Requests received for a model (counted before the key is checked).
    func requests(for model: String) -> Int { counts.withLock { $0[model, default: 0] } }

    var totalRequests: Int { counts.withLock { $0.values.reduce(0, +) } }

    /// Answers to `slow` the fake got as far as sending, after their delay.
    var slowAnswersSent: Int { slowAnswers.withLock { $0 } }

    /// The most `slow` requests the fake held at once.
    var peakSlowInFlight: Int { slowInFlight.withLock { $0.peak } }

    /// Serves the fake on 127.0.0.1 and runs `body` with its base URL.
    func serve<Value: Sendable>(_ body: @Sendable (_ baseURL: String) async throws -> Value) async throws -> Value {
        let router = Router()
        switch style {
        case .openai:
            router.post("/v1/chat/completions") { request, _ in try await self.answer(request, pathModel: nil) }
        case .anthropic:
            router.post("/v1/messages") { request, _ in try await self.answer(request, pathModel: nil) }
        case .gemini:
            router.post("/v1beta/models/:target") { request, context in
                let target = context.parameters.get("target") ?? ""
                guard target.hasSuffix(":generateContent") else {
                    return Self.json(404, ["error": ["message": "no such method"]])
                }
                return try await self.answer(request, pathModel: String(target.dropLast(":generateContent".count)))
            }
        case .local:
            break
        }
        var logger = Logger(label: "fake-provider")
        logger.logLevel = .warning
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: logger)
        return try await app.test(.live) { client in
            try await body("http://127.0.0.1:\(client.port!)")
        }
    }

    /// The endpoint the gateway should use for this fake.
    func endpoint(_ baseURL: String, apiKey: String? = FakeProvider.apiKey, timeout: Duration = .seconds(60))
        -> ProviderEndpoint
    {
        ProviderEndpoint(
            providerID: Self.providerID, style: style, baseURL: baseURL, apiKey: apiKey, timeout: timeout)
    }

    // MARK: Answers

    private struct Asked {
        var model: String
        var prompt: String
        var maxTokens: Int
    }

    private func answer(_ request: Request, pathModel: String?) async throws -> Response {
        let buffer = try await request.body.collect(upTo: 1 << 20)
        let json = (try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView))) as? [String: Any]
        guard let json, let asked = parse(json, pathModel: pathModel) else {
            return error(422, "fake: the request does not have the \(style.rawValue) shape")
        }
        let count = counts.withLock { counts in
            counts[asked.model, default: 0] += 1
            return counts[asked.model]!
        }
        if let failure = checkAuthorization(request) { return failure }

        switch asked.model {
        case "ok", "models/ok":
            return success(asked)
        case "nul":
            return success(Asked(model: asked.model, prompt: "before\u{0000}after", maxTokens: asked.maxTokens))
        case "slow":
            slowInFlight.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now) }
            defer { slowInFlight.withLock { $0.now -= 1 } }
            try await Task.sleep(for: slowDelay)
            slowAnswers.withLock { $0 += 1 }
            return success(asked)
        case "flaky":
            return count <= 2 ? error(429, "slow down") : success(asked)
        case "down":
            return error(500, "internal error")
        case "garbage":
            return Response(
                status: .ok, headers: [.contentType: "text/html"],
                body: .init(byteBuffer: ByteBuffer(string: "<html>upstream proxy says hello</html>")))
        case "wrong-shape":
            switch style {
            case .anthropic: return Self.json(200, ["content": [["type": "text", "text": "hi"]]])
            case .gemini: return Self.json(200, ["candidates": [["content": ["parts": [["text": "hi"]]]]]])
            default: return Self.json(200, ["choices": [["message": ["content": "hi"]]]])
            }
        case "big":
            return success(Asked(model: asked.model, prompt: String(repeating: "x", count: 64 << 10), maxTokens: 1))
        case "redirect":
            return Response(status: .found, headers: [.location: "/elsewhere"])
        case "bad-request":
            let tail = String(repeating: "more detail ", count: 40)
            return error(
                400, "model bad-request is not supported (key \(apiKey), i.e. \(apiKey.prefix(14))***)\n\(tail)")
        default:
            return error(404, "model \(asked.model) does not exist")
        }
    }

    private func parse(_ json: [String: Any], pathModel: String?) -> Asked? {
        switch style {
        case .openai, .anthropic:
            guard let model = json["model"] as? String, let maxTokens = json["max_tokens"] as? Int,
                let messages = json["messages"] as? [[String: Any]], messages.count == 1,
                messages[0]["role"] as? String == "user", let prompt = messages[0]["content"] as? String
            else { return nil }
            return Asked(model: model, prompt: prompt, maxTokens: maxTokens)
        case .gemini:
            guard let model = pathModel, let contents = json["contents"] as? [[String: Any]], contents.count == 1,
                contents[0]["role"] as? String == "user", let parts = contents[0]["parts"] as? [[String: Any]],
                let prompt = parts.first?["text"] as? String,
                let maxTokens = (json["generationConfig"] as? [String: Any])?["maxOutputTokens"] as? Int
            else { return nil }
            return Asked(model: model, prompt: prompt, maxTokens: maxTokens)
        case .local:
            return nil
        }
    }

    private func checkAuthorization(_ request: Request) -> Response? {
        let sent: String?
        switch style {
        case .openai:
            let header = request.headers[.authorization] ?? ""
            sent = header.hasPrefix("Bearer ") ? String(header.dropFirst("Bearer ".count)) : nil
        case .anthropic:
            guard request.headers[HTTPField.Name("anthropic-version")!] == "2023-06-01" else {
                return error(400, "anthropic-version header missing")
            }
            sent = request.headers[HTTPField.Name("x-api-key")!]
        case .gemini:
            if request.uri.query?.contains("key=") == true { return error(400, "key in the query string") }
            sent = request.headers[HTTPField.Name("x-goog-api-key")!]
        case .local:
            sent = nil
        }
        guard sent == apiKey else {
            return error(401, "Incorrect API key provided: \(sent ?? "none"). Find your key in your account.")
        }
        return nil
    }

    private func success(_ asked: Asked) -> Response {
        let head = "echo(\(asked.maxTokens)): "
        switch style {
        case .anthropic:
            return Self.json(
                200,
                [
                    "id": "msg_1", "type": "message", "role": "assistant",
                    "content": [
                        ["type": "text", "text": head], ["type": "thinking", "thinking": "not part of the text"],
                        ["type": "text", "text": asked.prompt],
                    ],
                    "stop_reason": "end_turn", "usage": ["input_tokens": 11, "output_tokens": 7],
                ])
        case .gemini:
            return Self.json(
                200,
                [
                    "candidates": [
                        [
                            "content": ["role": "model", "parts": [["text": head], ["text": asked.prompt]]],
                            "finishReason": "STOP",
                        ]
                    ],
                    "usageMetadata": ["promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18],
                ])
        default:
            return Self.json(
                200,
                [
                    "id": "chatcmpl-1", "object": "chat.completion",
                    "choices": [
                        [
                            "index": 0, "message": ["role": "assistant", "content": head + asked.prompt],
                            "finish_reason": "stop",
                        ]
                    ],
                    "usage": ["prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18],
                ])
        }
    }

    /// An error in the style's own shape.
    private func error(_ status: Int, _ message: String) -> Response {
        switch style {
        case .anthropic:
            Self.json(status, ["type": "error", "error": ["type": "invalid_request_error", "message": message]])
        case .gemini:
            Self.json(status, ["error": ["code": status, "message": message, "status": "INVALID_ARGUMENT"]])
        default:
            Self.json(status, ["error": ["message": message, "type": "invalid_request_error"]])
        }
    }

    private static func json(_ status: Int, _ object: [String: Any]) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object)) ?? Data()
        return Response(
            status: .init(code: status), headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// A log handler that keeps every line (message and metadata) it is given.
struct CapturingLogHandler: LogHandler {
    final class Lines: Sendable {
        private let lines = Mutex<[String]>([])
        func append(_ line: String) { lines.withLock { $0.append(line) } }
        var all: [String] { lines.withLock { $0 } }
    }

    let lines: Lines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        lines.append("\(event.level) \(event.message) \(fields)")
    }

    static func logger() -> (Logger, Lines) {
        let lines = Lines()
        var logger = Logger(label: "llm-tests") { _ in CapturingLogHandler(lines: lines) }
        logger.logLevel = .trace
        return (logger, lines)
    }
}

extension FakeProvider {
    /// Registers the fake as provider `fake-provider` (openai style) with
    /// `models` (class pro), over the admin API.
    static func register(_ api: TenantAPIFixture, baseURL: String, models: [String] = ["slow"]) async throws {
        let admin = TestServer.adminHeaders
        let provider = try await api.client.execute(
            uri: "/admin/llm/providers", method: .post, headers: admin,
            body: ByteBuffer(string: #"{"id":"fake-provider","display_name":"Fake","api_base_url":"\#(baseURL)","api_style":"openai"}"#))
        try #require(provider.status == .created)
        for name in models {
            let model = try await api.client.execute(
                uri: "/admin/llm/models", method: .post, headers: admin,
                body: ByteBuffer(string: #"{"provider_id":"fake-provider","model_name":"\#(name)","model_class":"pro"}"#))
            try #require(model.status == .created)
        }
    }
}
