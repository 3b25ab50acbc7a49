import Foundation
import Hummingbird
import Prometheus

/// `/metrics` (Prometheus text format) and `/openapi.yaml` (the API's contract).
/// Neither carries a tenant's data, so neither needs a key.
struct OperationsRoutes {
    let registry: PrometheusCollectorRegistry
    let openAPIDocument: ByteBuffer

    func register(on router: Router<APIRequestContext>) {
        router.get("metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        }
        router.get("openapi.yaml") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/yaml; charset=utf-8"],
                body: .init(byteBuffer: openAPIDocument))
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
