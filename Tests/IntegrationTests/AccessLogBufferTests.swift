import Foundation
import Gateway
import Glibc
import Sandbox
import Testing

/// The access log is buffered per loop (one write for many lines), flushed after `log.flush_ms`,
/// when `log.buffer_bytes` are waiting, and at shutdown: nothing is lost on SIGTERM.
@Suite(.serialized) struct AccessLogBufferTests {
    static func veil(_ log: String) throws -> (VeilProcess, Sandbox) {
        let key = "sk-logTEST-\(UUID().uuidString.prefix(8))-KEY"
        let sandbox = Sandbox(config: SandboxConfig(apiKey: key))
        _ = try sandbox.start()
        let store = "/tmp/veil-log-\(UUID().uuidString).sqlite3"
        let text = VeilProcess.config(upstream: sandbox.baseURL, key: key, store: store, tokenDigest: sha256Hex("tok-log"), extra: "log:\n" + log)
        return (try VeilProcess(configText: text, storePath: store), sandbox)
    }

    static func lines(_ v: VeilProcess) -> Int { v.stdout.split(separator: "\n").filter { $0.contains("\"request_id\"") }.count }

    @Test func linesWaitForTheFlushThenAllArrive() throws {
        let (veil, sandbox) = try Self.veil("  flush_ms: 1500\n")
        defer { veil.kill(); sandbox.stop() }
        for _ in 0..<20 { #expect(try RawHTTPClient.request(port: veil.port, method: "GET", path: "/healthz").status == 200) }
        #expect(Self.lines(veil) < 20, "every line was written at once: not buffered")
        #expect(waitUntil(5) { Self.lines(veil) == 20 })
    }

    @Test func aFullBufferIsWrittenAtOnce() throws {
        let (veil, sandbox) = try Self.veil("  flush_ms: 60000\n  buffer_bytes: 2000\n")
        defer { veil.kill(); sandbox.stop() }
        for _ in 0..<40 { _ = try RawHTTPClient.request(port: veil.port, method: "GET", path: "/healthz") }
        #expect(waitUntil(2) { Self.lines(veil) >= 10 }, "\(Self.lines(veil)) lines after 40 requests with a 2,000-byte buffer")
    }

    @Test func sigtermFlushesWhatIsWaiting() throws {
        let (veil, sandbox) = try Self.veil("  flush_ms: 60000\n")
        defer { veil.kill(); sandbox.stop() }
        for _ in 0..<25 { _ = try RawHTTPClient.request(port: veil.port, method: "GET", path: "/healthz") }
        #expect(Self.lines(veil) == 0)
        veil.signal(SIGTERM)
        #expect(veil.waitExit(10) == 0)
        #expect(Self.lines(veil) == 25)
    }
}
