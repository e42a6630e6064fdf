import ArgumentParser
import FolioServer
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Opens the configured database (migrated) for a one-off command, runs `body`, closes it.
func withDatabase<T>(_ options: EnvironmentOptions, _ body: (AppConfiguration, FolioDatabase) async throws -> T) async throws -> T {
    let configuration = try options.loadConfiguration()
    var logger = Logger.folio(configuration: configuration)
    logger.logLevel = .warning
    let database = try FolioDatabase(location: configuration.database, poolSize: 1, logger: logger)
    do {
        let pending = try await database.pendingMigrations()
        if !pending.isEmpty {
            throw ValidationError("\(pending.count) migration(s) pending; run `folio migrate` first")
        }
        let result = try await body(configuration, database)
        await database.shutdown()
        return result
    } catch let failure as UserAdministration.Failure {
        await database.shutdown()
        FileHandle.standardError.write(Data("error: \(failure.description)\n".utf8))
        throw ExitCode.failure
    } catch {
        await database.shutdown()
        throw error
    }
}

struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage users: create an administrator, list, change a role, disable.",
        subcommands: [CreateAdmin.self, List.self, SetRole.self, Disable.self])

    struct CreateAdmin: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-admin",
            abstract: "Create an administrator. The password is read from a prompt, or from standard input when it is not a terminal; never from an argument.")

        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "Email address of the new administrator.") var email: String

        func run() async throws {
            let password = try readPassword()
            let id = try await withDatabase(options) { configuration, database in
                try await UserAdministration(configuration: configuration, database: database).createAdmin(email: email, password: password)
            }
            print("created administrator \(email.lowercased()) (\(id.uuidString.lowercased()))")
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
            let users = try await withDatabase(options) { configuration, database in
                try await UserAdministration(configuration: configuration, database: database).list()
            }
            let formatter = ISO8601DateFormatter()
            for user in users {
                let flags = [user.verified ? "verified" : "unverified", user.disabled ? "disabled" : "active"].joined(separator: ",")
                print("\(user.id.uuidString.lowercased())  \(user.role.padding(toLength: 5, withPad: " ", startingAt: 0))  \(flags)  \(formatter.string(from: user.createdAt))  \(user.email)")
            }
            if users.isEmpty { print("No users.") }
        }
    }

    struct SetRole: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-role", abstract: "Set a user's role (user or admin); ends their sessions.")
        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "Email address of the user.") var email: String
        @Argument(help: "user or admin.") var role: String

        func run() async throws {
            try await withDatabase(options) { configuration, database in
                try await UserAdministration(configuration: configuration, database: database).setRole(email: email, role: role)
            }
            print("\(email.lowercased()) is now \(role)")
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a user and end every session of theirs.")
        @OptionGroup var options: EnvironmentOptions
        @Argument(help: "Email address of the user.") var email: String

        func run() async throws {
            try await withDatabase(options) { configuration, database in
                try await UserAdministration(configuration: configuration, database: database).disable(email: email)
            }
            print("disabled \(email.lowercased())")
        }
    }
}

struct Outbox: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the newest messages kept by the development mailer.")
    @OptionGroup var options: EnvironmentOptions
    @Option(help: "How many messages to show.") var limit = 10

    func run() async throws {
        let messages = try await withDatabase(options) { configuration, database in
            try await UserAdministration(configuration: configuration, database: database).outbox(limit: limit)
        }
        let formatter = ISO8601DateFormatter()
        for message in messages {
            print("--- \(formatter.string(from: message.createdAt))  to: \(message.recipient)\nsubject: \(message.subject)\n\(message.body)\n")
        }
        if messages.isEmpty { print("The outbox is empty.") }
    }
}
