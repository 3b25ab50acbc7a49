import Core

public enum ProvisionerError: OperatorError {
    case creationFailed(slug: String, reason: String)
    /// A fresh copy of the template was not at this binary's migrations (the
    /// template moved under it); it was dropped, not made claimable.
    case spareNotCurrent(spare: String, version: Int, expected: Int)

    public var httpStatus: Int {
        switch self {
        case .creationFailed(_, let reason): reason.hasPrefix("cannot reach") ? 503 : 500
        case .spareNotCurrent: 409
        }
    }

    public var code: String {
        switch self {
        case .creationFailed: "provisioning_failed"
        case .spareNotCurrent: "spare_not_current"
        }
    }

    public var message: String {
        switch self {
        case .creationFailed(let slug, let reason):
            "creating tenant \(slug) failed: \(reason); it is marked failed, run the same create again to resume"
        case .spareNotCurrent(let spare, let version, let expected):
            "warm spare \(spare) was copied at schema version \(version), not \(expected) (the template changed during "
                + "the copy); it was dropped, and the next pass makes another"
        }
    }
}
