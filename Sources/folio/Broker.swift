import ArgumentParser
import FolioServer
import Foundation

struct BrokerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker", abstract: "Work with accounts held at Alpaca.", subcommands: [Reconcile.self])

    struct Reconcile: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare every linked Alpaca account's cash and positions with Folio's books and post an explained correction for each difference; --dry-run only prints them.")
        @OptionGroup var options: EnvironmentOptions
        @Flag(help: "Print the differences; change nothing.") var dryRun = false

        func run() async throws {
            let reports = try await withServices(options) { services in try await BrokerReconciliation.run(services: services, dryRun: dryRun) }
            if reports.isEmpty { print("no linked brokerage accounts") }
            for report in reports {
                if let skipped = report.skipped {
                    print("\(report.accountID): skipped: \(skipped)")
                } else if report.differences.isEmpty {
                    print("\(report.accountID): in agreement")
                } else {
                    print("\(report.accountID): \(report.differences.count) difference(s)\(report.applied ? ", adjusted" : dryRun ? ", not adjusted (dry run)" : "")")
                    for line in report.differences { print("  \(line)") }
                }
            }
        }
    }
}
