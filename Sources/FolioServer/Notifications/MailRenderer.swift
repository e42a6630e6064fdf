import Foundation
import Mustache

/// A message ready to send: both bodies rendered from its templates.
struct RenderedMail: Sendable, Equatable {
    var id: UUID
    var userID: UUID?
    var recipient: String
    var template: MailTemplate
    var subject: String
    var text: String
    var html: String
    /// See `MailTemplate.passesSuppressions`.
    var passesSuppressions: Bool
    /// A notification's link that turns its category's mail off (`UnsubscribeLinks`), sent as `List-Unsubscribe` too.
    var unsubscribeURL: String? = nil
}

/// Renders the mail templates (swift-mustache). The files are loaded once at
/// start-up; a template missing or failing to parse stops start-up, never a
/// send.
struct MailRenderer: Sendable {
    let library: MustacheLibrary
    /// Where links in mail point: the web app's origin.
    let publicURL: String
    /// The links that turn a category's mail off; without them (a test's renderer) a message has none.
    var unsubscribe: UnsubscribeLinks? = nil

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// The templates shipped in the FolioServer bundle.
    static func bundled(publicURL: String, unsubscribe: UnsubscribeLinks? = nil) async throws -> MailRenderer {
        guard let directory = Bundle.module.url(forResource: "mail", withExtension: nil) else {
            throw Failure(description: "the mail templates are missing from the FolioServer bundle")
        }
        return try await load(directory: directory.path, publicURL: publicURL, unsubscribe: unsubscribe)
    }

    static func load(directory: String, publicURL: String, unsubscribe: UnsubscribeLinks? = nil) async throws -> MailRenderer {
        ScalarHTMLEscaping.register()
        var library = try await MustacheLibrary(directory: directory)
        for template in MailTemplate.allCases {
            for part in ["text", "html"] where library.getTemplate(named: "\(template.rawValue).\(part)") == nil {
                throw Failure(description: "the mail template \(template.rawValue).\(part).mustache is missing")
            }
            // Subjects and summaries are plain text: nothing in them is HTML-escaped.
            try library.register("{{% CONTENT_TYPE: TEXT}}" + template.subject, named: "\(template.rawValue).subject")
            try library.register("{{% CONTENT_TYPE: TEXT}}" + template.summary, named: "\(template.rawValue).summary")
        }
        return MailRenderer(library: library, publicURL: publicURL, unsubscribe: unsubscribe)
    }

    /// The object the templates read: the message's values, its list as `items`, and Folio's own links.
    /// A notification's mail also gets the link that stops its category's mail (`unsubscribe_url`, `unsubscribe_what`).
    func context(_ variables: MailVariables, unsubscribe: (url: String, category: NoticeCategory)? = nil) -> [String: Any] {
        var context: [String: Any] = variables.values
        context["items"] = variables.items
        context["app_url"] = publicURL
        context["settings_url"] = publicURL + "/settings"
        if let unsubscribe {
            context["unsubscribe_url"] = unsubscribe.url
            context["unsubscribe_what"] = unsubscribe.category.mailName
        }
        return context
    }

    func render(
        _ template: MailTemplate, part: String, _ variables: MailVariables, unsubscribe: (url: String, category: NoticeCategory)? = nil
    ) throws -> String {
        guard let text = library.render(context(variables, unsubscribe: unsubscribe), withTemplate: "\(template.rawValue).\(part)") else {
            throw Failure(description: "the mail template \(template.rawValue).\(part) is missing")
        }
        return text
    }

    func render(_ template: MailTemplate, _ variables: MailVariables, id: UUID, userID: UUID?, recipient: String) throws -> RenderedMail {
        let unsubscribe = userID.flatMap { userID in
            template.category.flatMap { category in self.unsubscribe?.url(for: userID, category).map { (url: $0, category: category) } }
        }
        return RenderedMail(
            id: id, userID: userID, recipient: recipient, template: template,
            subject: try render(template, part: "subject", variables).trimmingCharacters(in: .whitespacesAndNewlines),
            text: try render(template, part: "text", variables, unsubscribe: unsubscribe),
            html: try render(template, part: "html", variables, unsubscribe: unsubscribe),
            passesSuppressions: template.passesSuppressions(variables), unsubscribeURL: unsubscribe?.url)
    }
}
