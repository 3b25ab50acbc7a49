import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A loopback TCP port nobody listens on: the kernel's pick for port 0,
/// released for the server under test to take. A random number could be a
/// port already in use, for one by a test's own connection to PostgreSQL.
func freeLoopbackPort() throws -> Int {
    let socketFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard socketFD >= 0 else { throw SetupError("cannot open a socket to find a free port") }
    defer { close(socketFD) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let found = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(socketFD, $0, length) == 0 && getsockname(socketFD, $0, &length) == 0
        }
    }
    guard found else { throw SetupError("cannot bind a loopback socket to find a free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}
