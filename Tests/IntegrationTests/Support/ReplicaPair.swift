import Foundation
import Gateway
import Glibc
import PostgresTestSupport
import Sandbox

/// Two real `veil` processes (the binary, as deployed) on one PostgreSQL database, in front of
/// one stand-in upstream: a deployment of two replicas behind a balancer, the balancer being the
/// test choosing which replica each request goes to.
final class ReplicaPair: @unchecked Sendable {
    static let tokens = ["web": "tok-web-0123456789", "mobile": "tok-mobile-0123456789", "lim": "tok-lim-0123456789",
                         "rpm": "tok-rpm-0123456789", "probe": "tok-probe-0123456789", "streams": "tok-streams-0123456789"]
    let cluster: PostgresCluster
    let databaseURL: String
    let sandbox: Sandbox
    let upstreamKey = "sk-veilREPLICA-\(UUID().uuidString.prefix(8))-UPSTREAMKEY"
    private(set) var replicas: [VeilProcess] = []
    let configText: String

    /// `cluster`: the shared one, unless a test stops its server (then its own).
    init(cluster: PostgresCluster? = nil, sandboxTweak: (inout SandboxConfig) -> Void = { _ in }, storeYAML: [String] = [],
         pollCacheMillis: Int = 1000, count: Int = 2, webhookURL: String? = nil, videosYAML: [String] = []) throws {
        self.cluster = try cluster ?? PostgresCluster.shared()
        databaseURL = try self.cluster.createDatabase()
        var sc = SandboxConfig(apiKey: upstreamKey)
        sc.videoPollsToComplete = 2
        sc.sseChunkDelayMillis = 20
        sc.videoFileBytes = 100_000
        sandboxTweak(&sc)
        sandbox = Sandbox(config: sc)
        _ = try sandbox.start()
        func digest(_ team: String) -> String { sha256Hex(ReplicaPair.tokens[team]!) }
        configText = """
        listen: "127.0.0.1:0"
        workers: 2
        shutdown_grace_ms: 2000
        upstream:
          base_url: "\(sandbox.baseURL)"
          api_key: "\(upstreamKey)"
          connect_timeout_ms: 2000
          stall_timeout_ms: 10000
        store:
          url: "\(databaseURL)"
          heartbeat_ms: 200
        \((storeYAML).map { "  " + $0 }.joined(separator: "\n"))
        videos:
          poll_cache_ms: \(pollCacheMillis)
        \(videosYAML.map { "  " + $0 }.joined(separator: "\n"))
        \(webhookURL == nil ? "" : pushWebhooksYAML())
        log:
          access: false
        teams:
          - name: web
            tokens_sha256: ["\(digest("web"))"]
        \(webhookURL.map { "    webhook:\n      url: \"\($0)\"\n      secret: \"\(pushSecret)\"" } ?? "")
          - name: mobile
            tokens_sha256: ["\(digest("mobile"))"]
          - name: lim
            tokens_sha256: ["\(digest("lim"))"]
            videos_per_day: 3
            max_videos_in_flight: 2
          - name: rpm
            tokens_sha256: ["\(digest("rpm"))"]
            requests_per_minute: 10
          - name: probe
            tokens_sha256: ["\(digest("probe"))"]
            requests_per_minute: 1000
          - name: streams
            tokens_sha256: ["\(digest("streams"))"]
            max_concurrent_streams: 2
        """
        for _ in 0..<count { try addReplica() }
    }

    @discardableResult
    func addReplica() throws -> VeilProcess {
        let p = try VeilProcess(configText: configText, storePath: databaseURL)
        replicas.append(p)
        return p
    }

    var a: VeilProcess { replicas[0] }
    var b: VeilProcess { replicas[1] }

    func stop() {
        for r in replicas {
            r.signal(SIGTERM)
            if r.waitExit(10) == nil { r.kill() }
        }
        sandbox.stop()
    }

    func auth(_ team: String) -> [(String, String)] { [("Authorization", "Bearer \(ReplicaPair.tokens[team]!)")] }

    func get(_ r: VeilProcess, _ path: String, team: String = "web", timeoutMillis: Int = 10_000) throws -> RawResponse {
        try RawHTTPClient.request(port: r.port, method: "GET", path: path, headers: auth(team), timeoutMillis: timeoutMillis)
    }

    func post(_ r: VeilProcess, _ path: String, team: String = "web", json: String, timeoutMillis: Int = 10_000) throws -> RawResponse {
        try RawHTTPClient.request(port: r.port, method: "POST", path: path, headers: auth(team) + [("Content-Type", "application/json")],
                                  body: Array(json.utf8), timeoutMillis: timeoutMillis)
    }

    func delete(_ r: VeilProcess, _ path: String, team: String = "web") throws -> RawResponse {
        try RawHTTPClient.request(port: r.port, method: "DELETE", path: path, headers: auth(team))
    }

    /// Upstream status polls of one video (not its file downloads).
    func upstreamPolls(_ veilID: String) -> Int {
        let path = "/v1/videos/" + veilID.dropFirst("video_".count)
        return sandbox.requests(matching: path).filter { $0.method == "GET" && $0.path == path }.count
    }

    /// Both replicas see each other (each enforces half of a limit): read from the `probe`
    /// team's rate-limit header (1000 per minute: 500 each).
    func waitForBothLive() -> Bool {
        waitUntil(10) {
            replicas.allSatisfy { r in
                (try? get(r, "/v1/models", team: "probe"))?.header("x-ratelimit-limit-requests") == "\(1000 / replicas.count)"
            }
        }
    }
}

func apiErrorCode(_ r: RawResponse) -> String? { (jsonObject(r)["error"] as? [String: Any])?["code"] as? String }
