import Foundation
import Testing

@testable import FolioServer

@Suite("QR codes for authenticator apps")
struct QRCodeTests {
    static func rows(_ code: QRCode) -> [String] {
        (0..<code.size).map { row in
            String((0..<code.size).map { code.isDark(row: row, column: $0) ? "#" : "." })
        }
    }

    /// "Folio 2FA" at level M: the whole 1-M symbol, as produced by segno 1.6.6 (with its
    /// padding-bit bug heuer/segno#148 corrected) and by python-qrcode for the same mask.
    @Test("a version 1-M symbol, module for module as two other encoders draw it")
    func version1MediumMatrix() throws {
        let code = try QRCode(encoding: "Folio 2FA", correction: .medium)
        #expect(code.version == 1)
        #expect(code.size == 21)
        #expect(code.mask == 2)
        let expected = [
            "#######...#.#.#######",
            "#.....#...#.#.#.....#",
            "#.###.#.#.###.#.###.#",
            "#.###.#.#.....#.###.#",
            "#.###.#.##..#.#.###.#",
            "#.....#.#..#..#.....#",
            "#######.#.#.#.#######",
            "........###..........",
            "#.#####....#..#####..",
            ".###.#.###.###.#.#..#",
            "#....####...#.#..#.#.",
            ".##.##..######.####.#",
            "...#..#.###.#..#...#.",
            "........##..#...##...",
            "#######..###.#.#..##.",
            "#.....#.#......#.###.",
            "#.###.#.##.#...#....#",
            "#.###.#.#.#######....",
            "#.###.#.###.#.##.##..",
            "#.....#....####.###..",
            "#######.##..#...#..#.",
        ]
        #expect(Self.rows(code) == expected)
        #expect(code.isDark(row: -1, column: 0) == false)
        #expect(code.isDark(row: 0, column: 21) == false)
    }

    /// Both copies of the format information hold the BCH code of ISO/IEC 18004 Table C.1.
    @Test("both copies of the format information")
    func formatInformation() throws {
        #expect(QRCode.formatBits(correction: .medium, mask: 0) == 0x5412)
        #expect(QRCode.formatBits(correction: .low, mask: 0) == 0x77C4)
        #expect(QRCode.formatBits(correction: .high, mask: 7) == 0x083B)
        #expect(QRCode.formatBits(correction: .quartile, mask: 7) == 0x2BED)

        let code = try QRCode(encoding: "Folio 2FA", correction: .medium)
        let bits = QRCode.formatBits(correction: .medium, mask: code.mask)
        #expect(bits == 0x5E7C)
        var second = 0
        for i in 0..<8 where code.isDark(row: 8, column: code.size - 1 - i) { second |= 1 << i }
        for i in 8..<15 where code.isDark(row: code.size - 15 + i, column: 8) { second |= 1 << i }
        #expect(second == bits)
        #expect(code.isDark(row: code.size - 8, column: 8))  // the dark module
    }

    /// Versions 7 and up carry two copies of the 18-bit version information (ISO Table D.1).
    @Test("version information, from version 7 on")
    func versionInformation() throws {
        #expect(QRCode.versionBits(7) == 0x07C94)
        #expect(QRCode.versionBits(21) == 0x15683)
        #expect(QRCode.versionBits(40) == 0x28C69)

        let code = try QRCode(encoding: [UInt8](repeating: 0x41, count: 110), correction: .medium)
        #expect(code.version == 7)
        #expect(code.size == 45)
        var bottomLeft = 0
        var topRight = 0
        for i in 0..<18 {
            if code.isDark(row: code.size - 11 + i % 3, column: i / 3) { bottomLeft |= 1 << i }
            if code.isDark(row: i / 3, column: code.size - 11 + i % 3) { topRight |= 1 << i }
        }
        #expect(bottomLeft == 0x07C94)
        #expect(topRight == 0x07C94)
    }

    /// Byte-mode capacities from ISO Table 7, and the smallest version that fits is chosen.
    @Test("byte capacities and the smallest version that fits")
    func capacityAndSize() throws {
        #expect(QRCode.byteCapacity(version: 1, correction: .low) == 17)
        #expect(QRCode.byteCapacity(version: 1, correction: .medium) == 14)
        #expect(QRCode.byteCapacity(version: 1, correction: .high) == 7)
        #expect(QRCode.byteCapacity(version: 7, correction: .medium) == 122)
        #expect(QRCode.byteCapacity(version: 40, correction: .low) == 2953)
        #expect(QRCode.byteCapacity(version: 40, correction: .medium) == 2331)
        #expect(QRCode.byteCapacity(version: 40, correction: .quartile) == 1663)
        #expect(QRCode.byteCapacity(version: 40, correction: .high) == 1273)

        #expect(try QRCode(encoding: [UInt8](repeating: 7, count: 14), correction: .medium).version == 1)
        #expect(try QRCode(encoding: [UInt8](repeating: 7, count: 15), correction: .medium).version == 2)
        for count in [0, 60, 300, 1000, 2953] {
            let code = try QRCode(encoding: [UInt8](repeating: 0x5A, count: count), correction: .low)
            #expect(code.size == 17 + 4 * code.version)
        }
        let largest = try QRCode(encoding: [UInt8](repeating: 0x5A, count: 1273), correction: .high)
        #expect(largest.version == 40)
        #expect(largest.size == 177)
    }

    @Test("more than version 40 holds is refused")
    func refusesDataTooLongForVersion40() {
        #expect(throws: QRCode.TooLong.self) {
            try QRCode(encoding: [UInt8](repeating: 0, count: 2954), correction: .low)
        }
        #expect(throws: QRCode.TooLong.self) {
            try QRCode(encoding: [UInt8](repeating: 0, count: 1274), correction: .high)
        }
    }

    /// Data, terminator, padding to a byte and 0xEC/0x11 pad codewords, then Reed–Solomon
    /// (the same 26 codewords as python-qrcode gives for "A" at 1-L).
    @Test("codewords, padding and Reed-Solomon error correction")
    func codewordsAndReedSolomon() {
        let expected: [UInt8] = [
            0x40, 0x14, 0x10, 0xEC, 0x11, 0xEC, 0x11, 0xEC, 0x11, 0xEC, 0x11, 0xEC, 0x11,
            0xEC, 0x11, 0xEC, 0x11, 0xEC, 0x11, 82, 75, 181, 59, 175, 141, 241,
        ]
        #expect(QRCode.codewords(for: [0x41], version: 1, correction: .low) == expected)

        // ISO Table A.1: degree 10 generator is x^10 + α^251 x^9 + α^67 x^8 + ... ; as values:
        let generator = QRCode.ReedSolomon.generator(degree: 10)
        #expect(generator == [1, 216, 194, 159, 111, 199, 94, 95, 113, 157, 193])
        // The 1-M "HELLO WORLD" data codewords and their error correction codewords.
        let data: [UInt8] = [32, 91, 11, 120, 209, 114, 220, 77, 67, 64, 236, 17, 236, 17, 236, 17]
        #expect(QRCode.ReedSolomon.remainder(of: data, generator: generator) == [196, 35, 39, 119, 235, 215, 231, 226, 93, 23])
    }

    @Test("the SVG: its size, and its label escaped")
    func svgEscapesLabelAndHasSize() throws {
        let code = try QRCode(encoding: "x", correction: .medium)
        let svg = code.svg(label: "a<b>&\"c'")
        #expect(svg.contains("aria-label=\"a&lt;b&gt;&amp;&quot;c&#39;\""))
        #expect(!svg.contains("a<b>"))
        #expect(svg.hasPrefix("<svg "))
        #expect(svg.hasSuffix("</svg>"))
        #expect(svg.contains("viewBox=\"0 0 29 29\""))
        #expect(svg.contains("width=\"116\" height=\"116\""))
        #expect(svg.contains("role=\"img\""))
        #expect(svg.contains("shape-rendering=\"crispEdges\""))
        #expect(svg.components(separatedBy: "<path").count == 2)

        let bigger = code.svg(label: "x", moduleSize: 10, quietZone: 2)
        #expect(bigger.contains("viewBox=\"0 0 25 25\""))
        #expect(bigger.contains("width=\"250\" height=\"250\""))
    }
}
