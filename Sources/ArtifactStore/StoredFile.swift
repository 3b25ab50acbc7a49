/// A file the store has written: where (relative to the storage root), its
/// sha256 as lowercase hex, and its size in bytes.
public struct StoredFile: Sendable, Equatable {
    public let path: String
    public let digest: String
    public let size: Int

    public init(path: String, digest: String, size: Int) {
        self.path = path
        self.digest = digest
        self.size = size
    }
}

/// One artifact of a step, as `TenantArtifacts.artifacts(run:step:)` lists it.
public struct ArtifactEntry: Sendable, Equatable {
    public let name: String
    /// `{tenant}/{run}/{step}/artifacts/{name}`, relative to the storage root.
    public let path: String
    public let size: Int
    /// sha256 as lowercase hex.
    public let digest: String

    public init(name: String, path: String, size: Int, digest: String) {
        self.name = name
        self.path = path
        self.size = size
        self.digest = digest
    }
}
