import Foundation
import Glibc
import HTTPServer
import HTTPWire
import Sandbox
import Store
import Synchronization
import PostgresTestSupport
import Testing
@testable import Gateway

// Issue 16 end to end: Veil watches unfinished videos itself, pushes their progress to event
// streams and their end to the teams' signed webhooks, at least once, through restarts, with
// one upstream poll per video per interval however many watch.

private let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + Array(repeating: 1, count: 64)

private func createVideo(_ h: VeilHarness, prompt: String, team: String = "web") throws -> String {
    let r = try h.post("/v1/videos", team: team, json: #"{"prompt":"\#(prompt)","model":"sora-2","seconds":"4","size":"720x1280"}"#)
    #expect(r.status == 200, "create: \(r.status) \(r.text)")
    return jsonObject(r)["id"] as? String ?? ""
}

private func deliveries(_ h: VeilHarness) -> [WebhookDelivery] {
    (try? h.runtime.gateway.store.runHere { db in try db.webhookDeliveries(status: nil, limit: 100) }.get()) ?? []
}

private func metric(_ h: VeilHarness, _ series: String) -> Double? {
    guard let text = try? RawHTTPClient.request(port: h.port, method: "GET", path: "/metrics").text else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.split(separator: " ").last ?? "")
    }
    return nil
}

/// A receiver's check of one delivery, as the SDKs make it: the signature over id.timestamp.body.
private func verifies(_ r: WebhookReceiver.Received, secret: String = pushSecret) -> Bool {
    guard let key = WebhookSecret.key(secret), let id = r.headers["webhook-id"], let ts = r.headers["webhook-timestamp"].flatMap({ Int($0) }),
          let sig = r.headers["webhook-signature"] else { return false }
    return sig == WebhookSignature.sign(id: id, timestamp: ts, body: r.body, key: key) && abs(ts - Int(time(nil))) < 300
}

@Suite(.serialized) struct WebhookDeliveryTests {
    /// A receiver that fails twice, then accepts: three attempts, one accepted delivery, the same
    /// webhook-id, body and valid signature on each; nothing after the acceptance. Nobody polls
    /// the video: the watcher finds its end.
    @Test func failingTwiceThenAcceptedIsOneDelivery() throws {
        let hooks = WebhookReceiver(script: [500, 503])
        try hooks.start()
        defer { hooks.stop() }
        let h = try VeilHarness(extraYAML: pushWebhooksYAML(), teamsYAML: pushTeamsYAML(hookURL: hooks.url),
                                videosYAML: ["poll_after_ms: 200"], pollCacheMillis: 200)
        defer { h.stop() }
        let id = try createVideo(h, prompt: "a lighthouse at dusk")
        #expect(waitUntil(20) { hooks.received.count >= 3 }, "attempts: \(hooks.received.count)")
        usleep(1_000_000)
        let got = hooks.received
        #expect(got.count == 3, "exactly one accepted delivery and no attempt after it")
        #expect(Set(got.compactMap { $0.headers["webhook-id"] }).count == 1)
        #expect(Set(got.map(\.text)).count == 1)
        #expect(got.allSatisfy { verifies($0) })
        #expect(!got.contains { verifies($0, secret: "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=") })
        #expect(got.allSatisfy { $0.headers["content-type"] == "application/json" && $0.path == "/hooks/veil" })
        #expect(got.allSatisfy { !$0.text.contains(h.upstreamKey) && $0.headers.values.allSatisfy { !$0.contains(h.upstreamKey) } })
        let body = jsonOf(got[0].text)
        #expect(body["object"] as? String == "event" && body["type"] as? String == "video.completed")
        #expect((body["data"] as? [String: Any])?["id"] as? String == id)
        #expect(body["id"] as? String == got[0].headers["webhook-id"])
        #expect((body["created_at"] as? Int).map { abs($0 - Int(time(nil))) < 60 } == true)
        // The outbox agrees; the metrics count it.
        #expect(waitUntil(5) { deliveries(h).first?.status == .delivered })
        let d = deliveries(h)
        #expect(d.count == 1 && d.first?.attempts == 3 && d.first?.lastStatus == 200 && d.first?.videoID == id)
        #expect(metric(h, "veil_webhook_deliveries_total") == 1)
        #expect(metric(h, #"veil_webhook_failures_total{reason="status"}"#) == 2)
        // The video's end was recorded by the watcher: the store has it without any caller's poll.
        #expect(jsonObject(try h.get("/v1/videos/\(id)"))["status"] as? String == "completed")
    }

    /// A delivery still pending when Veil stops is sent by the next run, with the same
    /// webhook-id.
    @Test func aPendingDeliveryIsSentAfterARestart() throws {
        let store = "/tmp/veil-push-restart-\(UUID().uuidString).sqlite3"
        let hooks = WebhookReceiver(afterScript: 500)
        try hooks.start()
        defer { hooks.stop() }
        let webhooks = pushWebhooksYAML(backoffInitialMillis: 4_000)
        var firstStopped: UInt64 = 0
        do {
            let h = try VeilHarness(storePath: store, extraYAML: webhooks, teamsYAML: pushTeamsYAML(hookURL: hooks.url),
                                    videosYAML: ["poll_after_ms: 200"], pollCacheMillis: 200)
            _ = try createVideo(h, prompt: "a red kite")
            #expect(waitUntil(15) { deliveries(h).first?.attempts == 1 }, "the first attempt failed and was recorded")
            h.stop()
            firstStopped = RawHTTPClient.nowMillis()
            #expect(deliveries(h).isEmpty || true)
        }
        #expect(hooks.received.count == 1)
        hooks.answer(204)
        let h2 = try VeilHarness(storePath: store, extraYAML: webhooks, teamsYAML: pushTeamsYAML(hookURL: hooks.url))
        defer { h2.stop() }
        #expect(waitUntil(15) { deliveries(h2).first?.status == .delivered }, "\(deliveries(h2))")
        let got = hooks.received
        #expect(got.count == 2)
        #expect(got[1].atMillis > firstStopped, "the second attempt came from the restarted Veil")
        #expect(got[0].headers["webhook-id"] == got[1].headers["webhook-id"] && got[0].text == got[1].text)
        #expect(got.allSatisfy { verifies($0) })
        #expect(deliveries(h2).first?.attempts == 2 && deliveries(h2).first?.lastStatus == 204)
    }

    /// The webhook goes through the image-fetch address policy: a loopback endpoint not in
    /// `webhooks.allow_private` is refused (no byte reaches it) and the event stays pending.
    @Test func loopbackEndpointsAreRefusedUnlessListed() throws {
        let hooks = WebhookReceiver()
        try hooks.start()
        defer { hooks.stop() }
        let h = try VeilHarness(extraYAML: pushWebhooksYAML(backoffInitialMillis: 60_000, allowPrivate: false),
                                teamsYAML: pushTeamsYAML(hookURL: hooks.url), videosYAML: ["poll_after_ms: 200"], pollCacheMillis: 200)
        defer { h.stop() }
        _ = try createVideo(h, prompt: "a glass of water")
        #expect(waitUntil(15) { deliveries(h).first?.attempts == 1 })
        let d = deliveries(h).first
        #expect(d?.status == .pending && d?.lastStatus == nil)
        #expect(d?.lastError?.contains("address policy") == true && d?.lastError?.contains("loopback") == true, "\(d?.lastError ?? "")")
        #expect(hooks.received.isEmpty)
        #expect(metric(h, #"veil_webhook_failures_total{reason="refused"}"#) == 1)
        #expect(metric(h, "veil_webhook_deliveries_total") == 0)
        #expect(waitUntil(8) { metric(h, "veil_webhook_outbox_pending") == 1 })
    }

    /// Moderation and the upstream's own failure end in `video.failed` with the error: on the
    /// event stream and as webhooks; a team without a webhook gets none.
    @Test func moderationAndUpstreamFailureEndInVideoFailed() throws {
        let hooks = WebhookReceiver()
        try hooks.start()
        defer { hooks.stop() }
        let h = try VeilHarness(extraYAML: pushWebhooksYAML(), teamsYAML: pushTeamsYAML(hookURL: hooks.url),
                                videosYAML: ["poll_after_ms: 300"], pollCacheMillis: 300)
        defer { h.stop() }
        let blocked = try createVideo(h, prompt: "nsfw scene")
        let failed = try createVideo(h, prompt: "this will fail")
        _ = try createVideo(h, prompt: "nsfw too, but no webhook", team: "mobile")
        for (id, code) in [(blocked, "moderation_blocked"), (failed, "generation_failed")] {
            let s = try SSEClient(port: h.port, path: "/v1/videos/\(id)/events", headers: h.auth())
            defer { s.close() }
            #expect(s.status == 200)
            #expect(s.readToEnd())
            let events = s.events
            #expect(events.first?.name == "video.updated")
            #expect(events.last?.name == "video.failed", "\(events.map(\.name))")
            let last = jsonOf(events.last?.data ?? "")
            #expect(last["status"] as? String == "failed" && last["id"] as? String == id)
            #expect((last["error"] as? [String: Any])?["code"] as? String == code)
            if code == "moderation_blocked" { #expect(((last["error"] as? [String: Any])?["message"] as? String)?.contains("此内容可能违反") == true) }
        }
        #expect(waitUntil(15) { hooks.received.count == 2 })
        usleep(800_000)
        let bodies = hooks.received.map { jsonOf($0.text) }
        #expect(bodies.count == 2, "the mobile team has no webhook")
        #expect(bodies.allSatisfy { $0["type"] as? String == "video.failed" })
        #expect(Set(bodies.compactMap { ($0["data"] as? [String: Any])?["id"] as? String }) == [blocked, failed])
    }
}

@Suite(.serialized) struct VideoEventStreamTests {
    /// Two event streams and a caller polling every 150 ms: the upstream is asked about the video
    /// at most once per interval; both streams see its progress and its end.
    @Test func twoStreamsAndAPollerShareOnePollPerInterval() throws {
        let h = try VeilHarness(sandboxTweak: { $0.videoMillisToComplete = 5_000 },
                                videosYAML: ["poll_after_ms: 1000", "watch_max_interval_ms: 1000"], pollCacheMillis: 1000)
        defer { h.stop() }
        let t0 = RawHTTPClient.nowMillis()
        let id = try createVideo(h, prompt: "a slow sunrise")
        let upstreamID = String(id.dropFirst("video_".count))
        let results = Mutex<[[SSEClient.Event]]>([])
        let ends = Atomic<Int>(0)
        let readers = (0..<2).map { _ in
            Thread {
                guard let s = try? SSEClient(port: h.port, path: "/v1/videos/\(id)/events", headers: h.auth(), timeoutMillis: 15_000) else { return }
                if s.readToEnd() && s.ended { ends.add(1, ordering: .relaxed) }
                results.withLock { $0.append(s.events) }
            }
        }
        readers.forEach { $0.start() }
        var polls = 0
        var done = false
        while !done && RawHTTPClient.nowMillis() - t0 < 20_000 {
            let r = try h.get("/v1/videos/\(id)")
            polls += 1
            done = jsonObject(r)["status"] as? String == "completed"
            usleep(150_000)
        }
        #expect(done)
        #expect(waitUntil(10) { results.withLock { $0.count } == 2 })
        let elapsed = Double(RawHTTPClient.nowMillis() - t0) / 1000
        let upstream = h.sandbox.count("GET", "/v1/videos/\(upstreamID)")
        #expect(polls >= 20)
        #expect(Double(upstream) <= elapsed.rounded(.up) + 1, "\(upstream) upstream polls in \(elapsed) s for \(polls) polls and two streams")
        #expect(ends.load(ordering: .relaxed) == 2, "both streams ended properly")
        for events in results.withLock({ $0 }) {
            #expect(events.first?.name == "video.updated")
            #expect(events.last?.name == "video.completed")
            #expect(events.dropLast().allSatisfy { $0.name == "video.updated" })
            let progress = events.compactMap { jsonOf($0.data)["progress"] as? Int }
            #expect(progress == progress.sorted() && progress.last == 100)
            #expect(events.count >= 3, "queued/in progress, some progress, the end: \(events.map(\.data))")
            #expect(events.allSatisfy { jsonOf($0.data)["id"] as? String == id })
            #expect(!events.contains { $0.data.contains(h.upstreamKey) })
        }
        #expect(h.runtime.gateway.watcher.count == 0, "finished: no longer watched")
    }

    /// A client that reads nothing while its video runs: Veil keeps only the latest state for it
    /// (the skipped ones are counted) instead of queueing every update; once it reads, it gets a
    /// coherent stream that ends with the final state.
    @Test(.timeLimit(.minutes(1))) func aSlowReaderGetsTheLatestStateNotEveryState() throws {
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 100 }, limitsYAML: ["write_high_water_bytes: 4096"],
                                videosYAML: ["poll_after_ms: 100", "watch_max_interval_ms: 100", "events_heartbeat_ms: 100",
                                             "max_prompt_chars: 200000"],
                                pollCacheMillis: 100)
        defer { h.stop() }
        // ~100 KB per event (the object carries the prompt), 100 states: 10 MB, more than the
        // kernel's socket buffers take on loopback (the send buffer grows to tcp_wmem's 4 MiB),
        // so Veil's own output goes past the high-water mark.
        let id = try createVideo(h, prompt: String(repeating: "a long prompt ", count: 7_000))
        let upstreamID = String(id.dropFirst("video_".count))
        let s = try SSEClient(port: h.port, path: "/v1/videos/\(id)/events", headers: h.auth(), timeoutMillis: 20_000)
        #expect(s.status == 200)
        #expect(waitUntil(40) { h.sandbox.count("GET", "/v1/videos/\(upstreamID)") >= 100 }, "the video ran to its end")
        let skipped = metric(h, "veil_video_event_updates_skipped_total") ?? 0
        #expect(skipped > 0, "no update was skipped: the client was never slow enough for the test to mean anything")
        #expect(s.readToEnd() && s.ended)
        let events = s.events
        #expect(events.first?.name == "video.updated")
        #expect(events.last?.name == "video.completed")
        // The final state comes twice by design (video.updated, then video.completed).
        let progress = events.dropLast().compactMap { jsonOf($0.data)["progress"] as? Int }
        #expect(progress == progress.sorted() && progress.last == 100)
        #expect(Set(progress).count == progress.count, "no state sent twice")
        #expect(events.count + Int(skipped) <= 102, "\(events.count) events and \(Int(skipped)) skipped for at most 101 states")
        #expect(events.count < 100, "\(events.count) events for 100 states: every state was queued")
    }

    @Test func aFinishedVideoGetsItsStateAndEndAtOnceAndOwnershipHolds() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let id = try createVideo(h, prompt: "ripples")
        #expect(waitUntil(10) { jsonObject((try? h.get("/v1/videos/\(id)")) ?? RawResponse(status: 0, reason: "", headers: [], body: [], chunks: [], complete: false))["status"] as? String == "completed" })
        let s = try SSEClient(port: h.port, path: "/v1/videos/\(id)/events", headers: h.auth())
        #expect(s.status == 200)
        #expect(s.header("content-type")?.hasPrefix("text/event-stream") == true)
        #expect(s.header("cache-control") == "no-cache")
        #expect(s.readToEnd() && s.ended)
        #expect(s.events.map(\.name) == ["video.updated", "video.completed"])
        #expect((jsonOf(s.events[1].data)["video_url"] as? String)?.contains("/clean.mp4") == true)
        // Another team's video and an unknown one: the same 404; no token: 401.
        for (path, team) in [("/v1/videos/\(id)/events", "mobile"), ("/v1/videos/video_99999/events", "web")] {
            let r = try h.get(path, team: team)
            #expect(r.status == 404)
            #expect((jsonObject(r)["error"] as? [String: Any])?["code"] as? String == "not_found" || r.status == 404)
        }
        #expect(try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/videos/\(id)/events").status == 401)
    }

    /// A stream holds one of the team's stream slots; a client that leaves frees it and its
    /// subscription at once; heartbeats keep an idle stream busy.
    @Test func aStreamHoldsAStreamSlotUntilItsClientLeaves() throws {
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 10_000 },
                                teamsYAML: pushTeamsYAML(hookURL: nil), videosYAML: ["events_heartbeat_ms: 300", "poll_after_ms: 500"])
        defer { h.stop() }
        let id = try createVideo(h, prompt: "a long take", team: "limited")
        let first = try SSEClient(port: h.port, path: "/v1/videos/\(id)/events", headers: h.auth("limited"))
        #expect(first.status == 200)
        #expect(first.read { $0.events.count >= 1 && $0.frames.comments.contains("keep-alive") }, "an event, then heartbeats")
        let second = try h.get("/v1/videos/\(id)/events", team: "limited")
        #expect(second.status == 429)
        #expect((jsonObject(second)["error"] as? [String: Any])?["code"] as? String == "concurrent_streams_exceeded")
        #expect(h.runtime.gateway.watcher.subscriberCount == 1)
        first.close()
        #expect(waitUntil(5) { h.runtime.gateway.watcher.subscriberCount == 0 }, "the subscription went with its client")
        #expect(waitUntil(5) { h.runtime.gateway.metrics.eventStreams.load(ordering: .relaxed) == 0 })
        let third = try SSEClient(port: h.port, path: "/v1/videos/\(id)/events", headers: h.auth("limited"))
        #expect(third.status == 200, "the slot was freed")
        third.close()
    }

    /// `?token=` only when `cors.allow_query_token` is on, only on the events route, and never in
    /// the access log.
    @Test func queryTokensOnlyWhenAllowedAndNeverLogged() throws {
        let token = VeilHarness.teamTokens["web"]!
        let off = try VeilHarness()
        let id = try createVideo(off, prompt: "quiet")
        let refused = try RawHTTPClient.request(port: off.port, method: "GET", path: "/v1/videos/\(id)/events?token=\(token)")
        #expect(refused.status == 401)
        #expect((jsonObject(refused)["error"] as? [String: Any])?["code"] as? String == "query_token_not_allowed")
        usleep(300_000)
        #expect(!off.accessLog.isEmpty && !off.accessLog.contains { $0.contains(token) })
        off.stop()

        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 1 },
                                extraYAML: "cors:\n  allowed_origins: [\"https://app.example\"]\n  allow_query_token: true")
        defer { h.stop() }
        let vid = try createVideo(h, prompt: "quiet again")
        let s = try SSEClient(port: h.port, path: "/v1/videos/\(vid)/events?token=\(token)", headers: [("Origin", "https://app.example")])
        #expect(s.status == 200)
        #expect(s.header("access-control-allow-origin") == "https://app.example")
        #expect(s.readToEnd() && s.events.last?.name == "video.completed")
        // A wrong token in the query is a 401 like any; other routes never read the query.
        #expect(try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/videos/\(vid)/events?token=nope").status == 401)
        #expect(try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/videos/\(vid)?token=\(token)").status == 401)
        #expect(try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/videos?token=\(token)").status == 401)
        usleep(1_300_000)                     // the access log is flushed per loop
        let lines = h.accessLog
        #expect(lines.contains { $0.contains("/v1/videos/\(vid)/events") && $0.contains("\"status\":200") })
        #expect(!lines.contains { $0.contains(token) || $0.contains("token=") }, "\(lines)")
    }

    /// Unfinished videos in the store are watched again after a restart: without any caller,
    /// their end is recorded and pushed.
    @Test func unfinishedVideosAreWatchedAgainAfterARestart() throws {
        let key = "sk-veilTEST-\(UUID().uuidString.prefix(8))-UPSTREAMKEY"
        var sc = SandboxConfig(apiKey: key)
        sc.videoPollsToComplete = 2
        let upstream = Sandbox(config: sc)
        _ = try upstream.start()
        defer { upstream.stop() }
        let store = "/tmp/veil-push-watch-\(UUID().uuidString).sqlite3"
        let hooks = WebhookReceiver()
        try hooks.start()
        defer { hooks.stop() }
        var id = ""
        do {
            // Not watched here: the first run dies with the video unfinished.
            let h = try VeilHarness(upstreamKey: key, storePath: store, teamsYAML: pushTeamsYAML(hookURL: nil),
                                    upstreamBaseURL: upstream.baseURL, videosYAML: ["watch: false"])
            id = try createVideo(h, prompt: "left behind")
            usleep(500_000)
            h.stop()
        }
        #expect(upstream.count("GET", "/v1/videos/") == 0)
        let h2 = try VeilHarness(upstreamKey: key, storePath: store, extraYAML: pushWebhooksYAML(),
                                 teamsYAML: pushTeamsYAML(hookURL: hooks.url), upstreamBaseURL: upstream.baseURL,
                                 videosYAML: ["poll_after_ms: 200"], pollCacheMillis: 200)
        defer { h2.stop() }
        #expect(waitUntil(15) { hooks.received.count == 1 }, "the restarted Veil polled it to its end and pushed it")
        #expect((jsonOf(hooks.received.first?.text ?? "")["data"] as? [String: Any])?["id"] as? String == id)
        let stored = try h2.runtime.gateway.store.runHere { db in try db.video(id: id, team: "web") }.get()
        #expect(stored?.status == "completed")
    }
}

/// `veil webhooks list` and `veil webhooks replay` against a store file and PostgreSQL.
@Suite struct WebhooksCLITests {
    /// An outbox with one delivered, one pending and one given-up event.
    static func seed(_ db: any StoreBackend) throws {
        for (n, outcome) in [(1, WebhookAttemptOutcome.delivered(status: 200)), (2, .retry(afterMillis: 60_000, status: 500, error: "the receiver answered HTTP 500")),
                             (3, .failed(status: nil, error: "timeout: no answer (retries stopped after webhooks.retry_for_s)"))] {
            let v = VideoRecord(id: "video_\(n)", upstreamID: "\(n)", team: "web", model: "sora-2", prompt: "p", createdAt: 1_700_000_000 + n)
            try db.insertVideo(v)
            var done = v
            done.status = "completed"
            _ = try db.recordVideoState(done, event: WebhookDelivery(id: "evt_\(n)", team: "web", type: "video.completed", videoID: v.id,
                                                                     payload: "{}", createdAt: 1_700_000_000 + n))
            _ = try db.claimWebhookDeliveries(holder: "seed", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000)
            try db.settleWebhookDelivery(id: "evt_\(n)", holder: "seed", outcome)
        }
        // One whose attempt is in flight: claimed by a replica, its lease live.
        let v = VideoRecord(id: "video_4", upstreamID: "4", team: "web", model: "sora-2", prompt: "p", createdAt: 1_700_000_004)
        try db.insertVideo(v)
        var done = v
        done.status = "completed"
        _ = try db.recordVideoState(done, event: WebhookDelivery(id: "evt_4", team: "web", type: "video.completed", videoID: v.id,
                                                                 payload: "{}", createdAt: 1_700_000_004))
        #expect(try db.claimWebhookDeliveries(holder: "sender", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 600_000).map(\.id) == ["evt_4"])
    }

    static func check(store: String) throws {
        let (rc, out) = try VeilProcess.run(["webhooks", "list", "--store", store])
        #expect(rc == 0 && out.contains("evt_2") && out.contains("evt_3") && !out.contains("evt_1"), "\(out)")
        #expect(out.contains("pending") && out.contains("failed") && out.contains("HTTP 500") && out.contains("timeout"), "\(out)")
        let (rc2, failed) = try VeilProcess.run(["webhooks", "list", "--failed", "--store", store])
        #expect(rc2 == 0 && failed.contains("evt_3") && !failed.contains("evt_2"), "\(failed)")
        let (_, all) = try VeilProcess.run(["webhooks", "list", "--all", "--store", store])
        #expect(all.contains("evt_1") && all.contains("delivered"), "\(all)")
        let (rc3, replayed) = try VeilProcess.run(["webhooks", "replay", "evt_3", "--store", store])
        #expect(rc3 == 0 && replayed.contains("pending again"), "\(replayed)")
        let (_, pending) = try VeilProcess.run(["webhooks", "list", "--pending", "--store", store])
        #expect(pending.contains("evt_3") && pending.contains("evt_2"), "\(pending)")
        let (_, none) = try VeilProcess.run(["webhooks", "list", "--failed", "--store", store])
        #expect(none.contains("(no webhook events)"), "\(none)")
        let (rc6, inFlight) = try VeilProcess.run(["webhooks", "replay", "evt_4", "--store", store])
        #expect(rc6 != 0 && inFlight.contains("in flight"), "\(inFlight)")
        let (rc4, unknown) = try VeilProcess.run(["webhooks", "replay", "evt_nope", "--store", store])
        #expect(rc4 != 0 && unknown.contains("no webhook event"), "\(unknown)")
        let (rc5, both) = try VeilProcess.run(["webhooks", "list", "--failed", "--pending", "--store", store])
        #expect(rc5 != 0 && both.contains("one of"), "\(both)")
    }

    @Test func listAndReplayOnSQLite() throws {
        let path = "/tmp/veil-webhooks-cli-\(UUID().uuidString).sqlite3"
        defer { for s in ["", "-wal", "-shm"] { unlink(path + s) } }
        do {
            let s = try SQLiteStore(path: path)
            try Self.seed(s)
            s.close()
        }
        try Self.check(store: path)
        let (rc, out) = try VeilProcess.run(["webhooks", "list", "--store", "/tmp/veil-no-such-\(UUID().uuidString).sqlite3"])
        #expect(rc != 0 && out.contains("does not exist"), "\(out)")
    }

    @Test func listAndReplayOnPostgres() throws {
        let url = try PostgresCluster.shared().createDatabase()
        do {
            let pg = try PostgresStore(settings: PostgresSettings(url: url))
            try Self.seed(pg)
            pg.close()
        }
        try Self.check(store: url)
    }
}

/// The real binary: two replicas on one PostgreSQL database deliver a video's webhook once, and
/// SIGTERM ends event streams at once instead of waiting out the grace period.
@Suite(.serialized) struct PushProcessTests {
    /// Callers poll the video to its end on both replicas: one event in the outbox, one delivery.
    @Test func twoReplicasDeliverOneWebhookPerVideo() throws {
        let hooks = WebhookReceiver()
        try hooks.start()
        defer { hooks.stop() }
        let p = try ReplicaPair(pollCacheMillis: 200, webhookURL: hooks.url)
        defer { p.stop() }
        var ids: [String] = []
        for i in 0..<3 {
            let created = try p.post(p.replicas[i % 2], "/v1/videos", json: ReplicaTests.video)
            ids.append(try #require(jsonObject(created)["id"] as? String))
        }
        var done = Set<String>()
        let t0 = RawHTTPClient.nowMillis()
        var i = 0
        while done.count < ids.count && RawHTTPClient.nowMillis() - t0 < 20_000 {
            for id in ids where !done.contains(id) {
                i += 1
                if jsonObject(try p.get(p.replicas[i % 2], "/v1/videos/\(id)"))["status"] as? String == "completed" { done.insert(id) }
            }
            usleep(60_000)
        }
        #expect(done.count == 3)
        #expect(waitUntil(15) { hooks.received.count >= 3 })
        usleep(1_500_000)
        let got = hooks.received
        #expect(got.count == 3, "one delivery per video across both replicas: \(got.map(\.text))")
        #expect(Set(got.compactMap { (jsonOf($0.text)["data"] as? [String: Any])?["id"] as? String }) == Set(ids))
        #expect(got.allSatisfy { verifies($0) })
    }

    /// A replica dies (SIGKILL) with a video it was watching unfinished: the other adopts it at
    /// its rescan, polls it to its end with no caller asking, and sends the one webhook.
    @Test(.timeLimit(.minutes(1))) func aVideoOfAReplicaThatDiedIsFinishedByAnother() throws {
        let hooks = WebhookReceiver()
        try hooks.start()
        defer { hooks.stop() }
        let p = try ReplicaPair(sandboxTweak: { $0.videoPollsToComplete = 4 }, pollCacheMillis: 100, webhookURL: hooks.url,
                                videosYAML: ["poll_after_ms: 300", "watch_max_interval_ms: 300", "watch_rescan_ms: 300"])
        defer { p.stop() }
        let created = try p.post(p.a, "/v1/videos", json: ReplicaTests.video)
        let id = try #require(jsonObject(created)["id"] as? String)
        // A's watcher polls it once (a claim in the store), then A dies without a word.
        #expect(waitUntil(5) { p.upstreamPolls(id) >= 1 })
        p.a.kill()
        let pollsByA = p.upstreamPolls(id)
        #expect(pollsByA < 4, "A finished the video before it died; nothing was taken over")
        // Nobody polls through Veil from here on: only B's watcher can finish it.
        #expect(waitUntil(20) { hooks.received.count >= 1 }, "no webhook after the takeover")
        #expect(p.upstreamPolls(id) >= 4, "B polled it to its end")
        let r = try p.get(p.b, "/v1/videos/\(id)")
        #expect(jsonObject(r)["status"] as? String == "completed")
        usleep(1_000_000)
        let got = hooks.received
        #expect(got.count == 1, "one delivery: \(got.map(\.text))")
        #expect(got.first.map { (jsonOf($0.text)["data"] as? [String: Any])?["id"] as? String == id && verifies($0) } == true)
        #expect(got.first.map { jsonOf($0.text)["type"] as? String == "video.completed" } == true)
    }

    @Test(.timeLimit(.minutes(1))) func sigtermEndsEventStreamsAtOnce() throws {
        let key = "sk-pushTEST-\(UUID().uuidString.prefix(8))-KEY"
        var sc = SandboxConfig(apiKey: key)
        sc.videoPollsToComplete = 100_000
        let sandbox = Sandbox(config: sc)
        _ = try sandbox.start()
        defer { sandbox.stop() }
        let store = "/tmp/veil-push-term-\(UUID().uuidString).sqlite3"
        let token = "tok-term-\(UUID().uuidString)"
        let veil = try VeilProcess(configText: VeilProcess.config(upstream: sandbox.baseURL, key: key, store: store, tokenDigest: sha256Hex(token),
                                                                  graceMillis: 20_000), storePath: store)
        defer { veil.kill() }
        let auth = [("Authorization", "Bearer \(token)")]
        let created = try RawHTTPClient.request(port: veil.port, method: "POST", path: "/v1/videos", headers: auth + [("Content-Type", "application/json")],
                                                body: Array(#"{"prompt":"forever"}"#.utf8))
        let id = try #require(jsonObject(created)["id"] as? String)
        let s = try SSEClient(port: veil.port, path: "/v1/videos/\(id)/events", headers: auth, timeoutMillis: 15_000)
        #expect(s.status == 200)
        #expect(s.read { $0.events.count >= 1 })
        let t0 = RawHTTPClient.nowMillis()
        veil.signal(SIGTERM)
        #expect(s.readToEnd() && s.ended, "the stream ended properly")
        let took = RawHTTPClient.nowMillis() - t0
        #expect(took < 5_000, "the stream ended \(took) ms after SIGTERM (grace: 20 s)")
        #expect(veil.waitExit(10) == 0)
    }
}

@Suite(.serialized) struct WebhookIsolationTests {
    /// One team's endpoint hangs: its attempts wait for their timeout, at most
    /// `max_concurrent_per_endpoint` at a time, while another team's events go out at once.
    @Test func aDeadEndpointNeverDelaysAnotherTeam() throws {
        let dead = try SilentEndpoint()
        dead.start()
        defer { dead.stop() }
        let hooks = WebhookReceiver()
        try hooks.start()
        defer { hooks.stop() }
        let teams = """
        teams:
          - name: web
            tokens_sha256: ["\(sha256Hex(VeilHarness.teamTokens["web"]!))"]
            webhook:
              url: "\(dead.url)"
              secret: "\(pushSecret)"
          - name: mobile
            tokens_sha256: ["\(sha256Hex(VeilHarness.teamTokens["mobile"]!))"]
            webhook:
              url: "\(hooks.url)"
              secret: "\(pushSecret)"
        """
        let h = try VeilHarness(extraYAML: pushWebhooksYAML(extra: ["max_concurrent_per_endpoint: 2"]).replacingOccurrences(of: "timeout_ms: 3000", with: "timeout_ms: 4000"),
                                teamsYAML: teams, videosYAML: ["poll_after_ms: 200"], pollCacheMillis: 200)
        defer { h.stop() }
        for i in 0..<6 { _ = try createVideo(h, prompt: "web video \(i)") }
        #expect(waitUntil(10) { deliveries(h).filter { $0.team == "web" }.count == 6 }, "six events for the dead endpoint")
        #expect(waitUntil(3) { dead.accepted == 2 })
        let t0 = RawHTTPClient.nowMillis()
        let mobile = try createVideo(h, prompt: "mobile video", team: "mobile")
        #expect(waitUntil(3) { hooks.received.count == 1 }, "the other team's webhook went out while the dead endpoint's attempts hung")
        #expect(RawHTTPClient.nowMillis() - t0 < 3_000)
        #expect((jsonOf(hooks.received.first?.text ?? "")["data"] as? [String: Any])?["id"] as? String == mobile)
        #expect(dead.accepted == 2, "never more than max_concurrent_per_endpoint attempts at the dead endpoint at once")
        #expect(metric(h, #"veil_webhook_failures_total{reason="timeout"}"#) == 0)
        // Their timeout (4 s) ends the first two attempts; the next two go.
        #expect(waitUntil(8) { (metric(h, #"veil_webhook_failures_total{reason="timeout"}"#) ?? 0) >= 2 })
        #expect(waitUntil(3) { dead.accepted >= 4 })
        let web = deliveries(h).filter { $0.team == "web" && $0.attempts > 0 }
        #expect(web.allSatisfy { $0.status == .pending && ($0.lastError ?? "").contains("timeout") }, "\(web.map { $0.lastError ?? "" })")
    }
}

// MARK: - adversarial

/// A webhook receiver that misbehaves on purpose: each request gets the next behaviour of its
/// script (then `after`); every request is recorded.
final class HostileReceiver: HTTPHandler, @unchecked Sendable {
    enum Behaviour: Sendable {
        case status(Int)
        /// 3xx with a `Location` (to another receiver).
        case redirect(Int, to: String)
        /// 200 with a body of this many bytes.
        case huge(Int)
        /// The answer comes after this long.
        case late(Int, status: Int)
        /// Never answers.
        case hang
        /// 200, then a chunked body of this many bytes.
        case hugeChunked(Int)
        /// 200, then one body byte every 100 ms, never ending.
        case trickle
    }
    private let state = Mutex<(script: [Behaviour], after: Behaviour, received: [String])>(([], .status(200), []))
    private var server: LoopServer?
    var port: UInt16 { server?.port ?? 0 }
    var url: String { "http://127.0.0.1:\(port)/hooks" }
    var received: [String] { state.withLock { $0.received } }

    init(script: [Behaviour], after: Behaviour = .status(200)) { state.withLock { $0 = (script, after, []) } }
    func start() throws { server = try LoopServer(self, loopID: 71, name: "hostile-receiver") }
    func stop() { server?.stop() }

    func handle(_ request: HTTPRequest, _ response: HTTPResponder) {
        let b: Behaviour = state.withLock { s in
            s.received.append(String(decoding: request.body, as: UTF8.self))
            return s.script.isEmpty ? s.after : s.script.removeFirst()
        }
        switch b {
        case .status(let n): response.respond(status: n, headers: ["content-type": "text/plain"], body: Array("status \(n)".utf8))
        case .redirect(let n, let to): response.respond(status: n, headers: ["location": to], body: [])
        case .huge(let n): response.respond(status: 200, headers: ["content-type": "application/octet-stream"], body: [UInt8](repeating: 0x61, count: n))
        case .late(let ms, let n):
            request.loop.schedule(afterMillis: ms) { response.respond(status: n, headers: [:], body: Array("late".utf8)) }
        case .hang: break
        case .hugeChunked(let n):
            response.sendHead(HTTPResponseHead(status: 200, headers: ["content-type": "application/octet-stream"]))
            let block = [UInt8](repeating: 0x62, count: 64 * 1024)
            for _ in 0..<(n / block.count) { response.write(block) }
            response.end()
        case .trickle:
            response.sendHead(HTTPResponseHead(status: 200, headers: ["content-type": "text/plain"]))
            func drip() {
                guard response.isOpen else { return }
                response.write([0x2E])
                request.loop.schedule(afterMillis: 100) { drip() }
            }
            drip()
        }
    }
}

@Suite(.serialized) struct PushAttackTests {
    /// A hostile upstream echoes the key in every text field it has (error message, moderation
    /// text, URLs, `seconds`), raw and JSON-escaped: no event stream byte and no webhook byte
    /// carries it.
    @Test func anUpstreamEchoingTheKeyReachesNoStreamAndNoWebhook() throws {
        let hooks = WebhookReceiver()
        try hooks.start()
        defer { hooks.stop() }
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 100_000 }, extraYAML: pushWebhooksYAML(),
                                teamsYAML: pushTeamsYAML(hookURL: hooks.url), videosYAML: ["poll_after_ms: 200"], pollCacheMillis: 200)
        defer { h.stop() }
        let key = h.upstreamKey
        let escaped = "\\u00" + String(key.utf8.first!, radix: 16) + String(key.dropFirst())
        let failing = try createVideo(h, prompt: "echo one")
        let blocked = try createVideo(h, prompt: "echo two")
        for (id, body) in [
            (failing, #"{"id":"@ID@","status":"failed","seconds":"\#(key)","error":{"message":"bad key \#(escaped) and \#(key)x"}}"#),
            (blocked, #"{"id":"@ID@","status":"completed","progress":100,"quality":"\#(key)","url":"https://f.example/v.mp4?k=\#(key)","size":"https://f.example/w.mp4?k=\#(escaped)"}"#),
        ] {
            let up = String(id.dropFirst("video_".count))
            h.sandbox.inject(.status(200, body: body.replacingOccurrences(of: "@ID@", with: up)), method: "GET", pathPrefix: "/v1/videos/\(up)", times: nil)
        }
        for id in [failing, blocked] {
            let s = try SSEClient(port: h.port, path: "/v1/videos/\(id)/events", headers: h.auth())
            defer { s.close() }
            #expect(s.readToEnd() && s.ended)
            #expect(s.events.last?.name == "video.failed", "\(s.events)")
            let all = String(decoding: s.body.bytes, as: UTF8.self) + s.headText
            #expect(!all.contains(key) && !all.contains(String(key.dropFirst())), "\(all)")
            #expect(all.contains("[redacted]"))
        }
        #expect(waitUntil(15) { hooks.received.count == 2 })
        #expect(hooks.received.allSatisfy { r in !r.text.contains(key) && r.headers.allSatisfy { !$0.key.contains(key) && !$0.value.contains(key) } })
    }

    /// The key changes (SIGHUP): a stream opened before the reload must redact the new key too,
    /// since the watcher's polls (with the new configuration) are what it relays.
    @Test func aStreamOpenedBeforeAKeyRotationRedactsTheNewKey() throws {
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 100_000 }, videosYAML: ["poll_after_ms: 200", "watch_max_interval_ms: 200"],
                                pollCacheMillis: 200)
        defer { h.stop() }
        let id = try createVideo(h, prompt: "rotating")
        let up = String(id.dropFirst("video_".count))
        let s = try SSEClient(port: h.port, path: "/v1/videos/\(id)/events", headers: h.auth(), timeoutMillis: 15_000)
        defer { s.close() }
        #expect(s.status == 200)
        #expect(s.read { $0.events.count >= 1 })
        let newKey = "sk-rotated-\(UUID().uuidString)-NEWKEY"
        var cfg = h.runtime.config
        cfg.upstream.apiKey = newKey
        h.runtime.reload(cfg)
        usleep(300_000)
        h.sandbox.inject(.status(200, body: #"{"id":"\#(up)","status":"failed","error":{"message":"key \#(newKey) is wrong"}}"#),
                         method: "GET", pathPrefix: "/v1/videos/\(up)", times: nil)
        #expect(s.readToEnd() && s.ended)
        #expect(s.events.last?.name == "video.failed")
        let all = String(decoding: s.body.bytes, as: UTF8.self)
        #expect(!all.contains(newKey), "\(all)")
    }

    /// Another team's video, an unknown id and hostile ids: the same 404, byte for byte (but the
    /// request id), whatever the team or the id's shape.
    @Test func anotherTeamsVideoAndHostileIDsLookUnknown() throws {
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 100_000 })
        defer { h.stop() }
        let id = try createVideo(h, prompt: "mine")
        func normalized(_ r: RawResponse) -> String {
            let headers = r.headers.filter { !["date", "x-request-id"].contains($0.0.lowercased()) }.map { "\($0.0.lowercased()): \($0.1)" }.sorted()
            return "\(r.status)\n\(headers.joined(separator: "\n"))\n\(String(decoding: r.body, as: UTF8.self))"
        }
        let reference = normalized(try h.get("/v1/videos/video_zz99999/events"))
        #expect(reference.hasPrefix("404"))
        let hostile = ["/v1/videos/\(id)/events?x=1", "/v1/videos/video_\(String(repeating: "a", count: 65))/events",
                       "/v1/videos/video_a%2F..%2Fb/events", "/v1/videos/video_%C3%A9t%C3%A9/events", "/v1/videos/vid%00eo_1/events",
                       "/v1/videos/video_\(String(repeating: "a", count: 6_000))/events", "/v1/videos/VIDEO_1/events",
                       "/v1/videos/%76ideo_1/events"]
        for team in ["mobile", "limited"] {
            #expect(normalized(try h.get("/v1/videos/\(id)/events", team: team)) == reference, "team \(team)")
        }
        for path in hostile.dropFirst() {
            let r = try h.get(path)
            #expect(normalized(r) == reference, "\(path.prefix(80)): \(r.status)")
        }
        #expect(h.runtime.gateway.watcher.subscriberCount == 0)
    }

    /// `?token=`: percent-encoded it works (and is never logged, encoded or not); with a header
    /// too, the header decides; empty is a 401; never on another route, even a HEAD.
    @Test func queryTokenEdgeCases() throws {
        let token = VeilHarness.teamTokens["web"]!
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 1 },
                                extraYAML: "cors:\n  allowed_origins: [\"https://app.example\"]\n  allow_query_token: true")
        defer { h.stop() }
        let id = try createVideo(h, prompt: "tokens")
        let encoded = token.utf8.map { String(format: "%%%02X", $0) }.joined()
        let s = try SSEClient(port: h.port, path: "/v1/videos/\(id)/events?token=\(encoded)", headers: [])
        #expect(s.status == 200)
        #expect(s.readToEnd())
        s.close()
        // A wrong header and a right query: the header decides.
        let both = try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/videos/\(id)/events?token=\(token)",
                                             headers: [("Authorization", "Bearer wrong")])
        #expect(both.status == 401)
        for q in ["token=", "token", "token=%20", "token=Bearer%20\(token)", "token=\(token)%00"] {
            #expect(try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/videos/\(id)/events?\(q)").status == 401, "\(q)")
        }
        #expect(try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/videos/\(id)/content?token=\(token)").status == 401)
        usleep(1_300_000)
        let lines = h.accessLog
        #expect(!lines.isEmpty)
        #expect(!lines.contains { $0.contains(token) || $0.contains(encoded) || $0.contains("token=") || $0.contains("%74%6F") }, "\(lines)")
    }

    /// A client that leaves while Veil is still looking the video up (a slow store) must not
    /// leave a subscription, a counted stream, or the team's only stream slot behind.
    @Test(.timeLimit(.minutes(1))) func aClientLeavingDuringTheLookupLeavesNothingBehind() throws {
        let store = try SlowStoreTests.SlowStore(delayMillis: 400)
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 100_000 }, teamsYAML: pushTeamsYAML(hookURL: nil),
                                videosYAML: ["poll_after_ms: 500"], backend: store)
        defer { h.stop() }
        let id = try createVideo(h, prompt: "gone early", team: "limited")
        for _ in 0..<3 {
            let fd = try RawHTTPClient.connect(port: h.port, timeoutMillis: 2_000)
            let req = "GET /v1/videos/\(id)/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(VeilHarness.teamTokens["limited"]!)\r\n\r\n"
            _ = RawHTTPClient.sendAll(fd, Array(req.utf8))
            usleep(100_000)
            close(fd)
        }
        usleep(1_500_000)
        #expect(h.runtime.gateway.watcher.subscriberCount == 0)
        #expect(h.runtime.gateway.metrics.eventStreams.load(ordering: .relaxed) == 0)
        let next = try SSEClient(port: h.port, path: "/v1/videos/\(id)/events", headers: h.auth("limited"))
        #expect(next.status == 200, "the team's one stream slot was freed")
        next.close()
    }

    /// Hundreds of clients connecting and hanging up at once (some after the head, some before):
    /// no subscription, stream count or slot is left.
    @Test(.timeLimit(.minutes(1))) func rapidConnectAndDisconnectLeaksNothing() throws {
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 100_000 }, videosYAML: ["poll_after_ms: 500"])
        defer { h.stop() }
        let id = try createVideo(h, prompt: "churn")
        let req = Array("GET /v1/videos/\(id)/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(VeilHarness.teamTokens["web"]!)\r\n\r\n".utf8)
        for i in 0..<300 {
            let fd = try RawHTTPClient.connect(port: h.port, timeoutMillis: 2_000)
            _ = RawHTTPClient.sendAll(fd, req)
            if i % 3 == 1 { var b = [UInt8](repeating: 0, count: 512); _ = recv(fd, &b, b.count, 0) }
            if i % 3 == 2 {
                var l = linger(l_onoff: 1, l_linger: 0)
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
            }
            close(fd)
        }
        #expect(waitUntil(5) { h.runtime.gateway.watcher.subscriberCount == 0 }, "\(h.runtime.gateway.watcher.subscriberCount) subscriptions left")
        #expect(waitUntil(5) { h.runtime.gateway.metrics.eventStreams.load(ordering: .relaxed) == 0 })
        #expect(waitUntil(5) { metric(h, "veil_video_event_streams") == 0 })
    }

    /// HEAD on the events route answers the head and ends: it holds no stream, and the next
    /// request on the same connection is answered.
    @Test(.timeLimit(.minutes(1))) func aHeadRequestHoldsNoStream() throws {
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 100_000 }, teamsYAML: pushTeamsYAML(hookURL: nil),
                                videosYAML: ["poll_after_ms: 500"])
        defer { h.stop() }
        let id = try createVideo(h, prompt: "heads", team: "limited")
        let r = try RawHTTPClient.request(port: h.port, method: "HEAD", path: "/v1/videos/\(id)/events", headers: h.auth("limited"))
        #expect(r.status == 200)
        #expect(waitUntil(3) { h.runtime.gateway.watcher.subscriberCount == 0 && h.runtime.gateway.metrics.eventStreams.load(ordering: .relaxed) == 0 })
        let s = try SSEClient(port: h.port, path: "/v1/videos/\(id)/events", headers: h.auth("limited"))
        #expect(s.status == 200, "the HEAD left the team's one slot free")
        s.close()
    }

    /// Receivers that redirect, answer a huge body, answer too late or hang: the redirect is
    /// never followed (a failed attempt, retried), a huge 2xx is one delivery, the late and the
    /// hung attempts end at `webhooks.timeout_ms` and are retried.
    @Test(.timeLimit(.minutes(1))) func hostileReceiversAreBoundedAndNeverFollowed() throws {
        let target = WebhookReceiver()
        try target.start()
        defer { target.stop() }
        let hostile = HostileReceiver(script: [.redirect(307, to: target.url), .redirect(302, to: target.url), .late(2_500, status: 200), .hang,
                                               .huge(8 * 1024 * 1024)], after: .status(200))
        try hostile.start()
        defer { hostile.stop() }
        let h = try VeilHarness(extraYAML: pushWebhooksYAML().replacingOccurrences(of: "timeout_ms: 3000", with: "timeout_ms: 1000"),
                                teamsYAML: pushTeamsYAML(hookURL: hostile.url), videosYAML: ["poll_after_ms: 200"], pollCacheMillis: 200)
        defer { h.stop() }
        _ = try createVideo(h, prompt: "hostile receiver")
        #expect(waitUntil(30) { deliveries(h).first?.status == .delivered }, "\(deliveries(h))")
        let d = deliveries(h).first
        #expect(d?.attempts == 5 && d?.lastStatus == 200, "\(String(describing: d))")
        #expect(target.received.isEmpty, "a redirect was followed")
        #expect(hostile.received.count == 5)
        #expect(metric(h, #"veil_webhook_failures_total{reason="status"}"#) == 2)
        #expect(metric(h, #"veil_webhook_failures_total{reason="timeout"}"#) == 2)
        usleep(800_000)
        #expect(hostile.received.count == 5, "nothing after the delivery")
    }

    /// HEAD on the events route over a kept-alive connection: the next request on the
    /// connection is answered at once (the HEAD's answer is complete with its head), and the
    /// HEAD holds no stream slot or subscription meanwhile.
    @Test(.timeLimit(.minutes(1))) func aHeadOnAKeptAliveConnectionDoesNotBlockTheNext() throws {
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 100_000 }, teamsYAML: pushTeamsYAML(hookURL: nil),
                                videosYAML: ["poll_after_ms: 500"])
        defer { h.stop() }
        let id = try createVideo(h, prompt: "heads again", team: "limited")
        let fd = try RawHTTPClient.connect(port: h.port, timeoutMillis: 2_000)
        defer { close(fd) }
        let auth = "Authorization: Bearer \(VeilHarness.teamTokens["limited"]!)\r\n"
        _ = RawHTTPClient.sendAll(fd, Array("HEAD /v1/videos/\(id)/events HTTP/1.1\r\nHost: x\r\n\(auth)\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        var got: [UInt8] = []
        let t0 = RawHTTPClient.nowMillis()
        while RawHTTPClient.nowMillis() - t0 < 2_500 {
            var b = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &b, b.count, 0)
            if n <= 0 { break }
            got += b[0..<n]
            if String(decoding: got, as: UTF8.self).components(separatedBy: "HTTP/1.1 200").count >= 3 { break }
        }
        let text = String(decoding: got, as: UTF8.self)
        #expect(text.components(separatedBy: "HTTP/1.1 200").count == 3, "the request after the HEAD was not answered: \(text)")
        #expect(h.runtime.gateway.watcher.subscriberCount == 0)
        #expect(h.runtime.gateway.metrics.eventStreams.load(ordering: .relaxed) == 0)
    }

    /// Veil starts draining while a stream's video is still being looked up: that stream ends
    /// at once too (like those already open), rather than holding the shutdown for its grace.
    @Test(.timeLimit(.minutes(1))) func aStreamStartingWhileDrainingEndsAtOnce() throws {
        let store = try SlowStoreTests.SlowStore(delayMillis: 500)
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 100_000 }, videosYAML: ["poll_after_ms: 500"], backend: store)
        defer { h.stop() }
        let id = try createVideo(h, prompt: "late to the party")
        let fd = try RawHTTPClient.connect(port: h.port, timeoutMillis: 3_000)
        defer { close(fd) }
        _ = RawHTTPClient.sendAll(fd, Array("GET /v1/videos/\(id)/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(VeilHarness.teamTokens["web"]!)\r\n\r\n".utf8))
        #expect(waitUntil(3) { store.slowCalls.load(ordering: .relaxed) >= 1 })
        h.runtime.server.beginDrain()
        h.runtime.gateway.beginDrain()
        let t0 = RawHTTPClient.nowMillis()
        var got: [UInt8] = []
        while RawHTTPClient.nowMillis() - t0 < 2_500 {
            var b = [UInt8](repeating: 0, count: 4096)
            let n = recv(fd, &b, b.count, 0)
            if n <= 0 { break }
            got += b[0..<n]
            if String(decoding: got, as: UTF8.self).contains("\r\n0\r\n\r\n") { break }
        }
        let text = String(decoding: got, as: UTF8.self)
        #expect(text.contains("\r\n0\r\n\r\n"), "the stream did not end after the drain began: \(text)")
        #expect(waitUntil(2) { h.runtime.gateway.watcher.subscriberCount == 0 })
    }

    /// A receiver that resets the connection (before any answer, then after a 2xx head): the
    /// first is a failed attempt, retried; the second counts by its status, delivered.
    @Test(.timeLimit(.minutes(1))) func aResettingReceiverIsRetriedAndA2xxHeadCounts() throws {
        let sock = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(sock, 16)
        var out = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &out) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(sock, $0, &len) } }
        let port = UInt16(bigEndian: out.sin_port)
        let accepted = Atomic<Int>(0)
        let server = Thread {
            while true {
                let c = accept(sock, nil, nil)
                if c < 0 { return }
                let n = accepted.add(1, ordering: .relaxed).newValue
                var buf = [UInt8](repeating: 0, count: 65_536)
                _ = recv(c, &buf, buf.count, 0)
                if n >= 2 { _ = RawHTTPClient.sendAll(c, Array("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".utf8)) }
                usleep(50_000)
                var l = linger(l_onoff: 1, l_linger: 0)
                setsockopt(c, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
                close(c)
            }
        }
        server.start()
        defer { shutdown(sock, Int32(SHUT_RDWR)); close(sock) }
        let h = try VeilHarness(extraYAML: pushWebhooksYAML(), teamsYAML: pushTeamsYAML(hookURL: "http://127.0.0.1:\(port)/hooks"),
                                videosYAML: ["poll_after_ms: 200"], pollCacheMillis: 200)
        defer { h.stop() }
        _ = try createVideo(h, prompt: "reset")
        #expect(waitUntil(15) { deliveries(h).first?.status == .delivered }, "\(deliveries(h))")
        #expect(deliveries(h).first?.attempts == 2 && deliveries(h).first?.lastStatus == 200)
        usleep(600_000)
        #expect(accepted.load(ordering: .relaxed) == 2)
    }

    /// 2xx answers whose body is huge without a declared length, or never ends: each is one
    /// delivery (the status decides), read no further than needed or `webhooks.timeout_ms`.
    @Test(.timeLimit(.minutes(1))) func endlessOrUnboundedTwoHundredsAreOneDeliveryEach() throws {
        let hostile = HostileReceiver(script: [.hugeChunked(16 * 1024 * 1024), .trickle], after: .status(500))
        try hostile.start()
        defer { hostile.stop() }
        let h = try VeilHarness(extraYAML: pushWebhooksYAML().replacingOccurrences(of: "timeout_ms: 3000", with: "timeout_ms: 1000"),
                                teamsYAML: pushTeamsYAML(hookURL: hostile.url), videosYAML: ["poll_after_ms: 200"], pollCacheMillis: 200)
        defer { h.stop() }
        _ = try createVideo(h, prompt: "chunked one")
        #expect(waitUntil(10) { deliveries(h).first?.status == .delivered }, "\(deliveries(h))")
        _ = try createVideo(h, prompt: "trickled one")
        #expect(waitUntil(10) { deliveries(h).count == 2 && deliveries(h).allSatisfy { $0.status == .delivered } }, "\(deliveries(h))")
        #expect(deliveries(h).allSatisfy { $0.attempts == 1 && $0.lastStatus == 200 })
        usleep(800_000)
        #expect(hostile.received.count == 2, "nothing after the deliveries")
    }

    /// A video deleted while streams listen: they end (properly), their subscriptions go.
    @Test(.timeLimit(.minutes(1))) func aVideoDeletedWhileStreamedEndsItsStreams() throws {
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 100_000 }, videosYAML: ["poll_after_ms: 300"])
        defer { h.stop() }
        let id = try createVideo(h, prompt: "short-lived")
        let s = try SSEClient(port: h.port, path: "/v1/videos/\(id)/events", headers: h.auth())
        defer { s.close() }
        #expect(s.read { $0.events.count >= 1 })
        #expect(try h.delete("/v1/videos/\(id)").status == 200)
        #expect(s.readToEnd() && s.ended)
        #expect(s.frames.comments.contains { $0.contains("deleted") })
        #expect(waitUntil(3) { h.runtime.gateway.watcher.subscriberCount == 0 && h.runtime.gateway.metrics.eventStreams.load(ordering: .relaxed) == 0 })
        #expect(try h.get("/v1/videos/\(id)/events").status == 404)
    }

    /// A stream outlives neither its token's expiry nor the token's removal by a reload: it ends
    /// within a heartbeat (a browser's query token leaks by design; revoking it must cut it off).
    @Test(.timeLimit(.minutes(1))) func aStreamEndsWhenItsTokenExpiresOrIsRevoked() throws {
        let token = VeilHarness.teamTokens["web"]!, other = VeilHarness.teamTokens["mobile"]!
        let expires = Int(time(nil)) + 3
        let teams = """
        teams:
          - name: web
            tokens:
              - sha256: "\(sha256Hex(token))"
                expires_at: \(expires)
          - name: mobile
            tokens_sha256: ["\(sha256Hex(other))"]
        """
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 100_000 }, teamsYAML: teams,
                                videosYAML: ["poll_after_ms: 500", "events_heartbeat_ms: 300"])
        defer { h.stop() }
        // Expiry.
        let id = try createVideo(h, prompt: "until the token expires")
        let s = try SSEClient(port: h.port, path: "/v1/videos/\(id)/events", headers: h.auth(), timeoutMillis: 8_000)
        defer { s.close() }
        #expect(s.status == 200)
        // Bounded reads: heartbeats keep a stream that never ends from timing out.
        func ended(_ c: SSEClient, within ms: UInt64) -> Bool {
            let t = RawHTTPClient.nowMillis()
            return c.read { $0.ended || $0.closedByPeer || RawHTTPClient.nowMillis() - t > ms } && c.ended
        }
        #expect(ended(s, within: 6_000), "the stream outlived its token's expiry")
        #expect(Int(time(nil)) <= expires + 2)
        #expect(s.frames.comments.contains { $0.contains("token") })
        // Revocation: the team's token is removed by a reload.
        let mine = try createVideo(h, prompt: "until the token is revoked", team: "mobile")
        let r = try SSEClient(port: h.port, path: "/v1/videos/\(mine)/events", headers: h.auth("mobile"), timeoutMillis: 8_000)
        defer { r.close() }
        #expect(r.read { $0.frames.comments.contains("keep-alive") })
        var cfg = h.runtime.config
        let i = try #require(cfg.teams.firstIndex { $0.name == "mobile" })
        cfg.teams[i].tokens = []
        let t0 = RawHTTPClient.nowMillis()
        h.runtime.reload(cfg)
        #expect(ended(r, within: 3_000), "the stream outlived its token's removal")
        #expect(RawHTTPClient.nowMillis() - t0 < 2_000)
        #expect(waitUntil(3) { h.runtime.gateway.watcher.subscriberCount == 0 && h.runtime.gateway.metrics.eventStreams.load(ordering: .relaxed) == 0 })
    }
}
