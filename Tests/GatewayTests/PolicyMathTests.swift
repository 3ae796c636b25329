import Testing
@testable import Gateway
import Store

@Suite struct TokenBucketTests {
    @Test func fullBucketAllowsCapacityThenRefuses() {
        let b = TokenBucket(capacity: 3, refillPerMillis: 3.0 / 60_000)
        let t: UInt64 = 1_000_000
        let o1 = b.take(now: t), o2 = b.take(now: t), o3 = b.take(now: t), o4 = b.take(now: t)
        #expect(o1.allowed && o2.allowed && o3.allowed)
        #expect([o1.remaining, o2.remaining, o3.remaining] == [2, 1, 0])
        #expect(!o4.allowed)
        #expect(o4.remaining == 0)
        // 3 per minute: one token every 20 s; the bucket is full again after 60 s.
        #expect(o4.millisUntilOne == 20_000)
        #expect(o4.millisUntilFull == 60_000)
    }

    @Test func refillsAtTheConfiguredRate() {
        let b = TokenBucket(capacity: 60, refillPerMillis: 60.0 / 60_000)  // one a second
        let t: UInt64 = 5_000_000
        for _ in 0..<60 { #expect(b.take(now: t).allowed) }
        #expect(!b.take(now: t).allowed)
        #expect(!b.take(now: t + 999).allowed)
        let later = b.take(now: t + 1_000)
        #expect(later.allowed)
        #expect(later.remaining == 0)
        // Never over capacity, however long the pause.
        #expect(b.take(now: t + 3_600_000).remaining == 59)
    }

    @Test func anOlderClockReadingDoesNotRewindTheRefillTime() {
        let b = TokenBucket(capacity: 2, refillPerMillis: 2.0 / 60_000)
        let t: UInt64 = 9_000_000
        #expect(b.take(now: t).allowed)
        #expect(b.take(now: t).allowed)
        // A loop whose `now` is a little behind: no refill, and the next reading is not double-counted.
        #expect(!b.take(now: t - 500).allowed)
        let o = b.take(now: t + 29_999)
        #expect(!o.allowed)
        #expect(b.take(now: t + 30_000).allowed)
    }

    @Test func concurrentTakersNeverOverspend() async {
        let b = TokenBucket(capacity: 1000, refillPerMillis: 1000.0 / 60_000)
        let t: UInt64 = 7_000_000
        let allowed = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<4 { group.addTask { var n = 0; for _ in 0..<500 where b.take(now: t).allowed { n += 1 }; return n } }
            return await group.reduce(0, +)
        }
        #expect(allowed == 1000)
    }
}

@Suite struct DurationFormatTests {
    @Test func openAIStyleDurations() {
        #expect(Policy.duration(0) == "0ms")
        #expect(Policy.duration(250) == "250ms")
        #expect(Policy.duration(1_000) == "1s")
        #expect(Policy.duration(59_999) == "59s")
        #expect(Policy.duration(60_000) == "1m0s")
        #expect(Policy.duration(360_500) == "6m0s")
    }

    @Test func usageSinceDurations() {
        #expect(UsageReport.parseDuration("24h") == 86_400)
        #expect(UsageReport.parseDuration("7d") == 604_800)
        #expect(UsageReport.parseDuration("30m") == 1_800)
        #expect(UsageReport.parseDuration("90s") == 90)
        #expect(UsageReport.parseDuration("2w") == 1_209_600)
        #expect(UsageReport.parseDuration("24") == nil)
        #expect(UsageReport.parseDuration("h") == nil)
        #expect(UsageReport.parseDuration("-1h") == nil)
        #expect(UsageReport.parseDuration("99999999999999999d") == nil)
    }

    @Test func usageTableHasOneRowPerTeamAndATotal() {
        let out = UsageReport.render([UsageSummary(team: "mobile", requests: 3, errors: 1, promptTokens: 10, completionTokens: 5, totalTokens: 15, videos: 0),
                                      UsageSummary(team: "web", requests: 12, errors: 0, promptTokens: 100, completionTokens: 50, totalTokens: 150, videos: 2)],
                                     sinceLabel: "x")
        let lines = out.split(separator: "\n").map(String.init)
        #expect(lines.count == 5)
        #expect(lines[1].hasPrefix("TEAM"))
        #expect(lines[2].hasPrefix("mobile") && lines[2].hasSuffix("0"))
        #expect(lines[3].hasPrefix("web") && lines[3].hasSuffix("2"))
        #expect(lines[4].hasPrefix("(all)") && lines[4].contains("15") && lines[4].contains("165"))
        #expect(UsageReport.render([], sinceLabel: "x").contains("(no requests)"))
    }
}

@Suite struct CORSDecisionTests {
    func policy(_ origins: [String]) -> CORSPolicy {
        var s = GatewayConfig.CORSSettings()
        s.allowedOrigins = origins
        s.maxAgeSeconds = 600
        return CORSPolicy(s)
    }

    @Test func onlyListedOriginsAreAllowed() {
        let p = policy(["https://app.example.com", "http://localhost:5173/"])
        #expect(p.allowOrigin("https://app.example.com") == "https://app.example.com")
        #expect(p.allowOrigin("http://localhost:5173") == "http://localhost:5173")
        #expect(p.allowOrigin("https://evil.example.com") == nil)
        #expect(p.allowOrigin("https://app.example.com.evil.com") == nil)
        #expect(p.allowOrigin("null") == nil)
        #expect(p.allowOrigin(nil) == nil)
    }

    @Test func nothingForOriginsNotListed() {
        let p = policy(["https://app.example.com"])
        let h = p.responseHeaders(origin: "https://evil.example.com")
        #expect(h["access-control-allow-origin"] == nil)
        #expect(h["access-control-expose-headers"] == nil)
        #expect(h["vary"] == "Origin")
        #expect(p.preflight(origin: "https://evil.example.com", requestMethod: "POST", requestHeaders: "authorization") == nil)
        // CORS off: not even Vary.
        #expect(policy([]).responseHeaders(origin: "https://app.example.com").map { $0.name }.isEmpty)
        #expect(policy([]).preflight(origin: "https://app.example.com", requestMethod: "GET", requestHeaders: nil) == nil)
    }

    @Test func wildcardOnlyWhenConfigured() {
        let p = policy(["*"])
        #expect(p.allowOrigin("https://anything.example") == "*")
        #expect(p.responseHeaders(origin: "https://anything.example")["access-control-allow-origin"] == "*")
    }

    @Test func preflightAllowsTheSDKHeaders() throws {
        let p = policy(["https://app.example.com"])
        let h = try #require(p.preflight(origin: "https://app.example.com", requestMethod: "POST",
                                         requestHeaders: "Authorization, Content-Type, X-Stainless-OS, x-stainless-retry-count, openai-beta, x-evil-thing"))
        let allow = h["access-control-allow-headers"] ?? ""
        for name in ["authorization", "content-type", "x-stainless-os", "x-stainless-retry-count", "openai-beta"] { #expect(allow.contains(name)) }
        #expect(!allow.contains("x-evil-thing"))
        #expect(h["access-control-max-age"] == "600")
        #expect(h["access-control-allow-methods"]?.contains("POST") == true)
        #expect(h["vary"] == "Origin")
        #expect(p.preflight(origin: "https://app.example.com", requestMethod: "TRACE", requestHeaders: nil) == nil)
    }

    @Test func exposedHeadersNameTheRateLimitHeaders() {
        let e = policy(["https://a.example"]).responseHeaders(origin: "https://a.example")["access-control-expose-headers"] ?? ""
        for name in ["x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests", "x-request-id", "openai-poll-after-ms", "retry-after"] {
            #expect(e.contains(name))
        }
    }
}

/// The one route table: templates, parameters, 405s with their `Allow`, bounded labels.
@Suite struct RouteTableTests {
    let table = Gateway.routeTable

    func label(_ method: String, _ path: String) -> String {
        if case .found(let r, _) = table.match(method: method, path: Substring(path)) { return r.endpoint }
        if case .methodNotAllowed(let allow) = table.match(method: method, path: Substring(path)) { return "405 " + allow }
        return "404"
    }

    @Test func routesResolveToTheirTemplates() {
        #expect(label("POST", "/v1/chat/completions") == "POST /v1/chat/completions")
        #expect(label("GET", "/v1/videos/video_123") == "GET /v1/videos/{id}")
        #expect(label("DELETE", "/v1/videos/video_123") == "DELETE /v1/videos/{id}")
        #expect(label("GET", "/v1/videos/video_123/content") == "GET /v1/videos/{id}/content")
        #expect(label("HEAD", "/v1/videos/video_123/content") == "GET /v1/videos/{id}/content")
        #expect(label("GET", "/v1/characters/char_9") == "GET /v1/characters/{id}")
        #expect(label("GET", "/healthz") == "GET /healthz")
        // Exact templates win over parameterised ones.
        #expect(label("POST", "/v1/videos/characters") == "POST /v1/videos/characters")
        #expect(label("GET", "/v1/videos/characters/char_1") == "GET /v1/videos/characters/{id}")
    }

    @Test func unknownPathsAndMethods() {
        #expect(label("GET", "/v1/videos/video_123/whatever") == "404")
        #expect(label("GET", "/v1/random/thing") == "404")
        #expect(label("GET", "/etc/passwd") == "404")
        #expect(label("GET", "/v1/videos//content") == "404")          // an empty parameter
        #expect(label("PUT", "/v1/chat/completions") == "405 POST")
        #expect(label("POST", "/v1/videos/video_1") == "405 GET, HEAD, DELETE")
        #expect(label("DELETE", "/v1/videos") == "405 POST, GET, HEAD")
        #expect(label("GET", "/v1/videos/video_1/remix") == "405 POST")
    }

    @Test func parametersAreTheTemplatesBraces() {
        guard case .found(_, let params) = table.match(method: "GET", path: "/v1/videos/video_42/content") else {
            Issue.record("no match"); return
        }
        #expect(params == ["video_42"])
    }

    @Test func labelsAreBounded() {
        #expect(Route.methodLabel("BREW") == "OTHER")
        #expect(Route.methodLabel("PATCH") == "PATCH")
        // Every metric label is a template from the table (never a caller's path).
        for r in table.routes { #expect(r.metricLabel == r.template) }
        #expect(table.servedSummary().contains("POST /v1/chat/completions"))
        #expect(!table.servedSummary().contains("/healthz"))
        #expect(!table.servedSummary(disabled: ["/v1/embeddings"]).contains("embeddings"))
    }
}

/// Request ids Veil makes: `req_` and 11 base-62 digits (15 bytes: kept inline by String, no
/// allocation), unique; a caller's plain id is kept.
@Test func generatedRequestIDs() {
    var seen = Set<String>()
    for _ in 0..<1_000 {
        let id = Exchange.requestID(from: nil)
        #expect(id.utf8.count == 15)
        #expect(id.hasPrefix("req_"))
        #expect(id.utf8.dropFirst(4).allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) })
        seen.insert(id)
    }
    #expect(seen.count == 1_000)
    #expect(Exchange.requestID(from: "abc-123_x.y:z") == "abc-123_x.y:z")
    #expect(Exchange.requestID(from: "bad id").hasPrefix("req_"))
}
