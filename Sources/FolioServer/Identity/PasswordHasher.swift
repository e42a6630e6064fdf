import Foundation
import HummingbirdBcrypt
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// bcrypt on its own thread pool, never on an event loop and never on the pool
/// that runs SQLite's blocking calls, so a login storm stalls neither other
/// requests nor the database.
struct PasswordHasher: Sendable {
    static let threadPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: System.coreCount)
        pool.start()
        return pool
    }()

    let cost: Int
    private let dummy = NIOLockedValueBox<String?>(nil)

    /// The configuration allows 10 to 16 (`BCRYPT_COST`); below that only
    /// in-process tests, which set bcrypt's least, 4, so that hundreds of
    /// sign-ups at once do not queue behind each other on two cores.
    init(cost: Int) {
        precondition(cost >= 4, "bcrypt cost below 4 does not exist")
        self.cost = cost
    }

    func hash(_ password: String) async throws -> String {
        let cost = UInt8(cost)
        return try await Self.threadPool.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    func verify(_ password: String, hash: String) async throws -> Bool {
        try await Self.threadPool.runIfActive { Bcrypt.verify(password, hash: hash) }
    }

    /// The cost a bcrypt hash was made with (`$2b$12$…`); nil for anything else (an unusable or erased password).
    static func cost(of hash: String) -> Int? {
        let parts = hash.split(separator: "$", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0].isEmpty, ["2a", "2b", "2x", "2y"].contains(parts[1]), parts[2].count == 2,
              parts[2].allSatisfy({ $0.isASCII && $0.isNumber }), let cost = Int(parts[2])
        else { return nil }
        return cost
    }

    /// Whether a hash was made at another cost than `BCRYPT_COST` now asks: checking it then takes another
    /// time than the unknown-email check does, which would tell who has an account. Sign-in makes it again.
    func isOutdated(_ hash: String) -> Bool {
        Self.cost(of: hash).map { $0 != cost } ?? false
    }

    /// Spends the same time as a real check when there is no user to check
    /// against, so the answer's timing does not tell whether an email exists.
    func verifyAgainstDummy(_ password: String) async throws {
        _ = try await verify(password, hash: try await unusableHash())
    }

    /// The hash of a random secret no one holds (made once per process): a password no one can sign in with.
    func unusableHash() async throws -> String {
        if let existing = dummy.withLockedValue({ $0 }) { return existing }
        let hash = try await self.hash(SecureToken.generate())
        dummy.withLockedValue { $0 = hash }
        return hash
    }
}
