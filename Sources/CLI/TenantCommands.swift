import ArgumentParser
import Config
import ControlPlane
import Core
import Foundation
import Provisioner
import Runtime

extension Tenantplane {
    struct Tenant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tenant",
            abstract:
                "Create, inspect, suspend, resume, delete, undelete, export, import and move tenants; manage their API keys and provider keys.",
            subcommands: [
                Create.self, List.self, Show.self, Suspend.self, Resume.self, Delete.self, Undelete.self, Key.self,
                Secret.self, Export.self, Import.self, Move.self,
            ]
        )
    }
}

extension Tenantplane.Tenant {
    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Create a tenant: its login role, its own database, its schema.",
            discussion: """
                Resumable: a creation cut short (crash, server down) is finished by running the same command \
                again. A warm spare of the server is claimed when one is ready (see `tenantplane spares`); \
                otherwise the database is copied from the server's tenantplane_template (kept at the latest \
                tenant migration), and when that is impossible it is created empty and migrated. The output \
                says which (`origin` and `origin_note` in --json). Placement: the active server with the most free capacity, unless --server is given.
                """
        )

        @Argument(help: "Tenant id: 3-40 of a-z, 0-9, '-'; starts with a letter.") var slug: String
        @Option(name: .long, help: "Display name.") var name: String
        @Option(name: .long, help: "Database server to place it on.") var server: String?
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await reportingFailures {
                let slug = try TenantSlug(slug)
                let context = try CommandContext()
                let provisioner = try Provisioner(settings: context.settings, logger: context.logger)
                let outcome = try await provisioner.create(slug, name: name, server: server, actor: context.actor)
                if output.json { return try Output.json(outcome) }
                if let note = outcome.templateNote { Output.note("tenantplane: note: \(note)") }
                let how = switch outcome.origin {
                case .template: "copied from the template"
                case .refreshedTemplate: "copied from the template (refreshed to the latest migration first)"
                case .migratedFromEmpty: "created empty and migrated (template not used)"
                case .existing: "an interrupted creation finished"
                case .spare: "a warm spare, claimed"
                }
                Output.line(
                    "created tenant \(outcome.tenant.id) on server \(outcome.tenant.server ?? "-") at schema version \(outcome.tenant.schemaVersion ?? 0) (\(how))")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List tenants (deleted ones with --all).")
        @Flag(name: .long, help: "Include deleted tenants.") var all = false
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await reportingFailures {
                let context = try CommandContext()
                let tenants = try await context.withControl { try await $0.tenants(includingDeleted: all) }
                if output.json { return try Output.json(tenants) }
                Output.table(
                    ["ID", "STATUS", "SERVER", "SCHEMA", "NAME"],
                    tenants.map {
                        [$0.id, $0.status.rawValue, $0.server ?? "-", $0.schemaVersion.map(String.init) ?? "-", $0.name]
                    })
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one tenant.")
        @Argument(help: "Tenant id.") var slug: String
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await reportingFailures {
                let slug = try TenantSlug(slug)
                let context = try CommandContext()
                let tenant = try await context.withControl { try await $0.requireTenant(slug) }
                if output.json { return try Output.json(tenant) }
                Output.line("id:             \(tenant.id)")
                Output.line("name:           \(tenant.name)")
                Output.line("status:         \(tenant.status.rawValue)")
                Output.line("server:         \(tenant.server ?? "-")")
                Output.line("schema_version: \(tenant.schemaVersion.map(String.init) ?? "-")")
                Output.line("database_url:   \(tenant.databaseUrl)")
                if let error = tenant.lastError { Output.line("last_error:     \(error)") }
                if let due = tenant.purgeAfter {
                    Output.line("purge_after:    \(due.formatted(.iso8601)) (tenant undelete \(tenant.id) until then)")
                }
            }
        }
    }

    /// Runs one lifecycle change of a tenant and prints the tenant after it.
    static func change(
        _ rawSlug: String,
        json: Bool,
        done verb: String,
        _ body: (Provisioner, TenantSlug, ControlPlane.Actor) async throws -> TenantRecord
    ) async throws {
        try await reportingFailures {
            let slug = try TenantSlug(rawSlug)
            let context = try CommandContext()
            let provisioner = try Provisioner(settings: context.settings, logger: context.logger)
            let tenant = try await body(provisioner, slug, context.actor)
            if json { try Output.json(tenant) } else { Output.line("\(verb) tenant \(tenant.id)") }
        }
    }

    struct Suspend: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "suspend",
            abstract: "Suspend a tenant: its role can no longer log in and its open sessions end.")
        @Argument(help: "Tenant id.") var slug: String
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await Tenantplane.Tenant.change(slug, json: output.json, done: "suspended") {
                try await $0.suspend($1, actor: $2)
            }
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "resume", abstract: "Lift a tenant's suspension.")
        @Argument(help: "Tenant id.") var slug: String
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await Tenantplane.Tenant.change(slug, json: output.json, done: "resumed") {
                try await $0.resume($1, actor: $2)
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "delete",
            abstract: "Delete a tenant: stop it now, purge it after the grace period (or now).",
            discussion: """
                The tenant's work stops at once: its API answers no more, workers stop claiming its runs, its \
                role can no longer log in (CONNECT revoked, sessions ended) and its storage tree is renamed to \
                a tombstone. For TENANTPLANE_DELETE_GRACE (default 7d) it can be brought back exactly as it \
                was with `tenantplane tenant undelete`. Then the server's reconciler purges it: database, \
                role, storage tree, the export-job archives kept for it, its keys; the control row stays as \
                `deleted`, with an audit entry of what was removed. --purge-now purges at once. Files written \
                by `backup --out DIR` are the operator's and are not touched. A delete or purge cut short \
                finishes when run again, or by the server's reconciler.
                """)
        @Argument(help: "Tenant id.") var slug: String
        @Option(name: .long, help: "The tenant id again, to confirm.") var confirm: String
        @Flag(name: .customLong("purge-now"), help: "Purge at once instead of after the grace period (cannot be undone).")
        var purgeNow = false
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await Tenantplane.Tenant.change(slug, json: output.json, done: purgeNow ? "purged" : "deleted (undelete possible during the grace period)") {
                try await $0.delete($1, confirmation: confirm, purgeNow: purgeNow, actor: $2)
            }
        }
    }

    struct Undelete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "undelete",
            abstract: "Bring back a tenant deleted within its grace period: rows, files, keys and status.")
        @Argument(help: "Tenant id.") var slug: String
        @OptionGroup var output: JSONFlag

        func run() async throws {
            try await Tenantplane.Tenant.change(slug, json: output.json, done: "undeleted") {
                try await $0.undelete($1, actor: $2)
            }
        }
    }

    struct Key: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "key",
            abstract: "Tenant API keys (only their SHA-256 hashes are stored).",
            subcommands: [Create.self, List.self, Revoke.self]
        )

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "create",
                abstract: "Issue a key; it is printed once, never again.")
            @Argument(help: "Tenant id.") var slug: String
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let slug = try TenantSlug(slug)
                    let context = try CommandContext()
                    let format = APIKeyFormat(masterKey: try context.settings.requireMasterKey())
                    let key = try await context.withControl {
                        try await $0.issueKey(for: slug, format: format, actor: context.actor)
                    }
                    if output.json { return try Output.json(key) }
                    Output.line("id:  \(key.id)")
                    Output.line("key: \(key.key)")
                    Output.note("tenantplane: store the key now; it cannot be shown again")
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "list",
                abstract: "List a tenant's keys (ids and dates, never the keys).")
            @Argument(help: "Tenant id.") var slug: String
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let slug = try TenantSlug(slug)
                    let context = try CommandContext()
                    let keys = try await context.withControl { try await $0.apiKeys(for: slug) }
                    if output.json { return try Output.json(keys) }
                    let formatter = ISO8601DateFormatter()
                    Output.table(
                        ["ID", "CREATED", "REVOKED"],
                        keys.map { [$0.id, formatter.string(from: $0.createdAt), $0.revokedAt.map(formatter.string(from:)) ?? "-"] })
                }
            }
        }

        struct Revoke: AsyncParsableCommand {
            static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revoke a key by its id.")
            @Argument(help: "Key id (key_…).") var keyID: String
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let context = try CommandContext()
                    let key = try await context.withControl { try await $0.revokeKey(keyID, actor: context.actor) }
                    if output.json { try Output.json(key) } else { Output.line("revoked key \(key.id) of tenant \(key.tenantId)") }
                }
            }
        }
    }
}

extension Tenantplane.Tenant {
    struct Secret: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "secret",
            abstract: "A tenant's own LLM provider keys, used for its calls before any other.",
            subcommands: [Set.self, Clear.self, List.self]
        )

        struct Set: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "set",
                abstract: "Store the tenant's own key for a provider (read from standard input), sealed.",
                discussion: """
                    The key is read from standard input, never from an argument nor from a terminal: \
                    printf '%s' "$KEY" | tenantplane tenant secret set SLUG --provider ID. It is sealed with \
                    AES-GCM under TENANTPLANE_MASTER_KEY, the tenant and provider ids as authenticated data. \
                    The tenant's calls to that provider use it before TENANTPLANE_<ID>_API_KEY and the \
                    provider's stored key. The purge of the tenant removes it.
                    """)

            @Argument(help: "Tenant id.") var slug: String
            @Option(name: .long, help: "Provider id.") var provider: String
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let slug = try TenantSlug(slug)
                    let key = try KeyInput.read()
                    let context = try CommandContext()
                    let stored = try await context.withControl { store in
                        try await store.setTenantProviderKey(
                            slug, provider: provider, key: key, secrets: context.secrets, actor: context.actor)
                    }
                    if output.json { return try Output.json(stored) }
                    Output.line("stored tenant \(stored.tenantId)'s own key for provider \(stored.providerId)")
                }
            }
        }

        struct Clear: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "clear",
                abstract: "Remove the tenant's own key for a provider; its calls fall back to the provider's key.")

            @Argument(help: "Tenant id.") var slug: String
            @Option(name: .long, help: "Provider id.") var provider: String
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let slug = try TenantSlug(slug)
                    let context = try CommandContext()
                    let cleared = try await context.withControl { store in
                        try await store.clearTenantProviderKey(slug, provider: provider, actor: context.actor)
                    }
                    if output.json { return try Output.json(cleared) }
                    Output.line("cleared tenant \(cleared.tenantId)'s own key for provider \(cleared.providerId)")
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "list",
                abstract: "List the providers a tenant has its own key for (never the keys).")

            @Argument(help: "Tenant id.") var slug: String
            @OptionGroup var output: JSONFlag

            func run() async throws {
                try await reportingFailures {
                    let slug = try TenantSlug(slug)
                    let context = try CommandContext()
                    let keys = try await context.withControl { try await $0.tenantProviderKeys(slug) }
                    if output.json { return try Output.json(keys) }
                    let formatter = ISO8601DateFormatter()
                    Output.table(
                        ["PROVIDER", "CREATED", "UPDATED"],
                        keys.map {
                            [$0.providerId, $0.createdAt.map(formatter.string(from:)) ?? "-", $0.updatedAt.map(formatter.string(from:)) ?? "-"]
                        })
                }
            }
        }
    }
}
