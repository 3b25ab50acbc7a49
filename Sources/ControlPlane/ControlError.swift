import Core

/// Why an admin action on the control database was refused. Each specific
/// refusal has its own code (one HTTP status, one message), in the manner of
/// `PSQLError.Code`: a struct around a private enum, so a code can be added
/// without breaking a caller that switches on none of them.
public struct ControlError: OperatorError, Equatable {
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case notFound = "not_found"
            case alreadyExists = "already_exists"
            case invalid = "invalid_request"
            case conflict = "conflict"
            case tenantBusy = "tenant_busy"
            case serverFull = "server_full"
            case serverInactive = "server_inactive"
            case tenantBeingDeleted = "tenant_being_deleted"
            case importInterrupted = "import_interrupted"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        public static let notFound = Code(.notFound)
        public static let alreadyExists = Code(.alreadyExists)
        public static let invalid = Code(.invalid)
        /// The tenant or object is in a state the action does not apply to.
        public static let conflict = Code(.conflict)
        /// Another admin action holds the tenant.
        public static let tenantBusy = Code(.tenantBusy)
        /// The server (or every server) has no free capacity.
        public static let serverFull = Code(.serverFull)
        public static let serverInactive = Code(.serverInactive)
        /// The tenant is in its deletion grace period.
        public static let tenantBeingDeleted = Code(.tenantBeingDeleted)
        /// An import of the tenant was cut short and is not yet dropped.
        public static let importInterrupted = Code(.importInterrupted)

        public var description: String { base.rawValue }

        var httpStatus: Int {
            switch base {
            case .notFound: 404
            case .invalid: 400
            case .alreadyExists, .conflict, .tenantBusy, .serverFull, .serverInactive, .tenantBeingDeleted,
                .importInterrupted:
                409
            }
        }
    }

    public let kind: Code
    public let message: String

    public init(_ kind: Code, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var httpStatus: Int { kind.httpStatus }
    public var code: String { kind.description }

    public static func notFound(_ what: String) -> ControlError { ControlError(.notFound, what) }
    public static func alreadyExists(_ what: String) -> ControlError { ControlError(.alreadyExists, what) }
    public static func invalid(_ what: String) -> ControlError { ControlError(.invalid, what) }
    public static func conflict(_ what: String) -> ControlError { ControlError(.conflict, what) }
    public static func tenantBusy(_ what: String) -> ControlError { ControlError(.tenantBusy, what) }
    public static func serverFull(_ what: String) -> ControlError { ControlError(.serverFull, what) }
    public static func serverInactive(_ what: String) -> ControlError { ControlError(.serverInactive, what) }
    public static func tenantBeingDeleted(_ what: String) -> ControlError { ControlError(.tenantBeingDeleted, what) }
    public static func importInterrupted(_ what: String) -> ControlError { ControlError(.importInterrupted, what) }
}

extension DatabaseServer {
    /// The server may take one more tenant: active, with free capacity.
    public func requireRoomForATenant() throws(ControlError) {
        guard isActive else { throw .serverInactive("database server \(name) is not active") }
        guard freeCapacity > 0 else { throw .serverFull("database server \(name) is full") }
    }
}
