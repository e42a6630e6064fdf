import FluentKit
import FolioDomain
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import FolioServer

/// The outside attack's smaller findings, each attacked the way it was found.
@Suite("Hardening: CSV export, duplicate JSON keys, HEAD")
struct HardeningTests {

    @Test("every leading character a spreadsheet runs as a formula is neutralised in every text cell", arguments: ["=", "+", "-", "@", "\t", "\r"])
    func csvFormulaCharacters(first: String) {
        let cell = first + "HYPERLINK(\"https://evil.test\")"
        let written = CSV.field(cell)
        // Quoted or not, the cell's text begins with a quote mark, so it is text.
        let text = written.hasPrefix("\"") ? String(written.dropFirst()) : written
        #expect(text.hasPrefix("'" + first), "\(first.debugDescription) → \(written.debugDescription)")
        // Numbers stay numbers: a negative amount is not a formula.
        #expect(CSV.field("-5000.00") == "-5000.00")
    }

    /// Cells read back as a spreadsheet reads a CSV: by code point, never by Swift `Character`.
    static func csvCells(_ csv: String) -> [[String]] {
        var rows: [[String]] = [], row: [String] = [], cell = String.UnicodeScalarView()
        var quoted = false, scalars = Array(csv.unicodeScalars)[...]
        while let scalar = scalars.popFirst() {
            if quoted {
                if scalar == "\"" {
                    if scalars.first == "\"" { cell.append(scalars.removeFirst()) } else { quoted = false }
                } else {
                    cell.append(scalar)
                }
            } else if scalar == "\"" {
                quoted = true
            } else if scalar == "," {
                row.append(String(cell)); cell = .init()
            } else if scalar == "\n" || scalar == "\r" {
                if scalar == "\r", scalars.first == "\n" { scalars.removeFirst() }
                row.append(String(cell)); cell = .init()
                rows.append(row); row = []
            } else {
                cell.append(scalar)
            }
        }
        if !cell.isEmpty || !row.isEmpty { row.append(String(cell)); rows.append(row) }
        return rows
    }

    @Test("a cell holding a line break, or a comma, a quote or an = joined to a mark after it, is read back whole and as text", arguments: [
        "PAYMENT\r\n=cmd|' /C calc'!A0", "q,\"\u{301},=2+3,x", "=\u{301}1+1", "=\u{200D}cmd", "\"\u{301}", ",\u{301}", "@\u{308}SUM(A1)", "a\r\nb",
    ])
    func csvScalars(text: String) {
        let line = [CSV.field(text), CSV.field("next")].joined(separator: ",") + "\n"
        let rows = Self.csvCells(line)
        #expect(rows.count == 1, "\(line.debugDescription) → \(rows)")
        #expect(rows.first?.count == 2, "\(line.debugDescription) → \(rows)")
        let cell = rows.first?.first ?? ""
        #expect(cell == text || cell == "'" + text, "\(text.debugDescription) came back as \(cell.debugDescription)")
        #expect(cell.unicodeScalars.first.map { !CSV.formulaStarts.contains($0) } == true, "\(cell.debugDescription)")
    }

    @Test("a formula behind leading blanks, or in full-width forms, is quoted too; plain text and numbers are left alone")
    func csvHiddenFormulas() {
        for text in [" =1+1", "  @SUM(A1)", "\u{A0}+cmd", "\u{3000}-2+3", " \t=1", "\u{FF1D}1+1", "\u{FF0B}cmd", "\u{FF0D}2+3", "\u{FF20}SUM(A1)", "   \u{FF1D}1"] {
            #expect(CSV.field(text) == "'" + text, "\(text.debugDescription)")
        }
        for text in ["Salary", " Salary", "", "   ", "-12.50", "1=1", "a+b"] {
            #expect(CSV.field(text) == text, "\(text.debugDescription)")
        }
    }

    @Test("a cell of a minus and forty digits (a description anyone can write) is text with its quote, and the export does not stop the server")
    func csvLongNumber() {
        // Twenty digits are a number a spreadsheet shows as one; more are not a number Folio writes, so they are quoted.
        for digits in [20, 21, 38, 39, 40, 80] {
            let text = "-" + String(repeating: "9", count: digits)
            #expect(CSV.field(text) == (digits == 20 ? text : "'" + text), "\(digits) digits")
        }
    }

    @Test("formula-looking descriptions come out of /api/transactions.csv as text", arguments: TestDatabaseKind.all)
    func csvExport(kind: TestDatabaseKind) async throws {
        let descriptions = ["+HYPERLINK(\"https://evil.test\")", "-2+3+cmd|' /C calc'!A0", "@SUM(A1:A9)", "=1+1"]
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "csv@example.com")
            let account = try #require(try json(try await client.execute(uri: "/api/accounts", method: .get, headers: bearer(tokens)))["data"] as? [[String: Any]])
            let id = try #require(account.first?["id"] as? String)
            for description in descriptions {
                #expect(try await post(client, "/api/accounts/\(id)/deposits", ["amount": "1.00", "description": description], headers: bearer(tokens)).status == .created)
            }
            let csv = String(buffer: try await client.execute(uri: "/api/transactions.csv?type=deposit", method: .get, headers: bearer(tokens)).body)
            let cells = csv.split(separator: "\n").dropFirst().map { line in String(line.split(separator: ",", maxSplits: 9, omittingEmptySubsequences: false)[9]) }
            for description in descriptions {
                #expect(cells.contains { $0.hasPrefix("'" + description.prefix(3)) || $0.hasPrefix("\"'" + description.prefix(3)) }, "\(description) in \(cells)")
            }
            #expect(!cells.contains { ["=", "+", "-", "@"].contains($0.first.map(String.init) ?? "") })
        }
    }

    @Test("a JSON body with a duplicate key is 400 malformed_json and writes nothing", arguments: TestDatabaseKind.all)
    func duplicateKeys(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind) { client, env in
            let tokens = try await signUp(client, env, email: "dup@example.com")
            let accounts = try #require(try json(try await client.execute(uri: "/api/accounts", method: .get, headers: bearer(tokens)))["data"] as? [[String: Any]])
            let id = try #require(accounts.first?["id"] as? String)
            let entriesBefore = try await env.entries().count
            var headers = bearer(tokens)
            headers[.contentType] = "application/json"
            for body in [#"{"amount":"1.00","amount":"-5000.00"}"#, #"{"amount":"1.00","description":"a","description":"b"}"#] {
                let response = try await client.execute(uri: "/api/accounts/\(id)/deposits", method: .post, headers: headers, body: ByteBuffer(string: body))
                #expect(response.status == .badRequest)
                #expect(try problem(response).code == "malformed_json")
            }
            let nested = try await client.execute(
                uri: "/api/orders", method: .post, headers: headers,
                body: ByteBuffer(string: #"{"symbol":"AAPL","side":"buy","type":"market","quantity":"1","extra":{"a":1,"a":2}}"#))
            #expect(try problem(nested).code == "malformed_json")
            #expect(try await env.entries().count == entriesBefore)
        }
    }

    @Test("HEAD is answered wherever GET is, with GET's headers and no body", arguments: TestDatabaseKind.all)
    func head(kind: TestDatabaseKind) async throws {
        try await withTestApp(kind, overSocket: true) { client, env in
            let port = try #require(client.port)
            let tokens = try await signUp(client, env, email: "head@example.com")
            let token = try #require(tokens["access_token"] as? String)
            for (path, authorized) in [("/api/health", false), ("/health", false), ("/api/accounts", true), ("/api/portfolio", true)] {
                let connection = try RawConnection(port: port)
                let authorization = authorized ? "Authorization: Bearer \(token)\r\n" : ""
                try connection.send("HEAD \(path) HTTP/1.1\r\nHost: folio.test\r\n\(authorization)Connection: close\r\n\r\n")
                let text = await connection.receiveAll()
                let answer = try #require(RawResponse(text), "\(path)")
                #expect(answer.status == 200, "\(path)")
                #expect(answer.body.isEmpty, "\(path): no body")
                #expect(Int(answer.headers["content-length"] ?? "") ?? 0 > 0, "\(path): the length GET's body would have")
                #expect(answer.headers["x-content-type-options"] == "nosniff")
            }
            let notAllowed = try await client.execute(uri: "/api/health", method: .delete)
            #expect(notAllowed.headers[.allow] == "GET, HEAD")
        }
    }
}
