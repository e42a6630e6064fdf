import FolioDomain
import Foundation
import NIOCore
import PostgresNIO
import SQLiteNIO

// How Folio's exact values travel to and from the databases.
//
// PostgreSQL: `NUMERIC(p,s)` in its binary form (base-10000 digits), read and
// written straight from the integer units, so no `Decimal` or text sits in
// between. SQLite: canonical decimal text in a TEXT column (a NUMERIC column
// there would be a lossy REAL); a REAL read back is refused.

extension Fixed: SQLiteDataConvertible {
    public init?(sqliteData: SQLiteData) {
        switch sqliteData {
        case .text(let text):
            guard let value = try? Fixed(parsing: text) else { return nil }
            self = value
        case .integer(let integer):
            guard let value = try? Fixed(integer) else { return nil }
            self = value
        default:
            // A REAL has already lost exactness; refuse it rather than pass it on.
            return nil
        }
    }

    public var sqliteData: SQLiteData? { .text(formatted(minimumFractionDigits: 0)) }
}

extension Fixed: PostgresNonThrowingEncodable, PostgresDecodable {
    public static var psqlType: PostgresDataType { .numeric }
    public static var psqlFormat: PostgresFormat { .binary }

    public func encode<JSONEncoder: PostgresJSONEncoder>(into buffer: inout ByteBuffer, context: PostgresEncodingContext<JSONEncoder>) {
        PostgresNumericCodec.write(units: units, scale: Scale.fractionDigits, into: &buffer)
    }

    public init<JSONDecoder: PostgresJSONDecoder>(
        from buffer: inout ByteBuffer, type: PostgresDataType, format: PostgresFormat, context: PostgresDecodingContext<JSONDecoder>
    ) throws {
        switch (format, type) {
        case (.binary, .numeric):
            self.init(uncheckedUnits: try PostgresNumericCodec.readUnits(from: &buffer, scale: Scale.fractionDigits, limit: Self.limit))
        case (.text, _), (.binary, .text), (.binary, .varchar):
            guard let text = buffer.readString(length: buffer.readableBytes), let value = try? Fixed(parsing: text) else {
                throw PostgresDecodingError.Code.failure
            }
            self = value
        default:
            throw PostgresDecodingError.Code.typeMismatch
        }
    }
}

/// PostgreSQL's binary `numeric`: `ndigits`, `weight`, `sign`, `dscale` (each
/// an Int16), then `ndigits` base-10000 digits, most significant first; the
/// value is Σ digit × 10000^(weight − i).
enum PostgresNumericCodec {
    static let negative: Int16 = 0x4000

    static func write(units: Int128, scale: Int, into buffer: inout ByteBuffer) {
        // Pad the fraction to whole groups of four digits.
        let pad = (4 - scale % 4) % 4
        var magnitude = units.magnitude * FixedMath.powerOfTen(pad)
        let fractionGroups = (scale + pad) / 4
        var groups: [Int16] = []  // least significant first
        while magnitude != 0 {
            groups.append(Int16(magnitude % 10_000))
            magnitude /= 10_000
        }
        // Groups below the point that are all there is still count from the point.
        while groups.count < fractionGroups && !groups.isEmpty { groups.append(0) }
        var leadingGroup = groups.count - 1  // index of the most significant group
        var trailing = 0
        while trailing < groups.count && groups[trailing] == 0 { trailing += 1 }
        if groups.isEmpty || trailing == groups.count {
            buffer.writeInteger(Int16(0), endianness: .big)
            buffer.writeInteger(Int16(0), endianness: .big)
            buffer.writeInteger(Int16(0), endianness: .big)
            buffer.writeInteger(Int16(scale), endianness: .big)
            return
        }
        while groups[leadingGroup] == 0 { leadingGroup -= 1 }
        let weight = leadingGroup - fractionGroups
        let digits = groups[trailing...leadingGroup].reversed()
        buffer.writeInteger(Int16(digits.count), endianness: .big)
        buffer.writeInteger(Int16(weight), endianness: .big)
        buffer.writeInteger(units < 0 ? negative : 0, endianness: .big)
        buffer.writeInteger(Int16(scale), endianness: .big)
        for digit in digits { buffer.writeInteger(digit, endianness: .big) }
    }

    static func readUnits(from buffer: inout ByteBuffer, scale: Int, limit: UInt128) throws -> Int128 {
        guard let count = buffer.readInteger(endianness: .big, as: Int16.self),
              let weight = buffer.readInteger(endianness: .big, as: Int16.self),
              let sign = buffer.readInteger(endianness: .big, as: Int16.self),
              buffer.readInteger(endianness: .big, as: Int16.self) != nil,
              count >= 0, sign == 0 || sign == negative
        else { throw PostgresDecodingError.Code.failure }
        var magnitude: UInt128 = 0
        var remainderDigits = false
        for index in 0..<Int(count) {
            guard let digit = buffer.readInteger(endianness: .big, as: Int16.self), (0..<10_000).contains(digit) else {
                throw PostgresDecodingError.Code.failure
            }
            // This digit is worth digit × 10^(4 × (weight − index) + scale) units.
            let exponent = 4 * (Int(weight) - index) + scale
            if exponent >= 0 {
                guard exponent <= 38 else { throw PostgresDecodingError.Code.failure }
                let (part, overflow) = UInt128(digit).multipliedReportingOverflow(by: FixedMath.powerOfTen(exponent))
                let (sum, carry) = magnitude.addingReportingOverflow(part)
                guard !overflow, !carry else { throw PostgresDecodingError.Code.failure }
                magnitude = sum
            } else if exponent > -4 {
                let divisor = UInt16(FixedMath.powerOfTen(-exponent))
                if UInt16(digit) % divisor != 0 { remainderDigits = true }
                let (sum, carry) = magnitude.addingReportingOverflow(UInt128(UInt16(digit) / divisor))
                guard !carry else { throw PostgresDecodingError.Code.failure }
                magnitude = sum
            } else if digit != 0 {
                remainderDigits = true
            }
        }
        // More digits than the scale keeps, or beyond the precision: not a value of this type.
        guard !remainderDigits, magnitude <= limit else { throw PostgresDecodingError.Code.failure }
        let signed = Int128(magnitude)
        return sign == negative ? -signed : signed
    }
}

// Typed ids travel as the UUIDs they wrap: `uuid` on PostgreSQL, the same
// upper-case text Fluent writes on SQLite.
extension Identifier: SQLiteDataConvertible {
    public init?(sqliteData: SQLiteData) {
        switch sqliteData {
        case .text(let text):
            guard let uuid = UUID(uuidString: text) else { return nil }
            self.init(uuid)
        default:
            return nil
        }
    }

    public var sqliteData: SQLiteData? { .text(uuid.uuidString) }
}

extension Identifier: PostgresNonThrowingEncodable, PostgresDecodable {
    public static var psqlType: PostgresDataType { UUID.psqlType }
    public static var psqlFormat: PostgresFormat { UUID.psqlFormat }

    public func encode<JSONEncoder: PostgresJSONEncoder>(into buffer: inout ByteBuffer, context: PostgresEncodingContext<JSONEncoder>) {
        uuid.encode(into: &buffer, context: context)
    }

    public init<JSONDecoder: PostgresJSONDecoder>(
        from buffer: inout ByteBuffer, type: PostgresDataType, format: PostgresFormat, context: PostgresDecodingContext<JSONDecoder>
    ) throws {
        self.init(try UUID(from: &buffer, type: type, format: format, context: context))
    }
}
