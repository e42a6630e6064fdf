import FolioDomain
import Foundation
import Hummingbird

/// Returns, tax lots and realized gains:
/// `GET /api/portfolio/performance`, `GET /api/portfolio/lots`,
/// `GET /api/reports/realized-gains` and `GET /api/reports/realized-gains.csv`.
/// Everything is read from the account's ledger and its close snapshots.
struct PerformanceController: Sendable {
    let store: TradingStore
    let quotes: QuoteService
    let snapshots: PortfolioSnapshots
    /// Reporting reads (the ledger, snapshots) go to the read replica when one is configured and current.
    let reads: ReadRouting

    func addRoutes(to router: some RouterMethods<FolioRequestContext>) {
        let api = router.group("/api", context: AuthenticatedContext.self)
        api.get("/portfolio/performance", use: MarketDataController.lookingUp(performance))
        api.get("/portfolio/lots", use: MarketDataController.lookingUp(lots))
        api.get("/reports/realized-gains", use: MarketDataController.lookingUp(realizedGains))
        api.get("/reports/realized-gains.csv", use: MarketDataController.lookingUp(realizedGainsCSV))
    }

    func account(_ request: Request, _ context: AuthenticatedContext) async throws -> AccountRecord {
        let id = try PortfolioController.accountID(request, identity: context.identity)
        guard let account = try await store.account(id, of: context.identity.userID) else { throw TradingError.accountNotFound }
        return account
    }

    // MARK: - Performance

    enum Range: String, CaseIterable {
        case oneMonth = "1M", threeMonths = "3M", yearToDate = "YTD", oneYear = "1Y", all = "ALL"

        /// The day whose close the range is measured from; nil: the account's first.
        func baseDay(today: TradingDay) -> TradingDay? {
            switch self {
            case .oneMonth: today.adding(days: -31)
            case .threeMonths: today.adding(days: -92)
            case .yearToDate: TradingDay(year: today.year - 1, month: 12, day: 31)
            case .oneYear: today.adding(days: -365)
            case .all: nil
            }
        }
    }

    struct PerformanceResponse: ResponseEncodable {
        var accountID: AccountID
        var range: String
        /// The close the range is measured from, and its last day (today while provisional).
        var from: String?
        var to: String?
        var startValue: Cash?
        var endValue: Cash?
        var deposits: Cash
        var withdrawals: Cash
        var timeWeightedReturnPercent: Ratio?
        /// Only for ranges of a year or more: GIPS does not annualize shorter periods.
        var timeWeightedReturnAnnualizedPercent: Ratio?
        var moneyWeightedReturnPercent: Ratio?
        var moneyWeightedReturnAnnualizedPercent: Ratio?
        /// Why a return is missing, when one is.
        var note: String?
        var realizedGain: Cash
        var dividends: Cash
        var fees: Cash
        var days: Int
        /// False when some past days could not be valued (market data unavailable).
        var complete: Bool
        /// Today's value used a stale quote (or a holding's cost, for want of any quote): the end value and returns will move.
        var stale = false
    }

    /// The first weekday on or after `date` (New York): the day an account opened then has its first close.
    static func firstWeekday(from date: Date) -> TradingDay {
        var day = TradingDay(date)
        while !day.isWeekday { day = day.adding(days: 1) }
        return day
    }

    /// Time- and money-weighted returns over the range, from the close
    /// snapshots (missing days backfilled first, today at current quotes), and
    /// the realized gains, dividends and fees booked in it.
    @Sendable func performance(_ request: Request, context: AuthenticatedContext) async throws -> PerformanceResponse {
        let rawRange = request.query["range"] ?? "1Y"
        guard let range = Range(rawValue: rawRange.uppercased()) else {
            throw TradingError.invalid(field: "range", code: "invalid", message: "range must be one of \(Range.allCases.map(\.rawValue).joined(separator: ", ")).")
        }
        let account = try await account(request, context)
        let now = quotes.clock.now()
        let today = TradingDay(now)
        var complete = true
        var wrote = false
        do {
            let backfill = try await snapshots.backfill(account, through: today.adding(days: -1))
            wrote = backfill.wrote
            complete = backfill.complete(from: range.baseDay(today: today))
        } catch {
            complete = false
            context.parent.logger.warning("performance backfill failed", metadata: ["account_id": "\(account.id)", "error": "\(error)"])
        }
        // What this request just wrote is on the primary; otherwise the replica will do.
        let reader = wrote ? store : await reads.store()
        let base = range.baseDay(today: today)
        var stored = try await snapshots.snapshots(of: account, from: base?.adding(days: -10), on: reader.database)
        // The base is the last close on or before the range's first day (or the account's first close).
        if let base, let index = stored.lastIndex(where: { $0.value.day <= base }) { stored.removeFirst(index) }
        var values = stored.map { Returns.ValuePoint(at: $0.asOf, value: $0.value.totalValue) }
        var days = stored.map(\.value.day)
        var endsStale = false
        // On a weekend an account with no close yet (opened since Friday's) is valued now, as on its first weekday.
        if today.isWeekday || days.isEmpty, days.last != today {
            // Valued on the same database the flows are read from, so a deposit counts on both sides or neither.
            let valuation = try await snapshots.currentValuation(of: account.id, owner: account.userID, using: reader, withDayChange: false, freshQuotes: true)
            values.append(.init(at: now, value: valuation.totalValue))
            days.append(today)
            endsStale = valuation.isStale
        }
        let end = values.last?.at ?? now
        let entries = try await reader.entries(of: account.id, through: end).map(\.line)
        // An account opened today (or on the weekend before it) has no close yet: it starts from nothing at its opening, so the day's deposits,
        // dividends and sales count (from its first close on, ranges start at a close). Not an account that came
        // with shares (a linked brokerage account's holdings arrive as corrections, which are not flows).
        // ALL does so on every later day too, when its first value is the account's first close: "since the account opened"
        // takes in the first day's deposits, gain, dividends and sales.
        let cameWithShares = entries.contains(where: { $0.kind == .correction && $0.quantity != nil })
        // Its only value may be today's close (the snapshot job has run): the day still starts from nothing.
        let firstDay = values.count == 1 && today <= Self.firstWeekday(from: account.createdAt)
        let sinceOpening = range == .all && stored.first.map { $0.value.day == Self.firstWeekday(from: account.createdAt) && $0.asOf > account.createdAt } == true
        if firstDay || sinceOpening, !cameWithShares {
            values.insert(.init(at: account.createdAt.addingTimeInterval(-0.001), value: .zero), at: 0)
            days.insert(firstDay ? today : TradingDay(account.createdAt), at: 0)
        }

        // The range runs from when the first value was taken to when the last was; a flow belongs to the first value after it.
        let start = values.first?.at
        let inRange = entries.filter { entry in (start.map { entry.occurredAt > $0 } ?? true) && entry.occurredAt <= end }
        var response = PerformanceResponse(
            accountID: account.id, range: range.rawValue, from: days.first?.description, to: days.last?.description,
            startValue: values.first?.value, endValue: values.last?.value, deposits: .zero, withdrawals: .zero,
            realizedGain: .zero, dividends: .zero, fees: .zero, days: values.count, complete: complete, stale: endsStale)
        var flows: [ExternalFlow] = []
        for entry in inRange {
            switch entry.kind {
            case .deposit: response.deposits = try response.deposits + entry.amount; flows.append(.init(at: entry.occurredAt, amount: entry.amount))
            case .withdrawal: response.withdrawals = try response.withdrawals - entry.amount; flows.append(.init(at: entry.occurredAt, amount: entry.amount))
            case .dividend: response.dividends = try response.dividends + entry.amount
            case .fee: response.fees = try response.fees - entry.amount
            // Cash a reconciliation mirrored (moved at the broker, outside Folio) came from outside the portfolio.
            case .correction where entry.quantity == nil && !entry.amount.isZero: flows.append(.init(at: entry.occurredAt, amount: entry.amount))
            default: break
            }
        }
        let book = try TaxLotBook(entries: entries)
        for sale in book.realized where (start.map { sale.soldAt > $0 } ?? true) && sale.soldAt <= end {
            response.realizedGain = try response.realizedGain + sale.gain
        }

        guard let first = values.first, let last = values.last, values.count >= 2, first.at < last.at else {
            response.note = "Returns need at least two daily values; this account has \(values.count) in the range."
            return response
        }
        let years = Returns.years(from: first.at, to: last.at)
        let annualize = try Self.annualizes(years: years, from: days.first, to: days.last)
        if let twr = try Returns.timeWeighted(values: values, flows: flows) {
            response.timeWeightedReturnPercent = twr
            if annualize { response.timeWeightedReturnAnnualizedPercent = try? Returns.compounded(twr, years: years) }
        }
        // The investor's side: the starting value and deposits go in, withdrawals and the end value come out.
        // Solved per the range's own length, then annualized for a year or more.
        var dated = [Returns.DatedAmount(at: first.at, amount: -first.value)]
        dated += flows.map { Returns.DatedAmount(at: $0.at, amount: -$0.amount) }
        dated.append(Returns.DatedAmount(at: last.at, amount: last.value))
        switch Returns.internalRate(dated.filter { !$0.amount.isZero }, periodYears: years) {
        case .rate(let overRange):
            response.moneyWeightedReturnPercent = overRange
            if annualize { response.moneyWeightedReturnAnnualizedPercent = try? Returns.compounded(overRange, years: years) }
        case .none(let why):
            response.note = why
        }
        return response
    }

    /// Returns over a year or more are annualized too (GIPS annualizes no shorter one). A year by the calendar
    /// counts: 1Y measured during the session, from the close 365 days before to now, is 364.8 days by the clock,
    /// and would otherwise be annualized only after the close.
    static func annualizes(years: Growth, from first: TradingDay?, to last: TradingDay?) throws -> Bool {
        if years >= (try Growth(1)) { return true }
        guard let first, let last else { return false }
        return first.adding(days: 365) <= last
    }

    // MARK: - Lots

    struct LotResponse: Encodable, Sendable {
        var symbol: String
        var acquiredAt: Date
        var quantity: Quantity
        var cost: Cash
        var costPerShare: Price
        var price: String?
        var marketValue: Cash?
        var unrealizedGain: Cash?
        /// What a sale today would be taxed as.
        var term: RealizedLot.Term
    }

    struct LotList: ResponseEncodable {
        var accountID: AccountID
        var method: String
        var data: [LotResponse]
    }

    /// Open tax lots, first in first out, each valued at its quote.
    @Sendable func lots(_ request: Request, context: AuthenticatedContext) async throws -> LotList {
        let account = try await account(request, context)
        return try await lots(of: account.id, book: try await book(of: account.id))
    }

    /// The account's lots, first in first out, from its ledger.
    func book(of accountID: AccountID) async throws -> TaxLotBook {
        try TaxLotBook(entries: try await reads.store().entries(of: accountID).map(\.line))
    }

    /// The open lots of `book`, each valued at its quote.
    func lots(of accountID: AccountID, book: TaxLotBook) async throws -> LotList {
        let open = book.openLots
        let prices = await quotes.quotes(for: Set(open.map(\.symbol)))
        let now = quotes.clock.now()
        var data: [LotResponse] = []
        for lot in open {
            let price = prices[lot.symbol]?.price
            let value = try price.map { price throws(MoneyError) in try Money.value(quantity: lot.quantity, price: price) }
            data.append(LotResponse(
                symbol: lot.symbol, acquiredAt: lot.acquiredAt, quantity: lot.quantity, cost: lot.cost, costPerShare: lot.costPerShare,
                price: price?.formatted(minimumFractionDigits: 2), marketValue: value, unrealizedGain: try value.map { value throws(MoneyError) in try value - lot.cost },
                term: TaxLotBook.term(acquired: lot.acquiredAt, sold: now)))
        }
        return LotList(accountID: accountID, method: "fifo", data: data)
    }

    // MARK: - Realized gains

    struct RealizedResponse: Encodable, Sendable {
        var accountID: AccountID
        var symbol: String
        var quantity: Quantity
        /// Nil when the sale found no lot (shares the ledger never shows bought).
        var acquiredAt: Date?
        var soldAt: Date
        var proceeds: Cash
        var cost: Cash
        var gain: Cash
        var term: RealizedLot.Term
    }

    struct Totals: Encodable, Sendable {
        var proceeds: Cash = .zero
        var cost: Cash = .zero
        var gain: Cash = .zero

        mutating func add(_ sale: RealizedResponse) throws {
            proceeds = try proceeds + sale.proceeds
            cost = try cost + sale.cost
            gain = try gain + sale.gain
        }
    }

    struct RealizedReport: ResponseEncodable {
        var year: Int
        var method: String
        var shortTerm: Totals
        var longTerm: Totals
        var total: Totals
        var data: [RealizedResponse]
    }

    /// Every sale of the year (New York dates) matched to its lots, in the
    /// user's accounts (or `account_id`'s), oldest first.
    func realized(_ request: Request, _ context: AuthenticatedContext) async throws -> RealizedReport {
        let year = try reportYear(request)
        let accounts = request.query["account_id"] != nil ? [try await account(request, context)] : try await store.accounts(of: context.identity.userID)
        var books: [(AccountID, TaxLotBook)] = []
        for account in accounts { books.append((account.id, try await book(of: account.id))) }
        return try realized(year: year, books: books)
    }

    /// The `year` a report asks for: this year (New York) unless named, from 1900 to this year.
    func reportYear(_ request: Request) throws -> Int {
        let thisYear = TradingDay(quotes.clock.now()).year
        guard let raw = request.query["year"] else { return thisYear }
        guard let number = Int(raw), (1900...thisYear).contains(number) else {
            throw TradingError.invalid(field: "year", code: "invalid", message: "year must be a year from 1900 to \(thisYear).")
        }
        return number
    }

    /// The year's sales of each account's book, matched to their lots, oldest first.
    func realized(year: Int, books: [(AccountID, TaxLotBook)]) throws -> RealizedReport {
        var report = RealizedReport(year: year, method: "fifo", shortTerm: Totals(), longTerm: Totals(), total: Totals(), data: [])
        for (accountID, book) in books {
            for sale in book.realized where TradingDay(sale.soldAt).year == year {
                let row = RealizedResponse(
                    accountID: accountID, symbol: sale.symbol, quantity: sale.quantity, acquiredAt: sale.acquiredAt, soldAt: sale.soldAt,
                    proceeds: sale.proceeds, cost: sale.cost, gain: sale.gain, term: sale.term)
                report.data.append(row)
                try report.total.add(row)
                if sale.term == .long { try report.longTerm.add(row) } else { try report.shortTerm.add(row) }
            }
        }
        report.data.sort { ($0.soldAt, $0.symbol) < ($1.soldAt, $1.symbol) }
        return report
    }

    @Sendable func realizedGains(_ request: Request, context: AuthenticatedContext) async throws -> RealizedReport {
        try await realized(request, context)
    }

    @Sendable func realizedGainsCSV(_ request: Request, context: AuthenticatedContext) async throws -> Response {
        let report = try await realized(request, context)
        var text = "account_id,symbol,quantity,acquired_at,sold_at,proceeds,cost,gain,term\n"
        for row in report.data {
            text += [
                row.accountID.description, row.symbol, row.quantity.description, row.acquiredAt?.formatted(.iso8601) ?? "",
                row.soldAt.formatted(.iso8601), row.proceeds.description, row.cost.description, row.gain.description, row.term.rawValue,
            ].map(CSV.field).joined(separator: ",") + "\n"
        }
        return Response(
            status: .ok,
            headers: [.contentType: "text/csv; charset=utf-8", .contentDisposition: "attachment; filename=\"realized-gains-\(report.year).csv\""],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
