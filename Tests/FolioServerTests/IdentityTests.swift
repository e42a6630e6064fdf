import Crypto
import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import JWTKit
import Testing

@testable import FolioServer

@Suite("Accounts, tokens and sessions")
struct IdentityTests {
    @Test("register → verify email → login → me → refresh → logout", arguments: TestDatabaseKind.all)
    func happyPath(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "Jane.Doe@Example.com")
            #expect(tokens["token_type"] as? String == "bearer")
            #expect(tokens["expires_in"] as? Int == 900)
            let refresh = try #require(tokens["refresh_token"] as? String)

            let me = try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens))
            #expect(me.status == .ok)
            let user = try json(me)
            #expect(user["email"] as? String == "jane.doe@example.com")
            #expect(user["role"] as? String == "user")
            #expect(user["email_verified"] as? Bool == true)
            let text = String(buffer: me.body)
            for secret in ["password", "hash", "totp", "failed_login", "locked"] { #expect(!text.contains(secret)) }

            let refreshed = try await post(client, "/api/auth/refresh", ["refresh_token": refresh])
            #expect(refreshed.status == .ok)
            let next = try json(refreshed)
            #expect(next["refresh_token"] as? String != refresh)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(next)).status == .ok)

            let logout = try await client.execute(uri: "/api/auth/logout", method: .post, headers: bearer(next))
            #expect(logout.status == .noContent)
            // The session is gone: its access tokens and refresh token stop working at once.
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(next)).status == .unauthorized)
            #expect(try await post(client, "/api/auth/refresh", ["refresh_token": next["refresh_token"] as! String]).status == .unauthorized)
        }
    }

    @Test("a password hash made at another bcrypt cost is made again at the configured cost when its owner signs in; no session ends, and the change time stays", arguments: TestDatabaseKind.all)
    func outdatedHashUpgraded(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let first = try await signUp(client, env, email: "cost@example.com")
            func stored() async throws -> (hash: String, changed: Date?) {
                let row = try #require(try await env.database.sql.raw("SELECT password_hash, password_changed_at FROM users WHERE email = 'cost@example.com'").first())
                return (try row.decode(column: "password_hash", as: String.self), try row.decode(column: "password_changed_at", as: Date?.self))
            }
            #expect(PasswordHasher.cost(of: try await stored().hash) == env.configuration.bcryptCost)
            // As if BCRYPT_COST had been another when the password was set.
            let older = try await PasswordHasher(cost: 5).hash(strongPassword)
            try await env.database.sql.raw("UPDATE users SET password_hash = \(bind: older) WHERE email = 'cost@example.com'").run()
            let before = try await stored()
            #expect(PasswordHasher.cost(of: before.hash) == 5)
            #expect(try await post(client, "/api/auth/login", ["email": "cost@example.com", "password": strongPassword]).status == .ok)
            let after = try await stored()
            #expect(PasswordHasher.cost(of: after.hash) == env.configuration.bcryptCost && after.hash != before.hash)
            #expect(after.changed == before.changed)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(first)).status == .ok, "the earlier session goes on")
            #expect(try await post(client, "/api/auth/login", ["email": "cost@example.com", "password": strongPassword]).status == .ok)
            #expect(try await post(client, "/api/auth/login", ["email": "cost@example.com", "password": "not the password at all"]).status == .unauthorized)
            #expect(PasswordHasher.cost(of: "!erased") == nil && PasswordHasher.cost(of: "$2b$1x$abc") == nil && PasswordHasher.cost(of: "$2y$10$abc") == 10)
        }
    }

    @Test("a reused refresh token revokes its whole family", arguments: TestDatabaseKind.all)
    func refreshReuse(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock) { client, env in
            let tokens = try await signUp(client, env, email: "reuse@example.com")
            let first = tokens["refresh_token"] as! String
            let second = try json(try await post(client, "/api/auth/refresh", ["refresh_token": first]))
            // Within a few seconds a second use is a race between tabs: refused, the session lives.
            #expect(try await post(client, "/api/auth/refresh", ["refresh_token": first]).status == .unauthorized)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(second)).status == .ok)
            clock.advance(by: 11)
            // Later, an attacker replays the first token.
            let replay = try await post(client, "/api/auth/refresh", ["refresh_token": first])
            #expect(replay.status == .unauthorized)
            #expect(try problem(replay).code == "invalid_refresh_token")
            // The legitimate holder's newer tokens die with the family.
            #expect(try await post(client, "/api/auth/refresh", ["refresh_token": second["refresh_token"] as! String]).status == .unauthorized)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(second)).status == .unauthorized)
            #expect(env.logs.lines.contains { $0.contains("refresh_token_reuse") })
        }
    }

    @Test("a refresh token of a session that ended is refused as invalid every time, never spent, so its retries raise no theft alert", arguments: TestDatabaseKind.all)
    func refreshAfterSignOut(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock) { client, env in
            let tokens = try await signUp(client, env, email: "ended@example.com")
            let refresh = tokens["refresh_token"] as! String
            #expect(try await client.execute(uri: "/api/auth/logout", method: .post, headers: bearer(tokens)).status == .noContent)
            for wait in [0.0, 0, 11] {
                clock.advance(by: wait)
                let again = try await post(client, "/api/auth/refresh", ["refresh_token": refresh])
                #expect(try again.status == .unauthorized && problem(again).code == "invalid_refresh_token", "\(String(buffer: again.body))")
            }
            #expect(!env.logs.lines.contains { $0.contains("refresh_token_reuse") || $0.contains("refresh_token_raced") })
        }
    }

    @Test("eight refreshes racing with one token: exactly one gets the next token, the others are refused, and the session lives on", arguments: TestDatabaseKind.all)
    func refreshesRacing(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "race@example.com")
            let token = tokens["refresh_token"] as! String
            let statuses = try await withThrowingTaskGroup(of: (HTTPResponse.Status, String?).self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        let response = try await post(client, "/api/auth/refresh", ["refresh_token": token])
                        return (response.status, response.status == .ok ? try json(response)["refresh_token"] as? String : nil)
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let winners = statuses.filter { $0.0 == .ok }
            #expect(winners.count == 1, "\(statuses.map(\.0))")
            #expect(statuses.filter { $0.0 == .unauthorized }.count == 7)
            // The race is not mistaken for theft: the winner's token goes on working.
            let next = try #require(winners.first?.1)
            #expect(try await post(client, "/api/auth/refresh", ["refresh_token": next]).status == .ok)
            #expect(try await RefreshToken.query(on: env.database.db).filter(\.$usedAt == nil).count() == 1, "one live token per family")
        }
    }

    @Test("unverified email cannot log in; verification tokens are single use", arguments: TestDatabaseKind.all)
    func verificationRequired(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            _ = try await post(client, "/api/auth/register", ["email": "new@example.com", "password": strongPassword])
            let early = try await post(client, "/api/auth/login", ["email": "new@example.com", "password": strongPassword])
            #expect(early.status == .forbidden)
            #expect(try problem(early).code == "email_not_verified")
            let token = try await outboxToken(env, email: "new@example.com", kind: "verify_email")
            #expect(try await post(client, "/api/auth/verify-email", ["token": token]).status == .ok)
            let again = try await post(client, "/api/auth/verify-email", ["token": token])
            #expect(again.status == .unprocessableContent)
            #expect(try problem(again).errors?.first?.field == "token")
            // The outbox log line does not carry the token.
            #expect(!env.logs.lines.joined().contains(token))
        }
    }

    @Test("verification links expire after 24 hours", arguments: TestDatabaseKind.all)
    func verificationExpires(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock) { client, env in
            _ = try await post(client, "/api/auth/register", ["email": "late@example.com", "password": strongPassword])
            let token = try await outboxToken(env, email: "late@example.com", kind: "verify_email")
            clock.advance(by: 24 * 3600 + 1)
            #expect(try await post(client, "/api/auth/verify-email", ["token": token]).status == .unprocessableContent)
        }
    }

    @Test("a disabled user can neither log in nor refresh", arguments: TestDatabaseKind.all)
    func disabledUser(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "gone@example.com")
            try await UserAdministration(services: env.services).disable(email: "gone@example.com")
            let login = try await post(client, "/api/auth/login", ["email": "gone@example.com", "password": strongPassword])
            #expect(login.status == .forbidden)
            #expect(try problem(login).code == "account_disabled")
            #expect(try await post(client, "/api/auth/refresh", ["refresh_token": tokens["refresh_token"] as! String]).status == .unauthorized)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)).status == .unauthorized)
        }
    }

    @Test("registration refuses short, long, common and email-based passwords, naming the field", arguments: [
        ("short-pass1", "too_short"), (String(repeating: "é", count: 40), "too_long"), (String(repeating: "a", count: 129), "too_long"),
        ("password1234", "too_common"), ("xjaneqq-2026-secure", "contains_email"),
    ])
    func passwordPolicy(password: String, code: String) async throws {
        try await withTestAppOnEachDatabase { client, _ in
            let response = try await post(client, "/api/auth/register", ["email": "xjaneqq@example.com", "password": password])
            #expect(response.status == .unprocessableContent)
            let body = try problem(response)
            #expect(body.errors?.first?.field == "password")
            #expect(body.errors?.first?.code == code)
        }
    }

    @Test("registration names every field's problem at once: a bad address and a short password together")
    func everyRegistrationProblem() async throws {
        try await withTestAppOnEachDatabase { client, _ in
            let response = try await post(client, "/api/auth/register", ["email": "not an address", "password": "short"])
            #expect(response.status == .unprocessableContent)
            let body = try problem(response)
            #expect(body.errors?.map(\.field) == ["email", "password"], "\(body)")
        }
    }

    @Test("an address at the reserved .invalid domain is refused at registration (and wherever an address is checked): an erased person's pseudonym lives there, and one taken would block their erasure", arguments: TestDatabaseKind.all)
    func invalidDomainRefused(kind: TestDatabaseKind) async throws {
        #expect(!IdentityServices.isPlausibleEmail("someone@example.INVALID"))
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "target@example.com")
            let me = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)))
            let userID = try #require((me["id"] as? String).flatMap(UserID.init))
            let squat = try await post(client, "/api/auth/register", ["email": PersonalDataErasure.pseudonym(of: userID), "password": strongPassword])
            #expect(squat.status == .unprocessableContent, "\(String(buffer: squat.body))")
            #expect(try problem(squat).errors?.first?.field == "email")
            var erase = bearer(tokens)
            erase[.contentType] = "application/json"
            let erased = try await client.execute(uri: "/api/me", method: .delete, headers: erase, body: ByteBuffer(string: #"{"password": "\#(strongPassword)"}"#))
            #expect(erased.status == .noContent, "\(String(buffer: erased.body))")
        }
    }

    @Test("an address is a dot-atom at a host name: tags, other scripts and long domains pass; address literals, quoted parts, controls and bare IPs do not")
    func plausibleAddresses() async throws {
        for good in ["jane@example.com", "a+b@example.com", "o'brien@mail.example.co.uk", "x_y-z@sub-domain.example.io", "josé@exämple.de", "用户@例子.中国", "1@2.xn--p1ai", "हिन्दी@example.com", "ร้าน@example.com", "e\u{301}@example.com", "می\u{200C}خواهم@example.ir"] {
            #expect(IdentityServices.isPlausibleEmail(good), "\(good)")
        }
        for bad in ["x@[127.0.0.1]", "x@127.0.0.1", "\"a b\"@example.com", "a..b@example.com", ".a@example.com", "a.@example.com", "a@-example.com",
                    "a@example-.com", "a@example..com", "a@example", "a(comment)@example.com", "a@b@example.com", "ann@example.com\u{0}x",
                    "a\u{202E}b@example.com", "<a@example.com>", "a b@example.com", String(repeating: "a", count: 65) + "@example.com"] {
            #expect(!IdentityServices.isPlausibleEmail(bad), "\(bad.debugDescription)")
        }
        try await withTestApp(.sqlite) { client, _ in
            let literal = try await post(client, "/api/auth/register", ["email": "x@[127.0.0.1]", "password": "a long enough passphrase 7"])
            #expect(literal.status == .unprocessableContent)
            #expect(try problem(literal).errors?.first?.field == "email")
        }
    }

    @Test("the common-password list ships with at least 10,000 entries")
    func commonPasswordList() {
        #expect(PasswordPolicy.standard.commonPasswords.count >= 10_000)
        #expect(PasswordPolicy.standard.commonPasswords.contains("password"))
    }

    @Test("a duplicate email gets the same answer as a new one and the owner is told", arguments: TestDatabaseKind.all)
    func duplicateRegistration(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let first = try await post(client, "/api/auth/register", ["email": "twice@example.com", "password": strongPassword])
            let second = try await post(client, "/api/auth/register", ["email": "TWICE@example.com", "password": "another long passphrase"])
            #expect(first.status == second.status)
            #expect(String(buffer: first.body) == String(buffer: second.body))
            let notice = try await env.outbox(kind: "duplicate_registration").count
            #expect(notice == 1)
            #expect(try await User.query(on: env.database.db).count() == 1)
        }
    }

    @Test("an accent typed apart from its letter makes the same address: one account, either form signs in, and a bounce of either stops mail to it", arguments: TestDatabaseKind.all)
    func composedAddresses(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let composed = "jos\u{E9}@example.com", apart = "jose\u{301}@example.com"
            try await signUp(client, env, email: composed)
            let again = try await post(client, "/api/auth/register", ["email": apart, "password": "another long passphrase"])
            #expect(again.status == .created)
            #expect(try await env.outbox(kind: "duplicate_registration").count == 1)
            #expect(try await User.query(on: env.database.db).count() == 1)
            let login = try await post(client, "/api/auth/login", ["email": apart, "password": strongPassword])
            #expect(login.status == .ok)
            let stored = try #require(try await User.query(on: env.database.db).first()).email
            #expect(Array(stored.utf8) == Array(composed.utf8))
            try await env.services.mail.suppress(apart, reason: "bounce", detail: nil, now: Date(), on: env.database.sql)
            #expect(try await env.services.mail.isSuppressed(composed))
        }
    }

    @Test("an address signed up for again before it is verified: neither password stands, the first link dies, and the address's owner chooses the password", arguments: TestDatabaseKind.all)
    func preRegistrationTakeover(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let attacker = "attacker chosen passphrase 1", owner = "the owner's own passphrase"
            #expect(try await post(client, "/api/auth/register", ["email": "kate@example.com", "password": attacker]).status == .created)
            let attackersLink = try await outboxToken(env, email: "kate@example.com", kind: "verify_email")
            // Kate signs up herself; the answer is the same as for a new address.
            #expect(try await post(client, "/api/auth/register", ["email": "kate@example.com", "password": owner]).status == .created)
            // The verification link of the first sign-up, still in Kate's inbox, no longer verifies anything.
            #expect(try await post(client, "/api/auth/verify-email", ["token": attackersLink]).status == .unprocessableContent)
            for password in [attacker, owner] {
                #expect(try await post(client, "/api/auth/login", ["email": "kate@example.com", "password": password]).status != .ok, "no sign-up's password stands")
            }
            let mailed = try await env.outbox(kind: "duplicate_registration")
            #expect(mailed.count == 1 && mailed.first?.body.contains("choose your password") == true)
            #expect(mailed.first?.subject == "Choose a password to finish your Folio account")
            let link = try await outboxToken(env, email: "kate@example.com", kind: "duplicate_registration")
            #expect(try await post(client, "/api/auth/password-reset/confirm", ["token": link, "new_password": owner]).status == .noContent)
            #expect(try await post(client, "/api/auth/login", ["email": "kate@example.com", "password": owner]).status == .ok, "the address is verified by the link")
            #expect(try await post(client, "/api/auth/login", ["email": "kate@example.com", "password": attacker]).status == .unauthorized)
            #expect(try await post(client, "/api/auth/password-reset/confirm", ["token": link, "new_password": attacker]).status == .unprocessableContent, "spent")
        }
    }

    @Test("where sign-in does not wait for verification, a second sign-up of an unverified address leaves the working account alone and tells its owner", arguments: TestDatabaseKind.all)
    func unverifiedButWorking(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, configure: { $0.requireEmailVerification = false }) { client, env in
            #expect(try await post(client, "/api/auth/register", ["email": "lee@example.com", "password": strongPassword]).status == .created)
            let tokens = try json(try await post(client, "/api/auth/login", ["email": "lee@example.com", "password": strongPassword]))
            #expect(try await post(client, "/api/auth/register", ["email": "lee@example.com", "password": "somebody else's passphrase"]).status == .created)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)).status == .ok, "not signed out by a stranger")
            #expect(try await post(client, "/api/auth/login", ["email": "lee@example.com", "password": strongPassword]).status == .ok)
            let notice = try #require(try await env.outbox(kind: "duplicate_registration").first)
            #expect(notice.body.contains("which already has one") && notice.subject == "Someone tried to register with your email")
        }
    }

    @Test("mail a stranger can make Folio send to an address goes out three times an hour per kind, then waits; the answers stay the same", arguments: TestDatabaseKind.all)
    func strangerMailLimit(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            _ = try await signUp(client, env, email: "inbox@example.com")
            #expect(try await post(client, "/api/auth/register", ["email": "unverified@example.com", "password": strongPassword]).status == .created)
            for _ in 0..<10 {
                env.clock.advance(by: 1)  // each message its own time in the outbox, so the newest is known
                #expect(try await post(client, "/api/auth/password-reset/request", ["email": "inbox@example.com"]).status == .accepted)
                await env.deliverMail()
                #expect(try await post(client, "/api/auth/register", ["email": "inbox@example.com", "password": strongPassword]).status == .created)
                #expect(try await post(client, "/api/auth/resend-verification", ["email": "unverified@example.com"]).status == .accepted)
            }
            func count(_ template: String, _ email: String) async throws -> Int {
                try await env.database.sql.raw("SELECT COUNT(*) AS n FROM mail_messages WHERE template = \(bind: template) AND recipient = \(bind: email)")
                    .first(decodingColumn: "n", as: Int.self) ?? 0
            }
            #expect(try await count("reset_password", "inbox@example.com") == IdentityServices.strangerMailPerHour)
            #expect(try await count("duplicate_registration", "inbox@example.com") == IdentityServices.strangerMailPerHour)
            #expect(try await count("verify_email", "unverified@example.com") == IdentityServices.strangerMailPerHour, "the sign-up's own link counts")
            // The last link mailed still works: a held-back request made no new token.
            let token = try await outboxToken(env, email: "inbox@example.com", kind: "reset_password")
            let confirmed = try await post(client, "/api/auth/password-reset/confirm", ["token": token, "new_password": "a fresh long passphrase"])
            #expect(confirmed.status == .noContent, "\(String(buffer: confirmed.body))")
            // An hour on, the address can be mailed again.
            env.clock.advance(by: 3601)
            #expect(try await post(client, "/api/auth/password-reset/request", ["email": "inbox@example.com"]).status == .accepted)
            #expect(try await count("reset_password", "inbox@example.com") == IdentityServices.strangerMailPerHour + 1)
        }
    }

    @Test("a reset link mailed before the account was disabled sets no password once it is enabled again", arguments: TestDatabaseKind.all)
    func resetLinkDiesWithDisabling(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "revived@example.com")
            #expect(try await post(client, "/api/auth/password-reset/request", ["email": "revived@example.com"]).status == .accepted)
            let link = try await outboxToken(env, email: "revived@example.com", kind: "reset_password")
            let administration = UserAdministration(services: env.services)
            #expect(try await administration.disable(email: "revived@example.com"))
            #expect(try await administration.enable(email: "revived@example.com"))
            let confirmed = try await post(client, "/api/auth/password-reset/confirm", ["token": link, "new_password": "a fresh long passphrase"])
            #expect(confirmed.status == .unprocessableContent, "\(String(buffer: confirmed.body))")
            #expect(try await post(client, "/api/auth/login", ["email": "revived@example.com", "password": strongPassword]).status == .ok, "the password stands")
        }
    }

    @Test("role and id in a registration body have no effect", arguments: TestDatabaseKind.all)
    func massAssignment(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let id = UUID()
            _ = try await post(client, "/api/auth/register", ["email": "sneaky@example.com", "password": strongPassword, "role": "admin", "id": id.uuidString, "email_verified_at": "2020-01-01T00:00:00Z"])
            let user = try #require(try await User.query(on: env.database.db).first())
            #expect(user.role == "user")
            #expect(user.id != id)
            #expect(user.emailVerifiedAt == nil)
        }
    }

    @Test("unknown email and wrong password get the same answer", arguments: TestDatabaseKind.all)
    func sameAnswer(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            try await signUp(client, env, email: "known@example.com")
            let unknown = try await post(client, "/api/auth/login", ["email": "nobody@example.com", "password": strongPassword])
            let wrong = try await post(client, "/api/auth/login", ["email": "known@example.com", "password": "wrong password here"])
            #expect(unknown.status == .unauthorized)
            #expect(wrong.status == .unauthorized)
            let a = try problem(unknown), b = try problem(wrong)
            #expect(a.code == "invalid_credentials" && b.code == a.code && a.detail == b.detail)
        }
    }

    @Test("sign-up, reset and resend answer no sooner than the anonymous answer time, known address or not, and what they do still happens behind the pause", arguments: TestDatabaseKind.all)
    func anonymousAnswersTakeEvenTime(kind: TestDatabaseKind) async throws {
        // A lower bound only (the pause is a sleep until a deadline): how long the work itself takes is not asserted.
        let floor: Duration = .milliseconds(300)
        try await withTestApp(kind, configure: { $0.anonymousAnswerTime = 0.3 }) { client, env in
            _ = try await signUp(client, env, email: "known@example.com")
            #expect(try await post(client, "/api/auth/register", ["email": "pending@example.com", "password": strongPassword]).status == .created)
            func timed(_ path: String, _ body: [String: Any], _ status: HTTPResponse.Status) async throws -> Duration {
                let started = ContinuousClock.now
                let response = try await post(client, path, body)
                #expect(response.status == status, "\(path) \(body)")
                return ContinuousClock.now - started
            }
            for email in ["known@example.com", "pending@example.com", "nobody@example.com"] {
                #expect(try await timed("/api/auth/password-reset/request", ["email": email], .accepted) >= floor, "reset for \(email)")
                #expect(try await timed("/api/auth/resend-verification", ["email": email], .accepted) >= floor, "resend for \(email)")
                #expect(try await timed("/api/auth/register", ["email": email, "password": strongPassword], .created) >= floor, "sign-up of \(email)")
            }
            // What a stranger made Folio do still happened behind the pause.
            #expect(try await env.outbox(kind: "reset_password").contains { $0.recipient == "known@example.com" })
            #expect(try await env.outbox(kind: "duplicate_registration").contains { $0.recipient == "known@example.com" })
            // A form refused for its own content is answered at once: it says nothing of the address.
            #expect(try await post(client, "/api/auth/register", ["email": "short@example.com", "password": "short"]).status == .unprocessableContent)
        }
    }

    @Test("sign-ins with the old password racing a reset leave no session the reset did not end; a disabled account's reset link is dead", arguments: TestDatabaseKind.all)
    func signInRacingAReset(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            _ = try await signUp(client, env, email: "raced@example.com")
            #expect(try await post(client, "/api/auth/password-reset/request", ["email": "raced@example.com"]).status == .accepted)
            let token = try await outboxToken(env, email: "raced@example.com", kind: "reset_password")
            // Old-password sign-ins before, during and after the reset (each checks its password against the row
            // it read before bcrypt ran; the session must be checked again where it is written).
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for index in 0..<24 {
                    group.addTask {
                        if index == 12 {
                            return try await post(client, "/api/auth/password-reset/confirm", ["token": token, "new_password": "a brand new passphrase 42"]).status
                        }
                        return try await post(client, "/api/auth/login", ["email": "raced@example.com", "password": strongPassword]).status
                    }
                }
                return try await group.reduce(into: [HTTPResponse.Status]()) { $0.append($1) }
            }
            #expect(statuses.contains(.noContent), "the reset went through: \(statuses)")
            let user = try #require(try await env.database.sql.raw("SELECT id FROM users WHERE email = 'raced@example.com'").first(decodingColumn: "id", as: UUID.self))
            let open = try await env.database.sql.raw("SELECT COUNT(*) AS n FROM sessions WHERE user_id = \(bind: user) AND revoked_at IS NULL")
                .first(decodingColumn: "n", as: Int.self)
            #expect(open == 0, "every session the old password started is over")
            #expect(try await post(client, "/api/auth/login", ["email": "raced@example.com", "password": strongPassword]).status == .unauthorized)

            // A link asked for, then the account disabled: the link no longer sets a password.
            #expect(try await post(client, "/api/auth/password-reset/request", ["email": "raced@example.com"]).status == .accepted)
            let second = try await outboxToken(env, email: "raced@example.com", kind: "reset_password")
            try await env.database.sql.raw("UPDATE users SET disabled_at = \(bind: env.clock.now) WHERE id = \(bind: user)").run()
            let refused = try await post(client, "/api/auth/password-reset/confirm", ["token": second, "new_password": "someone else's passphrase"])
            #expect(refused.status == .unprocessableContent, "\(String(buffer: refused.body))")
            #expect(try problem(refused).errors?.first?.code == "invalid_token")
        }
    }

    @Test("many reset, resend and sign-up requests for one address at once still mail it three times an hour each, and one reset link lives", arguments: TestDatabaseKind.all)
    func strangerMailLimitUnderConcurrency(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            _ = try await signUp(client, env, email: "flooded@example.com")
            #expect(try await post(client, "/api/auth/register", ["email": "waiting@example.com", "password": strongPassword]).status == .created)
            let requests: [(String, [String: Any])] = Array(repeating: ("/api/auth/password-reset/request", ["email": "flooded@example.com"]), count: 12)
                + Array(repeating: ("/api/auth/resend-verification", ["email": "waiting@example.com"]), count: 12)
                + Array(repeating: ("/api/auth/register", ["email": "flooded@example.com", "password": strongPassword]), count: 12)
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for (path, body) in requests {
                    nonisolated(unsafe) let body = body
                    group.addTask { try await post(client, path, body).status }
                }
                return try await group.reduce(into: [HTTPResponse.Status]()) { $0.append($1) }
            }
            #expect(statuses.allSatisfy { $0 == .accepted || $0 == .created }, "\(statuses)")
            func count(_ template: String, _ email: String) async throws -> Int {
                try await env.database.sql.raw("SELECT COUNT(*) AS n FROM mail_messages WHERE template = \(bind: template) AND recipient = \(bind: email)")
                    .first(decodingColumn: "n", as: Int.self) ?? 0
            }
            #expect(try await count("reset_password", "flooded@example.com") == IdentityServices.strangerMailPerHour)
            #expect(try await count("duplicate_registration", "flooded@example.com") == IdentityServices.strangerMailPerHour)
            #expect(try await count("verify_email", "waiting@example.com") == IdentityServices.strangerMailPerHour, "the sign-up's own link counts")
            let user = try #require(try await env.database.sql.raw("SELECT id FROM users WHERE email = 'flooded@example.com'").first(decodingColumn: "id", as: UUID.self))
            let live = try await env.database.sql.raw("""
                SELECT COUNT(*) AS n FROM email_tokens WHERE user_id = \(bind: user) AND purpose = 'reset_password' AND used_at IS NULL
                """).first(decodingColumn: "n", as: Int.self)
            #expect(live == 1, "a new link retires the one before")
        }
    }

    @Test("a password over 72 bytes is refused, never truncated", arguments: TestDatabaseKind.all)
    func bcryptLimit(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, _ in
            let long = String(repeating: "ü", count: 37)  // 37 characters, 74 bytes
            let response = try await post(client, "/api/auth/register", ["email": "long@example.com", "password": long])
            #expect(response.status == .unprocessableContent)
            #expect(try problem(response).errors?.first?.code == "too_long")
        }
    }

    @Test("password reset: single-use link, new password works, every session is revoked and the user is told", arguments: TestDatabaseKind.all)
    func passwordReset(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "forgot@example.com")
            let unknown = try await post(client, "/api/auth/password-reset/request", ["email": "nobody@example.com"])
            let known = try await post(client, "/api/auth/password-reset/request", ["email": "forgot@example.com"])
            #expect(unknown.status == .accepted && known.status == .accepted)
            #expect(String(buffer: unknown.body) == String(buffer: known.body))
            let token = try await outboxToken(env, email: "forgot@example.com", kind: "reset_password")
            let newPassword = "a brand new passphrase 42"
            // A password the policy refuses does not spend the link.
            #expect(try await post(client, "/api/auth/password-reset/confirm", ["token": token, "new_password": "password1234"]).status == .unprocessableContent)
            #expect(try await post(client, "/api/auth/password-reset/confirm", ["token": token, "new_password": newPassword]).status == .noContent)
            #expect(try await post(client, "/api/auth/password-reset/confirm", ["token": token, "new_password": newPassword]).status == .unprocessableContent)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)).status == .unauthorized)
            #expect(try await post(client, "/api/auth/login", ["email": "forgot@example.com", "password": strongPassword]).status == .unauthorized)
            #expect(try await post(client, "/api/auth/login", ["email": "forgot@example.com", "password": newPassword]).status == .ok)
            #expect(try await env.outbox(kind: "password_changed").count == 1)
        }
    }

    @Test("changing the password needs the current one and ends every session", arguments: TestDatabaseKind.all)
    func changePassword(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let first = try await signUp(client, env, email: "change@example.com")
            let second = try json(try await post(client, "/api/auth/login", ["email": "change@example.com", "password": strongPassword]))
            let wrong = try await post(client, "/api/auth/password", ["current_password": "not the password", "new_password": "another fine passphrase"], headers: bearer(first))
            #expect(wrong.status == .unprocessableContent)
            #expect(try problem(wrong).errors?.first?.field == "current_password")
            // The current password again changes nothing: refused, and no session ends for it.
            let same = try await post(client, "/api/auth/password", ["current_password": strongPassword, "new_password": strongPassword], headers: bearer(first))
            #expect(same.status == .unprocessableContent)
            #expect(try problem(same).errors?.first?.code == "unchanged")
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(first)).status == .ok)
            let changed = try await post(client, "/api/auth/password", ["current_password": strongPassword, "new_password": "another fine passphrase"], headers: bearer(first))
            #expect(changed.status == .noContent)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(first)).status == .unauthorized)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(second)).status == .unauthorized)
        }
    }

    @Test("logout-all ends every session of the user", arguments: TestDatabaseKind.all)
    func logoutAll(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let first = try await signUp(client, env, email: "all@example.com")
            let second = try json(try await post(client, "/api/auth/login", ["email": "all@example.com", "password": strongPassword]))
            #expect(try await client.execute(uri: "/api/auth/logout-all", method: .post, headers: bearer(first)).status == .noContent)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(second)).status == .unauthorized)
        }
    }

    @Test("sessions idle for longer than the timeout, or older than the maximum age, need a fresh login", arguments: TestDatabaseKind.all)
    func sessionTimeouts(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock, configure: { $0.accessTokenLifetime = 86_400 }) { client, env in
            let tokens = try await signUp(client, env, email: "idle@example.com")
            clock.advance(by: 1801)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)).status == .unauthorized)
            #expect(try await post(client, "/api/auth/refresh", ["refresh_token": tokens["refresh_token"] as! String]).status == .unauthorized)

            let active = try json(try await post(client, "/api/auth/login", ["email": "idle@example.com", "password": strongPassword]))
            for _ in 0..<26 {
                clock.advance(by: 1700)
                _ = try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(active))
            }
            // 26 × 1700 s > 12 hours: used all along, but too old.
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(active)).status == .unauthorized)
        }
    }

    @Test("a session in use never reads as idle, even with the shortest idle timeout: its idle clock is written often enough", arguments: TestDatabaseKind.all)
    func shortIdleTimeout(kind: TestDatabaseKind) async throws {
        let clock = TestClock()
        try await withTestApp(kind, clock: clock, configure: { $0.sessionIdleTimeout = 60; $0.accessTokenLifetime = 86_400 }) { client, env in
            let tokens = try await signUp(client, env, email: "short-idle@example.com")
            for step in 1...12 {
                clock.advance(by: 10)
                #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)).status == .ok, "a request every 10 s, at \(step * 10) s")
            }
            clock.advance(by: 61)
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(tokens)).status == .unauthorized, "idle past the timeout")
        }
    }

    @Test("A cannot see or end B's sessions (404), and a user cannot reach admin routes (403)", arguments: TestDatabaseKind.all)
    func isolation(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let alice = try await signUp(client, env, email: "alice@example.com")
            let bob = try await signUp(client, env, email: "bob@example.com")
            let bobSessions = try json(try await client.execute(uri: "/api/auth/sessions", method: .get, headers: bearer(bob)))
            let bobSession = try #require((bobSessions["data"] as? [[String: Any]])?.first?["id"] as? String)
            let aliceSessions = try json(try await client.execute(uri: "/api/auth/sessions", method: .get, headers: bearer(alice)))
            #expect(!(String(describing: aliceSessions)).contains(bobSession))

            let attempt = try await client.execute(uri: "/api/auth/sessions/\(bobSession)", method: .delete, headers: bearer(alice))
            #expect(attempt.status == .notFound)
            #expect(try await client.execute(uri: "/api/auth/sessions/xyz", method: .delete, headers: bearer(alice)).status == .notFound, "a malformed id names no session")
            #expect(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(bob)).status == .ok)

            let admin = try await client.execute(uri: "/api/admin/users", method: .get, headers: bearer(alice))
            #expect(admin.status == .forbidden)
            let bobID = try json(try await client.execute(uri: "/api/auth/me", method: .get, headers: bearer(bob)))["id"] as! String
            #expect(try await client.execute(uri: "/api/admin/users/\(bobID)/disable", method: .post, headers: bearer(alice)).status == .forbidden)
            #expect(try await client.execute(uri: "/api/auth/sessions/\(bobSession)", method: .delete, headers: bearer(bob)).status == .noContent)
        }
    }
}
