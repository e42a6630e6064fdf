// The benchmark harness's companion program (see Benchmarks/run):
//   folio-bench bare-router PORT   GET /health on a bare Hummingbird router, no middleware
//   folio-bench domain [--quick] [--only TEXT]   domain micro-benchmarks (those whose name contains TEXT), as a Markdown table
//   folio-bench bcrypt SECONDS     bcrypt cost 12 hashes per second on every core
import Dispatch
import FolioDomain
import Foundation
import Hummingbird
import HummingbirdBcrypt
import NIOConcurrencyHelpers

let arguments = Array(CommandLine.arguments.dropFirst())

switch arguments.first {
case "bare-router":
    let port = arguments.count > 1 ? Int(arguments[1]) ?? 8090 : 8090
    let router = Router()
    router.get("/health") { _, _ -> Response in
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"status":"ok"}"#)))
    }
    let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
    try await app.runService()
case "domain":
    let only = arguments.firstIndex(of: "--only").flatMap { arguments.indices.contains($0 + 1) ? arguments[$0 + 1] : nil }
    DomainBenchmarks(quick: arguments.contains("--quick"), only: only).run()
case "bcrypt":
    let seconds = arguments.count > 1 ? Double(arguments[1]) ?? 5 : 5
    let cores = ProcessInfo.processInfo.activeProcessorCount
    let deadline = Date().addingTimeInterval(seconds)
    let total = NIOLockedValueBox(0)
    DispatchQueue.concurrentPerform(iterations: cores) { _ in
        var count = 0
        while Date() < deadline {
            _ = Bcrypt.hash("correct horse battery staple", cost: 12)
            count += 1
        }
        total.withLockedValue { $0 += count }
    }
    print(String(format: "%.2f", Double(total.withLockedValue { $0 }) / seconds))
default:
    FileHandle.standardError.write(Data("usage: folio-bench bare-router PORT | domain [--quick] | bcrypt SECONDS\n".utf8))
    exit(64)
}

/// Times the domain's hot paths and prints how each grows with its input.
struct DomainBenchmarks {
    var quick: Bool
    var only: String?

    func run() {
        print("| micro-benchmark | size | time per operation (median of rounds) | operations per second |")
        print("|---|---|---|---|")
        let texts = (0..<1000).map { "\($0 * 7919 % 100_000).\($0 % 100)" }
        let bytes = texts.map { Array($0.utf8) }
        measure("amount parse (Cash, from bytes)", size: "1 value") { index in _ = try? Cash(parsing: bytes[index % bytes.count]) }
        let values = texts.compactMap { try? Cash(parsing: $0) }
        measure("amount format (Cash)", size: "1 value") { index in _ = values[index % values.count].description }
        let line = Self.logLine(bytes: 1024)
        measure("log redactor", size: "1 KiB line") { _ in _ = LogRedactor.standard.redact(line) }
        for positions in [20, 1_000, 10_000] {
            let (holdings, quotes) = Self.portfolio(positions: positions)
            measure("portfolio valuation", size: "\(positions) positions") { _ in
                _ = try? PortfolioValuation(cash: 1_000, availableCash: 1_000, holdings: holdings, quotes: quotes)
            }
        }
        let (daily, flows) = Self.decade()
        measure("time-weighted return", size: "10 years of daily values") { _ in _ = try? Returns.timeWeighted(values: daily, flows: flows) }
        let dated = [Returns.DatedAmount(at: daily[0].at, amount: -101_000)] + flows.map { Returns.DatedAmount(at: $0.at, amount: -$0.amount) }
            + [Returns.DatedAmount(at: daily.last!.at, amount: daily.last!.value)]
        measure("money-weighted return (IRR)", size: "10 years, 121 flows") { _ in _ = Returns.internalRate(dated) }
        for positions in [20, 1_000, 10_000] {
            let (holdings, quotes, allocation) = Self.rebalancing(positions: positions)
            measure("rebalance plan (full, whole shares)", size: "\(positions) positions") { _ in
                _ = try? RebalancePlanner.plan(
                    holdings: holdings, quotes: quotes, cash: 50_000, availableCash: 50_000, allocation: allocation,
                    options: RebalanceOptions(marketBuyMargin: Ratio(uncheckedUnits: 50_000)))
            }
        }
    }

    /// Runs `body` repeatedly for about a second (a tenth with --quick) and prints the median round.
    func measure(_ name: String, size: String, _ body: (Int) -> Void) {
        if let only, !"\(name) \(size)".contains(only) { return }
        // Rounds of 16 operations for about a second; the median round is
        // reported, so a moment when the shared machine is busy elsewhere does not count.
        let budget: Double = quick ? 0.1 : 1.0
        var iterations = 0
        var rounds: [Double] = []
        let start = DispatchTime.now().uptimeNanoseconds
        while Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 < budget || rounds.count < 5 {
            let roundStart = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<16 { body(iterations); iterations += 1 }
            rounds.append(Double(DispatchTime.now().uptimeNanoseconds - roundStart) / 1e9 / 16)
        }
        let perOperation = rounds.sorted()[rounds.count / 2]
        let shown = perOperation >= 1e-3 ? String(format: "%.2f ms", perOperation * 1e3) : String(format: "%.2f µs", perOperation * 1e6)
        print("| \(name) | \(size) | \(shown) | \(String(format: "%.0f", 1 / perOperation)) |")
    }

    static func logLine(bytes: Int) -> String {
        var line = #"{"level":"info","message":"request","path":"/api/orders","password":"hunter2","authorization":"Bearer eyJhbGciOi.payload.sig","email":"someone@example.com","detail":""#
        while line.utf8.count < bytes - 2 { line += "quantity 10 AAPL at 189.98 " }
        return line + #""}"#
    }

    /// Ten years of daily values with a deposit every month.
    static func decade() -> ([Returns.ValuePoint], [ExternalFlow]) {
        let first = TradingDay(year: 2016, month: 1, day: 4)
        let values = (0..<3_650).map { Returns.ValuePoint(at: first.adding(days: $0).close, value: Cash(integerLiteral: 101_000 + $0 * 13 % 9_000)) }
        let flows = stride(from: 30, to: 3_650, by: 30).map { ExternalFlow(at: first.adding(days: $0).at(hour: 11, minute: 0), amount: 500) }
        return (values, flows)
    }

    /// A portfolio held unevenly, with an equal target on every symbol (the last takes the remainder).
    static func rebalancing(positions: Int) -> ([PricedHolding], [String: PriceQuote], TargetAllocation) {
        let (valued, quotes) = portfolio(positions: positions)
        let holdings = valued.map { PricedHolding(symbol: $0.symbol, quantity: $0.position.quantity, availableQuantity: $0.position.quantity, costBasis: $0.position.costBasis) }
        // Weights in units of 0.0001 %: an equal share each, the rest on the first symbol.
        let each = 1_000_000 / positions
        var weights = valued.map { TargetWeight(symbol: $0.symbol, percent: Ratio(uncheckedUnits: Int128(each) * 100)) }
        weights[0].percent = Ratio(uncheckedUnits: Int128(1_000_000 - each * (positions - 1)) * 100)
        return (holdings, quotes, try! TargetAllocation(weights: weights))
    }

    static func portfolio(positions: Int) -> ([(symbol: String, position: Position)], [String: PriceQuote]) {
        var holdings: [(symbol: String, position: Position)] = []
        var quotes: [String: PriceQuote] = [:]
        let now = Date()
        for index in 0..<positions {
            let symbol = "S\(index)"
            holdings.append((symbol, Position(quantity: Quantity(integerLiteral: index % 97 + 1), costBasis: Cash(integerLiteral: (index % 89 + 10) * 7))))
            // Quarters of a dollar: 0.25 to 125.25.
            quotes[symbol] = PriceQuote(
                symbol: symbol, price: Price(uncheckedUnits: Int128(index % 501 + 1) * 25_000_000),
                previousClose: Price(uncheckedUnits: Int128(index % 499 + 1) * 25_000_000), asOf: now)
        }
        return (holdings, quotes)
    }
}
