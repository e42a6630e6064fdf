import ArgumentParser
import FolioDomain
import FolioServer
import Foundation

struct LedgerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger", abstract: "Check the books, and post dividends and fees.", subcommands: [Verify.self, Post.self])

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check that every account's cash and holdings equal the sums of its ledger; exit 1 on any difference.")
        @OptionGroup var options: EnvironmentOptions

        func run() async throws {
            let (accounts, differences) = try await withServices(options) { services in
                try await LedgerVerifier(services: services).verify()
            }
            for difference in differences { print("DIFFERENCE \(difference)") }
            print("checked \(accounts) account(s): \(differences.isEmpty ? "the ledger balances" : "\(differences.count) difference(s)")")
            if !differences.isEmpty { throw ExitCode.failure }
        }
    }

    struct Post: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Post a dividend (cash in) or a fee (cash out) to one account, with its ledger row and audit event.")
        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "The account's id.") var accountID: String
        @Option(help: "dividend or fee.") var type: String
        @Option(parsing: .unconditional, help: "A positive amount such as 12.34.") var amount: String
        @Option(help: "The ticker a dividend was paid on (required for a dividend; one the account holds or held).") var symbol: String?
        @Option(help: "What the customer sees on the statement.") var description: String?
        @Flag(help: "Post it even though an identical posting (kind, amount, symbol) was made to the account in the last 24 hours.") var again = false

        /// What is wrong with the arguments is a usage error (exit 64), found before the database is opened.
        func validate() throws {
            _ = try parsed()
        }

        func parsed() throws -> (kind: OperatorPosting.Kind, id: AccountID, amount: Cash) {
            guard let kind = OperatorPosting.Kind(rawValue: type.lowercased()) else { throw ValidationError("--type must be dividend or fee") }
            guard let id = AccountID(accountID) else { throw ValidationError("the account id must be a UUID") }
            // An operator moving money types plain digits: `1e3` is more likely a slip than a thousand.
            guard amount.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "." || $0 == "-") }) else {
                throw ValidationError("--amount must be written in plain digits, such as 12.34 (not \(amount.prefix(40)))")
            }
            let value: Cash
            do { value = try Cash(parsing: amount) } catch { throw ValidationError(FieldIssue.amount(error, field: "--amount", scale: Cash.centPlaces).message) }
            guard value.isPositive else { throw ValidationError("--amount must be greater than zero (a fee is posted as a positive amount)") }
            guard value.units % 100 == 0 else { throw ValidationError("--amount must be in whole cents, such as 12.34 (not \(amount.prefix(40)))") }
            if let description {
                guard UserText.length(description) <= 200 else { throw ValidationError("--description may have at most 200 characters") }
                guard !UserText.hasHiddenCharacters(description) else {
                    throw ValidationError("--description may not hold control or text-direction characters (a line break, U+202E)")
                }
            }
            return (kind, id, value)
        }

        func run() async throws {
            let (kind, id, value) = try parsed()
            // A blank description would leave the customer's statement saying nothing: the kind's own words instead.
            let given = description.flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0 }
            let text = given ?? (kind == .dividend ? "Dividend\(symbol.map { " \($0.uppercased())" } ?? "")" : "Fee")
            let (entry, cash) = try await withServices(options) { services in
                try await OperatorPosting.post(kind, accountID: id, amount: value, symbol: symbol, description: text, again: again, services: services)
            }
            print("posted \(kind.rawValue) \(value) as \(entry); cash now \(cash)")
        }
    }
}
