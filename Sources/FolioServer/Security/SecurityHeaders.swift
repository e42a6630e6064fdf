import HTTPTypes

/// Headers on every response: a locked-down CSP for a JSON API, no sniffing,
/// no referrer, no framing, no powerful features, no caching of API answers,
/// and HSTS in production. `EdgeMiddleware` applies them to every answer.
enum SecurityHeaders {
    static let permissionsPolicy = HTTPField.Name("Permissions-Policy")!
    static let contentTypeOptions = HTTPField.Name("X-Content-Type-Options")!
    static let frameOptions = HTTPField.Name("X-Frame-Options")!
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!
    static let strictTransportSecurity = HTTPField.Name("Strict-Transport-Security")!

    // Made once: building a field checks its value, which showed in profiles of `/health`.
    static let lockedDownCSP = HTTPField(name: .contentSecurityPolicy, value: "default-src 'none'; frame-ancestors 'none'")
    static let noReferrer = HTTPField(name: referrerPolicy, value: "no-referrer")
    static let always: [HTTPField] = [
        HTTPField(name: contentTypeOptions, value: "nosniff"),
        HTTPField(name: frameOptions, value: "DENY"),
        HTTPField(name: permissionsPolicy, value: "accelerometer=(), camera=(), geolocation=(), gyroscope=(), microphone=(), payment=(), usb=()"),
    ]
    static let noStore = HTTPField(name: .cacheControl, value: "no-store")
    static let hsts = HTTPField(name: strictTransportSecurity, value: "max-age=63072000; includeSubDomains")

    static func apply(to headers: inout HTTPFields, path: String, production: Bool) {
        // Room for every field added here and the request id: one allocation, not a growing array's several.
        headers.reserveCapacity(headers.count + always.count + 5)
        // The web app's pages set their own (PageRenderer); everything else is locked down.
        if headers[.contentSecurityPolicy] == nil { headers.append(lockedDownCSP) }
        // Pages send their own (same-origin): a form they post must carry its Origin, which no-referrer turns into "null".
        if headers[referrerPolicy] == nil { headers.append(noReferrer) }
        for field in always { headers.set(field) }
        if path.hasPrefix("/api") || path.hasPrefix("/health/detailed") {
            headers[fields: .cacheControl] = [noStore]
        } else if headers[.cacheControl] == nil {
            // Nothing is cached unless its route says so (hashed assets, the API's description): the router reads
            // `//api/portfolio` as `/api/portfolio`, and the answer must not become cacheable by its spelling.
            headers.append(noStore)
        }
        if production { headers[fields: strictTransportSecurity] = [hsts] }
        if headers[.server] != nil { headers[.server] = nil }
    }
}

extension HTTPFields {
    /// `field` as the only one of its name. Appends when there is none (the
    /// usual case), which skips the search-and-remove of the subscript's setter.
    mutating func set(_ field: HTTPField) {
        if self[field.name] == nil { append(field) } else { self[field.name] = field.value }
    }
}
