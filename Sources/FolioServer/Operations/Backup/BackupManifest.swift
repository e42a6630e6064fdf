import FolioDomain
import Foundation
import SQLKit

/// What a backup held when it was taken, read in the same snapshot as the
/// dump: `backup verify` reads the same figures from the restored copy and
/// every one must match.
public struct BackupFigures: Codable, Sendable, Equatable {
    /// The newest migration applied, and how many there are.
    public var schemaVersion: String
    public var migrations: Int
    public var rowCounts: [String: Int]
    /// Each account's cash, reserved cash and holdings (quantity by symbol), as exact decimal text.
    public var accounts: [String: AccountFigures]
    /// Each audit chain's anchored head, `sequence:hash`.
    public var auditHeads: [String: String]

    public struct AccountFigures: Codable, Sendable, Equatable {
        public var cash: String
        public var reservedCash: String
        public var holdings: [String: String]

        /// "cash 100.0000, reserved 0.0000, holdings AAPL 10, MSFT 2.5" (or "no holdings"), as an operator reads it.
        var text: String {
            let held = holdings.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
            return "cash \(cash), reserved \(reservedCash), " + (held.isEmpty ? "no holdings" : "holdings " + held.joined(separator: ", "))
        }
    }

    /// Reads the figures on `db`, which the caller holds in one snapshot.
    static func read(on db: any SQLDatabase, kind: FolioDatabase.Kind) async throws -> BackupFigures {
        let tables: [String]
        if kind == .sqlite {
            tables = try await db.raw("SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, 7) <> 'sqlite_' ORDER BY name").all()
                .map { try $0.decode(column: "name", as: String.self) }
        } else {
            tables = try await db.raw("""
                SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name
                """).all().map { try $0.decode(column: "name", as: String.self) }
        }
        var counts: [String: Int] = [:]
        for table in tables {
            counts[table] = try await db.raw("SELECT COUNT(*) AS n FROM \(ident: table)").first()?.decode(column: "n", as: Int.self) ?? 0
        }
        let names = try await db.raw("SELECT name FROM _fluent_migrations").all().map { try $0.decode(column: "name", as: String.self) }
        var accounts: [String: AccountFigures] = [:]
        for row in try await db.raw("SELECT id, cash, reserved_cash FROM accounts").all() {
            accounts[try row.decode(column: "id", as: UUID.self).lowercasedString] = AccountFigures(
                cash: try row.decode(column: "cash", as: Cash.self).description,
                reservedCash: try row.decode(column: "reserved_cash", as: Cash.self).description, holdings: [:])
        }
        for row in try await db.raw("SELECT account_id, symbol, quantity FROM holdings").all() {
            let account = try row.decode(column: "account_id", as: UUID.self).lowercasedString
            accounts[account]?.holdings[try row.decode(column: "symbol", as: String.self)] = try row.decode(column: "quantity", as: Quantity.self).description
        }
        var heads: [String: String] = [:]
        for row in try await db.raw(AuditChain.anchoredHeads).all() {
            heads[try row.decode(column: "chain_id", as: String.self)] =
                "\(try row.decode(column: "sequence", as: Int64.self)):\(try row.decode(column: "hash", as: String.self))"
        }
        return BackupFigures(schemaVersion: names.max() ?? "", migrations: names.count, rowCounts: counts, accounts: accounts, auditHeads: heads)
    }

    /// Each difference between what a backup recorded and what its restored copy holds.
    func differences(from restored: BackupFigures) -> [String] {
        var found: [String] = []
        if schemaVersion != restored.schemaVersion || migrations != restored.migrations {
            found.append("schema: the manifest says \(migrations) migrations up to \(schemaVersion), the copy has \(restored.migrations) up to \(restored.schemaVersion)")
        }
        for table in Set(rowCounts.keys).union(restored.rowCounts.keys).sorted() where rowCounts[table] != restored.rowCounts[table] {
            found.append("table \(table): the manifest says \(rowCounts[table].map(String.init) ?? "no table") row(s), the copy has \(restored.rowCounts[table].map(String.init) ?? "no table")")
        }
        for account in Set(accounts.keys).union(restored.accounts.keys).sorted() where accounts[account] != restored.accounts[account] {
            let said = accounts[account]?.text ?? "no account", has = restored.accounts[account]?.text ?? "no account"
            found.append("account \(account): the manifest says \(said); the copy has \(has)")
        }
        for chain in Set(auditHeads.keys).union(restored.auditHeads.keys).sorted() where auditHeads[chain] != restored.auditHeads[chain] {
            found.append("audit chain \(chain): the manifest's head is \(auditHeads[chain] ?? "none"), the copy's is \(restored.auditHeads[chain] ?? "none")")
        }
        return found
    }
}

/// `manifest.json` in every backup directory. Keys are written as the
/// properties name them: a key strategy would also rewrite dictionary keys (symbols, table names).
///
/// An encrypted backup's manifest is authenticated (`mac`, an HMAC under a key
/// derived from `BACKUP_ENCRYPTION_KEY`) and its figures, which show every
/// account's balances, are sealed (`sealedFigures`): someone who can write to
/// the backup store can neither swap in a plaintext dump nor edit the figures.
public struct BackupManifest: Codable, Sendable, Equatable {
    public static let fileName = "manifest.json"
    public static let currentFormat = "folio-backup-v2"

    public var format: String
    public var createdAt: Date
    public var folioVersion: String
    public var database: String
    public var encrypted: Bool
    /// The key id that sealed the files, and the sealed file's random id, when encrypted.
    public var keyID: String?
    public var fileID: String?
    public var files: [File]
    /// In the clear when the backup is not encrypted.
    public var figures: BackupFigures?
    /// Sealed with the backup's key when it is.
    public var sealedFigures: String?
    public var mac: String?

    public struct File: Codable, Sendable, Equatable {
        public var name: String
        public var bytes: Int64
        public var sha256: String
    }

    /// The backup's manifest; a missing or unreadable one is a `Backups.Failure` that says so in a line.
    static func read(from directory: URL) throws -> BackupManifest {
        guard let data = try? Data(contentsOf: directory.appendingPathComponent(fileName)) else {
            throw Backups.Failure(description: "\(directory.path) holds no readable \(fileName): it is not a Folio backup")
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(BackupManifest.self, from: data)
        } catch {
            throw Backups.Failure(description: "\(directory.appendingPathComponent(fileName).path) is not a manifest Folio can read (it was changed, or cut short)")
        }
    }

    func write(to directory: URL) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let url = directory.appendingPathComponent(Self.fileName)
        let handle = try BackupFiles.create(url)
        defer { try? handle.close() }
        try handle.write(contentsOf: try encoder.encode(self) + Data("\n".utf8))
    }

    /// The bytes the MAC covers: the manifest without its MAC, keys sorted, no spaces.
    var authenticatedBytes: Data {
        get throws {
            var unsigned = self
            unsigned.mac = nil
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .iso8601
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return try encoder.encode(unsigned)
        }
    }

    /// Seals the figures and signs the manifest, for an encrypted backup.
    mutating func seal(with key: BackupCipher.Key, fileID: String) throws {
        guard let figures else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        self.fileID = fileID
        self.sealedFigures = try BackupCipher.sealValue(try encoder.encode(figures), key: key, fileID: fileID)
        self.figures = nil
        self.mac = BackupCipher.manifestMAC(try authenticatedBytes, key: key)
    }

    /// Checks the manifest against the configured keys and returns its figures.
    /// Refused: an encrypted manifest whose MAC does not match (it was edited),
    /// and a plaintext one while a key is configured, unless `allowUnencrypted`
    /// (a backup made before encryption was set up).
    func opened(with cipher: BackupCipher, allowUnencrypted: Bool) throws -> BackupFigures {
        guard encrypted else {
            if cipher.encrypts && !allowUnencrypted {
                throw Backups.Failure(description: "this backup is not encrypted although BACKUP_ENCRYPTION_KEY is set; if it was taken before encryption was set up, pass --allow-unencrypted")
            }
            guard let figures else { throw Backups.Failure(description: "the manifest holds no figures") }
            return figures
        }
        guard let keyID, let key = cipher.key(id: keyID) else { throw BackupCipher.Failure.unknownKey(keyID ?? "none") }
        guard let mac, BackupCipher.isValidMAC(mac, try authenticatedBytes, key: key) else {
            throw Backups.Failure(description: "the manifest's MAC does not match: it was changed after the backup was taken")
        }
        guard let sealedFigures, let fileID else { throw Backups.Failure(description: "the manifest holds no sealed figures") }
        return try JSONDecoder().decode(BackupFigures.self, from: try BackupCipher.openValue(sealedFigures, key: key, fileID: fileID))
    }
}
