import ArgumentParser
import Config
import ControlPlane
import Core

extension Tenantplane {
    struct LLM: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "llm",
            abstract: "Manage the LLM catalog: providers, models, per-step defaults.",
            subcommands: [Provider.self, Model.self, Default.self, Resolve.self]
        )
    }
}

extension Tenantplane.LLM {
    struct Provider: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "provider",
            abstract: "LLM providers (claude, gemini, openai, local are built in).",
            subcommands: [Add.self, Update.self, List.self, SetKey.self, ClearKey.self]
        )

        struct SetKey: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "set-key",
                abstract: "Store a provider's API key (read from standard input), sealed in the control database.",
                discussion: """
                    The key is read from standard input, never from an argument (ps and the shell history \
                    would show it) nor from a terminal: printf '%s' "$KEY" | tenantplane llm provider set-key ID. \
                    It is sealed with AES-GCM under TENANTPLANE_MASTER_KEY, the provider id as authenticated \
                    data, so every replica and worker uses it. A tenant's call takes the tenant's own key \
                    (tenant secret set) first, then TENANTPLANE_<ID>_API_KEY from the process's environment, \
                    then this key.
                    """)

            @Argument(help: "Provider id.") var id: String
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let key = try KeyInput.read()
                    let context = try CommandContext()
                    let provider = try await context.withControl { store in
                        try await store.setProviderKey(id, key: key, secrets: context.secrets, actor: context.actor)
                    }
                    if output.json { try Output.json(provider) } else { Output.line("stored the key of provider \(provider.id)") }
                }
            }
        }

        struct ClearKey: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "clear-key",
                abstract: "Remove a provider's stored API key (TENANTPLANE_<ID>_API_KEY, where set, still applies).")

            @Argument(help: "Provider id.") var id: String
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let context = try CommandContext()
                    let provider = try await context.withControl { try await $0.clearProviderKey(id, actor: context.actor) }
                    if output.json { try Output.json(provider) } else { Output.line("cleared the key of provider \(provider.id)") }
                }
            }
        }

        struct Update: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "update",
                abstract: "Re-point a provider, the built-in ones too: its base URL, name or activity.")

            @Argument(help: "Provider id.") var id: String
            @Option(name: .customLong("base-url"), help: "API base URL (http:// or https://).") var baseURL: String?
            @Option(name: .long, help: "Display name.") var name: String?
            @Option(name: .long, help: "true or false: whether steps may use the provider.") var active: Bool?
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let context = try CommandContext()
                    let provider = try await context.withControl { store in
                        try await store.updateProvider(
                            id, change: ProviderChange(displayName: name, apiBaseURL: baseURL, isActive: active),
                            actor: context.actor)
                    }
                    if output.json { try Output.json(provider) } else { Output.line("updated provider \(provider.id)") }
                }
            }
        }

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "add", abstract: "Register a provider.")

            @Argument(help: "Provider id (a-z, 0-9, '_', '-').") var id: String
            @Option(name: .long, help: "Display name.") var name: String
            @Option(name: .customLong("base-url"), help: "API base URL (http:// or https://).") var baseURL: String?
            @Option(name: .long, help: "Wire protocol: openai, anthropic, gemini or local.")
            var style: String = "openai"
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    guard let style = ProviderStyle(rawValue: style) else {
                        throw ControlError.invalid("provider style must be openai, anthropic, gemini or local")
                    }
                    let context = try CommandContext()
                    let provider = try await context.withControl { store in
                        try await store.addProvider(
                            LLMProvider(id: id, displayName: name, apiBaseURL: baseURL, isActive: true, apiStyle: style),
                            actor: context.actor)
                    }
                    if output.json { try Output.json(provider) } else { Output.line("added provider \(provider.id)") }
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "list", abstract: "List providers, and whether each has a stored key (never the key).")
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let context = try CommandContext()
                    let providers = try await context.withControl { try await $0.providers() }
                    if output.json { return try Output.json(providers) }
                    Output.table(
                        ["ID", "NAME", "STYLE", "ACTIVE", "KEY SET", "BASE URL"],
                        providers.map {
                            [
                                $0.id, $0.displayName, $0.apiStyle?.rawValue ?? "-", $0.isActive ? "yes" : "no",
                                $0.keySet ? "yes" : "no", $0.apiBaseURL ?? "-",
                            ]
                        })
                }
            }
        }
    }

    struct Model: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "model",
            abstract: "LLM models, each of a provider and a class (pro or standard).",
            subcommands: [Add.self, List.self]
        )

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "add", abstract: "Register a model.")

            @Option(name: .long, help: "Provider id.") var provider: String
            @Option(name: .long, help: "Model name as the provider's API knows it.") var name: String
            @Option(name: .customLong("class"), help: "pro or standard.") var modelClass: String
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let modelClass = try ModelClass(validating: modelClass)
                    let context = try CommandContext()
                    let model = try await context.withControl { store in
                        try await store.addModel(providerId: provider, modelName: name, modelClass: modelClass, actor: context.actor)
                    }
                    if output.json {
                        try Output.json(model)
                    } else {
                        Output.line("added model \(model.modelName) (\(model.providerId), \(model.modelClass.rawValue))")
                    }
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "list", abstract: "List models.")
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let context = try CommandContext()
                    let models = try await context.withControl { try await $0.models() }
                    if output.json { return try Output.json(models) }
                    Output.table(
                        ["ID", "PROVIDER", "MODEL", "CLASS", "ACTIVE"],
                        models.map { [String($0.id), $0.providerId, $0.modelName, $0.modelClass.rawValue, $0.isActive ? "yes" : "no"] })
                }
            }
        }
    }

    struct Default: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "default",
            abstract: "Which provider and class each step uses (step * is the fallback for every other step).",
            subcommands: [Set.self, List.self]
        )

        struct Set: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "set",
                abstract: "Set a step's provider and model class.")

            @Argument(help: "Step name, or * for every step without its own default.") var step: String
            @Option(name: .long, help: "Provider id.") var provider: String
            @Option(name: .customLong("class"), help: "pro or standard.") var modelClass: String
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let modelClass = try ModelClass(validating: modelClass)
                    let context = try CommandContext()
                    let result = try await context.withControl { store in
                        try await store.setStepDefault(step: step, providerId: provider, modelClass: modelClass, actor: context.actor)
                    }
                    if output.json {
                        try Output.json(result)
                    } else {
                        Output.line("step \(result.step) uses \(result.providerId), class \(result.modelClass.rawValue)")
                    }
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "list", abstract: "List step defaults.")
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let context = try CommandContext()
                    let defaults = try await context.withControl { try await $0.stepDefaults() }
                    if output.json { return try Output.json(defaults) }
                    Output.table(["STEP", "PROVIDER", "CLASS"], defaults.map { [$0.step, $0.providerId, $0.modelClass.rawValue] })
                }
            }
        }
    }

    struct Resolve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "resolve",
            abstract: "Show which model a step would run with, and why.",
            discussion: """
                Rule: the step's own row of step_llm_defaults, else the fallback row (step *); then the \
                provider's first active model of that class. A step with neither row is an error.
                """
        )

        @Argument(help: "Step name.") var step: String
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await reportingFailures {
                let context = try CommandContext()
                let resolution = try await context.withControl { try await $0.resolveModel(step: step) }
                if output.json { return try Output.json(resolution) }
                let why = resolution.reason == .stepDefault ? "the step's default" : "the fallback default (step *)"
                Output.line(
                    "\(resolution.step): provider \(resolution.providerId), model \(resolution.modelName) (class \(resolution.modelClass.rawValue), from \(why))")
            }
        }
    }
}
