import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension UUID {
    /// A random (version 4) UUID from one `getentropy` call. Foundation's
    /// `UUID()` on Linux opens, reads and closes /dev/urandom for every id
    /// (about 5 µs and three system calls), and a request makes several ids.
    public static func random() -> UUID {
        var bytes: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        let filled = withUnsafeMutableBytes(of: &bytes) { getentropy($0.baseAddress, 16) == 0 }
        guard filled else { return UUID() }
        bytes.6 = (bytes.6 & 0x0F) | 0x40
        bytes.8 = (bytes.8 & 0x3F) | 0x80
        return UUID(uuid: bytes)
    }

    /// The UUID in lower case (`0f1e…-…`), as Folio writes ids everywhere,
    /// without Foundation's formatter and a second pass to lower the case.
    public var lowercasedString: String {
        let digits: StaticString = "0123456789abcdef"
        return withUnsafeBytes(of: uuid) { bytes in
            String(unsafeUninitializedCapacity: 36) { text in
                digits.withUTF8Buffer { hex in
                    var index = 0
                    for (offset, byte) in bytes.enumerated() {
                        if offset == 4 || offset == 6 || offset == 8 || offset == 10 {
                            text[index] = UInt8(ascii: "-")
                            index += 1
                        }
                        text[index] = hex[Int(byte >> 4)]
                        text[index + 1] = hex[Int(byte & 0x0F)]
                        index += 2
                    }
                    return index
                }
            }
        }
    }
}
