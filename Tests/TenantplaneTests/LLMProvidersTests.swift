import Core
import Foundation
import LLMProviders
import Logging
import Testing

@Suite("LLM providers: wire styles, retries, timeouts, secrets")
struct LLMProvidersTests {
    static let remoteStyles: [ProviderStyle] = [.openai, .anthropic, .gemini]
    /// Retries without waiting to speak of.
    static let fast = RetryPolicy(maxRetries: 3, baseDelay: .milliseconds(1), maxDelay: .milliseconds(5))

    static var quietLogger: Logger {
        var logger = Logger(label: "llm-tests")
        logger.logLevel = .warning
        return logger
    }

    /// Runs `body` with a gateway, shut down afterwards whatever happens (a
    /// client left running traps in debug builds).
    func withGateway<Value: Sendable>(
        policy: RetryPolicy = fast, maxResponseBytes: Int = LLMGateway.defaultMaxResponseBytes,
        logger: Logger = quietLogger, _ body: (LLMGateway) async throws -> Value
    ) async throws -> Value {
        let gateway = LLMGateway(policy: policy, maxResponseBytes: maxResponseBytes, logger: logger)
        let value: Value
        do {
            value = try await body(gateway)
        } catch {
            try await gateway.shutdown()
            throw error
        }
        try await gateway.shutdown()
        return value
    }

    /// Serves a fake of `style` and calls `body` with it, its base URL and a
    /// gateway.
    func withFake(
        _ style: ProviderStyle, policy: RetryPolicy = fast, maxResponseBytes: Int = LLMGateway.defaultMaxResponseBytes,
        logger: Logger = quietLogger, slowDelay: Duration = .seconds(1),
        _ body: @Sendable (FakeProvider, String, LLMGateway) async throws -> Void
    ) async throws {
        let fake = FakeProvider(style: style, slowDelay: slowDelay)
        try await withGateway(policy: policy, maxResponseBytes: maxResponseBytes, logger: logger) { gateway in
            try await fake.serve { baseURL in try await body(fake, baseURL, gateway) }
        }
    }

    /// The error a call throws, or nil when it succeeds.
    func failure(
        _ gateway: LLMGateway, _ model: String, _ endpoint: ProviderEndpoint, prompt: String = "hello world",
        maxOutputTokens: Int = 1024
    ) async -> ProviderError? {
        do {
            _ = try await gateway.complete(
                CompletionRequest(model: model, prompt: prompt, maxOutputTokens: maxOutputTokens), at: endpoint)
            return nil
        } catch {
            return error
        }
    }

    // MARK: Each remote style

    @Test(arguments: remoteStyles)
    func okAnswerIsParsed(style: ProviderStyle) async throws {
        try await withFake(style) { fake, baseURL, gateway in
            let (completion, retries) = try await gateway.complete(
                CompletionRequest(
                    model: "ok", prompt: "Summarise: \"quotes\" and ünïcode\nnew line", maxOutputTokens: 256),
                at: fake.endpoint(baseURL))
            #expect(completion.text == "echo(256): Summarise: \"quotes\" and ünïcode\nnew line")
            #expect(completion.inputTokens == 11)
            #expect(completion.outputTokens == 7)
            #expect(retries == 0)
            #expect(fake.requests(for: "ok") == 1)
        }
    }

    @Test(arguments: remoteStyles)
    func rateLimitedTwiceThenSucceedsAfterTwoRetries(style: ProviderStyle) async throws {
        try await withFake(style) { fake, baseURL, gateway in
            let (completion, retries) = try await gateway.complete(
                CompletionRequest(model: "flaky", prompt: "p"), at: fake.endpoint(baseURL))
            #expect(completion.text == "echo(1024): p")
            #expect(retries == 2)
            #expect(fake.requests(for: "flaky") == 3)
        }
    }

    @Test(arguments: remoteStyles)
    func serverErrorIsRetriedUntilRetriesRunOut(style: ProviderStyle) async throws {
        try await withFake(style) { fake, baseURL, gateway in
            let error = await failure(gateway, "down", fake.endpoint(baseURL))
            #expect(error == .serverError(500))
            #expect(error?.isRetryable == true)
            #expect(fake.requests(for: "down") == Self.fast.maxRetries + 1)
        }
    }

    @Test(arguments: remoteStyles)
    func slowAnswerTimesOutAndIsRetried(style: ProviderStyle) async throws {
        let policy = RetryPolicy(maxRetries: 1, baseDelay: .milliseconds(1), maxDelay: .milliseconds(5))
        try await withFake(style, policy: policy, slowDelay: .seconds(30)) { fake, baseURL, gateway in
            // Two seconds per attempt: with 200 ms, a loaded machine once gave up on the
            // second attempt before its request had even reached the fake.
            let error = await failure(gateway, "slow", fake.endpoint(baseURL, timeout: .seconds(2)))
            guard case .unreachable(let detail) = error else {
                Issue.record("expected unreachable, got \(String(describing: error))")
                return
            }
            #expect(detail.contains("within"))
            #expect(fake.requests(for: "slow") == 2)
            // Both attempts were given up on before the fake's thirty seconds ran out
            // (a wall-clock bound would depend on how loaded the machine is).
            #expect(fake.slowAnswersSent == 0)
        }
    }

    @Test(arguments: remoteStyles)
    func garbageIsMalformedAndNotRetried(style: ProviderStyle) async throws {
        try await withFake(style) { fake, baseURL, gateway in
            let error = await failure(gateway, "garbage", fake.endpoint(baseURL))
            #expect(error == .malformedResponse("the answer is not JSON"))
            #expect(fake.requests(for: "garbage") == 1)

            let shape = await failure(gateway, "wrong-shape", fake.endpoint(baseURL))
            guard case .malformedResponse(let detail) = shape else {
                Issue.record("expected malformedResponse, got \(String(describing: shape))")
                return
            }
            #expect(detail.contains("usage"), "\(detail)")
            #expect(fake.requests(for: "wrong-shape") == 1)
        }
    }

    @Test(arguments: remoteStyles)
    func badRequestIsRejectedAndNotRetried(style: ProviderStyle) async throws {
        try await withFake(style) { fake, baseURL, gateway in
            let error = await failure(gateway, "bad-request", fake.endpoint(baseURL))
            guard case .rejected(let status, let detail) = error else {
                Issue.record("expected rejected, got \(String(describing: error))")
                return
            }
            #expect(status == 400)
            #expect(detail.hasPrefix("model bad-request is not supported"), "\(detail)")
            #expect(detail.count <= 201)  // 200 and a "…"
            #expect(!detail.contains("\n"))
            #expect(error?.isRetryable == false)
            #expect(fake.requests(for: "bad-request") == 1)
        }
    }

    @Test(arguments: remoteStyles)
    func missingKeyFailsWithoutARequest(style: ProviderStyle) async throws {
        try await withFake(style) { fake, baseURL, gateway in
            for key in [nil, ""] as [String?] {
                let error = await failure(gateway, "ok", fake.endpoint(baseURL, apiKey: key))
                #expect(error == .missingAPIKey(providerID: FakeProvider.providerID))
                #expect(error?.code == "provider_not_configured")
                #expect(error?.httpStatus == 502)
                #expect(error?.message.contains("TENANTPLANE_FAKE_PROVIDER_API_KEY") == true)
            }
            #expect(fake.totalRequests == 0)
        }
    }

    @Test(arguments: remoteStyles)
    func wrongKeyIsRejectedWithoutEchoingIt(style: ProviderStyle) async throws {
        try await withFake(style) { fake, baseURL, gateway in
            let wrong = "sk-wrong-77aa88bb99cc00dd"
            let error = await failure(gateway, "ok", fake.endpoint(baseURL, apiKey: wrong))
            guard case .rejected(401, let detail) = error else {
                Issue.record("expected rejected(401), got \(String(describing: error))")
                return
            }
            #expect(detail.contains("Incorrect API key provided: [redacted]"), "\(detail)")
            Self.expectNoSecret(wrong, in: error)
            #expect(fake.requests(for: "ok") == 1)
        }
    }

    // MARK: Transport and configuration

    @Test func oversizedAnswerIsMalformed() async throws {
        try await withFake(.openai, maxResponseBytes: 4096) { fake, baseURL, gateway in
            let error = await failure(gateway, "big", fake.endpoint(baseURL))
            #expect(error == .malformedResponse("the answer is larger than 4096 bytes"))
            #expect(fake.requests(for: "big") == 1)
            // A small answer still fits.
            _ = try await gateway.complete(CompletionRequest(model: "ok", prompt: "p"), at: fake.endpoint(baseURL))
        }
    }

    @Test func redirectsAreNotFollowed() async throws {
        try await withFake(.anthropic) { fake, baseURL, gateway in
            let error = await failure(gateway, "redirect", fake.endpoint(baseURL))
            guard case .rejected(302, _) = error else {
                Issue.record("expected rejected(302), got \(String(describing: error))")
                return
            }
            #expect(fake.totalRequests == 1)
        }
    }

    @Test func refusedConnectionIsUnreachableAndRetryable() async throws {
        let fake = FakeProvider(style: .openai)
        // The fake's port, free again once it has stopped.
        let baseURL = try await fake.serve { baseURL in baseURL }
        let started = ContinuousClock.now
        let error = try await withGateway(
            policy: .init(maxRetries: 1, baseDelay: .milliseconds(1), maxDelay: .milliseconds(2))
        ) { gateway in
            await failure(gateway, "ok", fake.endpoint(baseURL, timeout: .seconds(30)))
        }
        // Refused at once, not dialled again and again until the timeout
        // (two attempts would take a minute; the margin is for a loaded machine).
        #expect(ContinuousClock.now - started < .seconds(15))
        guard case .unreachable(let detail) = error else {
            Issue.record("expected unreachable, got \(String(describing: error))")
            return
        }
        #expect(detail.hasPrefix(FakeProvider.providerID))
        #expect(!detail.contains("within"), "\(detail)")
        #expect(error?.isRetryable == true)
    }

    @Test func baseURLMustBeHTTPAndToleratesTrailingSlashAndVersion() async throws {
        try await withFake(.openai) { fake, baseURL, gateway in
            for bad in [nil, "", "ftp://127.0.0.1/", "127.0.0.1:8080", "http://", "http://127.0.0.1/?key=1"]
                as [String?]
            {
                let error = await failure(gateway, "ok", fake.endpoint("x").with(baseURL: bad))
                guard case .misconfigured(FakeProvider.providerID, _) = error else {
                    Issue.record("\(bad ?? "nil"): expected misconfigured, got \(String(describing: error))")
                    continue
                }
                #expect(error?.code == "provider_not_configured")
            }
            #expect(fake.totalRequests == 0)
            for good in [baseURL + "/", baseURL + "/v1", baseURL + "/v1/"] {
                let (completion, _) = try await gateway.complete(
                    CompletionRequest(model: "ok", prompt: "p"), at: fake.endpoint(good))
                #expect(completion.text == "echo(1024): p")
            }
        }
    }

    @Test func geminiModelNamesMustBePathSafe() async throws {
        try await withFake(.gemini) { fake, baseURL, gateway in
            for bad in ["bad/name", "a b", "ok?alt=sse", "ok#x", "..", "models/", "ünï"] {
                let error = await failure(gateway, bad, fake.endpoint(baseURL))
                guard case .rejected(400, _) = error else {
                    Issue.record("\(bad): expected rejected(400), got \(String(describing: error))")
                    continue
                }
            }
            #expect(fake.totalRequests == 0)
            // The `models/` prefix of Gemini's own listings is accepted.
            let (completion, _) = try await gateway.complete(
                CompletionRequest(model: "models/ok", prompt: "p"), at: fake.endpoint(baseURL))
            #expect(completion.text == "echo(1024): p")
            #expect(fake.requests(for: "ok") == 1)
        }
    }

    @Test func invalidRequestsAreRejectedBeforeSending() async throws {
        try await withFake(.openai) { fake, baseURL, gateway in
            #expect(
                await failure(gateway, " ", fake.endpoint(baseURL))
                    == .rejected(400, "the model name must not be empty"))
            let error = await failure(gateway, "ok", fake.endpoint(baseURL), maxOutputTokens: 0)
            #expect(error == .rejected(400, "maxOutputTokens must be at least 1"))
            #expect(fake.totalRequests == 0)
        }
    }

    // MARK: Local

    @Test func localProviderIsDeterministicAndOffline() async throws {
        try await withGateway { gateway in
            let endpoint = ProviderEndpoint(providerID: "local", style: .local)
            let request = CompletionRequest(model: "local-mini", prompt: "Write  a\tshort story about a lighthouse.")
            let first = try await gateway.complete(request, at: endpoint)
            let second = try await gateway.complete(request, at: endpoint)
            #expect(first.completion == second.completion)
            #expect(first.retries == 0)
            let lines = first.completion.text.split(separator: "\n", omittingEmptySubsequences: false)
            #expect(lines.count == 2)
            #expect(lines[0] == "[local-mini] Write  a\tshort story about a lighthouse.")
            #expect(lines[1].hasPrefix("digest: ") && lines[1].count == "digest: ".count + 12)
            #expect(lines[1].dropFirst("digest: ".count).allSatisfy { "0123456789abcdef".contains($0) })
            #expect(first.completion.inputTokens == 7)
            #expect(first.completion.outputTokens == 10)  // 8 words of the first line, 2 of the digest line

            // Another model or prompt gives another digest.
            let otherModel = try await gateway.complete(
                CompletionRequest(model: "local-maxi", prompt: request.prompt), at: endpoint)
            let otherPrompt = try await gateway.complete(
                CompletionRequest(model: "local-mini", prompt: request.prompt + "!"), at: endpoint)
            #expect(otherModel.completion.text.suffix(12) != first.completion.text.suffix(12))
            #expect(otherPrompt.completion.text.suffix(12) != first.completion.text.suffix(12))

            // Long prompts are cut to 200 characters; an empty one still counts a token.
            let long = try await gateway.complete(
                CompletionRequest(model: "m", prompt: String(repeating: "é", count: 500)), at: endpoint)
            #expect(long.completion.text.hasPrefix("[m] " + String(repeating: "é", count: 200) + "\ndigest: "))
            let empty = try await gateway.complete(CompletionRequest(model: "m", prompt: ""), at: endpoint)
            #expect(empty.completion.inputTokens == 1)
        }
    }

    // MARK: Secrets

    /// No error's message, description or reflection, and no log line, holds
    /// the key or any 10-character piece of it.
    @Test func keyNeverAppearsInErrorsEndpointsOrLogs() async throws {
        let (logger, lines) = CapturingLogHandler.logger()
        for style in Self.remoteStyles {
            try await withFake(style, logger: logger) { fake, baseURL, gateway in
                var errors: [ProviderError] = []
                for model in ["bad-request", "down", "garbage", "wrong-shape", "redirect", "nonexistent", "bad/name"] {
                    if let error = await failure(gateway, model, fake.endpoint(baseURL)) { errors.append(error) }
                }
                for (url, key) in [
                    (baseURL, "sk-has a space-123456789"), ("ftp://x", FakeProvider.apiKey), (nil, FakeProvider.apiKey),
                ] as [(String?, String)] {
                    if let error = await failure(gateway, "ok", fake.endpoint("x", apiKey: key).with(baseURL: url)) {
                        errors.append(error)
                        Self.expectNoSecret(key, in: error)
                    }
                }
                _ = try await gateway.complete(
                    CompletionRequest(model: "flaky", prompt: "p"), at: fake.endpoint(baseURL))
                #expect(errors.count == 10)
                for error in errors { Self.expectNoSecret(FakeProvider.apiKey, in: error) }

                let endpoint = fake.endpoint(baseURL)
                for text in [
                    "\(endpoint)", String(reflecting: endpoint), String(describing: endpoint),
                    {
                        var out = ""
                        dump(endpoint, to: &out)
                        return out
                    }(),
                ] {
                    #expect(!Self.holdsPiece(of: FakeProvider.apiKey, text), "\(text)")
                }
            }
        }
        let all = lines.all
        #expect(all.contains { $0.contains("llm.status=429") && $0.contains("llm.duration_ms=") })
        #expect(
            all.contains {
                $0.contains("llm.provider=\(FakeProvider.providerID)") && $0.contains("llm.model=flaky")
                    && $0.contains("llm.status=200")
            })
        for line in all { #expect(!Self.holdsPiece(of: FakeProvider.apiKey, line), "\(line)") }
    }

    static func expectNoSecret(
        _ key: String, in error: ProviderError?, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        guard let error else { return }
        for text in [error.message, error.description, String(reflecting: error), "\(error)"] {
            #expect(!holdsPiece(of: key, text), "\(text)", sourceLocation: sourceLocation)
        }
    }

    static func holdsPiece(of key: String, _ text: String) -> Bool {
        let characters = Array(key)
        guard characters.count >= 10 else { return text.contains(key) }
        return (0...(characters.count - 10)).contains { text.contains(String(characters[$0..<($0 + 10)])) }
    }

    // MARK: Policy and errors

    @Test func backoffIsExponentialWithFullJitterAndCapped() {
        let policy = RetryPolicy(maxRetries: 5, baseDelay: .milliseconds(200), maxDelay: .seconds(1))
        #expect(policy.delayCeiling(forRetry: 0) == .milliseconds(200))
        #expect(policy.delayCeiling(forRetry: 1) == .milliseconds(400))
        #expect(policy.delayCeiling(forRetry: 2) == .milliseconds(800))
        #expect(policy.delayCeiling(forRetry: 3) == .seconds(1))
        #expect(policy.delayCeiling(forRetry: 500) == .seconds(1))
        let delays = (0..<200).map { _ in policy.delay(forRetry: 2) }
        #expect(delays.allSatisfy { $0 >= .zero && $0 <= .milliseconds(800) })
        #expect(Set(delays).count > 100)  // jittered, not fixed
        #expect(RetryPolicy().maxRetries == 3)
        #expect(RetryPolicy().baseDelay == .milliseconds(200))
        #expect(RetryPolicy().maxDelay == .seconds(5))
        #expect(ProviderEndpoint(providerID: "p", style: .openai).timeout == .seconds(60))
        #expect(CompletionRequest(model: "m", prompt: "p").maxOutputTokens == 1024)
    }

    @Test func errorsMapToStatusCodeAndRetryability() {
        let cases: [(ProviderError, Int, String, Bool)] = [
            (.missingAPIKey(providerID: "openai"), 502, "provider_not_configured", false),
            (.misconfigured(providerID: "openai", "x"), 502, "provider_not_configured", false),
            (.unreachable("x"), 502, "provider_unreachable", true),
            (.rateLimited, 503, "provider_rate_limited", true),
            (.serverError(503), 502, "provider_server_error", true),
            (.rejected(400, "x"), 502, "provider_rejected", false),
            (.malformedResponse("x"), 502, "provider_malformed_response", false),
        ]
        for (error, status, code, retryable) in cases {
            #expect(error.httpStatus == status)
            #expect(error.code == code)
            #expect(error.isRetryable == retryable)
        }
        #expect(ProviderError.missingAPIKey(providerID: "openai").message.contains("TENANTPLANE_OPENAI_API_KEY"))
    }
}

extension ProviderEndpoint {
    func with(baseURL: String?) -> ProviderEndpoint {
        var copy = self
        copy.baseURL = baseURL
        return copy
    }
}
