import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import FolioServer

/// Alpaca accounts kept true to Alpaca: positions brought over when linked,
/// and changes made at Alpaca behind Folio's back found and adjusted with an
/// explanation, against the fake Alpaca on loopback.
@Suite("Brokerage reconciliation")
struct ReconciliationTests {
    func withLinked(_ kind: TestDatabaseKind, _ body: @escaping @Sendable (any TestClientProtocol, TestEnvironment, FakeAlpaca, [String: Any], AccountID) async throws -> Void) async throws {
        try await withFakeAlpaca { fake in
            fake.positions = ["AAPL": 3]
            try await withTestApp(kind, configure: { $0.alpacaURLs = fake.urls }) { client, env in
                let tokens = try await signUp(client, env, email: "reconcile@example.com")
                let linked = try await post(client, "/api/brokerage/alpaca", FakeAlpaca.linkBody, headers: bearer(tokens))
                #expect(linked.status == .created)
                let text = try #require((try json(linked)["account"] as? [String: Any])?["id"] as? String)
                try await body(client, env, fake, tokens, try #require(AccountID(text)))
            }
        }
    }

    func holdings(_ env: TestEnvironment, _ account: AccountID) async throws -> [String: HoldingState] {
        Dictionary(uniqueKeysWithValues: try await env.store.holdings(of: account).map { ($0.symbol, $0) })
    }

    @Test("linking brings the shares held at Alpaca over, at Alpaca's average entry price", arguments: TestDatabaseKind.all)
    func positionsAtLink(kind: TestDatabaseKind) async throws {
        try await withLinked(kind) { _, env, _, _, account in
            let held = try await holdings(env, account)
            #expect(held["AAPL"]?.quantity == 3)
            #expect(held["AAPL"]?.costBasis == 300)
            let corrections = try await env.entries(.correction)
            #expect(corrections.map(\.quantity) == [3])
            #expect(corrections.first?.description == "Reconciliation with Alpaca: 3 AAPL there, 0 here")
            try await env.expectConsistent()
        }
    }

    @Test("a position and cash changed at Alpaca behind Folio's back: the dry run shows it and changes nothing; the run adjusts with both figures, once", arguments: TestDatabaseKind.all)
    func behindFoliosBack(kind: TestDatabaseKind) async throws {
        try await withLinked(kind) { _, env, fake, _, account in
            // A transfer in of 2 MSFT, a dividend of 12.34 and 1 AAPL journaled out, all at Alpaca.
            fake.positions = ["AAPL": 2, "MSFT": 2]
            fake.cash = try fake.cash + Cash(parsing: "12.34")
            let entriesBefore = try await env.entries().count

            let dry = try await BrokerReconciliation.run(services: env.services, dryRun: true)
            #expect(dry.count == 1)
            #expect(dry.first?.applied == false)
            #expect(dry.first?.differences == ["cash: Folio 25000.00, Alpaca 25012.34", "AAPL: Folio 3, Alpaca 2", "MSFT: Folio 0, Alpaca 2"])
            #expect(try await env.entries().count == entriesBefore, "the dry run changes nothing")
            #expect(try await holdings(env, account)["AAPL"]?.quantity == 3)

            let run = try await BrokerReconciliation.run(services: env.services, dryRun: false)
            #expect(run.first?.applied == true)
            let held = try await holdings(env, account)
            #expect(held["AAPL"]?.quantity == 2 && held["AAPL"]?.costBasis == 200)
            #expect(held["MSFT"]?.quantity == 2 && held["MSFT"]?.costBasis == 200)
            let cash = try #require(try await env.accounts().first { $0.id == account }).cash
            #expect(cash == (try Cash(parsing: "25012.34")))
            let corrections = try await env.entries(.correction).filter { $0.quantity == nil }
            #expect(corrections.map(\.amount) == [try Cash(parsing: "12.34")])
            #expect(corrections.first?.description == "Reconciliation with Alpaca: cash there 25012.34, here 25000.00")
            // Shares that left are not a sale: no gain is realized.
            let book = try TaxLotBook(entries: try await env.entries())
            #expect(book.realized.isEmpty)
            #expect(env.logs.lines.contains { $0.contains("broker_reconciliation_adjusted") })
            #expect(try await BrokerReconciliation.run(services: env.services, dryRun: false).first?.differences == [], "in agreement now")
            try await env.expectConsistent()
        }
    }

    @Test("a split at Alpaca keeps the cost basis, spread over the new shares (their lot costs nothing more); a transfer out takes its share; a transfer in adds the new shares' cost", arguments: TestDatabaseKind.all)
    func splitsKeepTheBasis(kind: TestDatabaseKind) async throws {
        try await withLinked(kind) { _, env, fake, _, account in
            // 3 AAPL at 100 (300.00). A day later, a 2-for-1 split: 6 at 50, the same 300.00.
            env.clock.advance(by: 86_400)
            fake.positions = ["AAPL": 6]
            fake.setAverageEntryPrice("AAPL", "50")
            let split = try await BrokerReconciliation.run(services: env.services, dryRun: false)
            #expect(split.first?.applied == true, "\(split)")
            var held = try await holdings(env, account)
            #expect(held["AAPL"]?.quantity == 6 && held["AAPL"]?.costBasis == 300, "\(String(describing: held["AAPL"]))")
            let lots = try TaxLotBook(entries: try await env.entries()).openLots
            #expect(lots.map(\.quantity) == [3, 3] && lots.map(\.cost) == [300, 0], "\(lots)")
            // 2 transferred out: they take their share of the basis, as their lots leave first in, first out.
            fake.positions = ["AAPL": 4]
            #expect(try await BrokerReconciliation.run(services: env.services, dryRun: false).first?.applied == true)
            held = try await holdings(env, account)
            #expect(held["AAPL"]?.quantity == 4 && held["AAPL"]?.costBasis == 200, "\(String(describing: held["AAPL"]))")
            // 1 more transferred in, bought elsewhere at 120: Alpaca's average is (200 + 120) / 5 = 64.
            fake.positions = ["AAPL": 5]
            fake.setAverageEntryPrice("AAPL", "64")
            #expect(try await BrokerReconciliation.run(services: env.services, dryRun: false).first?.applied == true)
            held = try await holdings(env, account)
            #expect(held["AAPL"]?.quantity == 5 && held["AAPL"]?.costBasis == 320, "\(String(describing: held["AAPL"]))")
            let transferred = try await env.entries(.correction).filter { $0.quantity == 1 }
            #expect(transferred.map(\.price) == [120], "the arriving share's lot costs what it added")
            try await env.expectConsistent()
        }
    }

    @Test("an Alpaca account Folio cannot read is skipped with the reason, not blamed on the keys", arguments: [TestDatabaseKind.sqlite])
    func unreadableAccountSkippedWithItsReason(kind: TestDatabaseKind) async throws {
        try await withLinked(kind) { _, env, fake, _, account in
            fake.cashText = "601.371234"
            let run = try await BrokerReconciliation.run(services: env.services, dryRun: true)
            #expect(run.first?.applied == false)
            #expect(run.first?.skipped?.hasPrefix("Alpaca's account cannot be read: ") == true, "\(run)")
            #expect(run.first?.skipped?.contains("keys") == false, "\(run)")
            #expect(try await holdings(env, account)["AAPL"]?.quantity == 3)
        }
    }

    @Test("a position in a symbol Folio cannot hold (control characters, not a ticker) fails the run with the reason made safe, and changes nothing", arguments: [TestDatabaseKind.sqlite])
    func unholdableSymbol(kind: TestDatabaseKind) async throws {
        try await withLinked(kind) { _, env, fake, _, account in
            fake.positions = ["AAPL": 3, "\u{1B}]0;T\u{7}\u{1B}[31m=cmd": 5]
            let run = try await BrokerReconciliation.run(services: env.services, dryRun: false)
            #expect(run.first?.failed == true && run.first?.applied == false, "\(run)")
            let skipped = try #require(run.first?.skipped)
            #expect(skipped.contains("which Folio's books cannot hold") && !UserText.hasHiddenCharacters(skipped), "\(skipped)")
            #expect(try await holdings(env, account).keys.sorted() == ["AAPL"])
            // An option is named as what it is, not taken for an Alpaca that cannot be asked.
            fake.positions = ["AAPL": 3, "AAPL261218C00200000": 1]
            let option = try await BrokerReconciliation.run(services: env.services, dryRun: true)
            #expect(option.first?.skipped?.hasPrefix("Alpaca holds AAPL261218C00200000, which Folio's books cannot hold") == true, "\(option)")
        }
    }

    @Test("a fill at Alpaca between reading its cash and its positions leaves the account for the next run, which takes both from after it", arguments: TestDatabaseKind.all)
    func fillWhileAsked(kind: TestDatabaseKind) async throws {
        try await withLinked(kind) { _, env, fake, _, account in
            // An order the books already ended (its rest being canceled at Alpaca) buys 1 AAPL at 100 between the two reads.
            fake.beforeNextPositions.withLockedValue { $0 = { fake.positions = ["AAPL": 4]; fake.cash = 24_900 } }
            let run = try await BrokerReconciliation.run(services: env.services, dryRun: false)
            #expect(run.first?.applied == false)
            #expect(run.first?.skipped?.contains("changed while it was asked") == true, "\(run)")
            #expect(try await holdings(env, account)["AAPL"]?.quantity == 3, "no share without its cash")
            let next = try await BrokerReconciliation.run(services: env.services, dryRun: false)
            #expect(next.first?.differences == ["cash: Folio 25000.00, Alpaca 24900.00", "AAPL: Folio 3, Alpaca 4"], "\(next)")
            #expect(try await holdings(env, account)["AAPL"]?.quantity == 4)
            try await env.expectConsistent()
        }
    }

    @Test("an account with open orders is left for the next run: fills may be on their way", arguments: TestDatabaseKind.all)
    func openOrdersWait(kind: TestDatabaseKind) async throws {
        try await withLinked(kind) { client, env, fake, tokens, account in
            fake.mode = .rest
            let body = ["symbol": "KO", "quantity": "1", "side": "BUY", "order_type": "LIMIT", "limit_price": "60", "time_in_force": "GTC", "account_id": account.description]
            #expect(try await post(client, "/api/orders", body, headers: bearer(tokens)).status == .created)
            await env.worker.drain()
            fake.cash = 1
            let run = try await BrokerReconciliation.run(services: env.services, dryRun: false)
            #expect(run.first?.skipped?.contains("open order") == true)
            #expect(run.first?.failed == false, "a wait, not a failure")
            #expect(try await env.accounts().first { $0.id == account }?.cash == 25_000)
            try await env.expectConsistent()

            // A transfer in of another symbol at Alpaca does not wait for the KO order: only cash and KO do.
            fake.positions = ["AAPL": 3, "MSFT": 2]
            let partial = try await BrokerReconciliation.run(services: env.services, dryRun: false)
            #expect(partial.first?.applied == true && partial.first?.differences == ["MSFT: Folio 0, Alpaca 2"], "\(partial)")
            #expect(partial.first?.skipped == "cash and KO wait for 1 open order: fills may be on their way")
            #expect(try await holdings(env, account)["MSFT"]?.quantity == 2)
            #expect(try await env.accounts().first { $0.id == account }?.cash == 25_000, "cash still waits")
            try await env.expectConsistent()
        }
    }

    @Test("an Alpaca that refuses the link's keys is a failure the command reports (it exits non-zero), not a wait like open orders", arguments: TestDatabaseKind.all)
    func refusedKeysFail(kind: TestDatabaseKind) async throws {
        try await withLinked(kind) { _, env, fake, _, account in
            fake.revokeKeys = true
            let run = try await BrokerReconciliation.run(services: env.services, dryRun: false)
            #expect(run.first?.failed == true)
            #expect(run.first?.skipped?.contains("no longer accepts") == true, "\(run)")
            #expect(try await env.accounts().first { $0.id == account }?.cash == 25_000)
        }
    }
}
