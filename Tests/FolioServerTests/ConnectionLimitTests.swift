import Foundation
import HummingbirdTesting
import NIOConcurrencyHelpers
import NIOEmbedded
import Testing

@testable import FolioServer

/// Attacks on the HTTP layer over a real socket: connection exhaustion,
/// slow heads and bodies, and requests the HTTP decoder cannot read.
@Suite("Connections: limits, deadlines and unreadable requests")
struct ConnectionLimitTests {
    static let partialHead = "GET /health HTTP/1.1\r\nHost: folio.test\r\n"
    static let health = "GET /health HTTP/1.1\r\nHost: folio.test\r\nConnection: close\r\n\r\n"

    @Test("half-open connections past the limit cannot keep a fresh client out, and the server outlives them", arguments: TestDatabaseKind.all)
    func exhaustion(kind: TestDatabaseKind) async throws {
        // Deadlines far away: only making room can let the fresh client in.
        try await withTestApp(kind, configure: { $0.connections = .init(maxConnections: 40, headerTimeout: 60, bodyTimeout: 60, idleTimeout: 60) }, overSocket: true) { client, env in
            let port = try #require(client.port)
            var holders: [RawConnection] = []
            for _ in 0..<60 {
                let holder = try RawConnection(port: port)
                try holder.send(Self.partialHead)
                holders.append(holder)
            }
            let fresh = try RawConnection(port: port)
            try fresh.send(Self.health)
            let answer = try #require(RawResponse(await fresh.receiveAll(within: .seconds(10))), "a fresh client is answered while 60 connections hold half a request")
            #expect(answer.status == 200)
            // Looked at again a few times: under load a close can land just after a 50 ms look (a closed socket stays closed).
            var closed = 0
            for _ in 0..<5 where closed < 20 {
                closed = await holders.asyncCount { await $0.isClosedByServer(within: .milliseconds(50)) }
            }
            #expect(closed >= 20, "at most 40 connections stay open: the oldest holders were closed to make room (\(closed) closed)")
            #expect(env.logs.lines.contains { $0.contains("connections waiting for a request closed to make room") })
            holders.removeAll()  // the holders give up
            let after = try RawConnection(port: port)
            try after.send(Self.health)
            #expect(RawResponse(await after.receiveAll())?.status == 200, "the server still answers once the holders are gone")
        }
    }

    @Test("request bodies trickling in past the limit cannot keep a fresh client out either: a body not yet in is a connection waiting on its client", arguments: TestDatabaseKind.all)
    func slowBodies(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.connections = .init(maxConnections: 20, headerTimeout: 60, bodyTimeout: 60, idleTimeout: 60) }, overSocket: true) { client, env in
            let port = try #require(client.port)
            var holders: [RawConnection] = []
            for _ in 0..<25 {
                let holder = try RawConnection(port: port)
                try holder.send("POST /api/auth/login HTTP/1.1\r\nHost: folio.test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
                holders.append(holder)
            }
            // Every head read (a connection whose head is not in yet could be closed to make room in any case).
            try await eventually("the holders' connections are open") { env.services.connections.counts.open == 20 }
            try await Task.sleep(for: .milliseconds(500))
            let fresh = try RawConnection(port: port)
            try fresh.send(Self.health)
            let answer = try #require(RawResponse(await fresh.receiveAll(within: .seconds(10))), "a fresh client is answered while 25 connections trickle their bodies")
            #expect(answer.status == 200)
            var closed = 0
            for _ in 0..<5 where closed < 5 {
                closed = await holders.asyncCount { await $0.isClosedByServer(within: .milliseconds(50)) }
            }
            #expect(closed >= 5, "the oldest slow bodies were closed to make room (\(closed) closed)")
            holders.removeAll()
        }
    }

    @Test("a connection chosen to make room is claimed at once: the end of a request arriving while it closes does not make it busy, and its request goes no further")
    func claimedConnection() throws {
        let registry = ConnectionRegistry(limit: 1)
        let waiting = EmbeddedChannel()
        guard case .admitted(let first, let none) = registry.opened(waiting) else { Issue.record("the first is admitted"); return }
        #expect(none.isEmpty && registry.busy(first) && registry.counts == (1, 1))
        registry.waiting(first)  // answered; waiting for the next request
        guard case .admitted(_, let closing) = registry.opened(EmbeddedChannel()) else { Issue.record("room is made"); return }
        #expect(closing.count == 1 && closing.first === waiting)
        #expect(first.isClaimed && !registry.busy(first), "a request end read now is dropped")
        registry.waiting(first)
        #expect(first.isClaimed, "an answer ending meanwhile does not make it a candidate again")
    }

    @Test("when every connection is busy with a request, a new one is closed at once and the busy ones still get their answers", arguments: TestDatabaseKind.all)
    func shedding(kind: TestDatabaseKind) async throws {
        let released = NIOLockedValueBox(false)
        try await withTestApp(
            kind, configure: { $0.connections = .init(maxConnections: 3, headerTimeout: 60, bodyTimeout: 60, idleTimeout: 60) }, overSocket: true,
            routes: { routes, _ in
                routes.get("/api/test/slow") { _, _ -> String in
                    while !released.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(20)) }
                    return "done"
                }
            }
        ) { client, env in
            let port = try #require(client.port)
            var busy: [RawConnection] = []
            for count in 1...3 {
                let connection = try RawConnection(port: port)
                try connection.send("GET /api/test/slow HTTP/1.1\r\nHost: folio.test\r\nConnection: close\r\n\r\n")
                busy.append(connection)
                // One at a time: a connection whose head has not arrived yet is one the next may close to make room.
                try await eventually("\(count) requests in flight") { env.services.connections.counts.busy == count }
            }
            let extra = try RawConnection(port: port)
            try? extra.send(Self.health)
            #expect(await extra.isClosedByServer(within: .seconds(10)), "no room: the new connection is closed rather than queued")
            #expect(env.logs.lines.contains { $0.contains("connection refused: every connection is busy") })
            released.withLockedValue { $0 = true }
            for connection in busy {
                #expect(RawResponse(await connection.receiveAll(within: .seconds(10)))?.status == 200)
            }
            let after = try RawConnection(port: port)
            try after.send(Self.health)
            #expect(RawResponse(await after.receiveAll())?.status == 200)
        }
    }

    @Test("a head, a body or an idle kept-alive connection that outlasts its deadline is closed", arguments: TestDatabaseKind.all)
    func deadlines(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.connections = .init(maxConnections: 100, headerTimeout: 1, bodyTimeout: 1, idleTimeout: 1) }, overSocket: true) { client, _ in
            let port = try #require(client.port)
            // Slowloris: the head trickles in one header at a time and never ends.
            let trickle = try RawConnection(port: port)
            try trickle.send(Self.partialHead)
            var closedWhileTrickling = false
            for index in 0..<40 {
                try? trickle.send("X-Slow-\(index): 1\r\n")
                if await trickle.isClosedByServer(within: .milliseconds(250)) {
                    closedWhileTrickling = true
                    break
                }
            }
            #expect(closedWhileTrickling, "a head still incomplete after its deadline closes the connection, however often bytes arrive")
            // A body that stops short of its Content-Length.
            let body = try RawConnection(port: port)
            try body.send("POST /api/auth/login HTTP/1.1\r\nHost: folio.test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":")
            #expect(await body.isClosedByServer(within: .seconds(10)))
            // A kept-alive connection that sends nothing after its answer.
            let idle = try RawConnection(port: port)
            try idle.send("GET /health HTTP/1.1\r\nHost: folio.test\r\n\r\n")
            #expect(await idle.isClosedByServer(within: .seconds(10)))
        }
    }

    @Test("a client that stops reading its answers is closed after the idle timeout, though its requests keep it busy", arguments: TestDatabaseKind.all)
    func stalledReader(kind: TestDatabaseKind) async throws {
        try await withTestApp(
            kind, configure: { $0.connections = .init(maxConnections: 100, headerTimeout: 60, bodyTimeout: 60, idleTimeout: 1); $0.logLevel = .debug }, overSocket: true
        ) { client, env in
            let port = try #require(client.port)
            let reader = try RawConnection(port: port)
            // Pipelined requests, as many as the socket takes for a while; never a byte read back.
            let request = Array(String(repeating: "GET /api/health HTTP/1.1\r\nHost: folio.test\r\n\r\n", count: 200).utf8)
            var pending = request[...]
            let until = ContinuousClock.now + .seconds(3)
            while ContinuousClock.now < until, !env.logs.lines.contains(where: { $0.contains("stopped reading") }) {
                let sent = reader.sendWithoutWaiting(pending)
                // Whole requests only: the rest of a cut one goes first next time.
                pending = pending.count == sent ? request[...] : pending.dropFirst(sent)
                if sent == 0 { try await Task.sleep(for: .milliseconds(20)) }
            }
            try await eventually("the stalled reader is closed", within: .seconds(30)) {
                env.logs.lines.contains { $0.contains("connection closed: the client stopped reading its answer") }
            }
        }
    }

    @Test("pipelined requests: a valid one is answered, then the unreadable one after it gets its own problem answer", arguments: TestDatabaseKind.all)
    func pipelinedMalformed(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, overSocket: true) { client, _ in
            let connection = try RawConnection(port: try #require(client.port))
            try connection.send("GET /health HTTP/1.1\r\nHost: folio.test\r\n\r\nGET /health HTTP/1.1\r\nHost: folio.test\r\nBad Name: 1\r\n\r\n")
            let text = await connection.receiveAll(within: .seconds(10))
            #expect(text.hasPrefix("HTTP/1.1 200 OK"))
            #expect(text.contains("HTTP/1.1 400 Bad Request"), "\(text)")
            #expect(text.contains("\"code\":\"malformed_request\""))
        }
    }

    @Test("HTTP/1.x framing: one valid Host on HTTP/1.1, none or one on 1.0; a connection ends when the request says close in any spelling, after HTTP/1.0 (answered as 1.0), and after CONNECT or an upgrade; 100-continue is sent")
    func framing() async throws {
        try await withTestApp(.sqlite, overSocket: true) { client, _ in
            let port = try #require(client.port)
            func exchange(_ request: String) async throws -> (answer: RawResponse, text: String, closed: Bool, connection: RawConnection) {
                let connection = try RawConnection(port: port)
                try connection.send(request)
                var text = ""
                // Until the answer's body is in (every answer here has a Content-Length).
                let deadline = ContinuousClock.now + .seconds(10)
                while ContinuousClock.now < deadline {
                    text += await connection.receiveAll(within: .milliseconds(100))
                    if let answer = RawResponse(text), let length = answer.headers["content-length"].flatMap(Int.init), answer.body.utf8.count >= length { break }
                }
                let answer = try #require(RawResponse(text), "\(request): \(text)")
                return (answer, text, await connection.isClosedByServer(within: .seconds(2)), connection)
            }
            // Host: missing on HTTP/1.1, twice, or not a host: refused, and the connection ends.
            for request in [
                "GET /health HTTP/1.1\r\n\r\n", "GET /health HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
                "GET /health HTTP/1.0\r\nHost: a.test\r\nHost: b.test\r\n\r\n", "GET /health HTTP/1.1\r\nHost: a.test b.test\r\n\r\n",
                "GET /health HTTP/1.1\r\nHost: a.test, b.test\r\n\r\n",
            ] {
                let (answer, _, closed, _) = try await exchange(request)
                #expect(answer.status == 400 && answer.headers["content-type"] == "application/problem+json", "\(request): \(answer.status)")
                #expect(answer.body.contains("exactly one Host header"), "\(answer.body)")
                #expect(closed && answer.headers["connection"] == "close", "\(request)")
            }
            // A host with a port, or an address, is a host (spaces around it are not part of it); other text is not.
            for host in ["[::1]:8080", "a.test ", "a.test\t", "folio_1.internal:443"] {
                #expect(try await exchange("GET /health HTTP/1.1\r\nHost: \(host)\r\n\r\n").answer.status == 200, "\(host)")
            }
            for host in ["[::1", "a:b:c", "a.test:99999", "a.test:8o", "x;y", "%61.test", "u@a.test"] {
                #expect(try await exchange("GET /health HTTP/1.1\r\nHost: \(host)\r\n\r\n").answer.status == 400, "\(host)")
            }
            // HTTP/1.0 (a load balancer's health check, say): no Host needed; answered as HTTP/1.0, and the connection ends
            // after the answer even when asked to stay (an HTTP/1.1 answer's chunked body is one a 1.0 client cannot read).
            for request in ["GET /health HTTP/1.0\r\n\r\n", "GET /health HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"] {
                let old = try await exchange(request)
                #expect(old.text.hasPrefix("HTTP/1.0 200 OK") && old.answer.headers["connection"] == "close" && old.closed, "\(request): \(old.text)")
            }
            // "close" in any spelling ends the connection; HTTP/1.1 otherwise stays open.
            for spelling in ["Close, TE", "close\t", "keep-alive, close"] {
                let close = try await exchange("GET /health HTTP/1.1\r\nHost: a.test\r\nConnection: \(spelling)\r\n\r\n")
                #expect(close.answer.status == 200 && close.answer.headers["connection"] == "close" && close.closed, "\(spelling)")
            }
            let open = try await exchange("GET /health HTTP/1.1\r\nHost: a.test\r\n\r\n")
            #expect(open.answer.status == 200 && open.answer.headers["connection"] == nil && !open.closed)
            // Folio tunnels and upgrades nothing: answered, and closed (after one the decoder reads no more).
            for request in ["CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n", "GET /health HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"] {
                let (answer, _, closed, _) = try await exchange(request)
                #expect(answer.status < 500 && answer.headers["connection"] == "close" && closed, "\(request): \(answer.status)")
            }
            // A client that waits for 100 Continue before its body gets it at once, then its answer.
            let waiting = try RawConnection(port: port)
            try waiting.send("POST /api/auth/login HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
            #expect(await waiting.receiveAll(within: .seconds(2)).hasPrefix("HTTP/1.1 100 Continue\r\n\r\n"))
            try waiting.send("{}")
            #expect(await waiting.receiveAll(within: .seconds(2)).hasPrefix("HTTP/1.1 422 "))
            // A body larger than any route takes gets its 413 at once, not an invitation to send it.
            let tooLarge = try RawConnection(port: port)
            try tooLarge.send("POST /api/auth/login HTTP/1.1\r\nHost: a.test\r\nContent-Type: application/json\r\nContent-Length: 99000000\r\nExpect: 100-continue\r\n\r\n")
            #expect(await tooLarge.receiveAll(within: .seconds(2)).hasPrefix("HTTP/1.1 413 "))
        }
    }

    @Test("a pipelined request waits for the answer before it: its body's deadline starts when that answer ends, and its 100 Continue is sent then", arguments: TestDatabaseKind.all)
    func pipelinedContinue(kind: TestDatabaseKind) async throws {
        try await withTestApp(
            kind, configure: { $0.connections = .init(maxConnections: 100, headerTimeout: 60, bodyTimeout: 1, idleTimeout: 60) }, overSocket: true,
            routes: { routes, _ in
                routes.get("/api/test/slow") { _, _ -> String in
                    try await Task.sleep(for: .seconds(2))
                    return "done"
                }
            }
        ) { client, _ in
            let connection = try RawConnection(port: try #require(client.port))
            // The second request's client waits for its 100 Continue before sending the body, as curl does.
            try connection.send(
                "GET /api/test/slow HTTP/1.1\r\nHost: folio.test\r\n\r\n"
                    + "POST /api/auth/login HTTP/1.1\r\nHost: folio.test\r\nContent-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
            var text = ""
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline, !text.contains("100 Continue") {
                text += await connection.receiveAll(within: .milliseconds(200))
            }
            // The slow answer came whole (the body deadline did not cut it), then the 100.
            #expect(text.hasPrefix("HTTP/1.1 200 OK") && text.contains("\r\n\r\ndoneHTTP/1.1 100 Continue\r\n\r\n"), "\(text)")
            try connection.send("{}")
            #expect(await connection.receiveAll(within: .seconds(2)).hasPrefix("HTTP/1.1 422 "))
        }
    }

    @Test("requests the HTTP decoder cannot read get problem+json with a request id and the security headers, never a 500", arguments: TestDatabaseKind.all)
    func unreadableRequests(kind: TestDatabaseKind) async throws {
        let cases: [(name: String, request: String, status: Int, code: String)] = [
            ("a bad chunk size", "POST /api/auth/login HTTP/1.1\r\nHost: folio.test\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, "malformed_request"),
            ("a bad chunk size on an unknown route", "POST /api/nowhere HTTP/1.1\r\nHost: folio.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "malformed_request"),
            ("a space in a header name", "GET /health HTTP/1.1\r\nHost: folio.test\r\nBad Name: 1\r\n\r\n", 400, "malformed_request"),
            ("CR inside a header value", "GET /health HTTP/1.1\r\nHost: folio.test\r\nX-Note: a\rb\r\n\r\n", 400, "malformed_request"),
            ("a bad Content-Length", "POST /api/auth/login HTTP/1.1\r\nHost: folio.test\r\nContent-Length: 12abc\r\n\r\n", 400, "malformed_request"),
            ("Content-Length with Transfer-Encoding", "POST /api/auth/login HTTP/1.1\r\nHost: folio.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "malformed_request"),
            ("a header too large", "GET /health HTTP/1.1\r\nHost: folio.test\r\nX-Big: \(String(repeating: "a", count: 20_000))\r\n\r\n", 431, "headers_too_large"),
            ("too many headers", "GET /health HTTP/1.1\r\nHost: folio.test\r\n" + (0..<150).map { "X-H\($0): 1\r\n" }.joined() + "\r\n", 431, "headers_too_large"),
        ]
        try await withTestApp(kind, overSocket: true) { client, env in
            let port = try #require(client.port)
            for item in cases {
                let connection = try RawConnection(port: port)
                try connection.send(item.request)
                let text = await connection.receiveAll(within: .seconds(10))
                let answer = try #require(RawResponse(text), "\(item.name): \(text)")
                #expect(answer.status == item.status, "\(item.name)")
                #expect(answer.headers["content-type"] == "application/problem+json", "\(item.name)")
                #expect(answer.headers["x-content-type-options"] == "nosniff", "\(item.name)")
                #expect(answer.headers["content-security-policy"] != nil, "\(item.name)")
                #expect(answer.headers["connection"] == "close", "\(item.name)")
                let problem = try JSONDecoder().decode(Problem.self, from: Data(answer.body.utf8))
                #expect(problem.code == item.code, "\(item.name)")
                #expect(problem.status == item.status, "\(item.name)")
                #expect(!problem.request_id.isEmpty && answer.headers["x-request-id"] == problem.request_id, "\(item.name)")
                let statusLines = text.components(separatedBy: "\r\n").filter { $0.hasPrefix("HTTP/1.1 ") || $0.contains("}HTTP/1.1 ") }
                #expect(statusLines.count == 1, "\(item.name): one answer, not two: \(text)")
            }
            #expect(!env.logs.lines.contains { $0.contains("unhandled error") })
        }
    }
}

extension Array {
    func asyncCount(where test: (Element) async -> Bool) async -> Int {
        var count = 0
        for element in self where await test(element) { count += 1 }
        return count
    }
}
