/// Comparisons of secrets (tokens, MACs, signatures' digests) without an early
/// exit, so timing does not reveal how much of a guess matched. The one place
/// Folio compares a secret.
enum ConstantTime {
    static func equals(_ lhs: String, _ rhs: String) -> Bool {
        equals(Array(lhs.utf8), Array(rhs.utf8))
    }

    static func equals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference: UInt8 = 0
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0 && a.count == b.count
    }
}
