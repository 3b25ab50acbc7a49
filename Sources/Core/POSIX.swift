#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call's errno.
public struct Errno: Error, Sendable {
    public let code: CInt

    public init(code: CInt) {
        self.code = code
    }
}

/// Thin, EINTR-safe wrappers over the system calls the artifact store and
/// the tar code use.
public enum POSIX {
    public static func retrying(_ call: () -> CInt) -> CInt {
        while true {
            let result = call()
            if result == -1, errno == EINTR { continue }
            return result
        }
    }

    public static func retrying(_ call: () -> Int) -> Int {
        while true {
            let result = call()
            if result == -1, errno == EINTR { continue }
            return result
        }
    }

    public static func describe(_ code: CInt) -> String {
        String(cString: strerror(code)).lowercased()
    }

    public static func openat(_ directory: CInt, _ name: String, _ flags: CInt, _ mode: mode_t = 0) -> CInt {
        retrying { name.withCString { systemOpenat(directory, $0, flags, mode) } }
    }

    /// Writes every byte or returns the errno that stopped it (0 on success).
    public static func writeAll(_ descriptor: CInt, _ bytes: UnsafeRawBufferPointer) -> CInt {
        guard var address = bytes.baseAddress else { return 0 }
        var remaining = bytes.count
        while remaining > 0 {
            let written = retrying { write(descriptor, address, remaining) }
            if written < 0 { return errno }
            if written == 0 { return EIO }
            address += written
            remaining -= written
        }
        return 0
    }

    /// Reads the whole file from offset 0 through `descriptor` (never its
    /// shared file offset) in chunks of `chunkSize`; returns the bytes read.
    public static func readAll(
        _ descriptor: CInt, chunkSize: Int = 1 << 20, _ body: (UnsafeRawBufferPointer) -> Void
    ) -> Result<Int, Errno> {
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 16)
        defer { scratch.deallocate() }
        var offset = 0
        while true {
            let count = retrying { pread(descriptor, scratch.baseAddress, chunkSize, off_t(offset)) }
            if count < 0 { return .failure(Errno(code: errno)) }
            if count == 0 { return .success(offset) }
            body(UnsafeRawBufferPointer(rebasing: scratch[0..<count]))
            offset += count
        }
    }

    public static func isRegularFile(_ info: stat) -> Bool { (info.st_mode & S_IFMT) == S_IFREG }
}

#if canImport(Darwin)
private func systemOpenat(_ fd: CInt, _ path: UnsafePointer<CChar>, _ flags: CInt, _ mode: mode_t) -> CInt {
    Darwin.openat(fd, path, flags, mode)
}
#else
private func systemOpenat(_ fd: CInt, _ path: UnsafePointer<CChar>, _ flags: CInt, _ mode: mode_t) -> CInt {
    openat(fd, path, flags, mode)
}
#endif
