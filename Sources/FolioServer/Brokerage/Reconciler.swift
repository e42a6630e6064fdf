import FolioDomain
import Foundation
import Logging
import SQLKit

/// Keeps each Alpaca account's books true to Alpaca: its cash and positions
/// (`GET /v2/account`, `GET /v2/positions`) are compared with Folio's, and
/// every difference (a transfer, a fee, a dividend, a corporate action made
/// outside Folio) is posted through the ledger as an explained `correction`
/// with both figures, and raised as a security event. An account with open
/// orders is left for the next run: fills may be on their way, and the two
/// sides' figures would cross. Runs hourly, after linking, and by hand with
/// `folio broker reconcile [--dry-run]`.
struct Reconciler: Sendable {
    let store: BrokerageStore
    let trading: TradingStore
    let ledger: Ledger
    let brokers: Brokers
    let security: SecurityEvents
    let ids: IDSource
    let logger: Logger

    struct Outcome: Sendable, Equatable {
        var accountID: AccountID
        var differences: [ReconciliationDifference]
        /// The adjustments were posted (false in a dry run, or when nothing differed).
        var applied: Bool
        /// Why the account was not compared, or not adjusted.
        var skipped: String?
        /// Alpaca could not be asked, or refused the keys: a failure to report, not a wait (open orders, books moving).
        var failed = false
    }

    static let schedule = RecurringJob(name: "reconcile_brokerage", kind: .reconcileBrokerage, cadence: .every(3600), payload: { _ in .reconcileBrokerage })

    /// Every active link, one after another; one that fails is reported and stops no other.
    func reconcileAll(dryRun: Bool) async throws -> [Outcome] {
        var outcomes: [Outcome] = []
        for link in try await store.activeLinks(on: store.database.sql) {
            do {
                outcomes.append(try await reconcile(link, dryRun: dryRun))
            } catch {
                logger.warning("reconciling a brokerage account failed", metadata: ["account_id": "\(link.accountID)", "error": .string(DatabaseErrorText.forLog(error))])
                outcomes.append(Outcome(accountID: link.accountID, differences: [], applied: false, skipped: "the broker could not be asked: \(DatabaseErrorText.describe(error))", failed: true))
            }
        }
        return outcomes
    }

    func reconcile(_ link: BrokerageLink, dryRun: Bool) async throws -> Outcome {
        let alpaca = try brokers.alpaca(link)
        // Where the books stood before Alpaca was asked: if they move before the lock is taken (a fill applied
        // meanwhile), Alpaca's figures may already include it and the books not, or the other way round.
        let before = try await trading.auditSequence(of: link.accountID)
        let remote: AlpacaBroker.RemoteAccount
        switch try await alpaca.account() {
        case .account(let account): remote = account
        case .unreadable(let reason):
            return Outcome(accountID: link.accountID, differences: [], applied: false, skipped: "Alpaca's account cannot be read: \(reason)", failed: true)
        case .refused:
            return Outcome(accountID: link.accountID, differences: [], applied: false, skipped: "Alpaca no longer accepts the link's keys", failed: true)
        }
        let positions: [BrokerPosition]
        do {
            positions = try await alpaca.positions()
        } catch let unholdable as AlpacaBroker.UnholdablePosition {
            return Outcome(
                accountID: link.accountID, differences: [], applied: false,
                skipped: "Alpaca holds \(unholdable.symbol), which Folio's books cannot hold (Folio keeps US stocks and ETFs): the account is not reconciled until it is sold or moved",
                failed: true)
        }
        // Cash and shares from one moment: a fill at Alpaca between the two reads (an order the books ended,
        // its rest still being canceled there) would pair the cash from before it with the shares from after it.
        guard case .account(let again) = try await alpaca.account(), again.cash == remote.cash else {
            return Outcome(accountID: link.accountID, differences: [], applied: false, skipped: "Alpaca's account changed while it was asked")
        }
        let trading = self.trading, ledger = self.ledger, ids = self.ids, now = ledger.now()
        let outcome: Outcome = try await store.database.transaction { db in
            let held = try await trading.holdings(of: link.accountID, on: db).map(\.symbol)
            guard var open = try await ledger.open(
                account: link.accountID, owner: nil, need: .init(symbols: held + positions.map(\.symbol)), on: db)
            else { throw BrokerageError.linkNotFound }
            guard open.head?.sequence == before else {
                return Outcome(accountID: link.accountID, differences: [], applied: false, skipped: "the books changed while Alpaca was asked")
            }
            // With orders open, cash and their symbols wait for them (fills may be on their way); the other symbols need not.
            let orders = try await trading.openOrders(of: link.accountID, on: db)
            let waiting = orders.isEmpty ? nil : Set(orders.map(\.symbol))
            let waits = waiting.map { symbols in
                "cash and \(symbols.sorted().joined(separator: ", ")) wait for \(ProblemMapping.openOrders(orders.count)): fills may be on their way"
            }
            let result: (postings: [Posting], differences: [ReconciliationDifference])
            do {
                result = try TradingRules.reconcile(
                    account: open.books.account, holdings: open.books.holdings, brokerCash: remote.cash, brokerPositions: positions,
                    brokerName: "Alpaca", waiting: waiting, ids: { ids.next(EntryID.self) }, now: now)
            } catch TradingRules.ReconciliationBlock.openOrders {
                return Outcome(accountID: link.accountID, differences: [], applied: false, skipped: "open orders: fills may be on their way")
            } catch TradingRules.ReconciliationBlock.unsupported(let reason) {
                return Outcome(accountID: link.accountID, differences: [], applied: false, skipped: reason)
            }
            guard !dryRun, !result.postings.isEmpty else {
                return Outcome(accountID: link.accountID, differences: result.differences, applied: false, skipped: waits)
            }
            for posting in result.postings { open.books.record(posting) }
            try await ledger.commit(open, context: .none, on: db)
            return Outcome(accountID: link.accountID, differences: result.differences, applied: true, skipped: waits)
        }
        if outcome.applied {
            var details = ["account_id": link.accountID.description, "broker": link.broker]
            for difference in outcome.differences { details["folio_\(difference.what)"] = difference.folio; details["broker_\(difference.what)"] = difference.broker }
            await security.record(
                "broker_reconciliation_adjusted", userID: link.userID.uuid, details: details,
                origin: RequestOrigin(ip: nil, requestID: nil, logger: logger))
        } else if let skipped = outcome.skipped {
            logger.info("reconciliation skipped an account", metadata: ["account_id": "\(link.accountID)", "reason": "\(skipped)"])
        }
        return outcome
    }
}

/// `folio broker reconcile`: the reconciliation run by hand.
public enum BrokerReconciliation {
    public struct Report: Sendable {
        public var accountID: String
        /// `what: here → there` lines.
        public var differences: [String]
        public var applied: Bool
        public var skipped: String?
        /// Alpaca could not be asked: the command exits with a failure, so a script can tell it from agreement.
        public var failed: Bool
    }

    public static func run(services: FolioServices, dryRun: Bool) async throws -> [Report] {
        try await services.reconciler.reconcileAll(dryRun: dryRun).map { outcome in
            Report(
                accountID: outcome.accountID.description,
                differences: outcome.differences.map { "\($0.what): Folio \($0.folio), Alpaca \($0.broker)" },
                applied: outcome.applied, skipped: outcome.skipped, failed: outcome.failed)
        }
    }
}
