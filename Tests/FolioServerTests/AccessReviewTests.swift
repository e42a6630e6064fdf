import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import FolioServer

@Suite("Access review")
struct AccessReviewTests {
    @Test("the review lists administrators and their 2FA, last sign-ins, dormant and disabled accounts, role changes and admin actions, and is mailed to the administrators", arguments: TestDatabaseKind.all)
    func review(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let administration = UserAdministration(services: env.services)
            try await administration.createAdmin(email: "root@example.com", password: strongPassword)
            try await signUp(client, env, email: "sleepy@example.com")
            try await signUp(client, env, email: "gone@example.com")
            try await administration.disable(email: "gone@example.com")
            env.clock.advance(by: 100 * 86_400)
            try await signUp(client, env, email: "active@example.com")
            try await administration.setRole(email: "active@example.com", role: "admin")

            let report = try await env.services.accessReview.report()
            #expect(report.administrators.map(\.email) == ["active@example.com", "root@example.com"])
            #expect(report.administrators.allSatisfy { !$0.twoFactor })
            #expect(report.users.count == 4)
            #expect(report.users.first { $0.email == "active@example.com" }?.lastSignInAt == env.clock.now)
            #expect(report.users.first { $0.email == "root@example.com" }?.lastSignInAt == nil)
            #expect(report.dormant.map(\.email) == ["root@example.com", "sleepy@example.com"])
            #expect(report.disabled.map(\.email) == ["gone@example.com"])
            #expect(report.roleChanges.map(\.subject) == ["active@example.com"])
            #expect(report.roleChanges.first?.actor == "operator")
            let older = try await env.services.accessReview.report(periodDays: 365)
            #expect(older.adminActions.map(\.action).contains("admin.user_disabled"))
            #expect(older.adminActions.map(\.action).contains("admin.user_created"))

            let text = AccessReview.text(report)
            #expect(text.contains("Administrators (2):"))
            #expect(text.contains("root@example.com  2FA OFF  last sign-in never"))
            #expect(text.contains("! 2 administrator(s) without two-factor authentication"))

            let mailed = try await env.services.accessReview.mailAdministrators(notifications: env.services.notifications)
            #expect(mailed == 2)
            let mail = try await env.outbox(kind: "access_review")
            #expect(Set(mail.map(\.recipient)) == ["root@example.com", "active@example.com"])
            #expect(mail.first?.body.contains("Dormant accounts (no sign-in for 90 days): 2") == true)
            #expect(mail.first?.body.contains("sleepy@example.com") == false, "the notice names no one")
        }
    }

    @Test("a person who erases their own account is counted among erasures, not listed as an administrator's action", arguments: TestDatabaseKind.all)
    func selfErasure(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "leaving@example.com")
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"
            let erased = try await client.execute(
                uri: "/api/me", method: .delete, headers: headers, body: ByteBuffer(string: #"{"password":"\#(strongPassword)"}"#))
            #expect(erased.status == .noContent, "\(String(buffer: erased.body))")
            let report = try await env.services.accessReview.report()
            #expect(report.erasedCount == 1)
            #expect(report.adminActions.isEmpty, "\(report.adminActions)")
        }
    }

    @Test("money an operator moved (a fee or dividend posted from the command line) is in the review; a deposit the person made is not", arguments: TestDatabaseKind.all)
    func operatorPostingsReviewed(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "charged@example.com")
            let account = try await env.firstAccount()
            #expect(try await post(client, "/api/accounts/\(account.id)/deposits", ["amount": "10.00"], headers: bearer(tokens)).status == .created)
            _ = try await OperatorPosting.post(.fee, accountID: account.id, amount: 3, symbol: nil, description: "Fee", services: env.services)
            let report = try await env.services.accessReview.report()
            #expect(report.adminActions.map(\.action) == ["ledger.fee"], "\(report.adminActions)")
            #expect(report.adminActions.first?.actor == "operator")
            // The same fee again within a day is refused (a command run twice), unless asked for.
            await #expect(throws: OperatorPosting.Duplicate.self) {
                _ = try await OperatorPosting.post(.fee, accountID: account.id, amount: 3, symbol: nil, description: "Fee", services: env.services)
            }
            _ = try await OperatorPosting.post(.fee, accountID: account.id, amount: 3, symbol: nil, description: "Fee", again: true, services: env.services)
            // Still there once the person is erased (erasure clears the events' addresses, not what they say).
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"
            let erased = try await client.execute(
                uri: "/api/me", method: .delete, headers: headers, body: ByteBuffer(string: #"{"password":"\#(strongPassword)"}"#))
            #expect(erased.status == .noContent, "\(String(buffer: erased.body))")
            env.clock.advance(by: OperatorPosting.window + 1)
            _ = try await OperatorPosting.post(.fee, accountID: account.id, amount: 3, symbol: nil, description: "Fee", services: env.services)
            #expect(try await env.entries(.fee).count == 3)
            let after = try await env.services.accessReview.report(periodDays: 30)
            #expect(after.adminActions.filter { $0.action == "ledger.fee" }.count == 3, "\(after.adminActions.map(\.action))")
        }
    }

    @Test("the monthly schedule falls on the first of the month at 08:00 UTC")
    func monthly() {
        let job = AccessReview.schedule
        let next = job.nextRun(after: TestClock.tuesdayMorning)
        #expect(next == Date(timeIntervalSince1970: 1_796_112_000))  // 2026-12-01T08:00:00Z
        #expect(job.nextRun(after: next) == Date(timeIntervalSince1970: 1_798_790_400))  // 2027-01-01T08:00:00Z
    }
}
