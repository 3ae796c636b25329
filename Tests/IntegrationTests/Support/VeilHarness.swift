import Foundation
import Gateway
import Reactor
import Sandbox
import Store
import Synchronization

/// Veil and the stand-in upstream, both in-process on ephemeral loopback ports.
/// Every test builds its own pair, so tests run in parallel without sharing state.
final class VeilHarness: @unchecked Sendable {
    static let teamTokens = ["web": "tok-web-0123456789", "mobile": "tok-mobile-0123456789", "limited": "tok-limited-0123456789"]
    let upstreamKey: String
    let sandbox: Sandbox
    let runtime: VeilRuntime
    let port: UInt16
    let sandboxPort: UInt16
    let storePath: String
    /// The TLS front before the upstream, when the suite runs over TLS (`VEIL_TEST_UPSTREAM_TLS=1`).
    private(set) var tlsFront: TLSFront?
    private let lines = LineSink()

    /// The access log lines written so far (the test's own sink).
    var accessLog: [String] { lines.all }

    /// `yaml` may add keys; `{UPSTREAM}`, `{KEY}`, `{STORE}` and `{TEAMS}` are filled in.
    init(upstreamKey: String = "sk-veilTEST-\(UUID().uuidString.prefix(8))-UPSTREAMKEY",
         storePath: String? = nil,
         sandboxTweak: (inout SandboxConfig) -> Void = { _ in },
         extraYAML: String = "",
         teamsYAML: String? = nil,
         upstreamBaseURL: String? = nil,
         stallTimeoutMillis: Int = 5000,
         upstreamExtraYAML: [String] = [],
         limitsYAML: [String] = [],
         workers: Int = 2,
         storeYAML: [String] = [],
         videosYAML: [String] = [],
         pollCacheMillis: Int = 1000,
         backend: (any StoreBackend)? = nil,
         backendThreads: Int = 1) throws {
        self.upstreamKey = upstreamKey
        var sc = SandboxConfig(apiKey: upstreamKey)
        sc.videoPollsToComplete = 2
        sc.sseChunkDelayMillis = 20
        sc.videoFileBytes = 300_000
        sandboxTweak(&sc)
        sandbox = Sandbox(config: sc)
        sandboxPort = try sandbox.start()
        let store = storePath ?? "/tmp/veil-test-\(UUID().uuidString).sqlite3"
        self.storePath = store
        let teams = teamsYAML ?? """
        teams:
          - name: web
            tokens_sha256: ["\(sha256Hex(VeilHarness.teamTokens["web"]!))"]
          - name: mobile
            tokens_sha256: ["\(sha256Hex(VeilHarness.teamTokens["mobile"]!))"]
          - name: limited
            tokens_sha256: ["\(sha256Hex(VeilHarness.teamTokens["limited"]!))"]
            models: ["gpt-4o-mini"]
        """
        // VEIL_TEST_UPSTREAM_TLS=1: the upstream (the stand-in, or the test's own) behind a TLS front.
        var upstreamURL = upstreamBaseURL ?? sandbox.baseURL
        var tlsYAML = ""
        if TLSFront.enabled, let target = upstreamURL.split(separator: ":").last.flatMap({ UInt16($0) }),
           upstreamURL.hasPrefix("http://127.0.0.1:") {
            let front = try TLSFront(targetPort: target)
            tlsFront = front
            upstreamURL = front.baseURL
            tlsYAML = "  ca_file: \"\(front.caFile)\""
        }
        let yaml = """
        listen: "127.0.0.1:0"
        workers: \(workers)
        upstream:
          base_url: "\(upstreamURL)"
          api_key: "\(upstreamKey)"
        \(tlsYAML)
          connect_timeout_ms: 2000
          request_timeout_ms: 20000
          stall_timeout_ms: \(stallTimeoutMillis)
        \(upstreamExtraYAML.map { "  " + $0 }.joined(separator: "\n"))
        \(limitsYAML.isEmpty ? "" : "limits:\n" + limitsYAML.map { "  " + $0 }.joined(separator: "\n"))
        store:
          path: "\(store)"
        \(storeYAML.map { "  " + $0 }.joined(separator: "\n"))
        videos:
          poll_cache_ms: \(pollCacheMillis)
          image_fetch:
            allow_http: true
            allow_private: ["127.0.0.1"]
        \(videosYAML.map { "  " + $0 }.joined(separator: "\n"))
        \(extraYAML)
        \(teams)
        """
        let config = try ConfigLoader.load(yaml: yaml, environment: [:])
        let sink = lines
        let log = GatewayLog(upstreamKey: upstreamKey, accessLog: true, sink: { line in sink.append(line) })
        runtime = try VeilRuntime(config: config, log: log, backend: backend, backendThreads: backendThreads)
        port = try runtime.start()
    }

    /// Upstream transfers running now, read on each loop's own thread (the clients are loop-confined).
    var activeTransfers: Int {
        let total = Counter()
        let group = DispatchGroup()
        for ctx in runtime.gateway.contexts {
            group.enter()
            ctx.loop.execute { total.add(ctx.upstream.activeTransfers); group.leave() }
        }
        _ = group.wait(timeout: .now() + 2)
        return total.current
    }

    func stop() {
        runtime.stop()
        tlsFront?.stop()
        sandbox.stop()
    }

    func auth(_ team: String = "web") -> [(String, String)] { [("Authorization", "Bearer \(VeilHarness.teamTokens[team]!)")] }

    func get(_ path: String, team: String = "web", headers: [(String, String)] = []) throws -> RawResponse {
        try RawHTTPClient.request(port: port, method: "GET", path: path, headers: auth(team) + headers)
    }

    func post(_ path: String, team: String = "web", json: String, headers: [(String, String)] = []) throws -> RawResponse {
        try RawHTTPClient.request(port: port, method: "POST", path: path,
                                  headers: auth(team) + [("Content-Type", "application/json")] + headers, body: Array(json.utf8))
    }

    func delete(_ path: String, team: String = "web") throws -> RawResponse {
        try RawHTTPClient.request(port: port, method: "DELETE", path: path, headers: auth(team))
    }
}

func jsonObject(_ r: RawResponse) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(r.body))) as? [String: Any] ?? [:]
}

/// Every byte Veil answered: status line, headers and body (for key-leak scans).
func allBytes(_ r: RawResponse) -> String {
    var s = "\(r.status) \(r.reason)\n"
    for (k, v) in r.headers { s += "\(k): \(v)\n" }
    return s + String(decoding: r.body, as: UTF8.self)
}

final class LineSink: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ s: String) { lines.withLock { $0.append(s) } }
    var all: [String] { lines.withLock { $0 } }
}
