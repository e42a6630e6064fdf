import ArgumentParser
import FolioServer
import Foundation

struct RetentionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retention", abstract: "Remove data past its retention period, or show what would go.", subcommands: [Run.self, Policies.self])

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply every retention policy, in batches; with --dry-run, count what each would remove and change nothing.")
        @OptionGroup var options: EnvironmentOptions
        @Flag(help: "Count, do not remove.") var dryRun = false

        func run() async throws {
            print(dryRun ? "Dry run: nothing is removed." : "Removing data past its retention period…")
            let outcomes = try await withServices(options) { services in
                try await services.retention.run(dryRun: dryRun) { policy, rows in
                    print("\(policy.name.padding(toLength: 26, withPad: " ", startingAt: 0)) \(String(rows).leftPadded(8)) row(s) \(dryRun ? "would go" : "removed")")
                }
            }
            print("\(outcomes.reduce(0) { $0 + $1.rows }) row(s) in all. The ledger, orders, fills and audit trail are never removed.")
        }
    }

    struct Policies: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the retention policies and the reason for each.")
        /// The policies take no setting; the options are taken (and the settings checked) as every command's are,
        /// so a wrapper that adds `--env-file` to each command works here too.
        @OptionGroup var options: EnvironmentOptions

        func run() async throws {
            _ = try options.loadConfiguration()
            for policy in RetentionPolicy.all {
                print("\(policy.name) (\(policy.table)), kept \(Int(policy.keep / 86_400)) day(s): \(policy.reason)")
            }
        }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
