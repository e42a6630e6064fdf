import ArgumentParser
import FolioServer
import Foundation

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Check the audit trail.", subcommands: [Verify.self, OpenLegacyChains.self, OpenPersonChain.self])

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Walk the audit trail's hash chain and report the first broken link; exit 1 if there is one.")
        @OptionGroup var options: EnvironmentOptions

        func run() async throws {
            let (events, firstBreak) = try await withServices(options) { services in
                try await AuditVerifier(services: services).verify()
            }
            if let firstBreak {
                print("BROKEN \(firstBreak)")
                print("checked \(events) event(s): the chain is broken")
                throw ExitCode.failure
            }
            print("checked \(events) event(s): the chain is intact")
        }
    }

    struct OpenLegacyChains: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "open-legacy-chains",
            abstract: "Open an audit chain for each account from before per-account chains that has none (an upgrade that stopped part-way).",
            discussion: "Only after `folio audit verify` named such accounts and you know why: it opens one whose chain was removed just the same.")
        @OptionGroup var options: EnvironmentOptions
        @Flag(help: "Confirm.") var yes = false

        func run() async throws {
            guard yes else { throw ValidationError("this vouches for those accounts' books as they are now: confirm with --yes") }
            let opened = try await withServices(options) { services in try await services.openLegacyAccountChains() }
            print("opened \(opened) audit chain(s)")
        }
    }

    struct OpenPersonChain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "open-person-chain",
            abstract: "Start a new audit chain for a person whose chain `folio audit verify` found missing, once you have looked.",
            discussion: "Until then nothing about them can be recorded: they can be neither disabled nor erased, nor sign in.")
        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "Email address or id of the user.") var email: String
        @Flag(help: "Confirm.") var yes = false

        func run() async throws {
            guard yes else { throw ValidationError("the removed events stay removed; the new chain starts from now: confirm with --yes") }
            let opened = try await withServices(options) { services in try await UserAdministration(services: services).openPersonChain(email: email) }
            print(opened ? "opened a new audit chain for \(email)" : "\(email) has an audit chain; nothing was changed")
        }
    }
}
