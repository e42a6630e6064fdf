import ArgumentParser
import FolioServer
import Foundation

struct SecretsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secrets", abstract: "Work with what SECRET_KEY protects.", subcommands: [Rotate.self])

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "After a key rotation (new SECRET_KEY, the old one in PREVIOUS_SECRET_KEYS): seal brokerage keys, Plaid access tokens and TOTP secrets again, and sign audit heads again, under the new key. Exit 1 if any sealed value opens, or any audit head is signed, under no configured key.")
        @OptionGroup var options: EnvironmentOptions

        func run() async throws {
            let outcome = try await withServices(options) { services in try await SecretRotation.run(services: services) }
            print("sealed again under the current key: \(outcome.brokerageLinks) brokerage link(s), \(outcome.plaidItems) Plaid item(s), \(outcome.totpSecrets) TOTP secret(s); signed again: \(outcome.auditHeads) audit head(s)")
            var failed = false
            if outcome.unreadable > 0 {
                print("\(outcome.unreadable) sealed value(s) open under no configured key: their users must link or enrol again")
                failed = true
            }
            if outcome.unsignedAuditHeads > 0 {
                print("\(outcome.unsignedAuditHeads) audit chain head(s) carry no signature under any configured key: nothing more can be recorded on those chains. Put the key that signed them back in PREVIOUS_SECRET_KEYS and run this again (or see `folio audit verify`)")
                failed = true
            }
            if failed { throw ExitCode.failure }
            print("PREVIOUS_SECRET_KEYS can now be emptied once every running instance uses the new SECRET_KEY")
        }
    }
}
