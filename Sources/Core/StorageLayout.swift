import Foundation

/// Where tenantplane keeps things under the storage root, in one place. A
/// tenant's tree is `{root}/{slug}`; everything else lives under names that
/// start with '.', which no tenant id does.
public struct StorageLayout: Sendable, Equatable {
    public let root: String

    public init(root: String) {
        self.root = root
    }

    /// `{root}/{slug}`: the tenant's artifact tree.
    public func tenantDirectory(_ slug: TenantSlug) -> String {
        path(slug.rawValue)
    }

    /// `{root}/.deleted/{slug}`: a deleted tenant's tree during its grace
    /// period. Renamed there, so a late writer finds no tenant directory.
    public func tombstone(_ slug: TenantSlug) -> String {
        path(".deleted", slug.rawValue)
    }

    /// `{root}/.orphaned/{slug}-{uuid}`: files found where a new tenant's tree
    /// belongs, kept aside for the operator rather than handed to the tenant.
    public func orphaned(_ slug: TenantSlug) -> String {
        path(".orphaned", "\(slug.rawValue)-\(UUID().uuidString.lowercased())")
    }

    /// `{root}/.archives/{job}.tar`: an export job's archive, kept for download.
    public func exportArchive(job: UUID) -> String {
        path(".archives", "\(job.uuidString.lowercased()).tar")
    }

    private func path(_ components: String...) -> String {
        components.reduce(URL(fileURLWithPath: root, isDirectory: true)) {
            $0.appendingPathComponent($1, isDirectory: false)
        }.path
    }
}
