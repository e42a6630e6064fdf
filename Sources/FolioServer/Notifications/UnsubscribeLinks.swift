import Crypto
import Foundation

/// The link in a notification's mail that turns its category's mail off
/// without signing in: the footer's "Stop … email" and the message's
/// `List-Unsubscribe` header, which mail apps answer with a one-click POST
/// (RFC 8058). The token names the user and the category and is signed with
/// a key derived from SECRET_KEY (previous keys still verify), so it cannot
/// be made for someone else, and does only this one thing. It does not
/// expire: a link in a year-old message still works, as mail apps expect,
/// as long as the key it was signed under is SECRET_KEY or one of
/// PREVIOUS_SECRET_KEYS (docs/SECURITY.md, rotating the key). Security
/// notices are always mailed and have none.
struct UnsubscribeLinks: Sendable {
    let publicURL: String
    let signingKey: SymmetricKey
    let verifyingKeys: [SymmetricKey]

    static let path = "/unsubscribe"

    init(publicURL: String, secretKey: String, previousKeys: [String]) {
        self.publicURL = publicURL
        self.signingKey = SecureToken.derivedKey(from: secretKey, purpose: "unsubscribe")
        self.verifyingKeys = ([secretKey] + previousKeys).map { SecureToken.derivedKey(from: $0, purpose: "unsubscribe") }
    }

    /// The link for `userID`'s mail of `category`; nil for a category that cannot be turned off.
    func url(for userID: UUID, _ category: NoticeCategory) -> String? {
        guard !category.alwaysMailed else { return nil }
        return publicURL + Self.path + "?token=" + token(for: userID, category)
    }

    /// `<user id>.<category>.<signature>`: only characters a URL's query keeps as they are.
    func token(for userID: UUID, _ category: NoticeCategory) -> String {
        let subject = Self.subject(userID, category)
        return subject + "." + SecureToken.base64URL(HMAC<SHA256>.authenticationCode(for: Data(subject.utf8), using: signingKey))
    }

    /// Whom and what a token is about; nil when it is not one Folio signed, or names a category that is always mailed.
    func verify(_ token: String) -> (userID: UUID, category: NoticeCategory)? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard token.utf8.count <= 200, parts.count == 3, let userID = UUID(uuidString: String(parts[0])),
              let category = NoticeCategory(rawValue: String(parts[1])), !category.alwaysMailed
        else { return nil }
        let subject = Self.subject(userID, category), signature = String(parts[2])
        let signed = verifyingKeys.contains { key in
            ConstantTime.equals(signature, SecureToken.base64URL(HMAC<SHA256>.authenticationCode(for: Data(subject.utf8), using: key)))
        }
        return signed ? (userID, category) : nil
    }

    private static func subject(_ userID: UUID, _ category: NoticeCategory) -> String {
        userID.lowercasedString + "." + category.rawValue
    }
}

extension NoticeCategory {
    /// What the category's mail is called in a sentence: "Stop order email".
    var mailName: String {
        switch self {
        case .orders: "order"
        case .cash: "cash"
        case .rebalancing: "rebalancing"
        case .drift: "drift digest"
        case .links: "linked-account"
        case .security: "security"
        }
    }
}
