import Foundation

/// Shares bought together, still held: a tax lot.
public struct TaxLot: Equatable, Sendable {
    public var symbol: String
    public var acquiredAt: Date
    /// The ledger row of the purchase.
    public var entryID: EntryID
    public var quantity: Quantity
    /// What the shares still held cost, fees included, in cents.
    public var cost: Cash

    /// Cost per share, to 8 places (half to even).
    public var costPerShare: Price {
        (try? Price.quotient(cost, quantity, rounding: .halfEven)) ?? .zero
    }
}

/// Part of a sale matched to one lot: the regulatory report's row.
public struct RealizedLot: Equatable, Sendable {
    public enum Term: String, Sendable, Codable {
        /// Held one year or less.
        case short
        /// Held more than one year.
        case long
    }

    public var symbol: String
    /// Nil when the sale found no lot to match (shares the ledger never shows bought).
    public var acquiredAt: Date?
    public var soldAt: Date
    /// The ledger row of the sale.
    public var saleEntryID: EntryID
    public var quantity: Quantity
    public var proceeds: Cash
    public var cost: Cash
    /// Always exactly `proceeds − cost`.
    public var gain: Cash
    public var term: Term
}

/// Matches sales to purchases lot by lot, first in first out, from an
/// account's ledger rows. Each part of a sale takes its share of the lot's
/// cost, half to even to the cent (a lot sold out takes what is left of its
/// cost), and of the sale's proceeds as the difference of the rounded running
/// totals, so no part is negative and the parts add up to the ledger exactly.
public struct TaxLotBook: Sendable {
    public private(set) var open: [String: [TaxLot]] = [:]
    public private(set) var realized: [RealizedLot] = []

    public init() {}

    /// All of an account's rows, oldest first. Rows of the same instant take
    /// purchases before sales, so a sale never misses a lot bought with it.
    public init(entries: [LedgerLine]) throws(MoneyError) {
        let ordered = entries.enumerated().sorted { a, b in
            let aSells = (a.element.quantity?.isNegative ?? false) ? 1 : 0, bSells = (b.element.quantity?.isNegative ?? false) ? 1 : 0
            return (a.element.occurredAt, aSells, a.offset) < (b.element.occurredAt, bSells, b.offset)
        }
        for (_, entry) in ordered { try record(entry) }
    }

    /// Open lots of every symbol, oldest first within a symbol, symbols in order.
    public var openLots: [TaxLot] {
        open.keys.sorted().flatMap { open[$0]! }
    }

    public mutating func record(_ entry: LedgerLine) throws(MoneyError) {
        guard let symbol = entry.symbol, let quantity = entry.quantity, !quantity.isZero else { return }
        switch entry.kind {
        case .buy, .sell, .correction:
            // A correction moves shares without a trade (a broker's transfer or corporate action, mirrored):
            // shares that arrive cost what the line's price says; shares that leave realize nothing.
            let transfer = entry.kind == .correction && entry.amount.isZero
            if quantity.isPositive {
                // Cash out is negative: the lot's cost is what left the account.
                var cost = entry.amount.isNegative ? -entry.amount : .zero
                if transfer, let price = entry.price { cost = try Money.cost(quantity: quantity, price: price) }
                open[symbol, default: []].append(TaxLot(symbol: symbol, acquiredAt: entry.occurredAt, entryID: entry.id, quantity: quantity, cost: cost))
            } else {
                let proceeds = entry.amount.isPositive ? entry.amount : .zero
                try sell(symbol, quantity: -quantity, proceeds: proceeds, at: entry.occurredAt, entry: entry.id, realizing: !transfer)
            }
        default:
            return
        }
    }

    private mutating func sell(_ symbol: String, quantity: Quantity, proceeds: Cash, at date: Date, entry: EntryID, realizing: Bool = true) throws(MoneyError) {
        var left = quantity
        // Each part's proceeds are the difference of the rounded running totals, so no part is negative
        // and the parts add up to the sale exactly.
        var soldSoFar = Quantity.zero, proceedsSoFar = Cash.zero
        var lots = open[symbol] ?? []
        while left.isPositive {
            guard var lot = lots.first else {
                guard realizing else { break }
                // More sold than the ledger shows bought: reported, at no cost, rather than dropped.
                let rest = try proceeds - proceedsSoFar
                realized.append(RealizedLot(
                    symbol: symbol, acquiredAt: nil, soldAt: date, saleEntryID: entry, quantity: left, proceeds: rest, cost: .zero,
                    gain: rest, term: .short))
                break
            }
            let part = Quantity.min(left, lot.quantity)
            let cost = part == lot.quantity ? lot.cost : try lot.cost.scaled(by: part, over: lot.quantity, places: Cash.centPlaces, rounding: .halfEven)
            soldSoFar = try soldSoFar + part
            let cumulative = soldSoFar == quantity ? proceeds : try proceeds.scaled(by: soldSoFar, over: quantity, places: Cash.centPlaces, rounding: .halfEven)
            let share = try cumulative - proceedsSoFar
            proceedsSoFar = cumulative
            if realizing {
                realized.append(RealizedLot(
                    symbol: symbol, acquiredAt: lot.acquiredAt, soldAt: date, saleEntryID: entry, quantity: part, proceeds: share, cost: cost,
                    gain: try share - cost, term: Self.term(acquired: lot.acquiredAt, sold: date)))
            }
            left = try left - part
            lot.quantity = try lot.quantity - part
            lot.cost = try lot.cost - cost
            if lot.quantity.isZero { lots.removeFirst() } else { lots[0] = lot }
        }
        open[symbol] = lots.isEmpty ? nil : lots
    }

    /// Long term when held more than one year, by New York calendar dates, counted as the IRS counts
    /// (Publication 550): from the day after the purchase, the sale's day included. Bought 2025-03-10: long from
    /// a sale on 2026-03-11. Bought 2023-02-28, counting starts 2023-03-01, so a sale on 2024-02-29 (a leap day)
    /// is exactly one year, short; long from 2024-03-01.
    public static func term(acquired: Date, sold: Date) -> RealizedLot.Term {
        let start = TradingDay(acquired).adding(days: 1), sale = TradingDay(sold)
        // A year after a 29 February is 1 March when the next year has none.
        let leapDayAlone = start.month == 2 && start.day == 29
        let longFrom = leapDayAlone ? (start.year + 1, 3, 1) : (start.year + 1, start.month, start.day)
        return (sale.year, sale.month, sale.day) >= longFrom ? .long : .short
    }
}
