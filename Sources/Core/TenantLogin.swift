/// How a session inside a tenant's database logs in: as the tenant's own role,
/// with its own password, never as the server's admin narrowed by `SET ROLE`
/// (SQL in the tenant's database — a trigger, a function, a dump — can undo
/// `SET ROLE` with `RESET ROLE` or `SET SESSION AUTHORIZATION DEFAULT`, but
/// it cannot log in as anyone else).
public struct TenantLogin: Sendable, Hashable {
    public let slug: TenantSlug
    /// The tenant's role, its password and its database on the tenant's server.
    public let url: PostgresURL

    /// `server` is any URL of the tenant's PostgreSQL server (its admin URL):
    /// only its host, port and TLS settings (`sslmode`, its files) are kept.
    public init(slug: TenantSlug, password: String, server: PostgresURL) {
        self.slug = slug
        url = server.with(user: slug.roleName, password: password).with(database: slug.databaseName)
    }

    /// Settings every tenant session starts with, as startup options. They win
    /// over `ALTER ROLE … SET` and `ALTER DATABASE … SET`, which the tenant's
    /// own SQL may have issued: a persisted `search_path` or
    /// `statement_timeout` must not steer or break tenantplane's statements.
    /// `pg_catalog` is searched first without being named (naming it first
    /// would make it where unqualified `CREATE`s go), and `pg_temp` comes
    /// last, so a temporary table cannot shadow a table of ours.
    public static let pinnedSettings: [(name: String, value: String)] = [
        ("search_path", "public,pg_temp"),
        ("statement_timeout", "0"),
        ("lock_timeout", "0"),
        ("idle_in_transaction_session_timeout", "0"),
    ]

    /// The startup `options` value (libpq's `PGOPTIONS`): the pinned settings,
    /// with `overrides` (same names) replacing theirs.
    public static func startupOptions(overriding overrides: [(name: String, value: String)] = []) -> String {
        let replaced = Dictionary(overrides.map { ($0.name, $0.value) }, uniquingKeysWith: { $1 })
        return pinnedSettings.map { "-c \($0.name)=\(replaced[$0.name] ?? $0.value)" }.joined(separator: " ")
    }
}
