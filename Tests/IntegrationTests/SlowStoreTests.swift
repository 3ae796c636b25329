import Foundation
import Glibc
import Store
import Synchronization
import Testing

/// The store is off the event loops: with a store that takes seconds per call, the other
/// connections of the same loop are answered at once.
@Suite struct SlowStoreTests {
    /// A real store whose video reads take `delayMillis` (a disk stalling, a database restarting).
    final class SlowStore: StoreBackend, @unchecked Sendable {
        let inner: SQLiteStore
        let delayMillis: Int
        /// How long each write of a video's state takes (`updateVideo`, `recordVideoState`: a
        /// write stalled behind a lock).
        let updateDelayMillis: Int
        let slowCalls = Atomic<Int>(0)
        init(delayMillis: Int, updateDelayMillis: Int = 0) throws {
            inner = try SQLiteStore(path: ":memory:")
            self.delayMillis = delayMillis
            self.updateDelayMillis = updateDelayMillis
        }
        private func stall() { slowCalls.add(1, ordering: .relaxed); usleep(UInt32(delayMillis * 1000)) }
        func insertVideo(_ v: VideoRecord) throws { try inner.insertVideo(v) }
        func video(id: String, team: String) throws -> VideoRecord? { stall(); return try inner.video(id: id, team: team) }
        func videoAnyTeam(id: String) throws -> VideoRecord? { try inner.videoAnyTeam(id: id) }
        func updateVideo(_ v: VideoRecord) throws {
            if updateDelayMillis > 0 { usleep(UInt32(updateDelayMillis * 1000)) }
            try inner.updateVideo(v)
        }
        func listVideos(team: String, after: String?, limit: Int, descending: Bool) throws -> (items: [VideoRecord], hasMore: Bool) {
            stall()
            return try inner.listVideos(team: team, after: after, limit: limit, descending: descending)
        }
        func deleteVideo(id: String, team: String) throws -> Bool { try inner.deleteVideo(id: id, team: team) }
        func countVideos(team: String, since: Int) throws -> Int { try inner.countVideos(team: team, since: since) }
        func insertCharacter(_ c: CharacterRecord) throws { try inner.insertCharacter(c) }
        func character(id: String, team: String) throws -> CharacterRecord? { try inner.character(id: id, team: team) }
        func characters(team: String) throws -> [CharacterRecord] { try inner.characters(team: team) }
        func characterByName(_ name: String) throws -> CharacterRecord? { try inner.characterByName(name) }
        func updateCharacterStatuses(_ updates: [(id: String, status: String)]) throws { try inner.updateCharacterStatuses(updates) }
        func updateCharacters(_ updates: [CharacterUpdate]) throws { try inner.updateCharacters(updates) }
        func deleteCharacter(id: String, team: String) throws -> Bool { try inner.deleteCharacter(id: id, team: team) }
        func recordUsage(_ u: UsageRecord) throws { try inner.recordUsage(u) }
        func usageSummary(team: String?, since: Int) throws -> [UsageSummary] { try inner.usageSummary(team: team, since: since) }
        func reserveVideo(id: String, team: String, limits: VideoLimits, now: Int, expiresAt: Int) throws -> VideoReservation {
            try inner.reserveVideo(id: id, team: team, limits: limits, now: now, expiresAt: expiresAt)
        }
        func confirmVideo(reservation: String?, _ v: VideoRecord) throws { try inner.confirmVideo(reservation: reservation, v) }
        func releaseVideoReservation(id: String) throws { try inner.releaseVideoReservation(id: id) }
        func claimVideoPoll(id: String, periodMillis: Int) throws -> VideoPollClaim { try inner.claimVideoPoll(id: id, periodMillis: periodMillis) }
        func claimCharacterName(_ name: String, holder: String, ttlMillis: Int) throws -> Bool {
            try inner.claimCharacterName(name, holder: holder, ttlMillis: ttlMillis)
        }
        func releaseCharacterName(_ name: String, holder: String, keepMillis: Int) throws {
            try inner.releaseCharacterName(name, holder: holder, keepMillis: keepMillis)
        }
        func heartbeat(replica: String, ttlMillis: Int) throws -> [String] { try inner.heartbeat(replica: replica, ttlMillis: ttlMillis) }
        func leave(replica: String) throws { try inner.leave(replica: replica) }
        func recordVideoState(_ v: VideoRecord, event: WebhookDelivery?) throws -> Bool {
            if updateDelayMillis > 0 { usleep(UInt32(updateDelayMillis * 1000)) }
            return try inner.recordVideoState(v, event: event)
        }
        func unfinishedVideos(createdSince: Int, notPolledForMillis: Int, limit: Int) throws -> [VideoRecord] {
            try inner.unfinishedVideos(createdSince: createdSince, notPolledForMillis: notPolledForMillis, limit: limit)
        }
        func claimWebhookDeliveries(holder: String, limit: Int, perTeam: Int, skipTeams: [String], leaseMillis: Int) throws -> [WebhookDelivery] {
            try inner.claimWebhookDeliveries(holder: holder, limit: limit, perTeam: perTeam, skipTeams: skipTeams, leaseMillis: leaseMillis)
        }
        func settleWebhookDelivery(id: String, holder: String, _ outcome: WebhookAttemptOutcome) throws {
            try inner.settleWebhookDelivery(id: id, holder: holder, outcome)
        }
        func releaseWebhookClaims(holder: String) throws { try inner.releaseWebhookClaims(holder: holder) }
        func webhookDeliveries(status: WebhookDeliveryStatus?, limit: Int) throws -> [WebhookDelivery] {
            try inner.webhookDeliveries(status: status, limit: limit)
        }
        func replayWebhookDelivery(id: String, now: Int) throws -> WebhookReplay { try inner.replayWebhookDelivery(id: id, now: now) }
        func webhookOutboxCounts() throws -> WebhookOutboxCounts { try inner.webhookOutboxCounts() }
        func pruneWebhookDeliveries(deliveredBefore: Int) throws -> Int { try inner.pruneWebhookDeliveries(deliveredBefore: deliveredBefore) }
    }

    @Test func aSlowStoreDelaysNoOtherConnectionOnItsLoop() throws {
        let store = try SlowStore(delayMillis: 1_500)
        let h = try VeilHarness(workers: 1, backend: store)       // one loop: every connection shares it
        defer { h.stop() }
        let slowDone = Atomic<Int>(0)
        let t0 = RawHTTPClient.nowMillis()
        let slow = Thread {
            let r = try? h.get("/v1/videos")
            if r?.status == 200 { slowDone.store(Int(RawHTTPClient.nowMillis() - t0), ordering: .relaxed) }
        }
        slow.start()
        #expect(waitUntil(3) { store.slowCalls.load(ordering: .relaxed) == 1 })   // the store call is under way
        let t1 = RawHTTPClient.nowMillis()
        #expect(try RawHTTPClient.request(port: h.port, method: "GET", path: "/healthz").status == 200)
        let chat = try h.post("/v1/chat/completions", json: #"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
        #expect(chat.status == 200)
        let others = RawHTTPClient.nowMillis() - t1
        #expect(others < 1_000, "other connections waited \(others) ms for the store")
        #expect(waitUntil(5) { slowDone.load(ordering: .relaxed) > 0 })
        #expect(slowDone.load(ordering: .relaxed) >= 1_400, "the slow call answered after \(slowDone.load(ordering: .relaxed)) ms")
    }

    /// A store call that never comes back in time (here a stalled SQLite, which no deadline can
    /// interrupt) is answered 503 `store_unavailable` by the loop's own guard, within
    /// `store.timeout_ms` and its grace — not after the store's 1.5 s.
    @Test func aStoreCallPastTheTimeoutIsAnswered503() throws {
        let store = try SlowStore(delayMillis: 1_500)
        let h = try VeilHarness(workers: 1, storeYAML: ["timeout_ms: 300", "statement_timeout_ms: 200"], backend: store)
        defer { h.stop() }
        let t0 = RawHTTPClient.nowMillis()
        let r = try h.get("/v1/videos")
        let took = RawHTTPClient.nowMillis() - t0
        #expect(r.status == 503)
        #expect((jsonObject(r)["error"] as? [String: Any])?["code"] as? String == "store_unavailable")
        #expect(r.header("retry-after") == "1")
        #expect(took >= 250 && took < 1_200, "answered after \(took) ms")
        // The calls queued behind the stalled one are answered at their own deadline, unrun.
        let t1 = RawHTTPClient.nowMillis()
        #expect(try h.get("/v1/videos").status == 503)
        #expect(RawHTTPClient.nowMillis() - t1 < 1_200)
    }

    /// A state a caller has seen is in the store before the answer goes out: a video seen
    /// completed downloads at once, even when its row's write is slow and the read overtakes it
    /// on another store thread (as on a PostgreSQL pool, or on another replica). The bug: the
    /// write was not awaited and the download answered 400 `video_not_ready`.
    @Test func aVideoSeenCompletedDownloadsAtOnce() throws {
        let store = try SlowStore(delayMillis: 0, updateDelayMillis: 400)
        let h = try VeilHarness(workers: 1, backend: store, backendThreads: 2)
        defer { h.stop() }
        let created = try h.post("/v1/videos", json: #"{"prompt":"a lighthouse","model":"sora-2"}"#)
        #expect(created.status == 200, "\(created.text)")
        let id = try #require(jsonObject(created)["id"] as? String)
        var status = ""
        #expect(waitUntil(20) {
            status = (try? h.get("/v1/videos/\(id)")).flatMap { jsonObject($0)["status"] as? String } ?? ""
            return status == "completed"
        }, "last status \(status)")
        let content = try h.get("/v1/videos/\(id)/content")
        #expect(content.status == 200, "\(content.text.prefix(200))")
    }
}
