import Crypto
import Foundation

/// Seals backup files with AES-256-GCM, a chunk at a time, so a dump of any
/// size is never held in memory. The key is derived (HKDF-SHA256) from
/// `BACKUP_ENCRYPTION_KEY`; the header names the key by a short id, so a
/// backup taken before a rotation opens under `PREVIOUS_BACKUP_ENCRYPTION_KEYS`.
///
/// Layout: the header line `FOLIO-BACKUP-AESGCM-2 <key id> <file id>\n` (the
/// file id is random), then chunks of a 4-byte big-endian length and a sealed
/// box (nonce, ciphertext, tag). Each chunk's additional data is the header,
/// its index and whether it is the last, so chunks cannot be reordered,
/// dropped, moved from another backup, or the file cut short unseen.
///
/// The same key authenticates the manifest (`manifestMAC`) and seals its
/// figures (balances are not left readable beside a sealed dump).
struct BackupCipher: Sendable {
    static let magic = "FOLIO-BACKUP-AESGCM-2"
    /// magic, space, 16-character key id, space, 32-character file id, newline.
    static let headerLength = magic.utf8.count + 1 + 16 + 1 + 32 + 1
    static let chunkSize = 1 << 20

    struct Key: Sendable {
        let key: SymmetricKey
        /// Authenticates manifests, apart from the key that seals.
        let manifestKey: SymmetricKey
        let id: String

        init(_ secret: String) {
            let material = SymmetricKey(data: Data(secret.utf8))
            key = HKDF<SHA256>.deriveKey(
                inputKeyMaterial: material, salt: Data("folio-backup".utf8), info: Data("backup-encryption-v1".utf8), outputByteCount: 32)
            manifestKey = HKDF<SHA256>.deriveKey(
                inputKeyMaterial: material, salt: Data("folio-backup".utf8), info: Data("backup-manifest-v1".utf8), outputByteCount: 32)
            id = String(AuditChain.hex(SHA256.hash(data: key.withUnsafeBytes { Data("folio-backup-key-id".utf8) + Data($0) })).prefix(16))
        }
    }

    func key(id: String) -> Key? {
        ([current].compactMap { $0 } + previous).first { $0.id == id }
    }

    /// HMAC-SHA256 of a manifest's canonical bytes.
    static func manifestMAC(_ bytes: Data, key: Key) -> String {
        AuditChain.hex(HMAC<SHA256>.authenticationCode(for: bytes, using: key.manifestKey))
    }

    static func isValidMAC(_ mac: String, _ bytes: Data, key: Key) -> Bool {
        ConstantTime.equals(manifestMAC(bytes, key: key), mac)
    }

    /// Seals a small value (the manifest's figures) whole, bound to its file id.
    static func sealValue(_ data: Data, key: Key, fileID: String) throws -> String {
        try AES.GCM.seal(data, using: key.key, authenticating: Data("folio-backup-figures \(fileID)".utf8)).combined!.base64EncodedString()
    }

    static func openValue(_ text: String, key: Key, fileID: String) throws -> Data {
        guard let combined = Data(base64Encoded: text) else { throw Failure.damaged("the sealed figures are not base64") }
        do {
            return try AES.GCM.open(AES.GCM.SealedBox(combined: combined), using: key.key, authenticating: Data("folio-backup-figures \(fileID)".utf8))
        } catch {
            throw Failure.damaged("the sealed figures fail their authentication tag")
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

    /// Seals `source` into `destination` (created with owner-only permissions); returns the file's id.
    @discardableResult
    func seal(_ source: URL, into destination: URL) throws -> String {
        let input = try FileHandle(forReadingFrom: source)
        defer { try? input.close() }
        return try seal(reading: input, into: destination)
    }

    /// Seals what `input` gives until its end (a file, or `pg_dump`'s output as it is written).
    func seal(reading input: FileHandle, into destination: URL) throws -> String {
        guard let key = current else { throw Failure.unknownKey("none configured") }
        let output = try BackupFiles.create(destination)
        defer { try? output.close() }
        let fileID = AuditChain.hex(SymmetricKey(size: .bits128).withUnsafeBytes { Data($0) })
        let header = Data("\(Self.magic) \(key.id) \(fileID)\n".utf8)
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
            if last { return fileID }
            chunk = next
            index += 1
        }
    }

    /// A sealed file's key id and file id, read from its header.
    static func header(of url: URL) throws -> (keyID: String, fileID: String) {
        let input = try FileHandle(forReadingFrom: url)
        defer { try? input.close() }
        guard let header = try input.read(upToCount: headerLength), header.count == headerLength,
              String(decoding: header.prefix(magic.utf8.count), as: UTF8.self) == magic
        else { throw Failure.notEncrypted }
        let fields = String(decoding: header.dropLast(), as: UTF8.self).split(separator: " ")
        guard fields.count == 3, fields[1].utf8.count == 16, fields[2].utf8.count == 32 else { throw Failure.notEncrypted }
        return (String(fields[1]), String(fields[2]))
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
        let headerLength = Self.headerLength
        guard let header = try input.read(upToCount: headerLength), header.count == headerLength,
              String(decoding: header.prefix(Self.magic.utf8.count), as: UTF8.self) == Self.magic
        else { throw Failure.notEncrypted }
        let id = String(decoding: header.dropFirst(Self.magic.utf8.count + 1).prefix(16), as: UTF8.self)
        guard let key = key(id: id) else { throw Failure.unknownKey(id) }
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
    /// A new directory only this user can enter, for plaintext that must not sit in the backup directory.
    static func privateDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("folio-backup-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        return url
    }

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
