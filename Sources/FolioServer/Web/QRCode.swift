import Foundation

/// A QR code symbol (ISO/IEC 18004 Model 2) holding bytes in byte mode.
///
/// Byte mode is enough for what the server shows (an `otpauth://` URI); every version 1–40
/// and every error correction level is supported, and the smallest version that fits is used.
struct QRCode: Sendable {
    enum Correction: Sendable, CaseIterable {
        case low, medium, quartile, high

        /// Position in the ISO tables, which list L, M, Q, H in that order.
        fileprivate var tableIndex: Int {
            switch self {
            case .low: 0
            case .medium: 1
            case .quartile: 2
            case .high: 3
            }
        }

        /// The two bits written in the format information; not in table order (ISO Table 12).
        fileprivate var formatBits: Int {
            switch self {
            case .low: 0b01
            case .medium: 0b00
            case .quartile: 0b11
            case .high: 0b10
            }
        }
    }

    /// The data does not fit even a version 40 symbol at the asked correction level
    /// (or, when a version was forced, that version).
    struct TooLong: Error, Sendable, CustomStringConvertible {
        let byteCount: Int
        let correction: Correction

        var description: String {
            "\(byteCount) bytes do not fit in a QR code at correction level \(correction)"
        }
    }

    let version: Int
    /// Modules per side: 17 + 4 × version.
    let size: Int
    let correction: Correction
    /// The data mask pattern (0–7) that was applied.
    let mask: Int
    private let modules: [Bool]

    /// Whether the module is dark; anything outside the symbol is quiet zone, so light.
    func isDark(row: Int, column: Int) -> Bool {
        guard row >= 0, row < size, column >= 0, column < size else { return false }
        return modules[row * size + column]
    }

    init(encoding text: String, correction: Correction = .medium) throws {
        try self.init(encoding: Array(text.utf8), correction: correction)
    }

    /// Encodes `bytes` in the smallest version that holds them, choosing the mask by the
    /// standard's penalty rules. `version` and `mask` can be forced, for comparing with
    /// other encoders; a forced version that is too small throws `TooLong`.
    init(encoding bytes: [UInt8], correction: Correction = .medium, version forcedVersion: Int? = nil, mask forcedMask: Int? = nil) throws {
        precondition(forcedVersion.map { (1...40).contains($0) } ?? true, "QR versions run from 1 to 40")
        precondition(forcedMask.map { (0...7).contains($0) } ?? true, "QR masks run from 0 to 7")
        let candidates = forcedVersion.map { [$0] } ?? Array(1...40)
        guard let version = candidates.first(where: { Self.fits(bytes.count, version: $0, correction: correction) }) else {
            throw TooLong(byteCount: bytes.count, correction: correction)
        }

        var matrix = Matrix(version: version)
        matrix.place(Self.codewords(for: bytes, version: version, correction: correction))

        let mask: Int
        if let forcedMask {
            mask = forcedMask
        } else {
            // All eight are scored; a tie goes to the lowest mask number, as in the reference encoders.
            let penalties = (0..<8).map { matrix.masked($0).penalty() }
            mask = penalties.firstIndex(of: penalties.min()!)!
        }
        matrix = matrix.masked(mask)
        matrix.drawFormatInformation(correction: correction, mask: mask)
        matrix.drawVersionInformation()

        self.version = version
        self.size = matrix.size
        self.correction = correction
        self.mask = mask
        self.modules = matrix.dark
    }

    /// The largest byte count that fits the version at the level: data bits less the 4-bit
    /// mode indicator and the character count (8 bits up to version 9, 16 after).
    static func byteCapacity(version: Int, correction: Correction) -> Int {
        (dataCodewords(version: version, correction: correction) * 8 - 4 - countBits(version)) / 8
    }

    private static func fits(_ byteCount: Int, version: Int, correction: Correction) -> Bool {
        byteCount <= byteCapacity(version: version, correction: correction)
    }

    private static func countBits(_ version: Int) -> Int { version <= 9 ? 8 : 16 }
}

// MARK: - SVG

extension QRCode {
    /// An `otpauth://` URI as the QR code an authenticator app scans; nil if it could not be drawn (it always can:
    /// an e-mail address of the longest kind makes a URI of about 400 bytes, and a code holds 2,331).
    static func authenticatorSVG(uri: String) -> String? {
        try? QRCode(encoding: uri, correction: .medium).svg(label: "QR code to scan with your authenticator app")
    }

    /// The symbol as a standalone SVG: a white background and one path of dark modules, each
    /// horizontal run of dark modules drawn as a single rectangle to keep the path short.
    /// The viewBox is in modules; width and height are in pixels.
    func svg(label: String, moduleSize: Int = 4, quietZone: Int = 4) -> String {
        let side = size + 2 * quietZone
        let pixels = side * max(moduleSize, 1)
        var path = ""
        for row in 0..<size {
            var column = 0
            while column < size {
                guard isDark(row: row, column: column) else {
                    column += 1
                    continue
                }
                var end = column + 1
                while end < size, isDark(row: row, column: end) { end += 1 }
                let run = end - column
                path += "M\(column + quietZone) \(row + quietZone)h\(run)v1h-\(run)z"
                column = end
            }
        }
        return "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(side) \(side)\" width=\"\(pixels)\" height=\"\(pixels)\""
            + " role=\"img\" aria-label=\"\(ScalarHTMLEscaping.escape(label))\" shape-rendering=\"crispEdges\">"
            + "<rect width=\"\(side)\" height=\"\(side)\" fill=\"#fff\"/>"
            + "<path fill=\"#000\" d=\"\(path)\"/></svg>"
    }
}

// MARK: - Codewords

extension QRCode {
    /// Error correction codewords per block, versions 1–40, rows L, M, Q, H (ISO/IEC 18004 Table 9).
    private static let ecCodewordsPerBlock: [[Int]] = [
        [7, 10, 15, 20, 26, 18, 20, 24, 30, 18, 20, 24, 26, 30, 22, 24, 28, 30, 28, 28,
         28, 28, 30, 30, 26, 28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30],
        [10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26,
         26, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28],
        [13, 22, 18, 26, 18, 24, 18, 22, 20, 24, 28, 26, 24, 20, 30, 24, 28, 28, 26, 30,
         28, 30, 30, 30, 30, 28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30],
        [17, 28, 22, 16, 22, 28, 26, 26, 24, 28, 24, 28, 22, 24, 24, 30, 28, 28, 26, 28,
         30, 24, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30],
    ]

    /// Error correction blocks (group 1 plus group 2), versions 1–40, rows L, M, Q, H (Table 9).
    private static let blockCounts: [[Int]] = [
        [1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 4, 6, 6, 6, 6, 7, 8,
         8, 9, 9, 10, 12, 12, 12, 13, 14, 15, 16, 17, 18, 19, 19, 20, 21, 22, 24, 25],
        [1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16,
         17, 17, 18, 20, 21, 23, 25, 26, 28, 29, 31, 33, 35, 37, 38, 40, 43, 45, 47, 49],
        [1, 1, 2, 2, 4, 4, 6, 6, 8, 8, 8, 10, 12, 16, 12, 17, 16, 18, 21, 20,
         23, 23, 25, 27, 29, 34, 34, 35, 38, 40, 43, 45, 48, 51, 53, 56, 59, 62, 65, 68],
        [1, 1, 2, 4, 4, 4, 5, 6, 8, 8, 11, 11, 16, 16, 18, 16, 19, 21, 25, 25,
         25, 34, 30, 32, 35, 37, 40, 42, 45, 48, 51, 54, 57, 60, 63, 66, 70, 74, 77, 81],
    ]

    /// How the codewords of a symbol split into blocks. Table 9's two groups differ only in
    /// that group 2 blocks carry one more data codeword, so both follow from the total.
    struct BlockLayout: Equatable, Sendable {
        let ecPerBlock: Int
        let group1Blocks: Int
        let group1DataPerBlock: Int
        let group2Blocks: Int
        var group2DataPerBlock: Int { group1DataPerBlock + 1 }
        var dataCodewords: Int { group1Blocks * group1DataPerBlock + group2Blocks * group2DataPerBlock }
    }

    static func blockLayout(version: Int, correction: Correction) -> BlockLayout {
        let ec = ecCodewordsPerBlock[correction.tableIndex][version - 1]
        let blocks = blockCounts[correction.tableIndex][version - 1]
        let total = rawDataModules(version) / 8
        let group2 = total % blocks
        return BlockLayout(ecPerBlock: ec, group1Blocks: blocks - group2, group1DataPerBlock: total / blocks - ec, group2Blocks: group2)
    }

    private static func dataCodewords(version: Int, correction: Correction) -> Int {
        blockLayout(version: version, correction: correction).dataCodewords
    }

    /// Modules left for codewords (and the 0–7 remainder bits) once the function patterns and
    /// the format and version areas are taken out.
    static func rawDataModules(_ version: Int) -> Int {
        let size = 17 + 4 * version
        var modules = size * size
        modules -= 3 * 64  // three finders with their separators, 8 × 8 each
        modules -= 2 * 15 + 1  // two copies of the format information, and the dark module
        modules -= 2 * (size - 16)  // timing patterns between the separators
        let alignments = alignmentPositions[version - 1].count
        if alignments > 0 {
            // n × n grid less the three corners under the finders; the ones on row or column 6
            // overlap the timing pattern by 5 modules already counted there.
            modules -= 25 * (alignments * alignments - 3) - 10 * (alignments - 2)
        }
        if version >= 7 { modules -= 2 * 18 }  // two copies of the version information
        return modules
    }

    /// Data bits, padding, then error correction, interleaved across blocks (ISO 7.4 – 7.6).
    static func codewords(for bytes: [UInt8], version: Int, correction: Correction) -> [UInt8] {
        let layout = blockLayout(version: version, correction: correction)
        let capacity = layout.dataCodewords * 8

        var bits = BitBuffer()
        bits.append(0b0100, count: 4)  // byte mode
        bits.append(bytes.count, count: countBits(version))
        for byte in bytes { bits.append(Int(byte), count: 8) }
        bits.append(0, count: min(4, capacity - bits.count))  // terminator, shortened if the symbol is full
        bits.append(0, count: (8 - bits.count % 8) % 8)
        var data = bits.bytes
        var pad: UInt8 = 0xEC
        while data.count < layout.dataCodewords {
            data.append(pad)
            pad = pad == 0xEC ? 0x11 : 0xEC
        }

        var blocks: [[UInt8]] = []
        var start = 0
        for index in 0..<(layout.group1Blocks + layout.group2Blocks) {
            let length = index < layout.group1Blocks ? layout.group1DataPerBlock : layout.group2DataPerBlock
            blocks.append(Array(data[start..<(start + length)]))
            start += length
        }
        let generator = ReedSolomon.generator(degree: layout.ecPerBlock)
        let ecBlocks = blocks.map { ReedSolomon.remainder(of: $0, generator: generator) }

        var result: [UInt8] = []
        result.reserveCapacity(rawDataModules(version) / 8)
        for i in 0..<layout.group2DataPerBlock {
            for block in blocks where i < block.count { result.append(block[i]) }
        }
        for i in 0..<layout.ecPerBlock {
            for block in ecBlocks { result.append(block[i]) }
        }
        return result
    }
}

extension QRCode {
    fileprivate struct BitBuffer {
        private(set) var bytes: [UInt8] = []
        private(set) var count = 0

        mutating func append(_ value: Int, count length: Int) {
            for shift in stride(from: length - 1, through: 0, by: -1) {
                if count % 8 == 0 { bytes.append(0) }
                if (value >> shift) & 1 == 1 { bytes[count / 8] |= 0x80 >> UInt8(count % 8) }
                count += 1
            }
        }
    }
}

// MARK: - Reed–Solomon over GF(256)

extension QRCode {
    enum ReedSolomon {
        /// Powers of α and their logarithms in GF(2^8) reduced by x^8 + x^4 + x^3 + x^2 + 1 (0x11D).
        private static let tables: (exp: [UInt8], log: [UInt8]) = {
            var exp = [UInt8](repeating: 0, count: 255)
            var log = [UInt8](repeating: 0, count: 256)
            var value = 1
            for power in 0..<255 {
                exp[power] = UInt8(value)
                log[value] = UInt8(power)
                value <<= 1
                if value & 0x100 != 0 { value ^= 0x11D }
            }
            return (exp, log)
        }()

        static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
            if a == 0 || b == 0 { return 0 }
            return tables.exp[(Int(tables.log[Int(a)]) + Int(tables.log[Int(b)])) % 255]
        }

        /// (x − α^0)(x − α^1)…(x − α^(degree−1)), coefficients from the highest power down.
        static func generator(degree: Int) -> [UInt8] {
            var poly: [UInt8] = [1]
            for i in 0..<degree {
                let root = tables.exp[i]
                var next = poly + [0]
                for j in 0..<poly.count { next[j + 1] ^= multiply(poly[j], root) }
                poly = next
            }
            return poly
        }

        /// The error correction codewords: data × x^degree mod generator.
        static func remainder(of data: [UInt8], generator: [UInt8]) -> [UInt8] {
            let degree = generator.count - 1
            var remainder = [UInt8](repeating: 0, count: degree)
            for byte in data {
                let factor = byte ^ remainder[0]
                remainder.removeFirst()
                remainder.append(0)
                for j in 0..<degree { remainder[j] ^= multiply(generator[j + 1], factor) }
            }
            return remainder
        }
    }
}

// MARK: - Matrix

extension QRCode {
    /// Row and column centres of the alignment patterns, versions 1–40 (ISO/IEC 18004 Annex E).
    static let alignmentPositions: [[Int]] = [
        [], [6, 18], [6, 22], [6, 26], [6, 30], [6, 34],
        [6, 22, 38], [6, 24, 42], [6, 26, 46], [6, 28, 50], [6, 30, 54], [6, 32, 58], [6, 34, 62],
        [6, 26, 46, 66], [6, 26, 48, 70], [6, 26, 50, 74], [6, 30, 54, 78], [6, 30, 56, 82], [6, 30, 58, 86], [6, 34, 62, 90],
        [6, 28, 50, 72, 94], [6, 26, 50, 74, 98], [6, 30, 54, 78, 102], [6, 28, 54, 80, 106],
        [6, 32, 58, 84, 110], [6, 30, 58, 86, 114], [6, 34, 62, 90, 118],
        [6, 26, 50, 74, 98, 122], [6, 30, 54, 78, 102, 126], [6, 26, 52, 78, 104, 130],
        [6, 30, 56, 82, 108, 134], [6, 34, 60, 86, 112, 138], [6, 30, 58, 86, 114, 142], [6, 34, 62, 90, 118, 146],
        [6, 30, 54, 78, 102, 126, 150], [6, 24, 50, 76, 102, 128, 154], [6, 28, 54, 80, 106, 132, 158],
        [6, 32, 58, 84, 110, 136, 162], [6, 26, 54, 82, 110, 138, 166], [6, 30, 58, 86, 114, 142, 170],
    ]

    /// BCH(15,5) format information, masked with 101010000010010 so it is never all light.
    static func formatBits(correction: Correction, mask: Int) -> Int {
        let data = correction.formatBits << 3 | mask
        var remainder = data
        for _ in 0..<10 { remainder = (remainder << 1) ^ ((remainder >> 9) * 0x537) }
        return (data << 10 | remainder) ^ 0x5412
    }

    /// BCH(18,6) version information, for versions 7 and up.
    static func versionBits(_ version: Int) -> Int {
        var remainder = version
        for _ in 0..<12 { remainder = (remainder << 1) ^ ((remainder >> 11) * 0x1F25) }
        return version << 12 | remainder
    }

    private struct Matrix {
        let version: Int
        let size: Int
        var dark: [Bool]
        /// Modules that are not data: patterns, and the format and version areas.
        var reserved: [Bool]

        init(version: Int) {
            self.version = version
            size = 17 + 4 * version
            dark = Array(repeating: false, count: size * size)
            reserved = dark
            drawFunctionPatterns()
        }

        private mutating func set(_ row: Int, _ column: Int, _ isDark: Bool) {
            dark[row * size + column] = isDark
            reserved[row * size + column] = true
        }

        /// Finders, separators, timing and alignment patterns; the format and version areas
        /// (and the dark module) are only reserved here, left light while masks are scored.
        private mutating func drawFunctionPatterns() {
            for index in 0..<size {
                set(6, index, index % 2 == 0)
                set(index, 6, index % 2 == 0)
            }
            for (top, left) in [(0, 0), (0, size - 7), (size - 7, 0)] {
                // 7 × 7 finder plus the light separator ring around it, clipped to the symbol.
                for dy in -1...7 {
                    for dx in -1...7 {
                        let row = top + dy, column = left + dx
                        guard (0..<size).contains(row), (0..<size).contains(column) else { continue }
                        let ring = max(abs(dy - 3), abs(dx - 3))
                        set(row, column, ring != 2 && ring != 4)
                    }
                }
            }
            let centres = QRCode.alignmentPositions[version - 1]
            for row in centres {
                for column in centres {
                    // The three positions under the finders get no alignment pattern.
                    if (row == 6 && column == 6) || (row == 6 && column == centres.last!) || (row == centres.last! && column == 6) { continue }
                    for dy in -2...2 {
                        for dx in -2...2 { set(row + dy, column + dx, max(abs(dy), abs(dx)) != 1) }
                    }
                }
            }
            for index in 0..<9 where index != 6 {  // column and row 6 keep their timing modules
                set(8, index, false)
                set(index, 8, false)
            }
            for index in 0..<8 {
                set(8, size - 1 - index, false)
                set(size - 1 - index, 8, false)  // includes the dark module at (size − 8, 8)
            }
            if version >= 7 {
                for i in 0..<6 {
                    for j in 0..<3 {
                        set(i, size - 11 + j, false)
                        set(size - 11 + j, i, false)
                    }
                }
            }
        }

        /// Codeword bits go up and down two-module columns from the right edge, skipping the
        /// vertical timing column; leftover remainder bits stay light (ISO 7.7.3).
        mutating func place(_ codewords: [UInt8]) {
            var bitIndex = 0
            let totalBits = codewords.count * 8
            var right = size - 1
            while right >= 1 {
                if right == 6 { right = 5 }
                let upward = ((right + 1) & 2) == 0
                for step in 0..<size {
                    let row = upward ? size - 1 - step : step
                    for column in [right, right - 1] where !reserved[row * size + column] {
                        if bitIndex < totalBits {
                            dark[row * size + column] = (codewords[bitIndex / 8] >> (7 - bitIndex % 8)) & 1 == 1
                            bitIndex += 1
                        }
                    }
                }
                right -= 2
            }
            precondition(bitIndex == totalBits, "codewords do not match the data area")
        }

        func masked(_ mask: Int) -> Matrix {
            var copy = self
            for row in 0..<size {
                for column in 0..<size where !reserved[row * size + column] {
                    if Self.maskCondition(mask, row, column) { copy.dark[row * size + column].toggle() }
                }
            }
            return copy
        }

        /// ISO Table 10: where the condition holds, the data module is inverted.
        private static func maskCondition(_ mask: Int, _ i: Int, _ j: Int) -> Bool {
            switch mask {
            case 0: (i + j) % 2 == 0
            case 1: i % 2 == 0
            case 2: j % 3 == 0
            case 3: (i + j) % 3 == 0
            case 4: (i / 2 + j / 3) % 2 == 0
            case 5: (i * j) % 2 + (i * j) % 3 == 0
            case 6: ((i * j) % 2 + (i * j) % 3) % 2 == 0
            default: ((i + j) % 2 + (i * j) % 3) % 2 == 0
            }
        }

        mutating func drawFormatInformation(correction: Correction, mask: Int) {
            let bits = QRCode.formatBits(correction: correction, mask: mask)
            func bit(_ i: Int) -> Bool { (bits >> i) & 1 == 1 }
            // Copy around the top-left finder: down column 8, then along row 8, skipping timing.
            for i in 0..<6 { set(i, 8, bit(i)) }
            set(7, 8, bit(6))
            set(8, 8, bit(7))
            set(8, 7, bit(8))
            for i in 9..<15 { set(8, 14 - i, bit(i)) }
            // Second copy, split between the other two finders.
            for i in 0..<8 { set(8, size - 1 - i, bit(i)) }
            for i in 8..<15 { set(size - 15 + i, 8, bit(i)) }
            set(size - 8, 8, true)  // the dark module, always dark
        }

        mutating func drawVersionInformation() {
            guard version >= 7 else { return }
            let bits = QRCode.versionBits(version)
            for i in 0..<18 {
                let isDark = (bits >> i) & 1 == 1
                // A 6 × 3 block above the bottom-left finder and its transpose left of the top-right one.
                set(size - 11 + i % 3, i / 3, isDark)
                set(i / 3, size - 11 + i % 3, isDark)
            }
        }

        /// The penalty of ISO 7.8.3.1, Table 11, scored with the format and version areas still
        /// light, as the standard's order of steps has them (format information comes after
        /// masking); this is also what segno and python-qrcode do.
        func penalty() -> Int {
            var score = 0
            var dark = 0
            var rowLine = [Bool](repeating: false, count: size)
            var columnLine = rowLine
            for a in 0..<size {
                for b in 0..<size {
                    rowLine[b] = self.dark[a * size + b]
                    columnLine[b] = self.dark[b * size + a]
                }
                dark += rowLine.lazy.filter { $0 }.count
                score += Self.runPenalty(rowLine) + Self.runPenalty(columnLine)
                score += 40 * (Self.finderLikeCount(rowLine) + Self.finderLikeCount(columnLine))
            }
            // Rule 2: every 2 × 2 block of one colour (an m × n block scores as its (m−1)(n−1) 2 × 2 blocks).
            for row in 0..<(size - 1) {
                for column in 0..<(size - 1) {
                    let colour = self.dark[row * size + column]
                    if self.dark[row * size + column + 1] == colour, self.dark[(row + 1) * size + column] == colour,
                       self.dark[(row + 1) * size + column + 1] == colour {
                        score += 3
                    }
                }
            }
            // Rule 4: 10 points per full 5 % step away from half dark.
            let total = size * size
            score += 10 * (abs(dark * 100 - total * 50) / (total * 5))
            return score
        }

        /// Rule 1: a run of 5 + i modules of one colour scores 3 + i.
        private static func runPenalty(_ line: [Bool]) -> Int {
            var score = 0
            var run = 1
            for index in 1...line.count {
                if index < line.count, line[index] == line[index - 1] {
                    run += 1
                } else {
                    if run >= 5 { score += run - 2 }
                    run = 1
                }
            }
            return score
        }

        /// Rule 3: dark-light-dark×3-light-dark with 4 light modules before or after it; the
        /// area outside the symbol counts as light (it is quiet zone). After a counted match the
        /// scan resumes past it, so each finder-like pattern counts once even with light on both
        /// sides — the same reading as segno's.
        private static func finderLikeCount(_ line: [Bool]) -> Int {
            let pattern = [true, false, true, true, true, false, true]
            let n = line.count
            var count = 0
            var start = 0
            while start + 7 <= n {
                guard let index = (start...(n - 7)).first(where: { i in (0..<7).allSatisfy { line[i + $0] == pattern[$0] } }) else { break }
                let end = index + 7
                let lightBefore = (max(index - 4, 0)..<index).allSatisfy { !line[$0] }
                let lightAfter = (end..<min(end + 4, n)).allSatisfy { !line[$0] }
                if lightBefore || lightAfter {
                    count += 1
                    start = end
                } else {
                    start = index + 4  // the pattern can next recur 4 modules on (1011101 1101)
                }
            }
            return count
        }
    }
}
