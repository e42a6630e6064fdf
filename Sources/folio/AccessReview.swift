import ArgumentParser
import FolioServer
import Foundation

struct AccessReviewCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "access-review",
        abstract: "List administrators and their 2FA, every user's last sign-in, dormant and disabled accounts, and admin actions and role changes.")
    @OptionGroup var options: EnvironmentOptions
    @Option(help: "text or json.") var format = "text"
    @Option(help: "How many days of admin actions to list.") var days = 30

    func validate() throws {
        guard ["text", "json"].contains(format) else { throw ValidationError("--format must be text or json") }
        guard (1...3660).contains(days) else { throw ValidationError("--days must be from 1 to 3660") }
    }

    func run() async throws {
        let report = try await withServices(options) { services in try await services.accessReview.report(periodDays: days) }
        if format == "json" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.dateEncodingStrategy = .iso8601
            encoder.keyEncodingStrategy = .convertToSnakeCase  // as the API writes its keys
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(AccessReview.text(report), terminator: "")
        }
    }
}
