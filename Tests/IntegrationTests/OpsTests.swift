import Foundation
import Gateway
import Glibc
import Store
import Testing

/// Operations: CORS, /metrics, /readyz, the usage log and the access log.
@Suite struct OpsTests {
    static let cors = """
    cors:
      allowed_origins: ["https://app.example.com"]
      max_age_seconds: 900
    """

    @Test func corsPreflightFromAListedOriginNeedsNoToken() throws {
        let h = try VeilHarness(extraYAML: OpsTests.cors)
        defer { h.stop() }
        let r = try RawHTTPClient.request(port: h.port, method: "OPTIONS", path: "/v1/chat/completions", headers: [
            ("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization, content-type, x-stainless-os, x-stainless-lang, x-stainless-package-version"),
        ])
        #expect(r.status == 204)
        #expect(r.header("access-control-allow-origin") == "https://app.example.com")
        let allow = r.header("access-control-allow-headers") ?? ""
        for name in ["authorization", "content-type", "x-stainless-os", "x-stainless-lang", "x-stainless-package-version"] { #expect(allow.contains(name)) }
        #expect(r.header("access-control-allow-methods")?.contains("POST") == true)
        #expect(r.header("access-control-max-age") == "900")
        #expect(r.header("vary")?.contains("Origin") == true)
        #expect(h.sandbox.requests().isEmpty)
        // The real request from that origin: the page may read the rate-limit headers and the request id.
        let real = try h.get("/v1/models", headers: [("Origin", "https://app.example.com")])
        #expect(real.status == 200)
        #expect(real.header("access-control-allow-origin") == "https://app.example.com")
        let exposed = real.header("access-control-expose-headers") ?? ""
        for name in ["x-request-id", "x-ratelimit-remaining-requests", "openai-poll-after-ms"] { #expect(exposed.contains(name)) }
        // Refusals carry CORS too, so a page can read the error.
        let unauthorized = try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/models", headers: [("Origin", "https://app.example.com")])
        #expect(unauthorized.status == 401)
        #expect(unauthorized.header("access-control-allow-origin") == "https://app.example.com")
    }

    @Test func corsGivesNothingToOriginsNotListed() throws {
        let h = try VeilHarness(extraYAML: OpsTests.cors)
        defer { h.stop() }
        let pre = try RawHTTPClient.request(port: h.port, method: "OPTIONS", path: "/v1/chat/completions", headers: [
            ("Origin", "https://evil.example.com"), ("Access-Control-Request-Method", "POST"), ("Access-Control-Request-Headers", "authorization"),
        ])
        #expect(pre.status == 403)
        #expect(pre.header("access-control-allow-origin") == nil)
        #expect(pre.header("access-control-allow-headers") == nil)
        let real = try h.get("/v1/models", headers: [("Origin", "https://evil.example.com")])
        #expect(real.status == 200)
        #expect(real.header("access-control-allow-origin") == nil)
        #expect(real.header("access-control-expose-headers") == nil)
        // Without any cors config, nothing at all.
        let plain = try VeilHarness()
        defer { plain.stop() }
        let r = try plain.get("/v1/models", headers: [("Origin", "https://app.example.com")])
        #expect(r.header("access-control-allow-origin") == nil)
    }

    static func value(_ metrics: String, _ series: String) -> Double {
        for line in metrics.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1)) ?? -1
        }
        return 0
    }

    @Test func metricsCountRequestsAsTheyFlow() throws {
        let h = try VeilHarness(teamsYAML: PolicyTests.teams("""
              - name: rpm
                tokens_sha256: ["\(sha256Hex("tok-rpm-0123456789"))"]
                requests_per_minute: 1
            """))
        defer { h.stop() }
        let before = try RawHTTPClient.request(port: h.port, method: "GET", path: "/metrics")
        #expect(before.status == 200)
        #expect(before.header("content-type")?.hasPrefix("text/plain") == true)
        let series = #"veil_requests_total{route="/v1/models",method="GET",status="200",team="web"}"#
        #expect(OpsTests.value(before.text, series) == 0)
        #expect(try h.get("/v1/models").status == 200)
        #expect(try h.get("/v1/models").status == 200)
        _ = try h.get("/v1/videos/video_abcdef123")  // a templated route, never the raw path
        let stream = try h.post("/v1/chat/completions", json: #"{"model":"gpt-3.5-turbo","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
        #expect(stream.status == 200)
        let rpm = [("Authorization", "Bearer tok-rpm-0123456789")]
        _ = try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/models", headers: rpm)
        #expect(try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/models", headers: rpm).status == 429)
        let after = try RawHTTPClient.request(port: h.port, method: "GET", path: "/metrics").text
        #expect(OpsTests.value(after, series) == 2)
        #expect(after.contains(#"route="/v1/videos/{id}""#))
        #expect(!after.contains("video_abcdef123"))
        #expect(OpsTests.value(after, #"veil_rate_limit_refusals_total{team="rpm",reason="rate_limit_exceeded"}"#) == 1)
        #expect(OpsTests.value(after, #"veil_upstream_latency_seconds_count{route="/v1/models"}"#) >= 2)
        #expect(OpsTests.value(after, "veil_stream_first_byte_seconds_count") == 1)
        #expect(OpsTests.value(after, "veil_open_connections") >= 1)  // this scrape's own connection
        #expect(OpsTests.value(after, "veil_open_streams") == 0)
        #expect(OpsTests.value(after, "veil_bytes_received_total") > 0)
        #expect(OpsTests.value(after, "veil_bytes_sent_total") > 0)
        #expect(after.contains("# TYPE veil_requests_total counter"))
        #expect(!after.contains(h.upstreamKey))
    }

    @Test func metricsCanRequireTheirOwnToken() throws {
        let h = try VeilHarness(extraYAML: """
        metrics:
          token_sha256: "\(sha256Hex("scrape-me-0123"))"
        """)
        defer { h.stop() }
        #expect(try RawHTTPClient.request(port: h.port, method: "GET", path: "/metrics").status == 401)
        // A team token is not the metrics token.
        #expect(try h.get("/metrics").status == 401)
        let ok = try RawHTTPClient.request(port: h.port, method: "GET", path: "/metrics", headers: [("Authorization", "Bearer scrape-me-0123")])
        #expect(ok.status == 200)
        #expect(ok.text.contains("veil_open_connections"))
    }

    @Test func readyzChecksStoreAndUpstreamAndShowsNothingSecret() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        #expect(try RawHTTPClient.request(port: h.port, method: "GET", path: "/healthz").status == 200)
        let r = try RawHTTPClient.request(port: h.port, method: "GET", path: "/readyz")
        #expect(r.status == 200)
        let o = jsonObject(r)
        #expect(o["status"] as? String == "ready")
        #expect(o["store"] as? String == "ok")
        #expect(o["upstream"] as? String == "ok")
        #expect(!allBytes(r).contains(h.upstreamKey))
        #expect(!allBytes(r).contains("127.0.0.1:\(h.sandboxPort)"))
        // Cached: a second check within 5 s does not ask the upstream again.
        let probes = h.sandbox.count("GET", "/v1/models")
        _ = try RawHTTPClient.request(port: h.port, method: "GET", path: "/readyz")
        _ = try RawHTTPClient.request(port: h.port, method: "GET", path: "/readyz")
        #expect(h.sandbox.count("GET", "/v1/models") <= probes + 1)  // at most one more (the other loop)
    }

    @Test func readyzIsNotReadyWhenTheUpstreamIsDown() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        h.sandbox.stop()
        let r = try RawHTTPClient.request(port: h.port, method: "GET", path: "/readyz", timeoutMillis: 6_000)
        #expect(r.status == 503)
        #expect(jsonObject(r)["status"] as? String == "not_ready")
        #expect(jsonObject(r)["upstream"] as? String == "unreachable")
        #expect(!allBytes(r).contains(h.upstreamKey))
        #expect(try RawHTTPClient.request(port: h.port, method: "GET", path: "/healthz").status == 200)
    }

    @Test func everyTeamRequestIsRecordedInTheUsageLogWithTokens() throws {
        let h = try VeilHarness()
        _ = try h.post("/v1/chat/completions", json: #"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}]}"#)
        _ = try h.post("/v1/chat/completions", json: #"{"model":"gpt-3.5-turbo","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#)
        _ = try h.post("/v1/videos", json: PolicyTests.video)
        _ = try h.get("/v1/videos/video_doesnotexist")  // 404: an error
        _ = try h.get("/v1/models", team: "mobile")
        _ = try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/models")  // no token: no team, not recorded
        h.stop()  // closes the store: buffered usage is written
        let store = try SQLiteStore(path: h.storePath, usageFlushIntervalMillis: 0)
        defer { store.close() }
        let rows = try store.usageSummary(team: nil, since: Int(time(nil)) - 60)
        let web = try #require(rows.first { $0.team == "web" })
        #expect(web.requests == 4)
        #expect(web.errors == 1)
        #expect(web.videos == 1)
        #expect(web.totalTokens > 0)
        #expect(web.promptTokens > 0 && web.completionTokens > 0)
        #expect(rows.first { $0.team == "mobile" }?.requests == 1)
        #expect(rows.count == 2)
        // What operators read.
        let table = try UsageReport.run(storePath: h.storePath, team: "web", sinceSeconds: 3600)
        #expect(table.contains("web"))
        #expect(!table.contains("mobile"))
    }

    @Test func accessLogHasOneLinePerRequestAndNeitherKeyNorTokenNorPrompt() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let secretPrompt = "PROMPT-TEXT-\(UUID().uuidString)"
        let a = try h.post("/v1/chat/completions", json: #"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"\#(secretPrompt)"}]}"#,
                           headers: [("X-Request-Id", "caller-req-42")])
        #expect(a.header("x-request-id") == "caller-req-42")
        _ = try h.post("/v1/chat/completions", json: #"{"model":"sandbox-echo-key","messages":[{"role":"user","content":"x"}]}"#)
        _ = try h.post("/v1/videos", json: #"{"model":"sora-2","prompt":"\#(secretPrompt)"}"#)
        _ = try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/models", headers: [("Authorization", "Bearer wrong-token-xyz")])
        let made = try h.get("/v1/models")
        let generated = try #require(made.header("x-request-id"))
        #expect(generated.hasPrefix("req_"))
        #expect(try waitUntil(2) { h.accessLog.count >= 5 })
        let log = h.accessLog
        #expect(log.count == 5)
        for line in log {
            #expect(!line.contains(h.upstreamKey))
            for t in VeilHarness.teamTokens.values { #expect(!line.contains(t)) }
            #expect(!line.contains("wrong-token-xyz"))
            #expect(!line.contains(secretPrompt))
            #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) != nil)
        }
        #expect(log.contains { $0.contains("\"request_id\":\"caller-req-42\"") && $0.contains("\"team\":\"web\"") })
        #expect(log.contains { $0.contains("\"request_id\":\"\(generated)\"") })
    }

    @Test func promptsAreLoggedOnlyWhenConfigured() throws {
        let h = try VeilHarness(extraYAML: """
        log:
          prompts: true
        """)
        defer { h.stop() }
        _ = try h.post("/v1/chat/completions", json: #"{"model":"gpt-3.5-turbo","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"tell me about owls"}]}"#)
        _ = try h.post("/v1/videos", json: #"{"model":"sora-2","prompt":"an owl at night"}"#)
        #expect(waitUntil(2) { h.accessLog.count >= 2 })
        #expect(h.accessLog.contains { $0.contains("\"prompt\":\"tell me about owls\"") })
        #expect(h.accessLog.contains { $0.contains("\"prompt\":\"an owl at night\"") })
        #expect(!h.accessLog.contains { $0.contains("be brief") })
        for line in h.accessLog { #expect(!line.contains(h.upstreamKey)) }
    }
}
