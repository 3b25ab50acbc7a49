import Core
import Crypto

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - POSIX I/O and hashing


func now() -> Int64 { Int64(time(nil)) }

func describe(_ operation: String, _ path: String, _ code: Int32) -> String {
    "\(operation) \(printable(path)): \(String(cString: strerror(code)))"
}

func readRetryingEINTR(_ descriptor: Int32, into buffer: UnsafeMutableRawBufferPointer, describing what: String) throws(ArchiveError) -> Int {
    while true {
        let count = read(descriptor, buffer.baseAddress, buffer.count)
        if count >= 0 { return count }
        let code = errno
        if code != EINTR { throw .io(describe("cannot read", what, code)) }
    }
}

func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, describing what: String) throws(ArchiveError) {
    var offset = 0
    while offset < bytes.count {
        let count = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
        if count >= 0 {
            offset += count
        } else {
            let code = errno
            if code != EINTR { throw .io(describe("cannot write", what, code)) }
        }
    }
}

