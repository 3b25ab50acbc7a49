/// A setting a component needs and did not get, or got wrong; raised where the
/// value is needed (so it lives here, below every component), named by the
/// environment variable an operator sets.
public enum ConfigurationError: OperatorError, Equatable {
    public enum Setting: Sendable, Equatable {
        case controlURL, masterKey, adminToken
    }

    case missing(Setting)
    case invalid(String, String)

    public var httpStatus: Int { 500 }
    public var code: String { "configuration_error" }
    public var message: String {
        switch self {
        case .missing(.controlURL):
            "TENANTPLANE_CONTROL_URL is not set: point it at the control database (postgres://user:password@host:5432/db), or run ops/up for a local one"
        case .missing(.masterKey):
            "TENANTPLANE_MASTER_KEY is not set: generate one with `head -c 32 /dev/urandom | base64` and set TENANTPLANE_MASTER_KEY (or TENANTPLANE_MASTER_KEY_FILE)"
        case .missing(.adminToken):
            "TENANTPLANE_ADMIN_TOKEN is not set: generate one with `head -c 32 /dev/urandom | base64` and set it"
        case .invalid(let key, let why):
            "\(key) \(why)"
        }
    }
}
