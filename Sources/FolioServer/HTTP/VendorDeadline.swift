import AsyncHTTPClient
import NIOCore

/// A vendor call that took longer than its whole deadline.
struct VendorDeadlineExceeded: Error, CustomStringConvertible {
    var description: String { "the vendor's answer did not arrive in time" }
}

/// Runs `work` for at most `timeout`: then it is cancelled and `VendorDeadlineExceeded` thrown.
func withinDeadline<T: Sendable>(_ timeout: TimeAmount, _ work: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await work() }
        group.addTask {
            try await Task.sleep(nanoseconds: UInt64(max(timeout.nanoseconds, 0)))
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let result = first else { throw VendorDeadlineExceeded() }
        return result
    }
}

extension HTTPClient {
    /// The client every vendor is called with. Redirects are refused: a vendor's credentials travel in headers
    /// of its own (`PLAID-SECRET`, `APCA-API-SECRET-KEY`) that AsyncHTTPClient does not strip on a redirect to
    /// another host, and a mail or an order redirected elsewhere is not one the vendor took. A connection must be
    /// made within 5 seconds, so that one never made fails as such (a mail that provably never left is sent
    /// again) rather than running into the call's whole deadline.
    static let vendors = HTTPClient(
        eventLoopGroupProvider: .singleton,
        configuration: HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(5))))

    /// Sends `request` and reads its whole body, all within `timeout`. AsyncHTTPClient's own timeout ends once
    /// the response's head has arrived: a vendor that stalls in the middle of the body would otherwise hold the
    /// caller (an order being priced, a job, a request joined to it) for as long as the connection stays open.
    func executeWhole(_ request: HTTPClientRequest, timeout: TimeAmount, upTo limit: Int) async throws -> (response: HTTPClientResponse, body: ByteBuffer) {
        try await withinDeadline(timeout) {
            let response = try await self.execute(request, timeout: timeout)
            return (response, try await response.body.collect(upTo: limit))
        }
    }
}
