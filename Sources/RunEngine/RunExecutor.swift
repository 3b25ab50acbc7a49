import ArtifactStore
import ControlPlane
import Core
import Foundation
import LLMProviders
import Logging
import PostgresNIO
import TenantData
import TenantRouter

/// Executes one claimed run of one tenant, step by step, while the lease holds.
/// Completed steps are skipped (their outputs read back, digest verified), so a
/// run taken over after a crash or retried after a failure never repeats one.
struct RunExecutor: Sendable {
    let tenant: TenantIdentity
    let artifacts: TenantArtifacts
    let pools: TenantPools
    let control: ControlPool
    let secrets: SecretBox
    let gateway: LLMGateway
    /// The process's TENANTPLANE_<ID>_API_KEY for a provider id.
    let providerKey: @Sendable (String) -> String?
    let providerTimeout: Duration
    let retriesPerCall: Int
    let owner: String
    let logger: Logger

    func store<Result: Sendable>(_ body: @Sendable @escaping (TenantStore) async throws -> Result) async throws -> Result {
        let owner = self.owner
        let logger = self.logger
        return try await pools.withConnection(for: tenant, priority: .worker) { connection in
            try await body(TenantStore(connection: connection, actor: "worker:" + owner, logger: logger))
        }
    }

    /// A data exception or integrity violation (SQLSTATE classes 22 and 23):
    /// the statement is wrong for its values, not the database unavailable.
    static func isRefusedValue(_ error: any Error) -> Bool {
        guard let state = error.sqlState else { return false }
        return state.hasPrefix("22") || state.hasPrefix("23")
    }

    func execute(_ run: ClaimedRun) async throws {
        let completed = try await store { try await $0.completedOutputs(of: run.id) }
        var outputs: [String: String] = [:]
        for step in run.steps {
            try Task.checkCancellation()
            if let reference = completed[step] {
                guard let text = await readBack(step: step, reference) else {
                    try await fail(run, step: step, StepFailure.unreadableOutput(step: step, why: "its file does not match its recorded digest"), model: nil, retries: 0)
                    return
                }
                outputs[step] = text
                continue
            }
            let id = run.id
            let owner = self.owner
            guard try await store({ try await $0.startStep(run: id, step: step, owner: owner) }) else {
                logger.info("run no longer held; stopping", metadata: ["run": "\(run.id)"])
                return
            }
            var model: String?
            var retries = 0
            do {
                let (text, result) = try await perform(step, of: run, outputs: outputs, model: &model, retries: &retries)
                let recorded: Bool
                do {
                    recorded = try await store { try await $0.completeStep(run: id, step: step, owner: owner, result: result) }
                } catch where Self.isRefusedValue(error) {
                    // Running the step again would call the provider again and
                    // be refused again: the step fails, with the reason.
                    throw StepFailure.unrecordable(error.serverMessage ?? "PostgreSQL refused a value")
                }
                guard recorded else { return }
                outputs[step] = text
            } catch is CancellationError {
                throw CancellationError()
            } catch let failure as StepFailure {
                try await fail(run, step: step, failure, model: model, retries: retries)
                return
            }
            if run.config.pauseAfter.contains(step), step != run.steps.last {
                try await store { try await $0.finishRun(run: id, owner: owner, as: .paused) }
                return
            }
        }
        let id = run.id
        let owner = self.owner
        try await store { try await $0.finishRun(run: id, owner: owner, as: .completed) }
    }

    /// Prompt, model, provider call, stored output: the step's whole work.
    private func perform(
        _ step: String, of run: ClaimedRun, outputs: [String: String], model: inout String?, retries: inout Int
    ) async throws -> (String, StepResult) {
        guard let prompt = try await store({ try await $0.activePrompt(step: step) }) else {
            throw StepFailure.noPrompt(step: step)
        }
        let override = run.config.models[step]
        let (resolution, provider, apiKey) = try await resolve(step, override: override)
        model = resolution.modelName
        let rendered = try PromptTemplate.render(prompt.content, input: run.input, outputs: outputs)
        let style = provider.apiStyle ?? .local
        let endpoint = ProviderEndpoint(
            providerID: provider.id, style: style, baseURL: provider.apiBaseURL, apiKey: apiKey,
            timeout: providerTimeout)
        let completion: Completion
        do {
            (completion, retries) = try await gateway.complete(
                CompletionRequest(model: resolution.modelName, prompt: rendered), at: endpoint)
        } catch {
            if Task.isCancelled { throw CancellationError() }
            retries = error.isRetryable ? retriesPerCall : 0
            throw StepFailure.provider(error.message)
        }
        let document = OutputDocument(
            step: step, provider: provider.id, model: resolution.modelName, text: completion.text,
            usage: .init(inputTokens: completion.inputTokens, outputTokens: completion.outputTokens))
        let stored: StoredFile
        do {
            let path = try artifacts.outputPath(run: run.id, step: step)
            let owner = self.owner
            stored = try await artifacts.writeOutput(run: run.id, step: step, contents: try document.encoded()) { digest in
                switch try await store({ try await $0.judgeFoundOutput(run: run.id, path: path, digest: digest, owner: owner) }) {
                case .recorded: .recorded
                case .unrecorded: .unrecorded
                case .notHolder: .notHolder
                }
            }
        } catch {
            throw StepFailure.storage(OperatorFailure(error).message)
        }
        let result = StepResult(
            model: resolution.modelName, inputTokens: completion.inputTokens, outputTokens: completion.outputTokens,
            retries: retries, output: StepOutputReference(path: stored.path, digest: stored.digest),
            summary: document.summary, characters: completion.text.count)
        return (completion.text, result)
    }

    /// The model, its provider and the key the call is made with (see
    /// `ControlStore.providerCredential`), in one control round trip.
    private func resolve(_ step: String, override: String?) async throws -> (ModelResolution, LLMProvider, String?) {
        let tenantID = tenant.tenantID
        let secrets = self.secrets
        let environmentKey = providerKey
        do {
            return try await control.run { store in
                let resolution = try await store.resolveModel(step: step, override: override)
                guard let provider = try await store.provider(id: resolution.providerId), provider.isActive else {
                    throw ControlError.conflict("provider \(resolution.providerId) is not active")
                }
                let key = try await store.providerCredential(
                    provider: provider.id, tenant: tenantID, secrets: secrets, environmentKey: environmentKey(provider.id))
                return (resolution, provider, key)
            }
        } catch let error as any OperatorError where !(error is ControlUnavailable) {
            throw StepFailure.noModel(error.message)
        }
    }

    private func readBack(step: String, _ reference: StepOutputReference) async -> String? {
        do {
            let bytes = try await artifacts.readVerified(path: reference.path, digest: reference.digest)
            return try JSONDecoder().decode(OutputDocument.self, from: Data(bytes)).text
        } catch {
            logger.error(
                "stored output failed verification", metadata: ["step": "\(step)", "path": "\(reference.path)"])
            return nil
        }
    }

    private func fail(_ run: ClaimedRun, step: String, _ failure: StepFailure, model: String?, retries: Int) async throws {
        let id = run.id
        let owner = self.owner
        let message = failure.description
        logger.notice("step failed", metadata: ["run": "\(run.id)", "step": "\(step)", "error": "\(message)"])
        try await store {
            try await $0.failStep(run: id, step: step, owner: owner, error: message, model: model, retries: retries)
        }
    }
}
