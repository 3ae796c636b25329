import Foundation
import Gateway
import Glibc
import Sandbox
import Testing

/// The real binary under signals: SIGHUP reloads teams and tokens without dropping a connection
/// (and refuses a bad config); SIGTERM drains (open streams finish, new connections are refused),
/// closes the store and exits 0.
@Suite(.serialized) struct SignalTests {
    static func sandbox(_ key: String) throws -> Sandbox {
        var sc = SandboxConfig(apiKey: key)
        sc.sseChunkDelayMillis = 300
        let s = Sandbox(config: sc)
        _ = try s.start()
        return s
    }

    @Test(.timeLimit(.minutes(1))) func sighupSwapsATokenWhileAStreamIsOpenAndTheStreamCompletes() throws {
        let key = "sk-signalTEST-\(UUID().uuidString.prefix(8))-KEY"
        let sandbox = try SignalTests.sandbox(key)
        defer { sandbox.stop() }
        let store = "/tmp/veil-signal-\(UUID().uuidString).sqlite3"
        let oldToken = "tok-old-\(UUID().uuidString)", newToken = "tok-new-\(UUID().uuidString)"
        let veil = try VeilProcess(configText: VeilProcess.config(upstream: sandbox.baseURL, key: key, store: store, tokenDigest: sha256Hex(oldToken)),
                                   storePath: store)
        defer { veil.kill() }

        var stream = try OpenStream.open(port: veil.port, token: oldToken)
        #expect(stream.status == 200)
        try veil.rewriteConfig(VeilProcess.config(upstream: sandbox.baseURL, key: key, store: store, tokenDigest: sha256Hex(newToken)))
        veil.signal(SIGHUP)
        let swapped = try waitUntil(5) {
            try RawHTTPClient.request(port: veil.port, method: "GET", path: "/v1/models", headers: [("Authorization", "Bearer \(newToken)")]).status == 200
        }
        #expect(swapped)
        #expect(!stream.text.contains("[DONE]"))  // the stream was still open across the reload
        #expect(try RawHTTPClient.request(port: veil.port, method: "GET", path: "/v1/models", headers: [("Authorization", "Bearer \(oldToken)")]).status == 401)
        let completed = stream.finish()
        #expect(completed)
        #expect(veil.stderr.contains("configuration reloaded"))

        // A bad config is refused with a log line; the current one stays.
        try veil.rewriteConfig("listen: \"127.0.0.1:0\"\nnot_a_key: 1\n")
        veil.signal(SIGHUP)
        #expect(waitUntil(5) { veil.stderr.contains("configuration reload refused") })
        #expect(try RawHTTPClient.request(port: veil.port, method: "GET", path: "/v1/models", headers: [("Authorization", "Bearer \(newToken)")]).status == 200)

        veil.signal(SIGTERM)
        #expect(veil.waitExit(10) == 0)
        for text in [veil.stdout, veil.stderr] {
            #expect(!text.contains(key))
            #expect(!text.contains(oldToken))
            #expect(!text.contains(newToken))
        }
    }

    @Test(.timeLimit(.minutes(1))) func sigtermLetsAnOpenStreamFinishRefusesNewConnectionsAndFlushesUsage() throws {
        let key = "sk-signalTEST-\(UUID().uuidString.prefix(8))-KEY"
        let sandbox = try SignalTests.sandbox(key)
        defer { sandbox.stop() }
        let store = "/tmp/veil-signal-\(UUID().uuidString).sqlite3"
        let token = "tok-term-\(UUID().uuidString)"
        let config = VeilProcess.config(upstream: sandbox.baseURL, key: key, store: store, tokenDigest: sha256Hex(token))
        let veil = try VeilProcess(configText: config, storePath: store)
        defer { veil.kill() }
        let port = veil.port

        var stream = try OpenStream.open(port: port, token: token)
        #expect(stream.status == 200)
        veil.signal(SIGTERM)
        // The listeners close: new connections are refused (bounded wait).
        let refused = waitUntil(5) {
            do { let fd = try RawHTTPClient.connect(port: port, timeoutMillis: 500); close(fd); return false } catch { return true }
        }
        #expect(refused)
        #expect(!stream.text.contains("[DONE]"))
        let completed = stream.finish()
        #expect(completed)
        #expect(veil.waitExit(10) == 0)
        #expect(veil.stderr.contains("shutting down"))
        #expect(veil.stdout.contains("\"status\":200"))

        // The store was closed on the way out: the stream's usage is there for `veil usage`.
        let (status, out) = try VeilProcess.run(["usage", "--store", store, "--since", "1h"])
        #expect(status == 0)
        #expect(out.contains("web"))
        #expect(out.contains("TOTAL_TOKENS"))
    }
}
