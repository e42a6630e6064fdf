import Hummingbird
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers

/// Runs a fake vendor on a free loopback port for the length of `body`:
/// `make` builds the fake once the port is known, and every request on
/// `method` that `path` matches (`**`: any) goes to `answer`.
func withLoopbackFake<Fake: Sendable, T: Sendable>(
    _ label: String, method: HTTPRequest.Method = .post, path: String = "**",
    make: @escaping @Sendable (Int) -> Fake,
    answer: @escaping @Sendable (Fake, Request) async throws -> Response,
    _ body: @escaping @Sendable (Fake) async throws -> T
) async throws -> T {
    let fake = NIOLockedValueBox<Fake?>(nil)
    let router = Router()
    router.on(RouterPath(path), method: method) { request, _ in try await answer(fake.withLockedValue { $0! }, request) }
    // Quiet: pooled client connections still open at shutdown are expected.
    var logger = Logger(label: label)
    logger.logLevel = .critical
    let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)), logger: logger)
    let result = NIOLockedValueBox<T?>(nil)
    try await app.test(.live) { client in
        let server = make(client.port!)
        fake.withLockedValue { $0 = server }
        let value = try await body(server)
        result.withLockedValue { $0 = value }
    }
    return result.withLockedValue { $0! }
}
