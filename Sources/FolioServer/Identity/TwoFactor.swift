import FluentKit
import FolioDomain
import Foundation
import HummingbirdOTP

/// Optional TOTP two-factor authentication (RFC 6238): enrol, confirm with a
/// code (which turns it on and hands out ten single-use recovery codes),
/// new recovery codes in place of the old, disable with password and code.
/// A recovery code spent is audited and mailed, with how many are left.
extension IdentityServices {
    static let recoveryCodeCount = 10
    static let totpIssuer = "Folio"

    /// A new secret, sealed on the user until a code confirms it.
    func enrollTwoFactor(_ identity: Identity) async throws -> (secret: String, uri: String) {
        let user = try await currentUser(identity)
        if user.hasTwoFactor { throw IdentityError.twoFactorAlreadyEnabled }
        // 32 characters from a 32-letter alphabet: 160 bits, the RFC 4226 recommendation.
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        var generator = SystemRandomNumberGenerator()
        let secret = String((0..<32).map { _ in alphabet.randomElement(using: &generator)! })
        let sealed = try secretBox.seal(secret), now = clock.now()
        try await database.modelTransaction { db in
            // Turned on meanwhile (another window confirmed a set-up): its secret stays. Erased meanwhile: no secret is kept.
            guard try await store.startSecondFactorSetUp(userID: user.id!, sealed: sealed, now: now, on: db) else {
                throw try await store.erased([user.id!], on: db).isEmpty ? IdentityError.twoFactorAlreadyEnabled : IdentityError.userErased
            }
            try await store.forgetTOTPSteps(userID: user.id!, on: db)
        }
        return Self.authenticatorEntry(secret: secret, email: user.email)
    }

    /// What an authenticator app takes: the secret in base32, and the otpauth URI with it.
    static func authenticatorEntry(secret: String, email: String) -> (secret: String, uri: String) {
        var uri = TOTP(secret: secret).createAuthenticatorURL(label: "\(totpIssuer):\(email)", issuer: totpIssuer)
        // Some apps read a "+" in the label as a space: an address with one (a+b@example.com) is written %2B.
        if let query = uri.firstIndex(of: "?") { uri = uri[..<query].replacingOccurrences(of: "+", with: "%2B") + uri[query...] }
        let base32 = uri.components(separatedBy: "secret=").last?.components(separatedBy: "&").first ?? ""
        return (base32, uri)
    }

    /// Turns two-factor on; the recovery codes, shown this once.
    func confirmTwoFactor(_ identity: Identity, password: String, totpCode: String, origin: RequestOrigin) async throws -> [String] {
        let user = try await currentUser(identity)
        guard !user.hasTwoFactor, let sealed = user.totpSecretSealed, let secret = secretBox.open(sealed) else {
            throw IdentityError.twoFactorNotEnrolling
        }
        // A stolen session alone must not be able to put a second factor between the owner and the account.
        try await checkCredentials(of: user, origin: origin) {
            guard PasswordPolicy.isHashable(password), try await hasher.verify(password, hash: user.passwordHash) else {
                return .failed(reason: "wrong_password", FieldIssue(field: "password", code: "incorrect", message: "The password is wrong."))
            }
            guard let step = Self.totpStep(code: totpCode, secret: secret, at: clock.now()),
                  try await store.spendTOTPStep(userID: user.id!, step: step, on: database.db)
            else {
                return .failed(
                    reason: "wrong_second_factor",
                    FieldIssue(field: "totp_code", code: "invalid_code", message: "The code does not match. Check that the app holds the secret shown on this page (a new set-up replaces the one added before) and that the phone's clock is right."))
            }
            return .passed
        }
        let now = clock.now()
        let codes = (0..<Self.recoveryCodeCount).map { _ in Self.newRecoveryCode() }
        try await database.modelTransaction { db in
            // Only with the secret the code was checked against: a set-up started meanwhile (another window or
            // session) replaced it, and turning on would leave the user's app holding a secret that no longer counts.
            guard try await store.enableSecondFactor(userID: user.id!, sealed: sealed, now: now, on: db) else {
                throw try await store.lockSecondFactor(userID: user.id!, on: db) ? IdentityError.twoFactorAlreadyEnabled : IdentityError.twoFactorSetUpReplaced
            }
            user.totpEnabledAt = now
            user.updatedAt = now
            let stored = codes.map { RecoveryCode(userID: user.id!, codeHash: SecretBox.saltedHash(Self.canonicalRecoveryCode($0)), now: now) }
            try await store.replaceRecoveryCodes(userID: user.id!, with: stored, on: db)
            try await twoFactorChanged(user, enabled: true, identity: identity, origin: origin, on: db)
        }
        return codes
    }

    /// Turns two-factor off with the password and a code.
    func disableTwoFactor(_ identity: Identity, password: String, totpCode: String?, recoveryCode: String?, origin: RequestOrigin) async throws {
        let user = try await currentUser(identity)
        guard user.hasTwoFactor else { throw IdentityError.twoFactorNotEnabled }
        try await checkPasswordAndSecondFactor(of: user, password: password, totpCode: totpCode, recoveryCode: recoveryCode, origin: origin)
        try await database.modelTransaction { db in
            guard try await store.lockUnerasedUser(user.id!, on: db) else { throw IdentityError.userErased }
            user.totpEnabledAt = nil
            user.totpSecretSealed = nil
            user.updatedAt = clock.now()
            try await store.save(user, on: db)
            try await store.deleteRecoveryCodes(userID: user.id!, on: db)
            try await twoFactorChanged(user, enabled: false, identity: identity, origin: origin, on: db)
        }
    }

    /// Ten new recovery codes in place of the old ones (used or not), with the
    /// password and a current code (or one of the old recovery codes, the last
    /// way in for someone who lost the phone): shown this once.
    func replaceRecoveryCodes(_ identity: Identity, password: String, totpCode: String?, recoveryCode: String?, origin: RequestOrigin) async throws -> [String] {
        let user = try await currentUser(identity)
        guard user.hasTwoFactor else { throw IdentityError.twoFactorNotEnabled }
        try await checkPasswordAndSecondFactor(of: user, password: password, totpCode: totpCode, recoveryCode: recoveryCode, origin: origin)
        let now = clock.now()
        let codes = (0..<Self.recoveryCodeCount).map { _ in Self.newRecoveryCode() }
        try await database.modelTransaction { db in
            // Turned off meanwhile: no codes for a second factor that is gone.
            guard try await store.lockSecondFactor(userID: user.id!, on: db) else { throw IdentityError.twoFactorNotEnabled }
            let stored = codes.map { RecoveryCode(userID: user.id!, codeHash: SecretBox.saltedHash(Self.canonicalRecoveryCode($0)), now: now) }
            try await store.replaceRecoveryCodes(userID: user.id!, with: stored, on: db)
            try await audit.record(
                .init(action: "user.recovery_codes_replaced", actorID: user.id, subjectType: "user", subjectID: user.id?.lowercasedString, userID: user.id),
                origin: origin, on: db)
            try await mail(user, .recoveryCodesReplaced, MailVariables(["ip": origin.ip ?? "an unknown address"]), on: db)
        }
        return codes
    }

    /// The password and a second factor of someone changing their second factor, under the sign-in
    /// throttle. A recovery code spent here is not mailed on its own: the change it made is (two-factor
    /// off, new codes).
    private func checkPasswordAndSecondFactor(of user: User, password: String, totpCode: String?, recoveryCode: String?, origin: RequestOrigin) async throws {
        let db = database.db
        try await checkCredentials(of: user, origin: origin) {
            guard PasswordPolicy.isHashable(password), try await hasher.verify(password, hash: user.passwordHash) else {
                return .failed(reason: "wrong_password", FieldIssue(field: "password", code: "incorrect", message: "The password is wrong."))
            }
            if let refused = try await checkSecondFactor(user: user, totpCode: totpCode, recoveryCode: recoveryCode, origin: origin, mailSpent: false, on: db) {
                // No code at all is a step missing, not a guess: the attempt is not counted.
                return refused == .missing ? .incomplete(refused.issue) : .failed(reason: "wrong_second_factor", refused.issue)
            }
            return .passed
        }
    }

    /// How many recovery codes are left unused; nil while two-factor is off.
    func recoveryCodesLeft(_ identity: Identity) async throws -> Int? {
        guard identity.twoFactorEnabled else { return nil }
        return try await store.unusedRecoveryCodeCount(userID: identity.userID.uuid, on: database.db)
    }

    /// A change of second factor is a change of who can get in: every other
    /// session ends, the change is audited and the user is told.
    private func twoFactorChanged(_ user: User, enabled: Bool, identity: Identity, origin: RequestOrigin, on db: any Database) async throws {
        try await sessions.revokeAll(userID: identity.userID.uuid, except: identity.sessionID.uuid, reason: "two_factor_changed", on: db)
        try await audit.record(
            .init(action: enabled ? "user.two_factor_enabled" : "user.two_factor_disabled", actorID: user.id, subjectType: "user",
                  subjectID: user.id?.lowercasedString, userID: user.id),
            origin: origin, on: db)
        try await mail(user, enabled ? .twoFactorEnabled : .twoFactorDisabled, on: db)
    }

    /// A current TOTP code (one step of clock drift either way) not used
    /// before, or an unused recovery code; either is spent. A code accepted
    /// once is refused for the rest of its window (RFC 6238 section 5.2).
    /// A recovery code spent is audited and, unless `mailSpent` is false (the
    /// flow mails its own news), mailed with how many are left: the owner
    /// learns of a code someone else found. Nil when accepted; otherwise why not.
    func checkSecondFactor(
        user: User, totpCode: String?, recoveryCode: String?, origin: RequestOrigin, mailSpent: Bool = true, on db: any Database
    ) async throws -> SecondFactorRefusal? {
        if totpCode == nil && recoveryCode == nil { return .missing }
        var totpCode = totpCode
        // Whoever sends a code here knows the password. Each code is counted before it is checked (so parallel
        // guesses cannot all slip under the limit) and the count outlives the throttle's pauses: past
        // `secondFactorFailureLimit` wrong codes, codes are not taken until a working one, a recovery code or a
        // new password clears it. A recovery code is too long to guess: it is still taken.
        var counted = 0
        if totpCode != nil {
            counted = try await store.countSecondFactorFailure(userID: user.id!, now: clock.now(), on: db)
            if counted > Self.secondFactorFailureLimit {
                guard recoveryCode != nil else { return .blocked }
                totpCode = nil
            }
        }
        if let totpCode, let sealed = user.totpSecretSealed, let (secret, old) = secretBox.openReportingKey(sealed),
           let step = Self.totpStep(code: totpCode, secret: secret, at: clock.now()) {
            guard try await store.spendTOTPStep(userID: user.id!, step: step, on: db) else {
                // A code sent again within its step is the owner's double submit, not a guess.
                try await store.takeBackSecondFactorFailure(userID: user.id!, on: db)
                return .codeAlreadyUsed
            }
            try await store.clearSecondFactorFailures(userID: user.id!, on: db)
            // Sealed under a key that is being rotated out: seal it under the current one.
            if old { try await store.replaceTOTPSecret(userID: user.id!, old: sealed, sealed: try secretBox.seal(secret), on: db) }
            return nil
        }
        if counted == Self.secondFactorFailureLimit {
            await security.record("second_factor_blocked", userID: user.id, origin: origin, audited: true)
            try await noticeLockout(user, seconds: 0, secondFactorFailed: true, paused: Self.secondFactorPause)
        }
        guard let recoveryCode else { return .wrongCode }
        let canonical = Self.canonicalRecoveryCode(recoveryCode)
        let unused = try await store.unusedRecoveryCodes(userID: user.id!, on: db)
        guard let match = unused.first(where: { SecretBox.matches(canonical, saltedHash: $0.codeHash) }) else {
            // The code it signed in with a moment ago, sent again (a double submit, a client that retries): the
            // owner, not a guess. Only someone holding a valid code learns it was spent.
            let recent = try await store.recoveryCodesSpent(userID: user.id!, since: clock.now().addingTimeInterval(-60), on: db)
            return recent.contains { SecretBox.matches(canonical, saltedHash: $0.codeHash) } ? .recoveryCodeJustUsed : .wrongRecoveryCode
        }
        // Spent, counted, audited and mailed together or not at all: a code is never gone without its notice.
        let refusal = try await database.modelTransaction { db -> SecondFactorRefusal? in
            guard try await store.lockSecondFactor(userID: user.id!, on: db) else { return .wrongRecoveryCode }
            // A request sending the same code at the same moment spent it first.
            guard try await store.spendRecoveryCode(id: match.id!, at: clock.now(), on: db) else { return .recoveryCodeJustUsed }
            let left = try await store.unusedRecoveryCodeCount(userID: user.id!, on: db)
            try await audit.record(
                .init(action: "user.recovery_code_used", actorID: user.id, subjectType: "user", subjectID: user.id?.lowercasedString, userID: user.id,
                      details: ["left": String(left)]),
                origin: origin, on: db)
            if mailSpent {
                try await mail(user, .recoveryCodeUsed, MailVariables([
                    "ip": origin.ip ?? "an unknown address", "time": ISO8601DateFormatter().string(from: clock.now()), "left": String(left),
                    "left_text": Self.recoveryCodesLeftText(left),
                ]), on: db)
            }
            return nil
        }
        if refusal == nil { try await store.clearSecondFactorFailures(userID: user.id!, on: db) }
        return refusal
    }

    /// "9 recovery codes are left.", "1 recovery code is left.", "No recovery code is left."
    static func recoveryCodesLeftText(_ left: Int) -> String {
        switch left {
        case 0: "No recovery code is left."
        case 1: "1 recovery code is left."
        default: "\(left) recovery codes are left."
        }
    }

    /// The 30-second time step whose code `code` is, within one step of clock
    /// drift either way; nil when it matches none.
    static func totpStep(code: String, secret: String, at date: Date) -> Int64? {
        let digits = code.filter { !$0.isWhitespace && $0 != "-" }  // "123 456" and "123-456" as apps show them
        guard digits.count == 6, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else { return nil }
        let totp = TOTP(secret: secret)
        for offset in [-30.0, 0, 30] {
            let moment = date.addingTimeInterval(offset)
            if String(format: "%06d", totp.compute(date: moment)) == digits { return Int64((moment.timeIntervalSince1970 / 30).rounded(.down)) }
        }
        return nil
    }

    /// 16 characters from a 31-letter alphabet: 79 bits, stored salted (ASVS 2.6.2).
    static func newRecoveryCode() -> String {
        let alphabet = Array("abcdefghjkmnpqrstuvwxyz23456789")
        var generator = SystemRandomNumberGenerator()
        let characters = (0..<16).map { _ in alphabet.randomElement(using: &generator)! }
        return stride(from: 0, to: 16, by: 4).map { String(characters[$0..<$0 + 4]) }.joined(separator: "-")
    }

    static func canonicalRecoveryCode(_ code: String) -> String {
        code.lowercased().filter { $0.isLetter || $0.isNumber }
    }

    /// The signed-in user, loaded whole: these flows change it.
    func currentUser(_ identity: Identity) async throws -> User {
        guard let user = try await store.user(id: identity.userID.uuid, on: database.db) else { throw IdentityError.userNotFound }
        return user
    }
}
