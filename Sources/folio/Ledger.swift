import ArgumentParser
import FolioServer
import Foundation

struct LedgerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger", abstract: "Check the books.", subcommands: [Verify.self])

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check that every account's cash and holdings equal the sums of its ledger; exit 1 on any difference.")
        @OptionGroup var options: EnvironmentOptions

        func run() async throws {
            let (accounts, differences) = try await withDatabase(options) { _, database in
                try await LedgerVerifier(database: database).verify()
            }
            for difference in differences { print("DIFFERENCE \(difference)") }
            print("checked \(accounts) account(s): \(differences.isEmpty ? "the ledger balances" : "\(differences.count) difference(s)")")
            if !differences.isEmpty { throw ExitCode.failure }
        }
    }
}
