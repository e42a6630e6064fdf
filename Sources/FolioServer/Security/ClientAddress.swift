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
        var bytes = [UInt8](repeating: 0, count: 16)
        guard ip.contains(":"), inet_pton(AF_INET6, ip, &bytes) == 1 else { return ip }
        // IPv4 written as IPv6 (::ffff:192.0.2.7) is the IPv4 address.
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF { return bytes[12...].map(String.init).joined(separator: ".") }
        let hextets = stride(from: 0, to: 8, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
        return hextets.joined(separator: ":") + "::/64"
    }

    static func resolve(peer: String?, forwardedFor: String?, trustedProxies: Set<String>) -> String? {
        guard let peer, trustedProxies.contains(peer), let forwardedFor else { return peer }
        let hops = forwardedFor.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for hop in hops.reversed() where !trustedProxies.contains(hop) {
            return hop
        }
        return hops.first ?? peer
    }
}
