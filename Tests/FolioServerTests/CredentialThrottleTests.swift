import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

@testable import FolioServer

/// The sign-in throttle as a stranger and a thief would meet it: failures
/// counted per account and client address with an account-wide ceiling, and
/// every re-authentication behind the same counts.
@Suite("Credential checks under the throttle")
struct CredentialThrottleTests {
    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!

    /// Behind a trusted proxy on loopback, so each request can come "from" the address it names.
    static func fromAddress(_ address: String) -> HTTPFields {
        [forwardedFor: address]
    }

    static func login(_ client: some TestClientProtocol, from address: String, password: String) async throws -> TestResponse {
        try await post(client, "/api/auth/login", ["email": "owner@example.com", "password": password], headers: fromAddress(address))
    }

    @Test("a stranger at the lockout limit does not lock the owner out: the owner signs in at once from another address", arguments: TestDatabaseKind.all)
    func strangerCannotLockOwnerOut(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.trustedProxies = ["127.0.0.1"] }, overSocket: true) { client, env in
            try await signUp(client, env, email: "owner@example.com")
            let attacker = "203.0.113.9", owner = "198.51.100.7"
            for _ in 0..<5 {
                #expect(try await Self.login(client, from: attacker, password: "guess guess guess").status == .unauthorized)
            }
            let locked = try await Self.login(client, from: attacker, password: strongPassword)
            #expect(locked.status == .tooManyRequests, "the attacker's address waits, even with the right password")
            #expect(try problem(locked).code == "too_many_attempts")
            #expect(try await Self.login(client, from: owner, password: strongPassword).status == .ok, "the owner, from another address, is not held up")
            // The owner's success does not free the attacker's address.
            #expect(try await Self.login(client, from: attacker, password: "guess guess guess").status == .tooManyRequests)
        }
    }

    @Test("guessing spread over many addresses meets the account-wide ceiling of 50 failures, which holds the account 15 minutes", arguments: TestDatabaseKind.all)
    func accountWideCeiling(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock, configure: { $0.trustedProxies = ["127.0.0.1"] }, overSocket: true) { client, env in
            try await signUp(client, env, email: "owner@example.com")
            // Four failures from each address: never an address's own limit.
            for failure in 0..<LoginThrottle.accountThreshold {
                let status = try await Self.login(client, from: "203.0.113.\(failure / 4 + 1)", password: "guess guess guess").status
                #expect(status == .unauthorized, "failure \(failure + 1)")
            }
            let held = try await Self.login(client, from: "198.51.100.7", password: strongPassword)
            #expect(held.status == .tooManyRequests, "past the ceiling the account waits for addresses it does not know")
            #expect(Int(held.headers[.retryAfter] ?? "") ?? 0 > 800)
            #expect(env.logs.lines.contains { $0.contains("login_lockout") && $0.contains("\"account_failures\":\"50\"") })
            // The address the owner signed up and signed in from is known: the ceiling does not hold it.
            #expect(try await post(client, "/api/auth/login", ["email": "owner@example.com", "password": strongPassword]).status == .ok)
            // A success resets the account's count; guessing must start over.
            #expect(try await Self.login(client, from: "198.51.100.8", password: "guess guess guess").status == .unauthorized)
            clock.advance(by: LoginThrottle.accountDelay + 1)
            #expect(try await Self.login(client, from: "198.51.100.7", password: strongPassword).status == .ok)
        }
    }

    @Test("after the account's wait the count starts again: one guess per wait cannot keep the account held", arguments: TestDatabaseKind.all)
    func ceilingCountRestarts(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock, configure: { $0.trustedProxies = ["127.0.0.1"] }, overSocket: true) { client, env in
            try await signUp(client, env, email: "owner@example.com")
            for failure in 0..<LoginThrottle.accountThreshold {
                _ = try await Self.login(client, from: "203.0.113.\(failure / 4 + 1)", password: "guess guess guess")
            }
            clock.advance(by: LoginThrottle.accountDelay + 1)
            #expect(try await Self.login(client, from: "203.0.113.200", password: "guess guess guess").status == .unauthorized)
            #expect(try await Self.login(client, from: "198.51.100.9", password: strongPassword).status == .ok, "one more guess did not hold the account again")
        }
    }

    @Test("a password reset keeps the address it was confirmed from known: guessing from elsewhere after it cannot lock the owner out", arguments: TestDatabaseKind.all)
    func resetKeepsOwnerKnown(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.trustedProxies = ["127.0.0.1"] }, overSocket: true) { client, env in
            try await signUp(client, env, email: "owner@example.com")
            let home = "198.51.100.7", renewed = "a renewed long passphrase"
            #expect(try await Self.login(client, from: home, password: strongPassword).status == .ok)
            // Guessing from many addresses; the owner resets the password from home, as the lockout mail says to.
            for failure in 0..<20 { _ = try await Self.login(client, from: "203.0.113.\(failure / 4 + 1)", password: "guess guess guess") }
            #expect(try await post(client, "/api/auth/password-reset/request", ["email": "owner@example.com"], headers: Self.fromAddress(home)).status == .accepted)
            let token = try await outboxToken(env, email: "owner@example.com", kind: "reset_password")
            let confirmed = try await post(client, "/api/auth/password-reset/confirm", ["token": token, "new_password": renewed], headers: Self.fromAddress(home))
            #expect(confirmed.status == .noContent, "\(String(buffer: confirmed.body))")
            // The guessing goes on, to the account-wide ceiling: the account waits for addresses it does not know.
            for failure in 0..<LoginThrottle.accountThreshold {
                _ = try await Self.login(client, from: "192.0.2.\(failure / 4 + 1)", password: "guess guess guess")
            }
            #expect(try await Self.login(client, from: "198.51.100.200", password: renewed).status == .tooManyRequests)
            let owner = try await Self.login(client, from: home, password: renewed)
            #expect(owner.status == .ok, "the address the reset was confirmed from is the owner's: \(String(buffer: owner.body))")
        }
    }

    @Test("IPv6 addresses count by their /64: a host cannot pick a fresh address for every guess", arguments: TestDatabaseKind.all)
    func ipv6ByPrefix(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.trustedProxies = ["127.0.0.1"] }, overSocket: true) { client, env in
            try await signUp(client, env, email: "owner@example.com")
            for host in 1...5 {
                #expect(try await Self.login(client, from: "2001:db8:1:2::\(host)", password: "guess guess guess").status == .unauthorized)
            }
            #expect(try await Self.login(client, from: "2001:db8:1:2:ffff::99", password: strongPassword).status == .tooManyRequests)
            #expect(try await Self.login(client, from: "2001:db8:1:3::1", password: strongPassword).status == .ok, "another /64 is another client")
        }
    }

    @Test("while a failure past the limit is being checked, another attempt is told the wait that failure sets, as for an unknown address: Retry-After tells nothing", arguments: TestDatabaseKind.all)
    func provisionalWaitTellsNothing(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock) { client, env in
            try await signUp(client, env, email: "owner@example.com")
            let throttle = env.services.identity.loginThrottle, db = env.database.db, client = "203.0.113.9"
            let userID = try #require(try await User.query(on: db).filter(\.$email == "owner@example.com").first()?.id)
            for _ in 0..<5 {
                guard case .allowed(let attempt) = try await throttle.claim(userID: userID, client: client, on: db) else { Issue.record("refused early"); return }
                _ = try await throttle.failed(userID: userID, client: client, attempt: attempt, on: db)
                _ = try await throttle.claimUnknown(email: "ghost@example.com", client: client, on: db)
            }
            clock.advance(by: 31)
            // The sixth attempt of each is let through; while the account's password is checked, a seventh comes.
            guard case .allowed = try await throttle.claim(userID: userID, client: client, on: db) else { Issue.record("the sixth was refused"); return }
            guard case .allowed = try await throttle.claimUnknown(email: "ghost@example.com", client: client, on: db) else { Issue.record("the sixth was refused"); return }
            guard case .locked(let account) = try await throttle.claim(userID: userID, client: client, on: db),
                  case .locked(let unknown) = try await throttle.claimUnknown(email: "ghost@example.com", client: client, on: db)
            else { Issue.record("the seventh was let through"); return }
            #expect(account == unknown)
            #expect(account == 60)
        }
    }

    @Test("unknown emails are counted in the database under an HMAC: another instance on the same database sees the wait, and the address is never stored", arguments: TestDatabaseKind.all)
    func unknownEmailsShared(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            for _ in 0..<5 {
                #expect(try await post(client, "/api/auth/login", ["email": "ghost@example.com", "password": "guess guess guess"]).status == .unauthorized)
            }
            let other = await FolioServices(env.services.dependencies)
            let origin = RequestOrigin(ip: nil, requestID: nil, logger: env.services.logger)
            do {
                _ = try await other.identity.signIn(
                    email: "ghost@example.com", password: "guess guess guess", totpCode: nil, recoveryCode: nil, kind: .bearer, userAgent: nil, origin: origin)
                Issue.record("the second instance let a sixth guess through")
            } catch IdentityError.tooManyAttempts(let wait) {
                #expect((1...30).contains(wait), "the same wait a real account would have: \(wait)")
            }
            let keys = try await env.database.sql.raw("SELECT key FROM unknown_sign_in_failures").all().map { try $0.decode(column: "key", as: String.self) }
            #expect(keys.count == 2)
            #expect(!keys.contains { $0.lowercased().contains("ghost") })
        }
    }

    @Test("a sign-in refused while its address waits is a login_locked security event, for an unknown email as for an account (the failed-authentication alert counts it)", arguments: [TestDatabaseKind.sqlite])
    func lockedRefusalsRecorded(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "owner@example.com")
            for email in ["ghost@example.com", "owner@example.com"] {
                for _ in 0..<5 { _ = try await post(client, "/api/auth/login", ["email": email, "password": "guess guess guess"]) }
                #expect(try await post(client, "/api/auth/login", ["email": email, "password": "guess guess guess"]).status == .tooManyRequests)
            }
            let locked = env.logs.lines.filter { $0.contains("\"event\":\"login_locked\"") }
            #expect(locked.count == 2, "\(locked)")
            #expect(locked.contains { $0.contains("unknown_email") })
        }
    }

    @Test("client keys: IPv4 whole, IPv6 by /64, IPv4-mapped IPv6 as IPv4")
    func clientKeys() {
        #expect(ClientAddress.key("203.0.113.9") == "203.0.113.9")
        #expect(ClientAddress.key("2001:db8:1:2::1") == ClientAddress.key("2001:0db8:0001:0002:ffff:ffff:ffff:ffff"))
        #expect(ClientAddress.key("2001:db8:1:2::1") == "2001:db8:1:2::/64")
        #expect(ClientAddress.key("2001:db8:1:2::1") != ClientAddress.key("2001:db8:1:3::1"))
        #expect(ClientAddress.key("::ffff:192.0.2.7") == "192.0.2.7")
        #expect(ClientAddress.key(nil) == "unknown")
    }

    @Test("a stolen access token cannot brute-force the password: changing it counts wrong guesses like a login, and the sixth is refused even when right", arguments: TestDatabaseKind.all)
    func passwordChangeIsThrottled(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock) { client, env in
            let tokens = try await signUp(client, env, email: "owner@example.com")
            let hashBefore = try await User.query(on: env.database.db).filter(\.$email == "owner@example.com").first()?.passwordHash
            for index in 0..<5 {
                let wrong = try await post(
                    client, "/api/auth/password", ["current_password": "guess number \(index)!", "new_password": "a brand new passphrase 9"], headers: bearer(tokens))
                #expect(wrong.status == .unprocessableContent)
                #expect(try problem(wrong).errors?.first?.field == "current_password")
            }
            let right = try await post(
                client, "/api/auth/password", ["current_password": strongPassword, "new_password": "a brand new passphrase 9"], headers: bearer(tokens))
            #expect(right.status == .tooManyRequests)
            #expect(try problem(right).code == "too_many_attempts")
            #expect(try await User.query(on: env.database.db).filter(\.$email == "owner@example.com").first()?.passwordHash == hashBefore)
            clock.advance(by: 31)
            #expect(try await post(client, "/api/auth/login", ["email": "owner@example.com", "password": strongPassword]).status == .ok, "the password did not change")
        }
    }

    @Test("confirming and turning off two-factor check the password under the same throttle", arguments: TestDatabaseKind.all)
    func twoFactorChecksAreThrottled(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "owner@example.com")
            _ = try await client.execute(uri: "/api/auth/2fa/enroll", method: .post, headers: bearer(tokens))
            for index in 0..<5 {
                let wrong = try await post(client, "/api/auth/2fa/confirm", ["password": "guess number \(index)!", "totp_code": "123456"], headers: bearer(tokens))
                #expect(wrong.status == .unprocessableContent)
            }
            let refused = try await post(client, "/api/auth/2fa/confirm", ["password": strongPassword, "totp_code": "123456"], headers: bearer(tokens))
            #expect(refused.status == .tooManyRequests)
            #expect(env.logs.lines.filter { $0.contains("\"event\":\"login_failed\"") }.count == 5)
        }
    }
}
