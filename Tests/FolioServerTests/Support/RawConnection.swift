import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP connection to the server under test, for requests no HTTP
/// client would send: half a request head, a broken chunk size, a header
/// name with a space. Reading polls without blocking and sleeps between
/// polls: a blocking read would hold one of the few threads Swift
/// concurrency has, the same threads the server in this process answers on.
final class RawConnection: @unchecked Sendable {
    private let descriptor: Int32

    init(port: Int) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw RawConnectionError(what: "socket", code: errno) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let code = errno
            close(descriptor)
            throw RawConnectionError(what: "connect", code: code)
        }
    }

    deinit {
        close(descriptor)
    }

    func send(_ text: String) throws {
        try send(Array(text.utf8))
    }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw RawConnectionError(what: "send", code: errno) }
            offset += sent
        }
    }

    /// Sends what the socket takes at once: how many bytes, 0 when its buffers are full.
    func sendWithoutWaiting(_ bytes: ArraySlice<UInt8>) -> Int {
        let sent = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        return max(sent, 0)
    }

    /// Everything the server sends until it closes the connection or `limit` passes.
    func receiveAll(within limit: Duration = .seconds(5)) async -> String {
        var received: [UInt8] = []
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            guard let chunk = receiveNow() else { break }
            if chunk.isEmpty {
                try? await Task.sleep(for: .milliseconds(5))
            } else {
                received += chunk
            }
        }
        return String(decoding: received, as: UTF8.self)
    }

    /// Whether the server has closed the connection (reading gives end of file or a reset) within `limit`.
    func isClosedByServer(within limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        repeat {
            guard let chunk = receiveNow() else { return true }
            if chunk.isEmpty { try? await Task.sleep(for: .milliseconds(5)) }
        } while ContinuousClock.now < deadline
        return false
    }

    /// What has arrived, without waiting: empty when nothing has, nil once the peer has closed.
    private func receiveNow() -> [UInt8]? {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, 0) > 0 else { return [] }
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        return Array(buffer[0..<count])
    }
}

struct RawConnectionError: Error, CustomStringConvertible {
    var what: String
    var code: Int32
    var description: String { "\(what) failed: \(String(cString: strerror(code)))" }
}

/// A raw HTTP/1.1 (or 1.0) answer: the status, the headers (names lower-cased) and the body.
struct RawResponse {
    var status: Int
    var headers: [String: String]
    var body: String

    init?(_ text: String) {
        guard let split = text.range(of: "\r\n\r\n") else { return nil }
        let lines = text[..<split.lowerBound].components(separatedBy: "\r\n")
        guard let statusLine = lines.first, statusLine.hasPrefix("HTTP/1.1 ") || statusLine.hasPrefix("HTTP/1.0 "), let status = Int(statusLine.dropFirst(9).prefix(3)) else { return nil }
        self.status = status
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        self.headers = headers
        body = String(text[split.upperBound...])
    }
}
