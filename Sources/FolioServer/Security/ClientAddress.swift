import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The client's address: the socket peer, unless the peer is a trusted proxy,
/// in which case the right-most `X-Forwarded-For` entry that is not itself a
/// trusted proxy (entries further left can be forged by the client).
enum ClientAddress {
    /// The key a client address is counted under, by the sign-in throttle and
    /// every rate limit: an IPv4 address whole, an IPv6 address by its /64
    /// (one host usually has a whole /64 to pick from); requests with no
    /// address (commands, tests in process) share one.
    static func key(_ ip: String?) -> String {
        guard let ip else { return "unknown" }
        guard ip.contains(":"), let address = IPAddress(ip) else { return ip }
        // IPv4 written as IPv6 (::ffff:192.0.2.7) is the IPv4 address.
        if address.isIPv4 { return address.text }
        let bytes = address.bytes
        let hextets = stride(from: 0, to: 8, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
        return hextets.joined(separator: ":") + "::/64"
    }

    static func resolve(peer: String?, forwardedFor: String?, trustedProxies: TrustedProxies) -> String? {
        guard let peer, trustedProxies.contains(peer), let forwardedFor else { return peer }
        let hops = forwardedFor.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for hop in hops.reversed() {
            // What the proxy wrote cannot be read (not an address): the request stays the proxy's,
            // rather than counted under a text each request could make new.
            guard let address = IPAddress(forwardedHop: hop) else { return peer }
            if !trustedProxies.contains(address) { return address.text }
        }
        return hops.first.flatMap { IPAddress(forwardedHop: $0)?.text } ?? peer
    }
}

/// An IPv4 or IPv6 address, held as 16 bytes (IPv4 as `::ffff:a.b.c.d`).
struct IPAddress: Equatable, Sendable {
    let bytes: [UInt8]

    init?(_ text: some StringProtocol) {
        var bytes = [UInt8](repeating: 0, count: 16)
        var four = [UInt8](repeating: 0, count: 4)
        let text = String(text)
        if inet_pton(AF_INET, text, &four) == 1 {
            bytes[10] = 0xFF; bytes[11] = 0xFF
            bytes.replaceSubrange(12..<16, with: four)
        } else if inet_pton(AF_INET6, text, &bytes) != 1 {
            return nil
        }
        self.bytes = bytes
    }

    /// An `X-Forwarded-For` entry: an address, with a port as some proxies write it
    /// (`192.0.2.7:51234`, `[2001:db8::7]:51234`) or an IPv6 address in brackets.
    init?(forwardedHop hop: String) {
        if hop.hasPrefix("["), let close = hop.firstIndex(of: "]") {
            let rest = hop[hop.index(after: close)...]
            guard rest.isEmpty || (rest.first == ":" && rest.dropFirst().allSatisfy(\.isASCIIDigit) && rest.count > 1) else { return nil }
            self.init(hop[hop.index(after: hop.startIndex)..<close])
        } else if hop.filter({ $0 == ":" }).count == 1, let colon = hop.firstIndex(of: ":") {
            let port = hop[hop.index(after: colon)...]
            guard !port.isEmpty, port.allSatisfy(\.isASCIIDigit) else { return nil }
            self.init(hop[..<colon])
        } else {
            self.init(hop)
        }
    }

    var isIPv4: Bool { bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF }

    /// The address as it is usually written: IPv4 dotted, IPv6 in its shortest form.
    var text: String {
        if isIPv4 { return bytes[12...].map(String.init).joined(separator: ".") }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        return bytes.withUnsafeBufferPointer { inet_ntop(AF_INET6, $0.baseAddress, &buffer, socklen_t(buffer.count)) } != nil
            ? String(cString: buffer) : bytes.map { String($0, radix: 16) }.joined(separator: ":")
    }
}

/// `TRUSTED_PROXIES`: the addresses and CIDR ranges (`10.0.0.0/8`, `fd00::/8`)
/// of the proxies whose `X-Forwarded-For` is believed.
struct TrustedProxies: Sendable {
    private let ranges: [(network: [UInt8], prefix: Int)]

    static let none = TrustedProxies(ranges: [])

    private init(ranges: [(network: [UInt8], prefix: Int)]) { self.ranges = ranges }

    /// Nil when an entry is neither an address nor a range.
    init?(_ entries: [String]) {
        var ranges: [(network: [UInt8], prefix: Int)] = []
        for entry in entries {
            let parts = entry.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            guard let address = IPAddress(parts[0]) else { return nil }
            var width = address.isIPv4 ? 32 : 128
            var prefix = width
            if parts.count == 2 {
                guard let bits = Int(parts[1]), parts[1].allSatisfy(\.isASCIIDigit) else { return nil }
                // An IPv4 address written the IPv6 way (`::ffff:10.0.0.0`) takes an IPv6 prefix too (`/104` for 10.0.0.0/8),
                // or, as before, an IPv4 one (`/8`): the two never overlap.
                if address.isIPv4, parts[0].contains(":"), (96...128).contains(bits) { width = 128 }
                guard (0...width).contains(bits) else { return nil }
                prefix = bits
            }
            ranges.append((address.bytes, prefix + (128 - width)))
        }
        self.ranges = ranges
    }

    /// How far an entry reaches: every address of a family (`0.0.0.0/0`, `::ffff:0.0.0.0/0`, `::/0`, `::/8`), more than any
    /// private network (wider than `10.0.0.0/8` or `fc00::/7`, such as `0.0.0.0/1`), or no further. Nil when it is
    /// not an address or range. Judged on the parsed range, however it is written.
    enum Reach { case everyAddress, widerThanAPrivateNetwork, network }

    static func reach(of entry: String) -> Reach? {
        guard let range = TrustedProxies([entry])?.ranges.first else { return nil }
        let mapped = range.network[0..<10].allSatisfy { $0 == 0 } && range.network[10] == 0xFF && range.network[11] == 0xFF
        let one = TrustedProxies(ranges: [range])
        // A range over IPv4's mapped space (::ffff:0:0/96) that holds both its ends holds all of IPv4.
        if range.prefix == 0 || (one.contains(IPAddress("0.0.0.0")!) && one.contains(IPAddress("255.255.255.255")!)) { return .everyAddress }
        return range.prefix < (mapped ? 96 + 8 : 7) ? .widerThanAPrivateNetwork : .network
    }

    /// Entries of `TRUSTED_PROXIES` that are neither an address nor a range.
    static func invalidEntries(_ entries: [String]) -> [String] {
        entries.filter { TrustedProxies([$0]) == nil }
    }

    func contains(_ text: String) -> Bool {
        guard !ranges.isEmpty, let address = IPAddress(text) else { return false }
        return contains(address)
    }

    func contains(_ address: IPAddress) -> Bool {
        ranges.contains { range in
            let whole = range.prefix / 8, rest = range.prefix % 8
            guard address.bytes[..<whole] == range.network[..<whole] else { return false }
            guard rest > 0 else { return true }
            let mask = UInt8(0xFF) << (8 - rest)
            return address.bytes[whole] & mask == range.network[whole] & mask
        }
    }
}

extension TrustedProxies: ExpressibleByArrayLiteral {
    /// A list written in code (tests): every entry must be an address or a range.
    init(arrayLiteral entries: String...) {
        guard let proxies = TrustedProxies(entries) else { preconditionFailure("not an address or range: \(entries)") }
        self = proxies
    }
}

private extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
