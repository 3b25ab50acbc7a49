#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An open file descriptor, closed when the last reference goes.
final class Descriptor: Sendable {
    let rawValue: CInt

    init(_ rawValue: CInt) {
        self.rawValue = rawValue
    }

    deinit {
        _ = close(rawValue)
    }

    func status() -> stat? {
        var info = stat()
        return fstat(rawValue, &info) == 0 ? info : nil
    }
}
