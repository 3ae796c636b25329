import Foundation
import Gateway
import Glibc
import Testing

/// Team policy: models, requests per minute, concurrent streams, videos in flight, daily quota,
/// token expiry and rotation. Every limit refuses at the right count, with the right headers.
@Suite struct PolicyTests {
    static func teams(_ extra: String) -> String {
        """
        teams:
          - name: web
            tokens_sha256: ["\(sha256Hex(VeilHarness.teamTokens["web"]!))"]
          - name: mobile
            tokens_sha256: ["\(sha256Hex(VeilHarness.teamTokens["mobile"]!))"]
          - name: limited
            tokens_sha256: ["\(sha256Hex(VeilHarness.teamTokens["limited"]!))"]
            models: ["gpt-4o-mini"]
        \(extra)
        """
    }

    static let video = #"{"model":"sora-2","prompt":"a lighthouse at dawn","seconds":"4","size":"720x1280"}"#

    @Test func requestsPerMinuteRefusesTheRequestPastTheLimitWithRateLimitHeaders() throws {
        let h = try VeilHarness(teamsYAML: PolicyTests.teams("""
              - name: rpm
                tokens_sha256: ["\(sha256Hex("tok-rpm-0123456789"))"]
                requests_per_minute: 3
            """))
        defer { h.stop() }
        let auth = [("Authorization", "Bearer tok-rpm-0123456789")]
        var remaining: [String] = []
        for _ in 0..<3 {
            let r = try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/models", headers: auth)
            #expect(r.status == 200)
            #expect(r.header("x-ratelimit-limit-requests") == "3")
            #expect(r.header("x-ratelimit-reset-requests") != nil)
            remaining.append(r.header("x-ratelimit-remaining-requests") ?? "?")
        }
        #expect(remaining == ["2", "1", "0"])
        let refused = try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/models", headers: auth)
        #expect(refused.status == 429)
        #expect((jsonObject(refused)["error"] as? [String: Any])?["code"] as? String == "rate_limit_exceeded")
        #expect((jsonObject(refused)["error"] as? [String: Any])?["type"] as? String == "rate_limit_error")
        let retry = Int(refused.header("retry-after") ?? "") ?? 0
        #expect(retry >= 1 && retry <= 20)
        #expect(refused.header("x-ratelimit-limit-requests") == "3")
        #expect(refused.header("x-ratelimit-remaining-requests") == "0")
        #expect(refused.header("x-ratelimit-reset-requests")?.hasSuffix("s") == true)
        // Refused before anything went upstream; other teams are not affected.
        #expect(h.sandbox.count("GET", "/v1/models") == 3)
        #expect(try h.get("/v1/models").status == 200)
        #expect(try h.get("/v1/models").header("x-ratelimit-limit-requests") == nil)
    }

    @Test func concurrentStreamsAreCappedAndFreedWhenAStreamEnds() throws {
        let token = "tok-streams-0123456789"
        let h = try VeilHarness(sandboxTweak: { $0.sseChunkDelayMillis = 150 }, teamsYAML: PolicyTests.teams("""
              - name: streams
                tokens_sha256: ["\(sha256Hex(token))"]
                max_concurrent_streams: 1
            """))
        defer { h.stop() }
        var first = try OpenStream.open(port: h.port, token: token)
        #expect(first.status == 200)
        let second = try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/chat/completions",
                                               headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")],
                                               body: Array(OpenStream.body.utf8))
        #expect(second.status == 429)
        #expect((jsonObject(second)["error"] as? [String: Any])?["code"] as? String == "concurrent_streams_exceeded")
        #expect(second.header("retry-after") != nil)
        // A non-streamed chat is not a stream.
        let plain = try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/chat/completions",
                                              headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")],
                                              body: Array(#"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}]}"#.utf8))
        #expect(plain.status == 200)
        let firstDone = first.finish()
        #expect(firstDone)
        let third = try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/chat/completions",
                                              headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")],
                                              body: Array(OpenStream.body.utf8), timeoutMillis: 10_000)
        #expect(third.status == 200)
        #expect(third.text.contains("[DONE]"))
    }

    @Test func videosInFlightAreCappedUntilTheVideoFinishes() throws {
        let token = "tok-vids-0123456789"
        let h = try VeilHarness(teamsYAML: PolicyTests.teams("""
              - name: vids
                tokens_sha256: ["\(sha256Hex(token))"]
                max_videos_in_flight: 1
            """))
        defer { h.stop() }
        let auth = [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")]
        let a = try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/videos", headers: auth, body: Array(PolicyTests.video.utf8))
        #expect(a.status == 200)
        let id = try #require(jsonObject(a)["id"] as? String)
        let b = try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/videos", headers: auth, body: Array(PolicyTests.video.utf8))
        #expect(b.status == 429)
        #expect((jsonObject(b)["error"] as? [String: Any])?["code"] as? String == "videos_in_flight_exceeded")
        #expect(h.sandbox.count("POST", "/v1/videos") == 1)
        // Polled to completion: the slot is free again.
        let done = try waitUntil(10) {
            let r = try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/videos/\(id)", headers: auth)
            return jsonObject(r)["status"] as? String == "completed"
        }
        #expect(done)
        let c = try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/videos", headers: auth, body: Array(PolicyTests.video.utf8))
        #expect(c.status == 200)
    }

    @Test func dailyVideoQuotaIsCountedInTheStoreAndSurvivesARestart() throws {
        let token = "tok-quota-0123456789"
        let store = "/tmp/veil-quota-\(UUID().uuidString).sqlite3"
        let teams = PolicyTests.teams("""
              - name: quota
                tokens_sha256: ["\(sha256Hex(token))"]
                videos_per_day: 2
            """)
        let auth = [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")]
        do {
            let h = try VeilHarness(storePath: store, teamsYAML: teams)
            defer { h.stop() }
            for _ in 0..<2 {
                let r = try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/videos", headers: auth, body: Array(PolicyTests.video.utf8))
                #expect(r.status == 200)
            }
            let over = try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/videos", headers: auth, body: Array(PolicyTests.video.utf8))
            #expect(over.status == 429)
            #expect((jsonObject(over)["error"] as? [String: Any])?["code"] as? String == "quota_exceeded")
            #expect(over.header("retry-after") != nil)
            #expect(h.sandbox.count("POST", "/v1/videos") == 2)
            // Other teams have their own quota (none here).
            #expect(try h.post("/v1/videos", json: PolicyTests.video).status == 200)
        }
        // A new Veil on the same store: the quota is still used up.
        let h2 = try VeilHarness(storePath: store, teamsYAML: teams)
        defer { h2.stop() }
        let again = try RawHTTPClient.request(port: h2.port, method: "POST", path: "/v1/videos", headers: auth, body: Array(PolicyTests.video.utf8))
        #expect(again.status == 429)
        #expect((jsonObject(again)["error"] as? [String: Any])?["code"] as? String == "quota_exceeded")
        #expect(h2.sandbox.count("POST", "/v1/videos") == 0)
    }

    @Test func modelAllowListAppliesToChatAndVideos() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let chat = try h.post("/v1/chat/completions", team: "limited", json: #"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}]}"#)
        #expect(chat.status == 403)
        #expect((jsonObject(chat)["error"] as? [String: Any])?["code"] as? String == "model_not_allowed")
        #expect(chat.text.contains("gpt-3.5-turbo"))
        let video = try h.post("/v1/videos", team: "limited", json: PolicyTests.video)
        #expect(video.status == 403)
        #expect((jsonObject(video)["error"] as? [String: Any])?["code"] as? String == "model_not_allowed")
        #expect(video.text.contains("sora-2"))
        #expect(h.sandbox.count("POST", "/v1/chat/completions") == 0)
        #expect(h.sandbox.count("POST", "/v1/videos") == 0)
        #expect(try h.post("/v1/chat/completions", team: "limited", json: #"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#).status == 200)
    }

    @Test func expiredTokensAreRefusedWhileTheTeamsOtherTokenWorks() throws {
        let old = "tok-old-0123456789", new = "tok-new-0123456789"
        let h = try VeilHarness(teamsYAML: PolicyTests.teams("""
              - name: rotating
                tokens:
                  - sha256: "\(sha256Hex(old))"
                    expires_at: \(Int(time(nil)) - 10)
                  - sha256: "\(sha256Hex(new))"
                    expires_at: \(Int(time(nil)) + 3600)
            """))
        defer { h.stop() }
        let expired = try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/models", headers: [("Authorization", "Bearer \(old)")])
        #expect(expired.status == 401)
        #expect((jsonObject(expired)["error"] as? [String: Any])?["code"] as? String == "token_expired")
        let fresh = try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/models", headers: [("Authorization", "Bearer \(new)")])
        #expect(fresh.status == 200)
        #expect(waitUntil(2) { h.accessLog.contains { $0.contains("\"team\":\"rotating\"") && $0.contains("\"status\":200") } })
    }
}
