import Foundation
import Store
import Testing
import Translation
import Upstream
@testable import Gateway

// Issue 16's pure parts: Standard Webhooks signing (against the spec's published vector and
// RFC 4231), the secret's shape, the event body, the back-off, the endpoint URL check, the
// watcher's intervals, SSE framing, which state change makes an event, what an attempt's end
// means, and the configuration keys.

@Suite struct WebhookSigningTests {
    /// The Standard Webhooks reference vector: a receiver library accepts what Veil signs only if
    /// the key decoding, the signed string and the base64 all match the reference implementation.
    @Test func theStandardWebhooksTestVector() throws {
        let key = try #require(WebhookSecret.key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
        #expect(key.count == 24)
        let sig = WebhookSignature.sign(id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330,
                                        body: Array(#"{"test": 2432232314}"#.utf8), key: key)
        #expect(sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        // Every part is signed: the id, the timestamp, the body, the key. (A key with a zero byte
        // appended would sign alike: HMAC pads short keys with zeros.)
        let variants = [
            WebhookSignature.sign(id: "msg_p5jXN8AQM9LWM0D4loKWxJel", timestamp: 1_614_265_330, body: Array(#"{"test": 2432232314}"#.utf8), key: key),
            WebhookSignature.sign(id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_331, body: Array(#"{"test": 2432232314}"#.utf8), key: key),
            WebhookSignature.sign(id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330, body: Array(#"{"test": 2432232315}"#.utf8), key: key),
            WebhookSignature.sign(id: "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp: 1_614_265_330, body: Array(#"{"test": 2432232314}"#.utf8), key: key + [1]),
        ]
        for v in variants { #expect(v != sig) }
    }

    /// RFC 4231 test cases 1 and 2 (HMAC-SHA-256).
    @Test func hmacSHA256MatchesRFC4231() {
        func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }
        #expect(hex(WebhookSignature.hmacSHA256(key: [UInt8](repeating: 0x0b, count: 20), message: Array("Hi There".utf8)))
                == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        #expect(hex(WebhookSignature.hmacSHA256(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8)))
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    /// RFC 4648 §10 vectors, and a round trip through the decoder for every length mod 3.
    @Test func base64EncodesTheRFCVectors() {
        let table = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        for (plain, encoded) in table { #expect(Base64.encode(Array(plain.utf8)) == encoded, "\(plain)") }
        for n in 0..<70 {
            let bytes = (0..<n).map { UInt8(($0 * 37 + 11) & 0xff) }
            #expect(Base64.decode(Base64.encode(bytes)) == bytes)
            #expect(Base64.encode(bytes) == Data(bytes).base64EncodedString())
        }
    }

    @Test(arguments: [
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 24),
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", nil),          // no prefix
        ("whsec_", nil),                                    // no key
        ("whsec_c2hvcnQ=", nil),                            // 5 bytes: too short to be secret
        ("whsec_not base64 at all!!", nil),
        ("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", 32),
    ] as [(String, Int?)])
    func secretsAreWhsecBase64(_ secret: String, _ keyBytes: Int?) {
        #expect(WebhookSecret.key(secret)?.count == keyBytes)
    }

    @Test func theEventBodyIsOpenAIsShape() {
        let body = WebhookPayload.videoEvent(id: "evt_1", type: "video.completed", createdAt: 1_762_418_901, videoID: "video_4078")
        #expect(String(decoding: body, as: UTF8.self)
                == #"{"id":"evt_1","object":"event","created_at":1762418901,"type":"video.completed","data":{"id":"video_4078"}}"#)
        var rng = SystemRandomNumberGenerator()
        let a = WebhookPayload.newEventID(using: &rng), b = WebhookPayload.newEventID(using: &rng)
        #expect(a != b)
        #expect(a.hasPrefix("evt_") && a.utf8.count == 36 && a.dropFirst(4).allSatisfy { $0.isHexDigit })
        #expect(WebhookPayload.eventType(.completed) == "video.completed")
        #expect(WebhookPayload.eventType(.failed) == "video.failed")
        #expect(WebhookPayload.eventType(.inProgress) == nil && WebhookPayload.eventType(.queued) == nil)
    }
}

@Suite struct WebhookBackoffTests {
    @Test(arguments: [
        // attempts, jitter, expected: initial 5 s doubling, capped at 1 h, jitter in the upper half
        (1, 1.0, 5_000), (1, 0.0, 2_500), (2, 1.0, 10_000), (3, 1.0, 20_000), (3, 0.5, 15_000),
        (10, 1.0, 2_560_000), (11, 1.0, 3_600_000), (60, 1.0, 3_600_000), (60, 0.0, 1_800_000), (0, 1.0, 5_000),
    ] as [(Int, Double, Int)])
    func exponentialWithJitter(_ attempts: Int, _ jitter: Double, _ expected: Int) {
        #expect(WebhookBackoff.delayMillis(afterAttempts: attempts, initial: 5_000, max: 3_600_000, jitter: jitter) == expected)
    }

    @Test func jitterStaysWithinTheUpperHalf() {
        for attempts in 1...30 {
            let d = WebhookBackoff.delayMillis(afterAttempts: attempts, initial: 100, max: 60_000, jitter: Double.random(in: 0...1))
            let full = min(100 << min(attempts - 1, 40), 60_000)
            #expect(d >= full / 2 && d <= full)
        }
    }

    @Test func retriesStopAfterTheRetryPeriod() {
        // Created at 1000, retried for 259200 s (72 h).
        #expect(WebhookBackoff.decide(delayMillis: 5_000, now: 1_000, retryFrom: 1_000, retryForSeconds: 259_200) == .retry(afterMillis: 5_000))
        #expect(WebhookBackoff.decide(delayMillis: 3_600_000, now: 1_000 + 259_200 - 3_600, retryFrom: 1_000, retryForSeconds: 259_200)
                == .retry(afterMillis: 3_600_000))
        #expect(WebhookBackoff.decide(delayMillis: 3_600_000, now: 1_000 + 259_200 - 3_599, retryFrom: 1_000, retryForSeconds: 259_200) == .giveUp)
        #expect(WebhookBackoff.decide(delayMillis: 1, now: 1_000, retryFrom: 1_000, retryForSeconds: 0) == .giveUp)
    }

    @Test(arguments: [
        ("https://hooks.example.com/veil", false, nil),
        ("https://hooks.example.com:8443/a?b=c", false, nil),
        ("http://hooks.example.com/veil", false, "https"),
        ("http://127.0.0.1:9000/hook", true, nil),
        ("ftp://hooks.example.com/", true, "https"),
        ("https://user:pw@hooks.example.com/", false, "credentials"),
        ("https:///path", false, "host"),
        ("https://hooks.example.com/a b", false, "printable"),
        ("https://hooks.example.com/#frag", false, "fragment"),
    ] as [(String, Bool, String?)])
    func endpointURLs(_ url: String, _ allowHTTP: Bool, _ problem: String?) {
        let found = WebhookEndpoint.urlProblem(url, allowHTTP: allowHTTP)
        if let problem { #expect(found?.contains(problem) == true, "\(url): \(found ?? "nil")") } else { #expect(found == nil, "\(url)") }
    }
}

@Suite struct WebhookAttemptTests {
    let delivery = WebhookDelivery(id: "evt_abc", team: "web", type: "video.completed", videoID: "video_1",
                                   payload: #"{"id":"evt_abc"}"#, createdAt: 10_000, attempts: 2)

    @Test func theRequestIsSignedAndHeldToTheAddressPolicy() throws {
        var cfg = GatewayConfig.WebhookSettings()
        cfg.allowPrivate = ["127.0.0.1"]
        cfg.timeoutMillis = 7_000
        let key = try #require(WebhookSecret.key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
        let r = WebhookDeliverer.request(delivery, url: "https://hooks.example.com/x", key: key, settings: cfg, timestamp: 1_700_000_000)
        let h = Dictionary(uniqueKeysWithValues: r.headers.map { ($0.name, $0.value) })
        #expect(r.method == "POST" && r.url == "https://hooks.example.com/x")
        #expect(r.body == Array(delivery.payload.utf8))
        #expect(h["webhook-id"] == "evt_abc" && h["webhook-timestamp"] == "1700000000" && h["content-type"] == "application/json")
        #expect(h["webhook-signature"] == WebhookSignature.sign(id: "evt_abc", timestamp: 1_700_000_000, body: r.body, key: key))
        #expect(h["authorization"] == nil)                      // never the upstream key, nor any other credential
        #expect(r.sharedHeaders == nil)
        #expect(r.refusePrivateAddresses && r.addressAllowList == ["127.0.0.1"] && r.allowedSchemes == ["https"])
        #expect(r.timeoutMillis == 7_000 && r.connectTimeoutMillis == 5_000)
        cfg.allowHTTP = true
        #expect(WebhookDeliverer.request(delivery, url: "http://x/", key: key, settings: cfg, timestamp: 1).allowedSchemes == ["http", "https"])
    }

    @Test func whatAnAttemptsEndMeans() {
        let cfg = GatewayConfig.WebhookSettings()          // 5 s initial, 72 h
        func out(_ status: Int?, _ error: UpstreamError?, now: Int = 10_000) -> (WebhookAttemptOutcome, String?) {
            let o = WebhookDeliverer.outcome(delivery, status: status, error: error, settings: cfg, now: now, jitter: 1)
            return (o.outcome, o.reason)
        }
        #expect(out(200, nil).0 == .delivered(status: 200))
        #expect(out(204, nil).0 == .delivered(status: 204))
        // The third attempt failed: 20 s later (5 s · 2²).
        #expect(out(500, nil).0 == .retry(afterMillis: 20_000, status: 500, error: "the receiver answered HTTP 500"))
        #expect(out(500, nil).1 == "status")
        #expect(out(302, nil).1 == "status")                 // redirects are not followed
        #expect(out(nil, .timeout("10 s")).1 == "timeout")
        #expect(out(nil, .connect("refused")).1 == "connect")
        #expect(out(nil, .refused("127.0.0.1 is loopback")).1 == "refused")
        if case .failed(let s, let e) = out(503, nil, now: 10_000 + 259_200).0 {
            #expect(s == 503 && e.contains("retry_for_s"))
        } else { Issue.record("past the retry period an attempt gives up") }
    }
}

@Suite struct WatcherAndEventsTests {
    @Test(arguments: [
        (0, 2_000), (59, 2_000), (60, 4_000), (150, 6_000), (14 * 60, 30_000), (3_600, 30_000), (-5, 2_000),
    ] as [(Int, Int)])
    func pollsBackOffAsAVideoAges(_ age: Int, _ expected: Int) {
        #expect(VideoWatcher.interval(ageSeconds: age, base: 2_000, max: 30_000) == expected)
    }

    @Test func intervalsHaveAFloorAndNeverGoBelowTheBase() {
        #expect(VideoWatcher.interval(ageSeconds: 0, base: 0, max: 30_000) == VideoWatcher.minIntervalMillis)
        #expect(VideoWatcher.interval(ageSeconds: 10_000, base: 5_000, max: 1_000) == 5_000)
        #expect(VideoWatcher.interval(ageSeconds: Int.max / 2, base: 2_000, max: 30_000) == 30_000)
    }

    @Test func aVideosLoopIsStableAndInRange() {
        for n in 0..<200 {
            let i = VideoWatcher.loopIndex("video_\(n)", loops: 3)
            #expect((0..<3).contains(i) && i == VideoWatcher.loopIndex("video_\(n)", loops: 3))
        }
        #expect(Set((0..<200).map { VideoWatcher.loopIndex("video_\($0)", loops: 3) }).count == 3)
        #expect(VideoWatcher.loopIndex("x", loops: 0) == 0)
    }

    @Test func sseFrames() {
        #expect(String(decoding: VideoEventFrame.event("video.updated", Array(#"{"a":1}"#.utf8)), as: UTF8.self) == "event: video.updated\ndata: {\"a\":1}\n\n")
        #expect(String(decoding: VideoEventFrame.comment("keep-alive"), as: UTF8.self) == ": keep-alive\n\n")
        // Veil's JSON never breaks a data line: a newline in a value is escaped.
        let o = VideoObject(id: "video_1", model: "sora-2", status: .failed, progress: 100, createdAt: 1,
                            error: VideoError(code: "moderation_blocked", message: "line one\nline two"))
        #expect(!o.jsonBytes.contains(0x0A))
        #expect(VideoEventFrame.finalEvent(o) == "video.failed")
    }

    @Test func whichStateChangeMakesAnEvent() throws {
        var c = GatewayConfig()
        c.teams = [GatewayConfig.Team(name: "hooked", tokens: [], webhook: .init(url: "https://h.example/", key: [1, 2, 3])),
                   GatewayConfig.Team(name: "plain", tokens: [])]
        func rec(_ team: String, _ status: String) -> VideoRecord {
            VideoRecord(id: "video_7", upstreamID: "7", team: team, model: "sora-2", prompt: "p", status: status, createdAt: 100)
        }
        let e = try #require(VideoPolling.webhookEvent(c, was: rec("hooked", "in_progress"), rec("hooked", "completed"), now: 500))
        #expect(e.type == "video.completed" && e.team == "hooked" && e.videoID == "video_7" && e.createdAt == 500 && e.retryFrom == 500)
        #expect(e.payload == String(decoding: WebhookPayload.videoEvent(id: e.id, type: e.type, createdAt: 500, videoID: "video_7"), as: UTF8.self))
        #expect(VideoPolling.webhookEvent(c, was: rec("hooked", "queued"), rec("hooked", "failed"), now: 500)?.type == "video.failed")
        #expect(VideoPolling.webhookEvent(c, was: rec("hooked", "queued"), rec("hooked", "in_progress"), now: 500) == nil)
        #expect(VideoPolling.webhookEvent(c, was: rec("hooked", "completed"), rec("hooked", "completed"), now: 500) == nil)
        #expect(VideoPolling.webhookEvent(c, was: rec("plain", "in_progress"), rec("plain", "completed"), now: 500) == nil)
    }
}

@Suite struct PushConfigTests {
    let digest = String(repeating: "ab", count: 32)
    func yaml(_ extra: String, team: String = "") -> String {
        """
        upstream:
          base_url: "http://127.0.0.1:9"
          api_key: "sk-test"
        \(extra)
        teams:
          - name: web
            tokens_sha256: ["\(digest)"]
        \(team)
        """
    }

    @Test func defaults() throws {
        let c = try ConfigLoader.load(yaml: yaml(""), environment: [:])
        #expect(c.webhooks.retryForSeconds == 259_200 && c.webhooks.timeoutMillis == 10_000 && !c.webhooks.allowHTTP)
        #expect(c.webhooks.allowPrivate.isEmpty && c.webhooks.maxConcurrentPerEndpoint == 4 && c.webhooks.backoffInitialMillis == 5_000)
        #expect(c.videos.watch && c.videos.watchMaxSeconds == 7_200 && c.videos.eventsHeartbeatMillis == 15_000)
        #expect(c.videos.watchMaxIntervalMillis == 30_000 && c.videos.watchMaxVideos == 10_000)
        #expect(!c.cors.allowQueryToken)
        #expect(c.teams[0].webhook == nil)
    }

    @Test func everyKeyLoads() throws {
        let c = try ConfigLoader.load(yaml: yaml("""
        webhooks:
          allow_http: true
          allow_private: ["127.0.0.1", "10.0.0.0/8"]
          timeout_ms: 3000
          retry_for_s: 3600
          backoff_initial_ms: 100
          backoff_max_ms: 2000
          max_concurrent_per_endpoint: 2
          poll_ms: 250
          keep_delivered_s: 60
        videos:
          watch: false
          watch_max_s: 600
          watch_max_interval_ms: 5000
          watch_max_videos: 50
          events_heartbeat_ms: 1000
        cors:
          allow_query_token: true
        """, team: """
            webhook:
              url: "http://127.0.0.1:9000/hook"
              secret: "${HOOK_SECRET}"
        """), environment: ["HOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
        let w = c.webhooks
        #expect(w.allowHTTP && w.allowPrivate == ["127.0.0.1", "10.0.0.0/8"] && w.timeoutMillis == 3_000 && w.retryForSeconds == 3_600)
        #expect(w.backoffInitialMillis == 100 && w.backoffMaxMillis == 2_000 && w.maxConcurrentPerEndpoint == 2 && w.pollMillis == 250)
        #expect(w.keepDeliveredSeconds == 60)
        #expect(!c.videos.watch && c.videos.watchMaxSeconds == 600 && c.videos.watchMaxIntervalMillis == 5_000)
        #expect(c.videos.watchMaxVideos == 50 && c.videos.eventsHeartbeatMillis == 1_000 && c.cors.allowQueryToken)
        #expect(c.teams[0].webhook?.url == "http://127.0.0.1:9000/hook")
        #expect(c.teams[0].webhook?.key == WebhookSecret.key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
    }

    @Test(arguments: [
        ("webhooks:\n  timeout_ms: 5", "", "webhooks.timeout_ms"),
        ("webhooks:\n  retries: 3", "", "webhooks.retries"),
        ("webhooks:\n  backoff_initial_ms: 5000\n  backoff_max_ms: 100", "", "webhooks.backoff_max_ms"),
        ("", "    webhook:\n      url: \"https://h.example/\"\n      secret: \"plain-secret\"", "teams[0].webhook.secret"),
        ("", "    webhook:\n      url: \"https://h.example/\"", "teams[0].webhook.secret"),
        ("", "    webhook:\n      secret: \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"", "teams[0].webhook.url"),
        ("", "    webhook:\n      url: \"http://h.example/\"\n      secret: \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"", "teams[0].webhook.url"),
        ("", "    webhook:\n      url: \"https://h.example/\"\n      secret: \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n      events: []", "teams[0].webhook.events"),
        ("videos:\n  watch_max_s: 5", "", "videos.watch_max_s"),
        ("cors:\n  allow_query_token: maybe", "", "cors.allow_query_token"),
    ] as [(String, String, String)])
    func refusalsNameTheKey(_ extra: String, _ team: String, _ key: String) {
        #expect(throws: ConfigError.self) { try ConfigLoader.load(yaml: yaml(extra, team: team), environment: [:]) }
        do { _ = try ConfigLoader.load(yaml: yaml(extra, team: team), environment: [:]) } catch {
            #expect(error.key == key, "\(error)")
        }
    }
}
