import ArgumentParser
import FolioDomain
import FolioServer
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Opens the configured database (migrated) for a one-off command, runs `body`, closes it.
/// Builds Folio's services from the live dependencies for one command, runs
/// `body`, and closes the database. Domain errors become one line of text.
func withServices<T>(_ options: EnvironmentOptions, _ body: (FolioServices) async throws -> T) async throws -> T {
    let configuration = try options.loadConfiguration()
    try requireSQLiteFile(configuration, saying: "error")
    let logger = Logger.command(configuration: configuration)
    let database = try FolioDatabase(
        location: configuration.database, poolSize: 1, preparedStatements: configuration.databasePreparedStatements, logger: logger)
    do {
        try await database.prepareConnectionSettings()
        let pending = try await database.pendingMigrations()
        if !pending.isEmpty {
            FileHandle.standardError.write(Data("\(pending.count) migration(s) pending; run `folio migrate` first.\n".utf8))
            throw ExitCode(78)  // EX_CONFIG, as `serve` and `worker` say it
        }
        try await refuseNewerSchema(database, saying: "error", closing: false)
        let services = await FolioServices(.live(configuration: configuration, logger: logger, database: database))
        try await services.anchorLegacyTrail()
        let result = try await body(services)
        await database.shutdown()
        return result
    } catch {
        await database.shutdown()
        if let text = CommandError.text(for: error) {
            FileHandle.standardError.write(Data("error: \(text)\n".utf8))
            throw ExitCode.failure
        }
        throw error
    }
}

/// How the commands say what the domain refused: one line, no stack.
enum CommandError {
    static func text(for error: any Error) -> String? {
        switch error {
        case let refusal as any CommandRefusal:
            return refusal.description
        case let error as TradingError:
            switch error {
            case .invalid(let issues): return issues.map(\.message).joined(separator: "; ")
            case .insufficientFunds(let available): return "the amount exceeds the account's available cash (\(available))"
            case .balanceLimitExceeded: return "the resulting balance would exceed what an account can hold"
            case .accountNotFound, .unknownAccount: return "no account has that id"
            default: return ProblemMapping.text(for: error) ?? "\(error)"
            }
        default:
            // A domain error in the API's words; PostgreSQL unreachable, or refusing: what it said, not PostgresNIO's
            // generic description.
            return ProblemMapping.text(for: error) ?? DatabaseErrorText.describeIfDatabase(error)
        }
    }
}

struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage users: create an administrator, list, change a role, disable, enable, erase.",
        subcommands: [CreateAdmin.self, List.self, SetRole.self, Disable.self, Enable.self, Export.self, Erase.self])

    struct CreateAdmin: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-admin",
            abstract: "Create an administrator. The password is read from a prompt, or from standard input when it is not a terminal; never from an argument.")

        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "Email address of the new administrator.") var email: String

        func run() async throws {
            let password = try readPassword()
            let id = try await withServices(options) { services in
                try await UserAdministration(services: services).createAdmin(email: email, password: password)
            }
            print("created administrator \(email.lowercased()) (\(id.lowercasedString))")
        }

        func readPassword() throws -> String {
            if isatty(STDIN_FILENO) == 1 {
                guard let first = getpass("Password: ").map({ String(cString: $0) }),
                      let second = getpass("Repeat password: ").map({ String(cString: $0) })
                else { throw ValidationError("no password given") }
                guard first == second else { throw ValidationError("the passwords differ") }
                return first
            }
            guard let line = readLine(strippingNewline: true), !line.isEmpty else {
                throw ValidationError("give the password on standard input")
            }
            return line
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users.")
        @OptionGroup var options: EnvironmentOptions

        func run() async throws {
            let users = try await withServices(options) { services in
                try await UserAdministration(services: services).list()
            }
            let formatter = ISO8601DateFormatter()
            for user in users {
                let state = user.erased ? "erased" : user.disabled ? "disabled" : "active"
                let flags = [user.verified ? "verified" : "unverified", state].joined(separator: ",")
                print("\(user.id.lowercasedString)  \(user.role.padding(toLength: 5, withPad: " ", startingAt: 0))  \(flags)  \(formatter.string(from: user.createdAt))  \(user.email)")
            }
            if users.isEmpty { print("No users.") }
        }
    }

    struct SetRole: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-role", abstract: "Set a user's role (user or admin); ends their sessions.")
        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "Email address or id of the user.") var email: String
        @Argument(help: "user or admin.") var role: String

        /// A role that does not exist is a usage error (exit 64), found before the database is opened.
        func validate() throws {
            guard UserAdministration.roles.contains(role) else {
                throw ValidationError("the role must be one of \(UserAdministration.roles.joined(separator: ", ")), not \(role)")
            }
        }

        func run() async throws {
            let changed = try await withServices(options) { services in
                try await UserAdministration(services: services).setRole(email: email, role: role)
            }
            print(changed ? "\(email.lowercased()) is now \(role)" : "\(email.lowercased()) was \(role) already")
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a user and end every session of theirs.")
        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "Email address or id of the user.") var email: String

        func run() async throws {
            let changed = try await withServices(options) { services in
                try await UserAdministration(services: services).disable(email: email)
            }
            print(changed ? "disabled \(email.lowercased())" : "\(email.lowercased()) was disabled already")
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a disabled user again.")
        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "Email address or id of the user.") var email: String

        func run() async throws {
            let changed = try await withServices(options) { services in
                try await UserAdministration(services: services).enable(email: email)
            }
            print(changed ? "enabled \(email.lowercased())" : "\(email.lowercased()) was enabled already")
        }
    }
}

extension Users {
    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export a person's data (GDPR access request), as they get it from the settings page: JSON, to a file or standard output.")
        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "Email address or id of the user.") var email: String
        @Option(name: .shortAndLong, help: "Write to this file (created, readable by its owner only) instead of standard output.") var output: String?

        func run() async throws {
            if let output {
                // Personal data: a new file only its owner reads, never one that exists already.
                let descriptor = open(output, O_WRONLY | O_CREAT | O_EXCL, 0o600)
                guard descriptor >= 0 else {
                    FileHandle.standardError.write(Data("error: cannot create \(output): \(String(cString: strerror(errno)))\n".utf8))
                    throw ExitCode(73)  // EX_CANTCREAT
                }
                let file = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
                do {
                    let id = try await withServices(options) { services in
                        try await UserAdministration(services: services).export(email: email) { bytes in try file.write(contentsOf: Data(bytes)) }
                    }
                    try file.close()
                    FileHandle.standardError.write(Data("exported \(id.uuidString.lowercased()) to \(output)\n".utf8))
                } catch {
                    try? file.close()
                    unlink(output)
                    throw error
                }
            } else {
                _ = try await withServices(options) { services in
                    try await UserAdministration(services: services).export(email: email) { bytes in FileHandle.standardOutput.write(Data(bytes)) }
                }
            }
        }
    }

    struct Erase: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Erase a person (GDPR): their address and personal data go; their ledger and audit trail stay, unlinked from them.")
        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "Email address or id of the user.") var email: String
        @Flag(help: "Do not ask for confirmation (needed when standard input is not a terminal).") var yes = false
        @Flag(help: "Cancel the person's open orders first (recorded as the operator's doing); otherwise open orders hold the erasure back.")
        var cancelOpenOrders = false

        func run() async throws {
            if !yes {
                guard isatty(STDIN_FILENO) == 1 else { throw ValidationError("erasure cannot be undone: confirm with --yes") }
                print("Erase \(email.lowercased())? This cannot be undone. Type it again to confirm: ", terminator: "")
                guard readLine(strippingNewline: true)?.lowercased() == email.lowercased() else { throw ValidationError("not confirmed; nothing was erased") }
            }
            let outcome = try await withServices(options) { services in
                try await UserAdministration(services: services).erase(email: email, cancelingOpenOrders: cancelOpenOrders)
            }
            print("erased \(outcome.userID.lowercasedString): \(outcome.removedRows) personal row(s) removed, \(outcome.linkedItemsRemoved) linked item(s) removed at Plaid")
        }
    }
}

struct Outbox: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the newest messages kept by the development mailer.")
    @OptionGroup var options: EnvironmentOptions
    @Option(help: "How many messages to show.") var limit = 10

    func validate() throws {
        guard limit >= 1 else { throw ValidationError("--limit must be at least 1") }
    }

    func run() async throws {
        let (messages, viaSendGrid) = try await withServices(options) { services in
            (try await UserAdministration(services: services).outbox(limit: limit), services.configuration.sendGrid != nil)
        }
        let formatter = ISO8601DateFormatter()
        for message in messages {
            print(terminalSafe("--- \(formatter.string(from: message.createdAt))  to: \(message.recipient)\nsubject: \(message.subject)\n\(message.body)\n"))
        }
        // With SendGrid the mail goes there: an empty outbox says nothing about it.
        if messages.isEmpty {
            print(viaSendGrid
                ? "The outbox is empty: mail goes through SendGrid here (SENDGRID_API_KEY is set), and the outbox keeps only the development mailer's. Refused or uncertain mail is in the log and the folio_mails_total metric; `folio mail suppressions` lists addresses SendGrid bounced."
                : "The outbox is empty.")
        }
    }
}

struct MailCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mail", abstract: "Addresses no mail goes to (SendGrid reported a bounce or a spam report), and letting mail go to one again.",
        subcommands: [Suppressions.self, Unsuppress.self])

    struct Suppressions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the addresses no mail goes to, with SendGrid's reason and since when.")
        @OptionGroup var options: EnvironmentOptions

        func run() async throws {
            let stopped = try await withServices(options) { services in try await UserAdministration(services: services).suppressions() }
            let formatter = ISO8601DateFormatter()
            for entry in stopped { print(terminalSafe("\(entry.email)  \(entry.reason)  since \(formatter.string(from: entry.since))")) }
            if stopped.isEmpty { print("Mail goes to every address.") }
        }
    }

    struct Unsuppress: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Let mail go to an address again (its owner repaired the mailbox, or took back a spam report). Audited.")
        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "The address.") var email: String

        func validate() throws {
            guard UserAdministration.isPlausibleEmail(email) else { throw ValidationError("\(email.prefix(80)) is not an email address") }
        }

        func run() async throws {
            let removed = try await withServices(options) { services in try await UserAdministration(services: services).unsuppress(email: email) }
            print(removed ? "Mail goes to \(email) again." : "No mail was stopped for \(email); nothing changed.")
        }
    }
}
