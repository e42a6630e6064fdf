import Crypto
import Foundation
import Hummingbird

/// The web app's static files (CSS, JavaScript modules, the icon), loaded once
/// at start-up and served under content-hashed names (`app.3f2a9c1b.css`) with
/// a year's cache lifetime: a changed file gets a new name, so a browser never
/// keeps an old one.
struct WebAssets: Sendable {
    struct Asset: Sendable {
        var hashedName: String
        var contentType: String
        var bytes: ByteBuffer
    }

    /// By hashed name, as requested.
    let byHashedName: [String: Asset]
    /// Plain name (`app.css`) to the path pages link to (`/assets/app.3f2a9c1b.css`).
    let paths: [String: String]

    struct Missing: Error, CustomStringConvertible {
        var description: String
    }

    static func bundled() throws -> WebAssets {
        guard let directory = Bundle.module.url(forResource: "web", withExtension: nil)?.appendingPathComponent("assets") else {
            throw Missing(description: "the web assets are missing from the FolioServer bundle")
        }
        return try load(directory: directory)
    }

    static func load(directory: URL) throws -> WebAssets {
        var byHashedName: [String: Asset] = [:]
        var paths: [String: String] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() where !name.hasPrefix(".") {
            let data = try Data(contentsOf: directory.appendingPathComponent(name))
            let digest = SHA256.hash(data: data).prefix(6).map { String(format: "%02x", $0) }.joined()
            let dot = name.lastIndex(of: ".") ?? name.endIndex
            let hashedName = "\(name[..<dot]).\(digest)\(name[dot...])"
            byHashedName[hashedName] = Asset(hashedName: hashedName, contentType: contentType(of: name), bytes: ByteBuffer(bytes: data))
            paths[name] = "/assets/\(hashedName)"
        }
        return WebAssets(byHashedName: byHashedName, paths: paths)
    }

    static func contentType(of name: String) -> String {
        switch name.split(separator: ".").last {
        case "css": "text/css; charset=utf-8"
        case "js": "text/javascript; charset=utf-8"
        case "svg": "image/svg+xml"
        default: "application/octet-stream"
        }
    }

    /// The path a page links to; a name that is not an asset is a programming error caught by the page tests.
    func path(_ name: String) -> String {
        paths[name] ?? "/assets/missing-\(name)"
    }

    func response(hashedName: String) -> Response? {
        guard let asset = byHashedName[hashedName] else { return nil }
        return Response(
            status: .ok,
            headers: [.contentType: asset.contentType, .cacheControl: "public, max-age=31536000, immutable"],
            body: .init(byteBuffer: asset.bytes))
    }
}
