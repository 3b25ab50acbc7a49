import Foundation
import Hummingbird
import Prometheus

/// `/metrics` (Prometheus text format) and `/openapi.yaml` (the API's contract).
/// Neither carries a tenant's data, so neither needs a key; `/metrics` may
/// still be put behind the admin token or on its own address (`FrontDoor`).
struct OperationsRoutes {
    let registry: PrometheusCollectorRegistry
    let openAPIDocument: ByteBuffer

    func register(on router: Router<APIRequestContext>, metrics: FrontDoor.MetricsExposure) {
        switch metrics {
        case .open: MetricsRoute(registry: registry).register(on: router.group())
        case .admin, .separate: break
        }
        router.get("openapi.yaml") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/yaml; charset=utf-8"],
                body: .init(byteBuffer: openAPIDocument))
        }
    }
}

/// The Prometheus figures of this process.
public struct MetricsRoute<Context: RequestContext>: Sendable {
    let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    public func register(on group: RouterGroup<Context>) {
        group.get("metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
    }
}

/// The OpenAPI 3.1 document, `Sources/HTTPAPI/openapi.yaml`, shipped as a
/// resource beside the binary.
enum OpenAPIDocument {
    static func load() throws -> ByteBuffer {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml") else {
            throw CocoaError(.fileNoSuchFile)
        }
        return ByteBuffer(bytes: try Data(contentsOf: url))
    }
}
