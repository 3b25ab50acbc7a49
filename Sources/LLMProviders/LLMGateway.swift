import AsyncHTTPClient
import Core
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// Calls language models. Owns one HTTP client (its connections are pooled and
/// shared by every provider); call `shutdown()` once when done with it.
///
/// Every attempt must finish — connect, send, read the whole answer — within
/// the endpoint's timeout; retryable failures (unreachable, 429, 5xx) are
/// retried per the policy, others fail at once. Redirects are not followed, so
/// a key is never sent anywhere but the configured base URL. A connection that
/// cannot be opened fails the attempt at once (the client does not keep
/// dialling in the background): the retry policy is the one place that waits.
///
/// Logs at debug the provider id, model, status, attempt and duration of each
/// attempt — never the key, the headers, the URL or the prompt.
public final class LLMGateway: Sendable {
    /// The largest answer read: 8 MiB.
    public static let defaultMaxResponseBytes = 8 << 20

    public let policy: RetryPolicy
    let maxResponseBytes: Int
    let logger: Logger
    let client: HTTPClient

    /// - Parameter maxConnectionsPerHost: calls to one provider host in flight
    ///   at once; it must follow the run engine's in-flight limit, or calls
    ///   queue inside the client (its default is 8).
    public init(
        policy: RetryPolicy = .init(), maxResponseBytes: Int = defaultMaxResponseBytes, maxConnectionsPerHost: Int = 8,
        logger: Logger
    ) {
        self.policy = policy
        self.maxResponseBytes = max(1, maxResponseBytes)
        self.logger = logger
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        // A refused connection fails the attempt at once, and the retry policy
        // decides what happens next; by default the client would keep dialling
        // until the timeout, so a dead provider cost the whole timeout per attempt.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = max(1, maxConnectionsPerHost)
        client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }

    /// Calls the provider, retrying retryable failures per policy. Returns the
    /// completion and how many retries it took; throws the last error when
    /// retries are exhausted (or the task is cancelled), or at once for one
    /// that is not retryable. `local` endpoints answer at once, offline.
    public func complete(
        _ request: CompletionRequest, at endpoint: ProviderEndpoint
    ) async throws(ProviderError) -> (completion: Completion, retries: Int) {
        try Self.validate(request)
        var metadata: Logger.Metadata = [
            "llm.provider": "\(endpoint.providerID)", "llm.style": "\(endpoint.style.rawValue)",
            "llm.model": "\(request.model)",
        ]
        guard endpoint.style.isRemote else {
            let completion = LocalProvider.complete(request)
            logger.debug("LLM call answered offline", metadata: metadata)
            return (completion, 0)
        }
        let call = try PreparedCall(request, at: endpoint)
        var retries = 0
        while true {
            let started = ContinuousClock.now
            let outcome = await attempt(call)
            let elapsed = ContinuousClock.now - started
            metadata["llm.attempt"] = "\(retries + 1)"
            metadata["llm.duration_ms"] = "\(Int(elapsed.nanoseconds / 1e6))"
            metadata["llm.status"] = "\(outcome.status.map(String.init) ?? "none")"
            let failure: ProviderError
            switch outcome.result {
            case .success(let completion):
                logger.debug("LLM call succeeded", metadata: metadata)
                return (completion, retries)
            case .failure(let error):
                failure = error
            }
            metadata["llm.error"] = "\(failure.code)"
            guard failure.isRetryable, retries < policy.maxRetries, !Task.isCancelled else {
                logger.debug("LLM call failed", metadata: metadata)
                throw failure
            }
            var delay = policy.delay(forRetry: retries)
            if let retryAfter = outcome.retryAfter { delay = max(delay, min(retryAfter, policy.maxDelay)) }
            metadata["llm.retry_in_ms"] = "\(Int(delay.nanoseconds / 1e6))"
            logger.debug("LLM call failed, retrying", metadata: metadata)
            metadata["llm.retry_in_ms"] = nil
            metadata["llm.error"] = nil
            retries += 1
            do {
                try await Task.sleep(for: delay)
            } catch {
                throw failure  // cancelled while waiting
            }
        }
    }

    /// Closes the HTTP client's connections. Call once, after the last call.
    public func shutdown() async throws {
        try await client.shutdown()
    }

    static func validate(_ request: CompletionRequest) throws(ProviderError) {
        guard !request.model.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw .rejected(400, "the model name must not be empty")
        }
        guard request.maxOutputTokens >= 1 else { throw .rejected(400, "maxOutputTokens must be at least 1") }
    }

    // MARK: One attempt

    struct Outcome: Sendable {
        var result: Result<Completion, ProviderError>
        var status: Int? = nil
        var retryAfter: Duration? = nil
    }

    /// One exchange, raced against the endpoint's timeout (the client's own
    /// deadline stops waiting at the response head, not at the end of the body).
    private func attempt(_ call: PreparedCall) async -> Outcome {
        await withTaskGroup(of: Outcome?.self) { group in
            group.addTask { await self.exchange(call) }
            group.addTask {
                do {
                    try await Task.sleep(for: call.timeout)
                } catch {
                    return nil
                }
                return Outcome(result: .failure(call.timedOut))
            }
            defer { group.cancelAll() }
            while let finished = await group.next() {
                if let outcome = finished { return outcome }
            }
            return Outcome(result: .failure(.unreachable("\(call.providerID): the request was cancelled")))
        }
    }

    private func exchange(_ call: PreparedCall) async -> Outcome {
        let response: HTTPClientResponse
        do {
            response = try await client.execute(call.request, deadline: .now() + call.timeAmount)
        } catch {
            return Outcome(result: .failure(call.transportFailure(error)))
        }
        let status = Int(response.status.code)
        let body: Result<ByteBuffer, any Error>
        do {
            body = .success(try await response.body.collect(upTo: maxResponseBytes))
        } catch {
            body = .failure(error)
        }
        var outcome = Outcome(result: .failure(.serverError(status)), status: status)
        switch (status, body) {
        case (200..<300, .success(let buffer)):
            do {
                outcome.result = .success(try call.parse(Array(buffer.readableBytesView)))
            } catch {
                outcome.result = .failure(error)
            }
        case (200..<300, .failure(let error)) where error is NIOTooManyBytesError:
            outcome.result = .failure(.malformedResponse("the answer is larger than \(maxResponseBytes) bytes"))
        case (200..<300, .failure(let error)):
            outcome.result = .failure(call.transportFailure(error))
        case (429, _):
            outcome.result = .failure(.rateLimited)
            outcome.retryAfter = response.headers.first(name: "retry-after")
                .flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
                .map { .seconds(max(0, $0)) }
        case (500..<600, _):
            outcome.result = .failure(.serverError(status))
        case (300..<400, _):
            outcome.result = .failure(
                .rejected(
                    status, "the provider redirects elsewhere; redirects are not followed, check the API base URL"))
        default:
            let bytes = (try? body.get()).map { Array($0.readableBytesView) } ?? []
            outcome.result = .failure(
                .rejected(status, ProviderText.errorDetail(from: bytes, status: status, apiKey: call.apiKey)))
        }
        return outcome
    }
}
