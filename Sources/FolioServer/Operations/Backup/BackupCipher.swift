import Crypto
import Foundation

/// Seals backup files with AES-256-GCM, a chunk at a time, so a dump of any
/// size is never held in memory. The key is derived (HKDF-SHA256) from
/// `BACKUP_ENCRYPTION_KEY`; the header names the key by a short id, so a
/// backup taken before a rotation opens under `PREVIOUS_BACKUP_ENCRYPTION_KEYS`.
///
/// Layout: the header line `FOLIO-BACKUP-AESGCM-1 <key id>\n`, then chunks of
/// a 4-byte big-endian length and a sealed box (nonce, ciphertext, tag). Each
/// chunk's additional data is the header, its index and whether it is the
/// last, so chunks cannot be reordered, dropped or the file cut short unseen.
struct BackupCipher: Sendable {
    static let magic = "FOLIO-BACKUP-AESGCM-1"
    static let chunkSize = 1 << 20

    struct Key: Sendable {
        let key: SymmetricKey
        let id: String

        init(_ secret: String) {
            key = HKDF<SHA256>.deriveKey(
                inputKeyMaterial: SymmetricKey(data: Data(secret.utf8)), salt: Data("folio-backup".utf8),
                info: Data("backup-encryption-v1".utf8), outputByteCount: 32)
            id = String(AuditChain.hex(SHA256.hash(data: key.withUnsafeBytes { Data("folio-backup-key-id".utf8) + Data($0) })).prefix(16))
        }
    }

    enum Failure: Error, CustomStringConvertible, Equatable {
        case notEncrypted
        case unknownKey(String)
        case damaged(String)

        var description: String {
            switch self {
            case .notEncrypted: "the file is not a sealed Folio backup"
            case .unknownKey(let id): "the backup was sealed under key \(id), which is neither BACKUP_ENCRYPTION_KEY nor one of PREVIOUS_BACKUP_ENCRYPTION_KEYS"
            case .damaged(let detail): "the sealed backup does not open: \(detail) (it was changed, cut short or damaged)"
            }
        }
    }

    /// The key that seals; the others only open.
    let current: Key?
    let previous: [Key]

    init(key: String?, previousKeys: [String] = []) {
        current = key.map(Key.init)
        previous = previousKeys.map(Key.init)
    }

    var encrypts: Bool { current != nil }

    /// Seals `source` into `destination` (created with owner-only permissions).
    func seal(_ source: URL, into destination: URL) throws {
        guard let key = current else { throw Failure.unknownKey("none configured") }
        let input = try FileHandle(forReadingFrom: source)
        defer { try? input.close() }
        let output = try BackupFiles.create(destination)
        defer { try? output.close() }
        let header = Data("\(Self.magic) \(key.id)\n".utf8)
        try output.write(contentsOf: header)
        var index: UInt64 = 0
        var chunk = try input.read(upToCount: Self.chunkSize) ?? Data()
        while true {
            let next = chunk.count == Self.chunkSize ? try input.read(upToCount: Self.chunkSize) ?? Data() : Data()
            let last = next.isEmpty
            let sealed = try AES.GCM.seal(chunk, using: key.key, authenticating: Self.additionalData(header, index, last)).combined!
            var length = UInt32(sealed.count).bigEndian
            try output.write(contentsOf: Data(bytes: &length, count: 4))
            try output.write(contentsOf: sealed)
            if last { break }
            chunk = next
            index += 1
        }
    }

    /// Whether a file starts as a sealed backup does.
    static func isSealed(_ url: URL) -> Bool {
        guard let handle = try? FileHandle(forReadingFrom: url) else { return false }
        defer { try? handle.close() }
        return (try? handle.read(upToCount: magic.utf8.count)).map { String(decoding: $0, as: UTF8.self) == magic } ?? false
    }

    /// Opens `source` into `destination`, checking every chunk.
    func open(_ source: URL, into destination: URL) throws {
        let input = try FileHandle(forReadingFrom: source)
        defer { try? input.close() }
        let size = try FileManager.default.attributesOfItem(atPath: source.path)[.size] as? UInt64 ?? 0
        // The header line: magic, a space, a 16-character key id, a newline.
        let headerLength = Self.magic.utf8.count + 1 + 16 + 1
        guard let header = try input.read(upToCount: headerLength), header.count == headerLength,
              String(decoding: header.prefix(Self.magic.utf8.count), as: UTF8.self) == Self.magic
        else { throw Failure.notEncrypted }
        let id = String(decoding: header.dropFirst(Self.magic.utf8.count + 1).prefix(16), as: UTF8.self)
        guard let key = ([current].compactMap { $0 } + previous).first(where: { $0.id == id }) else { throw Failure.unknownKey(id) }
        let output = try BackupFiles.create(destination)
        defer { try? output.close() }
        var offset = UInt64(headerLength)
        var index: UInt64 = 0
        while true {
            guard let lengthBytes = try input.read(upToCount: 4), lengthBytes.count == 4 else { throw Failure.damaged("it ends before its last chunk") }
            let length = lengthBytes.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            guard length >= 28, length <= UInt32(Self.chunkSize + 28) else { throw Failure.damaged("chunk \(index) has an impossible length") }
            guard let sealed = try input.read(upToCount: Int(length)), sealed.count == Int(length) else { throw Failure.damaged("chunk \(index) is cut short") }
            offset += 4 + UInt64(length)
            let last = offset == size
            let plain: Data
            do {
                plain = try AES.GCM.open(AES.GCM.SealedBox(combined: sealed), using: key.key, authenticating: Self.additionalData(header, index, last))
            } catch {
                throw Failure.damaged("chunk \(index) fails its authentication tag")
            }
            try output.write(contentsOf: plain)
            if last { return }
            index += 1
        }
    }

    static func additionalData(_ header: Data, _ index: UInt64, _ last: Bool) -> Data {
        var big = index.bigEndian
        return header + Data(bytes: &big, count: 8) + Data([last ? 1 : 0])
    }
}

/// Files with owner-only permissions, and their SHA-256 read in chunks.
enum BackupFiles {
    static func create(_ url: URL) throws -> FileHandle {
        guard FileManager.default.createFile(atPath: url.path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: url.path])
        }
        return try FileHandle(forWritingTo: url)
    }

    static func sha256(of url: URL) throws -> (hex: String, bytes: Int64) {
        let input = try FileHandle(forReadingFrom: url)
        defer { try? input.close() }
        var hasher = SHA256()
        var total: Int64 = 0
        while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
            hasher.update(data: chunk)
            total += Int64(chunk.count)
        }
        return (AuditChain.hex(hasher.finalize()), total)
    }
}
