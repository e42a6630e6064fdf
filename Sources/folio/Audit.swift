import ArgumentParser
import FolioServer
import Foundation

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "Check the audit trail.", subcommands: [Verify.self])

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
}
