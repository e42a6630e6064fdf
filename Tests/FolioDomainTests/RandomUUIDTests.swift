import FolioDomain
import Foundation
import Testing

@Suite("Random UUIDs and their lower-case text")
struct RandomUUIDTests {
    @Test("random ids are version 4, RFC 4122 variant, and do not repeat")
    func randomIDs() {
        var seen = Set<UUID>()
        for _ in 0..<10_000 {
            let id = UUID.random()
            let bytes = id.uuid
            #expect(bytes.6 >> 4 == 4)
            #expect(bytes.8 >> 6 == 0b10)
            seen.insert(id)
        }
        #expect(seen.count == 10_000)
    }

    @Test("lower-case text is Foundation's text lowered, for random ids and the extremes")
    func lowercasedText() throws {
        let extremes = [
            try #require(UUID(uuidString: "00000000-0000-0000-0000-000000000000")),
            try #require(UUID(uuidString: "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF")),
            try #require(UUID(uuidString: "0123456789ABCDEF0123456789ABCDEF".chunked())),
        ]
        for id in extremes + (0..<1_000).map({ _ in UUID() }) {
            #expect(id.lowercasedString == id.uuidString.lowercased())
            #expect(UUID(uuidString: id.lowercasedString) == id)
        }
        #expect(AccountID(extremes[1]).description == "ffffffff-ffff-ffff-ffff-ffffffffffff")
    }
}

private extension String {
    /// 32 hex digits as 8-4-4-4-12.
    func chunked() -> String {
        let characters = Array(self)
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(characters[$0]) }.joined(separator: "-")
    }
}
