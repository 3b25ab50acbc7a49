import ControlPlane
import Core
import Foundation

/// Who a tenant API key belongs to, and how to reach that tenant's database.
/// The password is the tenant role's own, opened from its sealed copy.
public struct TenantIdentity: Sendable, Equatable {
    public let tenantID: String
    public let keyID: String
    public let status: TenantStatus
    public let database: PostgresURL

    public init(tenantID: String, keyID: String, status: TenantStatus, database: PostgresURL) {
        self.tenantID = tenantID
        self.keyID = keyID
        self.status = status
        self.database = database
    }

    /// The identity of a tenant that serves (its role password opened), or
    /// why it does not: the one rule for the key resolver and the run engine.
    init(serving tenant: TenantDatabase, keyID: String, secrets: SecretBox) throws(TenantAccessError) {
        switch tenant.status {
        case .active: break
        case .suspended: throw .suspended
        default: throw .notServing(tenant.status)
        }
        guard let sealed = tenant.sealedRolePassword else { throw .notServing(tenant.status) }
        guard let url = try? PostgresURL(tenant.databaseUrl) else { throw .databaseUnavailable }
        guard let password = try? secrets.open(sealed, owner: tenant.tenantID) else { throw .databaseUnavailable }
        self.init(
            tenantID: tenant.tenantID, keyID: keyID, status: .active, database: url.with(user: url.user, password: password))
    }
}

/// Why a tenant request cannot be served. None of them names another tenant or
/// echoes the key.
public enum TenantAccessError: OperatorError, Equatable {
    case unknownKey
    /// This client address failed authentication too often; it may try again
    /// after that many seconds.
    case tooManyFailures(retryAfter: Int)
    case suspended
    case notServing(TenantStatus)
    case budgetExhausted
    case tenantBusy
    case databaseUnavailable
    /// The tenant's database is read-only while it is moved (offline, or an
    /// online move's fence this process was not told about).
    case writesPaused
    case controlUnavailable
    case shuttingDown

    public var httpStatus: Int {
        switch self {
        case .unknownKey: 401
        case .tooManyFailures: 429
        case .suspended, .notServing: 403
        case .budgetExhausted, .tenantBusy, .databaseUnavailable, .writesPaused, .controlUnavailable, .shuttingDown: 503
        }
    }

    public var code: String {
        switch self {
        case .unknownKey: "unauthorized"
        case .tooManyFailures: "too_many_failed_attempts"
        case .suspended: "tenant_suspended"
        case .notServing: "tenant_not_serving"
        case .budgetExhausted: "connection_budget_exhausted"
        case .tenantBusy: "tenant_connections_busy"
        case .databaseUnavailable: "tenant_database_unavailable"
        case .writesPaused: "tenant_writes_paused"
        case .controlUnavailable: "control_unavailable"
        case .shuttingDown: "shutting_down"
        }
    }

    /// The `Retry-After` a client gets with a 429 (every 503 gets 1 s).
    public var retryAfterSeconds: Int? {
        if case .tooManyFailures(let seconds) = self { return seconds }
        return nil
    }

    public var message: String {
        switch self {
        case .unknownKey:
            "missing, unknown or revoked API key (Authorization: Bearer <tenant API key>)"
        case .tooManyFailures(let seconds):
            "too many failed authentications from this address; retry in \(seconds) s"
        case .suspended:
            "this tenant is suspended"
        case .notServing(let status):
            "this tenant is \(status.rawValue) and does not serve requests"
        case .budgetExhausted:
            "every tenant connection is in use; retry shortly"
        case .tenantBusy:
            "every connection of this tenant is in use; retry shortly"
        case .databaseUnavailable:
            "this tenant's database is unavailable; retry shortly"
        case .writesPaused:
            "this tenant's data is being moved; writes are paused (reads go on), retry shortly"
        case .controlUnavailable:
            "the control database did not answer in time; retry shortly"
        case .shuttingDown:
            "the server is shutting down"
        }
    }
}
