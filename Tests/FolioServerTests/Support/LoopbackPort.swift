import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A TCP port on 127.0.0.1 that this test process listens on, so nothing
/// else can take it; `release()` gives it back.
final class LoopbackPort: @unchecked Sendable {
    let number: Int
    private var descriptor: Int32

    /// Listens on `port`, or on a port the kernel chooses when it is 0.
    init(_ port: Int = 0) throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                bind(descriptor, generic, length) == 0 && listen(descriptor, 1) == 0 && getsockname(descriptor, generic, &length) == 0
            }
        }
        guard bound else {
            close(descriptor)
            throw POSIXError(.init(rawValue: errno) ?? .EIO)
        }
        self.descriptor = descriptor
        number = Int(UInt16(bigEndian: address.sin_port))
    }

    /// A port that was free a moment ago, for a server under test to bind
    /// later: one below the kernel's range for outgoing connections (32768 and
    /// up), so no client socket of the tests running meanwhile can take it.
    static func free() throws -> Int {
        for _ in 0..<1000 {
            let candidate = Int.random(in: 10_000..<32_768)
            guard let port = try? LoopbackPort(candidate) else { continue }
            port.release()
            return candidate
        }
        throw POSIXError(.EADDRINUSE)
    }

    func release() {
        guard descriptor >= 0 else { return }
        close(descriptor)
        descriptor = -1
    }

    deinit { release() }
}
