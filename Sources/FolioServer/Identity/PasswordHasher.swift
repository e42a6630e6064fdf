import Foundation
import HummingbirdBcrypt
import NIOConcurrencyHelpers
import NIOPosix

/// bcrypt on the thread pool, never on an event loop, so a login storm does
/// not stall other requests.
struct PasswordHasher: Sendable {
    let cost: Int
    private let dummy = NIOLockedValueBox<String?>(nil)

    init(cost: Int) {
        precondition(cost >= 10, "bcrypt cost below 10 is refused")
        self.cost = cost
    }

    func hash(_ password: String) async throws -> String {
        let cost = UInt8(cost)
        return try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    func verify(_ password: String, hash: String) async throws -> Bool {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: hash) }
    }

    /// Spends the same time as a real check when there is no user to check
    /// against, so the answer's timing does not tell whether an email exists.
    func verifyAgainstDummy(_ password: String) async throws {
        let existing = dummy.withLockedValue { $0 }
        let hash: String
        if let existing {
            hash = existing
        } else {
            hash = try await self.hash(SecureToken.generate())
            dummy.withLockedValue { $0 = hash }
        }
        _ = try await verify(password, hash: hash)
    }
}
