import ControlPlane
import Core
import Foundation
import Provisioner
import Migrations

/// One tenant's line in a `backup --all` report.
public struct BackupOutcome: Sendable, Codable, Equatable {
    public var tenant: String
    public var file: String?
    public var bytes: Int64?
    public var durationMilliseconds: Int
    public var outcome: String
    public var error: String?
}

public struct FleetBackupReport: Sendable, Codable, Equatable {
    public var directory: String
    public var tenants: [BackupOutcome]
    public var succeeded: Int
    public var failed: Int
    public var bytes: Int64
    public var durationMilliseconds: Int
}

/// `backup --all`: an export of every active or suspended tenant into one directory, at
/// most `concurrency` at a time. A failing tenant is reported and the rest go
/// on. Files are named `{tenant}-{UTC time}.tar`, so runs never overwrite
/// each other.
public struct FleetBackup: Sendable {
    let context: BackupContext

    public init(context: BackupContext) {
        self.context = context
    }

    public func run(
        into directory: String, concurrency: Int, actor: ControlPlane.Actor, progress: ProgressReporter = { _ in }
    ) async throws -> FleetBackupReport {
        let started = ContinuousClock.now
        let directory = URL(fileURLWithPath: directory).standardizedFileURL.path
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw BackupError.fileSystem("cannot create \(directory): \(error.localizedDescription)")
        }
        let tenants = try await context.withControl { try await $0.tenants() }.filter { $0.status == .active || $0.status == .suspended }
        let stamp = Self.stamp(Date())
        let exporter = TenantExporter(context: context)
        var outcomes: [BackupOutcome] = []
        try await withThrowingTaskGroup(of: BackupOutcome.self) { group in
            var queue = tenants.makeIterator()
            func startNext() {
                guard let tenant = queue.next() else { return }
                group.addTask {
                    let begun = ContinuousClock.now
                    let file = "\(directory)/\(tenant.id)-\(stamp).tar"
                    do {
                        let report = try await exporter.export(
                            try TenantSlug(tenant.id), to: file, actor: actor)
                        return BackupOutcome(
                            tenant: tenant.id, file: file, bytes: report.bytes,
                            durationMilliseconds: (ContinuousClock.now - begun).milliseconds, outcome: "ok", error: nil)
                    } catch {
                        return BackupOutcome(
                            tenant: tenant.id, file: nil, bytes: nil,
                            durationMilliseconds: (ContinuousClock.now - begun).milliseconds, outcome: "failed",
                            error: OperatorFailure(error).message)
                    }
                }
            }
            for _ in 0..<max(1, concurrency) { startNext() }
            while let outcome = try await group.next() {
                outcomes.append(outcome)
                let failed = outcomes.filter { $0.outcome != "ok" }.count
                progress(
                    "[\(outcomes.count)/\(tenants.count)] \(outcome.tenant): \(outcome.outcome)"
                        + (outcome.error.map { " (\($0))" } ?? "") + (failed > 0 ? " — \(failed) failed so far" : ""))
                startNext()
            }
        }
        outcomes.sort { $0.tenant < $1.tenant }
        let failed = outcomes.filter { $0.outcome != "ok" }.count
        return FleetBackupReport(
            directory: directory, tenants: outcomes, succeeded: outcomes.count - failed, failed: failed,
            bytes: outcomes.compactMap(\.bytes).reduce(0, +),
            durationMilliseconds: (ContinuousClock.now - started).milliseconds)
    }

    static func stamp(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return formatter.string(from: date)
    }
}
