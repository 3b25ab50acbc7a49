import Core
import Crypto

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - POSIX I/O (through Core's EINTR-safe wrappers)

func now() -> Int64 { Int64(time(nil)) }

func describe(_ operation: String, _ path: String, _ code: Int32) -> String {
    "\(operation) \(printable(path)): \(String(cString: strerror(code)))"
}

func readRetryingEINTR(_ descriptor: Int32, into buffer: UnsafeMutableRawBufferPointer, describing what: String) throws(ArchiveError) -> Int {
    let count = POSIX.retrying { read(descriptor, buffer.baseAddress, buffer.count) }
    guard count >= 0 else { throw .io(describe("cannot read", what, errno)) }
    return count
}

func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, describing what: String) throws(ArchiveError) {
    let code = POSIX.writeAll(descriptor, bytes)
    guard code == 0 else { throw .io(describe("cannot write", what, code)) }
}

