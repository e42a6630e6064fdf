import Foundation

/// JSON reduced to one spelling: object keys sorted, insignificant white space
/// dropped, numbers written from their exact decimal value. Two bodies that
/// mean the same have the same canonical form, whatever order a client's
/// serializer put the keys in.
indirect enum CanonicalJSON: Decodable {
    case null
    case bool(Bool)
    case number(Decimal)
    case string(String)
    case array([CanonicalJSON])
    case object([String: CanonicalJSON])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let bool = try? container.decode(Bool.self) {
            self = .bool(bool)
        } else if let number = try? container.decode(Decimal.self) {
            self = .number(number)
        } else if let string = try? container.decode(String.self) {
            self = .string(string)
        } else if let array = try? container.decode([CanonicalJSON].self) {
            self = .array(array)
        } else {
            self = .object(try container.decode([String: CanonicalJSON].self))
        }
    }

    /// The canonical text of `data`, or nil when it is not JSON.
    static func text(of data: Data) -> String? {
        (try? JSONDecoder().decode(CanonicalJSON.self, from: data))?.text
    }

    var text: String {
        switch self {
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .number(let value): return value.description
        case .string(let value): return JSONText.quote(value)
        case .array(let values): return "[" + values.map(\.text).joined(separator: ",") + "]"
        case .object(let members):
            return "{" + members.keys.sorted().map { JSONText.quote($0) + ":" + members[$0]!.text }.joined(separator: ",") + "}"
        }
    }
}
