import ArgumentParser
import FolioServer
import Foundation

struct SecretsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secrets", abstract: "Work with what SECRET_KEY protects.", subcommands: [Rotate.self])

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "After a key rotation (new SECRET_KEY, the old one in PREVIOUS_SECRET_KEYS): seal brokerage keys, Plaid access tokens and TOTP secrets again, and sign audit heads again, under the new key. Exit 1 if any sealed value opens under no key.")
        @OptionGroup var options: EnvironmentOptions

        func run() async throws {
            let outcome = try await withServices(options) { services in try await SecretRotation.run(services: services) }
            print("sealed again under the current key: \(outcome.brokerageLinks) brokerage link(s), \(outcome.plaidItems) Plaid item(s), \(outcome.totpSecrets) TOTP secret(s); signed again: \(outcome.auditHeads) audit head(s)")
            if outcome.unreadable > 0 {
                print("\(outcome.unreadable) sealed value(s) open under no configured key: their users must link or enrol again")
                throw ExitCode.failure
            }
            print("PREVIOUS_SECRET_KEYS can now be emptied once every running instance uses the new SECRET_KEY")
        }
    }
}
