import ArgumentParser
import FolioDomain
import FolioServer
import Foundation

struct BrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker", abstract: "Work with accounts held at Alpaca.", subcommands: [Reconcile.self, RecordFills.self])

    struct Reconcile: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare every linked Alpaca account's cash and positions with Folio's books and post an explained correction for each difference; --dry-run only prints them.")
        @OptionGroup var options: EnvironmentOptions
        @Flag(help: "Print the differences; change nothing.") var dryRun = false

        func run() async throws {
            let reports = try await withServices(options) { services in try await BrokerReconciliation.run(services: services, dryRun: dryRun) }
            if reports.isEmpty { print("no linked brokerage accounts") }
            for report in reports {
                // With orders open, some differences may be adjusted while cash and the orders' symbols wait.
                if !report.differences.isEmpty {
                    print("\(report.accountID): \(report.differences.count) difference(s)\(report.applied ? ", adjusted" : dryRun ? ", not adjusted (dry run)" : "")")
                    for line in report.differences { print("  \(terminalSafe(line))") }
                }
                if let skipped = report.skipped {
                    print("\(report.accountID): \(report.differences.isEmpty ? "skipped" : "waiting"): \(terminalSafe(skipped))")
                } else if report.differences.isEmpty {
                    print("\(report.accountID): in agreement")
                }
            }
            let failed = reports.filter(\.failed).count
            if failed > 0 {
                FileHandle.standardError.write(Data("error: \(failed) account(s) could not be reconciled (the reason is above)\n".utf8))
                throw ExitCode.failure
            }
        }
    }

    struct RecordFills: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "record-fills",
            abstract: "Book the rest of an Alpaca order that ended there while Folio cannot read its fills (FolioOrdersOverdue); --dry-run only prints it.",
            discussion: """
                Only for an order Alpaca says has ended, whose filled_qty is ahead of Folio's books. Give the rest's \
                quantity (Alpaca's filled_qty less what Folio booked; the command checks it) and its price as \
                Alpaca shows it (the average when the rest filled at several prices). Then run `folio broker reconcile`.
                """)
        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "Folio's order id (Alpaca's client_order_id).") var orderID: String
        @Option(parsing: .unconditional, help: "The shares not booked yet, such as 10.") var quantity: String
        @Option(parsing: .unconditional, help: "Their price per share, such as 187.25.") var price: String
        @Flag(help: "Print what would be booked; change nothing.") var dryRun = false

        /// What is wrong with the arguments is a usage error (exit 64), found before the database is opened.
        func validate() throws {
            guard OrderID(orderID) != nil else { throw ValidationError("the order id must be a UUID") }
            guard let shares = try? Quantity(parsing: quantity), shares.isPositive else {
                throw ValidationError("--quantity must be a number of shares more than zero, such as 10 (at most 9 decimal places)")
            }
            guard let each = try? Price(parsing: price), each.isPositive else {
                throw ValidationError("--price must be a price more than zero, such as 187.25 (at most 8 decimal places)")
            }
        }

        func run() async throws {
            let outcome = try await withServices(options) { services in
                try await OperatorFills.record(orderID: orderID, quantity: quantity, price: price, dryRun: dryRun, services: services)
            }
            let alpaca = "Alpaca: \(outcome.alpacaStatus), \(outcome.alpacaFilled) filled" + (outcome.alpacaAveragePrice.map { " at an average of \($0)" } ?? "")
            print(alpaca)
            print("\(outcome.applied ? "booked" : "would book (dry run)") \(outcome.quantity) at \(outcome.price) after \(outcome.booked) booked; the order is \(outcome.status)")
            if let filled = outcome.filledAfter, filled != outcome.alpacaFilled {
                print("warning: the books could not take the fill (\(filled) filled here): the order ended here; run `folio broker reconcile`")
            }
        }
    }
}
