import Foundation
import Testing

@testable import FolioServer

/// Runs a tool to its end: its exit status and everything it printed.
/// Awaited, not blocked on: a thread held here is one the tests' servers and fakes cannot use.
func runTool(_ executable: String, _ arguments: [String], in directory: URL? = nil) async throws -> (status: Int32, output: String) {
    let process = try ChildProcess(executable, arguments, directory: directory?.path, output: .pipe, error: .standardOutput)
    let output = OutputLines()
    output.attach(process.standardOutput!)
    let status = await process.exited(within: .seconds(300)).status
    return (status, await output.text())
}

/// The deployment files under ops/ are checked by the tools that will read them.
@Suite("Deployment files")
struct DeploymentTests {
    static let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static let ops = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../ops").standardized

    @Test("nginx -t accepts ops/nginx/folio.conf (TLS, the two upstreams, /metrics closed)", .enabled(if: nginx != nil, "needs nginx (Debian's nginx-light; .ci/run installs it)"))
    func nginxConfiguration() async throws {
        let (status, output) = try await runTool("/bin/bash", [Self.ops.appendingPathComponent("nginx/check").path])
        #expect(status == 0, "\(output)")
        let conf = try String(contentsOf: Self.ops.appendingPathComponent("nginx/folio.conf"), encoding: .utf8)
        #expect(conf.contains("ssl_protocols TLSv1.2 TLSv1.3"))
        #expect(conf.contains("location ^~ /metrics"))
        // Reset and verification tokens travel in the query: the access log keeps the path alone.
        let format = try #require(conf.range(of: "log_format").map { String(conf[$0.lowerBound...].prefix { $0 != ";" }) })
        #expect(!format.contains("$request ") && !format.contains("$request\"") && !format.contains("$request_uri") && !format.contains("$args"), "\(format)")
        #expect(format.contains("\"$request_method $uri $server_protocol\""))
    }

    @Test("the systemd units run folio as its own user, hardened, and migrate before serving")
    func systemdUnits() throws {
        let serve = try String(contentsOf: Self.ops.appendingPathComponent("systemd/folio.service"), encoding: .utf8)
        let worker = try String(contentsOf: Self.ops.appendingPathComponent("systemd/folio-worker.service"), encoding: .utf8)
        for unit in [serve, worker] {
            for line in ["User=folio", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "Restart=on-failure"] {
                #expect(unit.contains(line), "\(line)")
            }
        }
        #expect(serve.contains("migrate"))
        #expect(!worker.contains("ExecStartPre"))
    }
}
