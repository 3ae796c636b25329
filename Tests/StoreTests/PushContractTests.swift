import Synchronization
import Testing
@testable import Store
#if canImport(Glibc)
import Glibc
#endif

// The contract of `VideoWatchStore` and `WebhookStore` (issue 16), on both backends: a final
// state and its webhook event commit together and once; the outbox's claims, leases, per-team
// fairness, retries, replays and pruning; what a starting replica finds to watch.

private let now = 1_700_000_000

private func event(_ n: Int, team: String = "team-a", video: String = "video_1", createdAt: Int = now) -> WebhookDelivery {
    WebhookDelivery(id: "evt_\(n)", team: team, type: "video.completed", videoID: video,
                    payload: #"{"id":"evt_\#(n)","object":"event"}"#, createdAt: createdAt)
}

private func finished(_ v: VideoRecord, _ status: String = "completed") -> VideoRecord {
    var d = v
    d.status = status
    d.progress = 100
    d.completedAt = now + 60
    d.updatedAt = now + 60
    return d
}

@Test(arguments: Backend.allCases) func aFinalStateAndItsEventCommitTogetherOnce(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        let v = video(1, createdAt: now)              // queued
        try store.insertVideo(v)
        var progressing = v
        progressing.status = "in_progress"
        progressing.progress = 40
        #expect(try store.recordVideoState(progressing, event: nil))
        #expect(try store.video(id: v.id, team: "team-a") == progressing)
        #expect(try store.webhookDeliveries(status: nil, limit: 10).isEmpty)

        // The end, with its event: both written.
        #expect(try store.recordVideoState(finished(v), event: event(1)))
        #expect(try store.video(id: v.id, team: "team-a") == finished(v))
        let all = try store.webhookDeliveries(status: nil, limit: 10)
        #expect(all.map(\.id) == ["evt_1"])
        #expect(all.first?.status == .pending && all.first?.attempts == 0 && all.first?.payload == event(1).payload)
        #expect(all.first?.retryFrom == now && all.first?.createdAt == now)

        // A second poller reaching the end (another replica, a late answer): nothing written, no
        // second event; a stale unfinished answer does not overwrite the end either.
        #expect(try store.recordVideoState(finished(v, "failed"), event: event(2)) == false)
        #expect(try store.recordVideoState(progressing, event: nil) == false)
        #expect(try store.video(id: v.id, team: "team-a") == finished(v))
        #expect(try store.webhookDeliveries(status: nil, limit: 10).map(\.id) == ["evt_1"])

        // Deleted, or another team's row: nothing.
        let w = video(2, createdAt: now)
        try store.insertVideo(w)
        #expect(try store.deleteVideo(id: w.id, team: "team-a"))
        #expect(try store.recordVideoState(finished(w), event: event(3)) == false)
        var foreign = video(4, team: "team-b", createdAt: now)
        try store.insertVideo(foreign)
        foreign.team = "team-a"
        #expect(try store.recordVideoState(finished(foreign), event: event(4)) == false)
        #expect(try store.webhookDeliveries(status: nil, limit: 10).map(\.id) == ["evt_1"])
        #expect(try store.webhookOutboxCounts() == WebhookOutboxCounts(pending: 1, failed: 0))
    }
}

/// Two processes race eight threads to record the end of the same videos: one event each.
@Test(arguments: Backend.allCases) func racingPollersRecordOneEventPerVideo(_ backend: Backend) throws {
    try withStore(backend) { first, fixture in
        let second = try fixture.open()
        defer { second.close() }
        let stores: [any ContractStore] = [first, second]
        for n in 1...4 { try first.insertVideo(video(n, createdAt: now)) }
        let wins = Atomic<Int>(0), failures = Atomic<Int>(0)
        runThreads(8) { t in
            for n in 1...4 {
                do {
                    if try stores[t % 2].recordVideoState(finished(video(n, createdAt: now)), event: event(100 * t + n, video: "video_\(n)")) {
                        wins.add(1, ordering: .relaxed)
                    }
                } catch { failures.add(1, ordering: .relaxed) }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(wins.load(ordering: .relaxed) == 4)
        let events = try first.webhookDeliveries(status: nil, limit: 100)
        #expect(events.count == 4 && Set(events.map(\.videoID)) == ["video_1", "video_2", "video_3", "video_4"])
    }
}

@Test(arguments: Backend.allCases) func claimsLeasesAndSettling(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        for n in 1...3 {
            let v = video(n, createdAt: now)
            try store.insertVideo(v)
            #expect(try store.recordVideoState(finished(v), event: event(n, video: v.id)))
        }
        // Claimed by one holder: nobody else gets them while the lease lasts.
        let claimed = try store.claimWebhookDeliveries(holder: "r1", limit: 2, perTeam: 10, skipTeams: [], leaseMillis: 60_000)
        #expect(claimed.map(\.id) == ["evt_1", "evt_2"])
        let rest = try store.claimWebhookDeliveries(holder: "r2", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000)
        #expect(rest.map(\.id) == ["evt_3"])
        #expect(try store.claimWebhookDeliveries(holder: "r2", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000).isEmpty)

        // Delivered (by anyone still pending: the truth is recorded even after a lost lease).
        try store.settleWebhookDelivery(id: "evt_1", holder: "r1", .delivered(status: 204))
        // A retry: not due until its time, its attempt counted, the error kept.
        try store.settleWebhookDelivery(id: "evt_2", holder: "r1", .retry(afterMillis: 200, status: 500, error: "HTTP 500"))
        // Another holder's claim is not settled by r1.
        try store.settleWebhookDelivery(id: "evt_3", holder: "r1", .failed(status: nil, error: "nope"))
        var byID = Dictionary(uniqueKeysWithValues: try store.webhookDeliveries(status: nil, limit: 10).map { ($0.id, $0) })
        #expect(byID["evt_1"]?.status == .delivered && byID["evt_1"]?.attempts == 1 && byID["evt_1"]?.lastStatus == 204)
        #expect(byID["evt_1"]?.deliveredAt != nil)
        #expect(byID["evt_2"]?.status == .pending && byID["evt_2"]?.attempts == 1 && byID["evt_2"]?.lastError == "HTTP 500")
        #expect(byID["evt_3"]?.status == .pending && byID["evt_3"]?.attempts == 0)
        #expect(try store.claimWebhookDeliveries(holder: "r1", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000).isEmpty)
        usleep(300_000)
        #expect(try store.claimWebhookDeliveries(holder: "r1", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000).map(\.id) == ["evt_2"])

        // Given up; released without an attempt; a stopping replica gives its claims back.
        try store.settleWebhookDelivery(id: "evt_2", holder: "r1", .failed(status: 503, error: "gave up"))
        try store.settleWebhookDelivery(id: "evt_3", holder: "r2", .released)
        byID = Dictionary(uniqueKeysWithValues: try store.webhookDeliveries(status: nil, limit: 10).map { ($0.id, $0) })
        #expect(byID["evt_2"]?.status == .failed && byID["evt_2"]?.attempts == 2 && byID["evt_2"]?.lastStatus == 503)
        #expect(byID["evt_3"]?.attempts == 0)
        #expect(try store.claimWebhookDeliveries(holder: "r3", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000).map(\.id) == ["evt_3"])
        try store.releaseWebhookClaims(holder: "r3")
        #expect(try store.claimWebhookDeliveries(holder: "r4", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 150).map(\.id) == ["evt_3"])
        // r4 died: its lease runs out.
        #expect(try store.claimWebhookDeliveries(holder: "r5", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000).isEmpty)
        usleep(250_000)
        #expect(try store.claimWebhookDeliveries(holder: "r5", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000).map(\.id) == ["evt_3"])

        #expect(try store.webhookOutboxCounts() == WebhookOutboxCounts(pending: 1, failed: 1))
        #expect(try store.webhookDeliveries(status: .failed, limit: 10).map(\.id) == ["evt_2"])
        #expect(try store.webhookDeliveries(status: .delivered, limit: 10).map(\.id) == ["evt_1"])
        #expect(try store.webhookDeliveries(status: nil, limit: 2).count == 2)

        // Replay: pending again, due now, the retry period restarted, the same id and body.
        #expect(try store.replayWebhookDelivery(id: "evt_2", now: now + 500) == .replayed)
        #expect(try store.replayWebhookDelivery(id: "evt_404", now: now + 500) == .unknown)
        let replayed = try store.claimWebhookDeliveries(holder: "r6", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000)
        #expect(replayed.map(\.id) == ["evt_2"])
        #expect(replayed.first?.retryFrom == now + 500 && replayed.first?.attempts == 2 && replayed.first?.payload == event(2).payload)

        // An attempt in flight (r5 holds evt_3, r6 evt_2) is left alone: never two holders.
        #expect(try store.replayWebhookDelivery(id: "evt_3", now: now + 600) == .inFlight)
        #expect(try store.replayWebhookDelivery(id: "evt_2", now: now + 600) == .inFlight)
        #expect(try store.claimWebhookDeliveries(holder: "r7", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000).isEmpty)
        // One waiting for its retry is sent now.
        try store.settleWebhookDelivery(id: "evt_3", holder: "r5", .retry(afterMillis: 600_000, status: 500, error: "HTTP 500"))
        #expect(try store.claimWebhookDeliveries(holder: "r7", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000).isEmpty, "not due for 10 minutes")
        #expect(try store.replayWebhookDelivery(id: "evt_3", now: now + 600) == .replayed)
        #expect(try store.claimWebhookDeliveries(holder: "r7", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000).map(\.id) == ["evt_3"])

        // Pruning takes delivered events older than the cut only.
        #expect(try store.pruneWebhookDeliveries(deliveredBefore: 0) == 0)
        #expect(try store.pruneWebhookDeliveries(deliveredBefore: Int(time(nil)) + 10) == 1)
        #expect(try store.webhookDeliveries(status: .delivered, limit: 10).isEmpty)
    }
}

/// One team's backlog can't fill a claim, and a team whose endpoint is busy here is skipped.
@Test(arguments: Backend.allCases) func claimsAreFairAmongTeams(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        var n = 0
        for team in ["team-a", "team-b", "team-c"] {
            for _ in 0..<(team == "team-a" ? 20 : 2) {
                n += 1
                let v = video(n, team: team, createdAt: now)
                try store.insertVideo(v)
                #expect(try store.recordVideoState(finished(v), event: event(n, team: team, video: v.id)))
            }
        }
        let batch = try store.claimWebhookDeliveries(holder: "r1", limit: 6, perTeam: 2, skipTeams: [], leaseMillis: 60_000)
        #expect(batch.count == 6)
        #expect(Dictionary(grouping: batch, by: \.team).mapValues(\.count) == ["team-a": 2, "team-b": 2, "team-c": 2])
        let next = try store.claimWebhookDeliveries(holder: "r1", limit: 10, perTeam: 4, skipTeams: ["team-a"], leaseMillis: 60_000)
        #expect(next.isEmpty, "team-a skipped, b and c all claimed")
        #expect(try store.claimWebhookDeliveries(holder: "r1", limit: 10, perTeam: 4, skipTeams: ["team-b"], leaseMillis: 60_000).map(\.team)
                == ["team-a", "team-a", "team-a", "team-a"])
    }
}

/// Two processes, eight threads claiming: every event is handed to exactly one holder.
@Test(arguments: Backend.allCases) func concurrentClaimsHandEachEventToOneHolder(_ backend: Backend) throws {
    try withStore(backend) { first, fixture in
        let second = try fixture.open()
        defer { second.close() }
        let stores: [any ContractStore] = [first, second]
        for n in 1...30 {
            let v = video(n, team: "team-\(n % 3)", createdAt: now)
            try first.insertVideo(v)
            _ = try first.recordVideoState(finished(v), event: event(n, team: v.team, video: v.id))
        }
        let seen = Mutex<[String: Int]>([:])
        let failures = Atomic<Int>(0)
        runThreads(8) { t in
            for _ in 0..<6 {
                do {
                    for d in try stores[t % 2].claimWebhookDeliveries(holder: "h\(t)", limit: 3, perTeam: 2, skipTeams: [], leaseMillis: 60_000) {
                        seen.withLock { $0[d.id, default: 0] += 1 }
                    }
                } catch { failures.add(1, ordering: .relaxed) }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        let counts = seen.withLock { $0 }
        #expect(counts.count == 30)
        #expect(counts.values.allSatisfy { $0 == 1 })
    }
}

@Test(arguments: Backend.allCases) func unfinishedVideosForTheWatcher(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        try store.insertVideo(video(1, createdAt: now - 10_000))          // too old to watch
        try store.insertVideo(video(2, createdAt: now))
        try store.insertVideo(video(3, team: "team-b", createdAt: now + 5))
        try store.insertVideo(finished(video(4, createdAt: now)))
        try store.insertVideo(video(5, createdAt: now))
        #expect(try store.deleteVideo(id: "video_5", team: "team-a"))
        #expect(try store.unfinishedVideos(createdSince: now - 100, notPolledForMillis: 0, limit: 10).map(\.id) == ["video_2", "video_3"])
        #expect(try store.unfinishedVideos(createdSince: now - 100, notPolledForMillis: 0, limit: 1).map(\.id) == ["video_2"])
        // Polled just now (by some replica): not adopted by a rescan that looks for unpolled ones.
        #expect(try store.claimVideoPoll(id: "video_2", periodMillis: 1_000) == .granted)
        #expect(try store.unfinishedVideos(createdSince: now - 100, notPolledForMillis: 60_000, limit: 10).map(\.id) == ["video_3"])
        usleep(250_000)
        #expect(try store.unfinishedVideos(createdSince: now - 100, notPolledForMillis: 150, limit: 10).map(\.id) == ["video_2", "video_3"])
    }
}

/// The outbox survives reopening (a restart): pending events are still there to claim.
@Test(arguments: Backend.allCases) func theOutboxSurvivesAReopen(_ backend: Backend) throws {
    try withStore(backend) { store, fixture in
        let v = video(1, createdAt: now)
        try store.insertVideo(v)
        #expect(try store.recordVideoState(finished(v), event: event(1)))
        _ = try store.claimWebhookDeliveries(holder: "dying", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000)
        try store.releaseWebhookClaims(holder: "dying")
        let again = try fixture.open()
        defer { again.close() }
        #expect(try again.claimWebhookDeliveries(holder: "next", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000).map(\.id) == ["evt_1"])
    }
}

/// A holder whose lease ran out settles a retry while another replica's claim is under way: the
/// claim either came first (the late settle is ignored) or sees the retry and leaves the event
/// alone until it is due — never both (a PostgreSQL claim that chose the row from a snapshot
/// taken before the settle's commit must not take it once the settle has pushed it out).
@Test(arguments: Backend.allCases) func aRetriedDeliveryIsNotClaimedBeforeItIsDue(_ backend: Backend) throws {
    try withStore(backend) { first, fixture in
        let second = try fixture.open()
        defer { second.close() }
        let early = Atomic<Int>(0), failures = Atomic<Int>(0)
        for i in 1...150 {
            let v = video(i, createdAt: now)
            try first.insertVideo(v)
            #expect(try first.recordVideoState(finished(v), event: event(i, video: v.id)))
            let id = "evt_\(i)"
            #expect(try first.claimWebhookDeliveries(holder: "a", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 1).map(\.id).contains(id))
            usleep(3_000)                                   // a's lease has run out
            let done = Atomic<Bool>(false)
            runThreads(4) { t in
                do {
                    if t == 0 {
                        try first.settleWebhookDelivery(id: id, holder: "a", .retry(afterMillis: 600_000, status: 500, error: "HTTP 500"))
                        usleep(2_000)
                        done.store(true, ordering: .relaxed)
                    } else {
                        while !done.load(ordering: .relaxed) {
                            let got = try second.claimWebhookDeliveries(holder: "b\(t)", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000)
                            if let d = got.first(where: { $0.id == id }) {
                                if d.attempts > 0 { early.add(1, ordering: .relaxed) }
                                return
                            }
                        }
                    }
                } catch {
                    failures.add(1, ordering: .relaxed)
                    done.store(true, ordering: .relaxed)
                }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(early.load(ordering: .relaxed) == 0, "a delivery retried 10 minutes out was claimed at once")
    }
}

/// A holder whose lease ran out settles (a retry, a give-up or a release) while another replica
/// takes the event over: once the new holder has it, the old holder's settle changes nothing, so
/// the new holder's own settle is what the outbox records.
@Test(arguments: Backend.allCases) func aLateSettleNeverClobbersTheNewHolder(_ backend: Backend) throws {
    try withStore(backend) { first, fixture in
        let second = try fixture.open()
        defer { second.close() }
        let clobbered = Atomic<Int>(0), takeovers = Atomic<Int>(0), failures = Atomic<Int>(0)
        let outcomes: [WebhookAttemptOutcome] = [.retry(afterMillis: 0, status: 500, error: "old"), .failed(status: 500, error: "old"), .released]
        for i in 1...150 {
            let v = video(i, createdAt: now)
            try first.insertVideo(v)
            #expect(try first.recordVideoState(finished(v), event: event(i, video: v.id)))
            let id = "evt_\(i)"
            #expect(try first.claimWebhookDeliveries(holder: "a", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 1).map(\.id).contains(id))
            usleep(3_000)                                   // a's lease has run out (an earlier round's event released
                                                            // late and not taken over may come along: only \(id) is raced)
            let done = Atomic<Bool>(false)
            let holder = Mutex<String?>(nil)
            runThreads(4) { t in
                do {
                    if t == 0 {
                        try first.settleWebhookDelivery(id: id, holder: "a", outcomes[i % outcomes.count])
                        usleep(2_000)
                        done.store(true, ordering: .relaxed)
                    } else {
                        while !done.load(ordering: .relaxed) {
                            let got = try second.claimWebhookDeliveries(holder: "b\(t)", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 60_000)
                            if got.contains(where: { $0.id == id }) { holder.withLock { $0 = "b\(t)" }; return }
                        }
                    }
                } catch {
                    failures.add(1, ordering: .relaxed)
                    done.store(true, ordering: .relaxed)
                }
            }
            guard let b = holder.withLock({ $0 }) else { continue }
            takeovers.add(1, ordering: .relaxed)
            try second.settleWebhookDelivery(id: id, holder: b, .failed(status: 410, error: "new"))
            let stored = try first.webhookDeliveries(status: nil, limit: 1_000).first { $0.id == id }
            if stored?.status != .failed || stored?.lastError != "new" { clobbered.add(1, ordering: .relaxed) }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(takeovers.load(ordering: .relaxed) > 0)
        #expect(clobbered.load(ordering: .relaxed) == 0, "an old holder's settle undid the new holder's claim")
    }
}

/// A delivery whose lease ran out is taken over by exactly one of the threads of two processes
/// racing for it, every round (a round takes far less than the 100 ms lease).
@Test(arguments: Backend.allCases) func anExpiredLeaseIsTakenOverByOneHolder(_ backend: Backend) throws {
    try withStore(backend) { first, fixture in
        let second = try fixture.open()
        defer { second.close() }
        let stores: [any ContractStore] = [first, second]
        let v = video(1, createdAt: now)
        try first.insertVideo(v)
        #expect(try first.recordVideoState(finished(v), event: event(1, video: v.id)))
        #expect(try first.claimWebhookDeliveries(holder: "a", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 100).map(\.id) == ["evt_1"])
        var rounds: [Int: Int] = [:]
        let failures = Atomic<Int>(0)
        for _ in 1...50 {
            usleep(110_000)                              // the lease has run out
            let holders = Atomic<Int>(0)
            runThreads(6) { t in
                do {
                    let got = try stores[t % 2].claimWebhookDeliveries(holder: "h\(t)", limit: 10, perTeam: 10, skipTeams: [], leaseMillis: 100)
                    holders.add(got.count, ordering: .relaxed)
                } catch {
                    failures.add(1, ordering: .relaxed)
                }
            }
            rounds[holders.load(ordering: .relaxed), default: 0] += 1
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(rounds == [1: 50], "rounds by the number of holders")
    }
}
