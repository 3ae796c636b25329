import Synchronization
import Testing
@testable import Store
#if canImport(Glibc)
import Glibc
#endif

// The contract of `CoordinationStore`, on both backends: what several replicas sharing one store
// rely on (video admission as one atomic reservation, poll claims, name claims, heartbeats).
// The concurrent tests open the store twice (two "replicas") and race threads through both.

private let now = 1_700_000_000
private let limits = VideoLimits(perDay: 3, inFlight: 2, inFlightMaxAgeSeconds: 3_600)

private func unfinished(_ n: Int, team: String = "team-a", createdAt: Int = now) -> VideoRecord {
    video(n, team: team, createdAt: createdAt)        // status "queued"
}

@Test(arguments: Backend.allCases) func reservationsCountForTheQuotaAndTheInFlightSlots(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        #expect(try store.reserveVideo(id: "r1", team: "team-a", limits: limits, now: now, expiresAt: now + 600) == .reserved(id: "r1"))
        #expect(try store.reserveVideo(id: "r2", team: "team-a", limits: limits, now: now, expiresAt: now + 600) == .reserved(id: "r2"))
        // Two in flight (both reservations): the third waits.
        #expect(try store.reserveVideo(id: "r3", team: "team-a", limits: limits, now: now, expiresAt: now + 600) == .overInFlight(count: 2))
        // Another team has its own counts.
        #expect(try store.reserveVideo(id: "b1", team: "team-b", limits: limits, now: now, expiresAt: now + 600) == .reserved(id: "b1"))

        // Confirmed: the video row replaces the reservation and is still in flight while unfinished.
        try store.confirmVideo(reservation: "r1", unfinished(1))
        #expect(try store.video(id: "video_1", team: "team-a") == unfinished(1))
        #expect(try store.reserveVideo(id: "r3", team: "team-a", limits: limits, now: now, expiresAt: now + 600) == .overInFlight(count: 2))

        // Finished: the slot is free; the daily count keeps it.
        var done = unfinished(1)
        done.status = "completed"
        try store.updateVideo(done)
        #expect(try store.reserveVideo(id: "r3", team: "team-a", limits: limits, now: now, expiresAt: now + 600) == .reserved(id: "r3"))
        // video_1 + r2 + r3 = 3 today: the quota is checked first.
        #expect(try store.reserveVideo(id: "r4", team: "team-a", limits: limits, now: now, expiresAt: now + 600) == .overDailyQuota(used: 3))

        // Released (the upstream refused): both counts go down.
        try store.releaseVideoReservation(id: "r3")
        try store.releaseVideoReservation(id: "unknown")          // ignored
        #expect(try store.reserveVideo(id: "r4", team: "team-a", limits: limits, now: now, expiresAt: now + 600) == .reserved(id: "r4"))

        // A day later only what is still unfinished counts; released/confirmed ids are gone.
        let tomorrow = now + 86_400 + 1
        #expect(try store.reserveVideo(id: "r5", team: "team-a", limits: VideoLimits(perDay: 1, inFlight: 10), now: tomorrow, expiresAt: tomorrow + 600)
                == .reserved(id: "r5"))
    }
}

@Test(arguments: Backend.allCases) func expiredReservationsDeletedAndOldVideosDoNotHoldSlots(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        let one = VideoLimits(perDay: nil, inFlight: 1, inFlightMaxAgeSeconds: 3_600)
        // A replica died between reserving and confirming: the reservation expires.
        #expect(try store.reserveVideo(id: "dead", team: "team-a", limits: one, now: now, expiresAt: now + 10) == .reserved(id: "dead"))
        #expect(try store.reserveVideo(id: "x", team: "team-a", limits: one, now: now + 9, expiresAt: now + 600) == .overInFlight(count: 1))
        #expect(try store.reserveVideo(id: "x", team: "team-a", limits: one, now: now + 10, expiresAt: now + 600) == .reserved(id: "x"))
        try store.releaseVideoReservation(id: "x")

        // A deleted unfinished video frees its slot (and still counts for the day).
        try store.confirmVideo(reservation: nil, unfinished(7))
        #expect(try store.reserveVideo(id: "y", team: "team-a", limits: one, now: now + 20, expiresAt: now + 600) == .overInFlight(count: 1))
        #expect(try store.deleteVideo(id: "video_7", team: "team-a"))
        #expect(try store.reserveVideo(id: "y", team: "team-a", limits: one, now: now + 20, expiresAt: now + 600) == .reserved(id: "y"))
        try store.releaseVideoReservation(id: "y")
        #expect(try store.reserveVideo(id: "z", team: "team-a", limits: VideoLimits(perDay: 1), now: now + 20, expiresAt: now + 600)
                == .overDailyQuota(used: 1))

        // An unfinished video nobody polled for longer than the maximum age stops counting.
        try store.confirmVideo(reservation: nil, unfinished(8, createdAt: now + 30))
        let later = now + 30 + 3_600
        #expect(try store.reserveVideo(id: "w", team: "team-a", limits: one, now: later - 1, expiresAt: later + 600) == .overInFlight(count: 1))
        #expect(try store.reserveVideo(id: "w", team: "team-a", limits: one, now: later + 1, expiresAt: later + 600) == .reserved(id: "w"))
    }
}

/// Two processes, four threads each, twenty attempts per thread against one slot budget: exactly
/// the budget is handed out.
@Test(arguments: Backend.allCases) func concurrentReservationsOnTwoStoresAreExact(_ backend: Backend) throws {
    try withStore(backend) { first, fixture in
        let second = try fixture.open()
        defer { second.close() }
        let stores: [any ContractStore] = [first, second]
        let granted = Atomic<Int>(0)
        let failures = Atomic<Int>(0)
        let budget = VideoLimits(perDay: 7, inFlight: 100)
        runThreads(8) { t in
            for i in 0..<20 {
                do {
                    if case .reserved = try stores[t % 2].reserveVideo(id: "r-\(t)-\(i)", team: "team-a", limits: budget, now: now, expiresAt: now + 600) {
                        granted.add(1, ordering: .relaxed)
                    }
                } catch {
                    failures.add(1, ordering: .relaxed)
                }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(granted.load(ordering: .relaxed) == 7)
    }
}

@Test(arguments: Backend.allCases) func pollClaimsAreGrantedOncePerPeriod(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        let v = unfinished(1)
        try store.insertVideo(v)
        #expect(try store.claimVideoPoll(id: v.id, periodMillis: 60_000) == .granted)
        // Somebody polled: the stored state, for as long as the period lasts.
        #expect(try store.claimVideoPoll(id: v.id, periodMillis: 60_000) == .taken(v))
        // The claim writes nothing else: the row is as it was.
        #expect(try store.video(id: v.id, team: "team-a") == v)
        // Period 0 (`poll_cache_ms: 0`): every poll may ask.
        #expect(try store.claimVideoPoll(id: v.id, periodMillis: 0) == .granted)
        // A short period runs out.
        #expect(try store.claimVideoPoll(id: v.id, periodMillis: 150) == .taken(v))
        usleep(250_000)
        #expect(try store.claimVideoPoll(id: v.id, periodMillis: 150) == .granted)
        // Unknown and deleted videos are never granted.
        #expect(try store.claimVideoPoll(id: "video_404", periodMillis: 0) == .taken(nil))
        #expect(try store.deleteVideo(id: v.id, team: "team-a"))
        #expect(try store.claimVideoPoll(id: v.id, periodMillis: 0) == .taken(nil))
    }
}

@Test(arguments: Backend.allCases) func concurrentPollClaimsOnTwoStoresGrantOne(_ backend: Backend) throws {
    try withStore(backend) { first, fixture in
        let second = try fixture.open()
        defer { second.close() }
        let stores: [any ContractStore] = [first, second]
        for n in 1...3 { try first.insertVideo(unfinished(n)) }
        let granted = Mutex<[String: Int]>([:])
        let failures = Atomic<Int>(0)
        runThreads(8) { t in
            for n in 1...3 {
                do {
                    if try stores[t % 2].claimVideoPoll(id: "video_\(n)", periodMillis: 60_000) == .granted {
                        granted.withLock { $0["video_\(n)", default: 0] += 1 }
                    }
                } catch {
                    failures.add(1, ordering: .relaxed)
                }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(granted.withLock { $0 } == ["video_1": 1, "video_2": 1, "video_3": 1])
    }
}

@Test(arguments: Backend.allCases) func characterNameClaims(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        #expect(try store.claimCharacterName("Alice", holder: "h1", ttlMillis: 60_000))
        #expect(try store.claimCharacterName("ALICE", holder: "h2", ttlMillis: 60_000) == false, "case-insensitive")
        #expect(try store.claimCharacterName("alice", holder: "h1", ttlMillis: 60_000), "the holder may renew")
        try store.releaseCharacterName("alice", holder: "h2", keepMillis: 0)             // not h2's: no effect
        #expect(try store.claimCharacterName("alice", holder: "h2", ttlMillis: 60_000) == false)
        try store.releaseCharacterName("ALICE", holder: "h1", keepMillis: 0)
        #expect(try store.claimCharacterName("alice", holder: "h2", ttlMillis: 60_000))

        // A live character's name can't be claimed; deleted, it can.
        try store.insertCharacter(character(1, name: "Émile"))
        #expect(try store.claimCharacterName("émile", holder: "h3", ttlMillis: 60_000) == false)
        #expect(try store.deleteCharacter(id: "char_1", team: "team-a"))
        #expect(try store.claimCharacterName("ÉMILE", holder: "h3", ttlMillis: 60_000))

        // A holder that never released (a replica killed): the claim runs out.
        #expect(try store.claimCharacterName("Zed", holder: "h4", ttlMillis: 150))
        #expect(try store.claimCharacterName("zed", holder: "h5", ttlMillis: 150) == false)
        usleep(250_000)
        #expect(try store.claimCharacterName("zed", holder: "h5", ttlMillis: 150))
    }
}

@Test(arguments: Backend.allCases) func heartbeatsListTheLiveReplicas(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        #expect(try store.heartbeat(replica: "b", ttlMillis: 60_000) == ["b"])
        #expect(try store.heartbeat(replica: "a", ttlMillis: 60_000) == ["a", "b"])
        #expect(try store.heartbeat(replica: "c", ttlMillis: 60_000) == ["a", "b", "c"])
        try store.leave(replica: "b")
        #expect(try store.heartbeat(replica: "a", ttlMillis: 60_000) == ["a", "c"])
        // A replica that stopped beating is gone after the ttl (and forgotten).
        usleep(250_000)
        #expect(try store.heartbeat(replica: "a", ttlMillis: 150) == ["a"])
        #expect(try store.heartbeat(replica: "a", ttlMillis: 60_000) == ["a"])
    }
}

/// Replicas racing to create one character: once a holder has claimed a name, no other claim is
/// granted — not even in the instant between the character's row landing and the claim being
/// given back (a PostgreSQL statement that began before the row's commit doesn't see it, but
/// does see the claim deleted).
@Test(arguments: Backend.allCases) func aRecordedNameIsNeverClaimedByARacingStore(_ backend: Backend) throws {
    try withStore(backend) { first, fixture in
        let second = try fixture.open()
        defer { second.close() }
        let stolen = Atomic<Int>(0)
        let failures = Atomic<Int>(0)
        for i in 1...150 {
            let name = "Twin\(i)"
            #expect(try first.claimCharacterName(name, holder: "a", ttlMillis: 60_000))
            let done = Atomic<Bool>(false)
            runThreads(4) { t in
                do {
                    if t == 0 {
                        try first.insertCharacter(character(i, name: name))
                        try first.releaseCharacterName(name, holder: "a", keepMillis: CharacterNameClaim.keepAfterRecordMillis)
                        usleep(2_000)
                        done.store(true, ordering: .relaxed)
                    } else {
                        while !done.load(ordering: .relaxed) {
                            if try second.claimCharacterName(name, holder: "b\(t)", ttlMillis: 60_000) { stolen.add(1, ordering: .relaxed); return }
                        }
                    }
                } catch {
                    failures.add(1, ordering: .relaxed)
                    done.store(true, ordering: .relaxed)
                }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(stolen.load(ordering: .relaxed) == 0, "a racing store claimed a name already recorded")
    }
}

/// Two processes admit, confirm, finish and release videos at once: at no moment are more videos
/// in flight (reservations plus unfinished videos) than `max_videos_in_flight`, and no more are
/// created in a day than `videos_per_day`. The test's own count is incremented after a grant and
/// decremented before the slot is freed, so it never runs ahead of the store's.
@Test(arguments: Backend.allCases) func admissionStaysExactWhileVideosAreConfirmedAndFinished(_ backend: Backend) throws {
    try withStore(backend) { first, fixture in
        let second = try fixture.open()
        defer { second.close() }
        let stores: [any ContractStore] = [first, second]
        let budget = VideoLimits(perDay: 120, inFlight: 3, inFlightMaxAgeSeconds: 3_600)
        let inFlight = Atomic<Int>(0), most = Atomic<Int>(0), created = Atomic<Int>(0), failures = Atomic<Int>(0)
        runThreads(8) { t in
            let store = stores[t % 2]
            for i in 0..<40 {
                do {
                    let id = "r-\(t)-\(i)"
                    guard case .reserved = try store.reserveVideo(id: id, team: "team-a", limits: budget, now: now, expiresAt: now + 600) else { continue }
                    let n = inFlight.add(1, ordering: .sequentiallyConsistent).newValue
                    _ = most.max(n, ordering: .sequentiallyConsistent)
                    if i % 4 == 3 {
                        inFlight.subtract(1, ordering: .sequentiallyConsistent)
                        try store.releaseVideoReservation(id: id)
                        continue
                    }
                    let v = unfinished(1_000 * t + i)
                    try store.confirmVideo(reservation: id, v)
                    created.add(1, ordering: .relaxed)
                    var done = v
                    done.status = "completed"
                    done.progress = 100
                    inFlight.subtract(1, ordering: .sequentiallyConsistent)
                    _ = try store.recordVideoState(done, event: nil)
                } catch {
                    failures.add(1, ordering: .relaxed)
                }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(most.load(ordering: .relaxed) <= 3, "more videos in flight than max_videos_in_flight")
        #expect(created.load(ordering: .relaxed) <= 120, "more videos created than videos_per_day")
        #expect(try first.reserveVideo(id: "last", team: "team-a", limits: budget, now: now, expiresAt: now + 600) != .reserved(id: "last")
                || created.load(ordering: .relaxed) < 120)
    }
}

/// When a poll claim's period or a name claim's time runs out, threads of two processes race to
/// take it over: exactly one does, every round (a round takes far less than the 100 ms claim).
@Test(arguments: Backend.allCases) func anExpiredPollOrNameClaimIsTakenOverOnce(_ backend: Backend) throws {
    try withStore(backend) { first, fixture in
        let second = try fixture.open()
        defer { second.close() }
        let stores: [any ContractStore] = [first, second]
        try first.insertVideo(unfinished(1))
        #expect(try first.claimVideoPoll(id: "video_1", periodMillis: 100) == .granted)
        #expect(try first.claimCharacterName("Solo", holder: "a", ttlMillis: 100))
        var rounds: [Int: Int] = [:]
        let failures = Atomic<Int>(0)
        for _ in 1...50 {
            usleep(110_000)                              // both claims have run out
            let polls = Atomic<Int>(0), names = Atomic<Int>(0)
            runThreads(6) { t in
                do {
                    if try stores[t % 2].claimVideoPoll(id: "video_1", periodMillis: 100) == .granted { polls.add(1, ordering: .relaxed) }
                    if try stores[t % 2].claimCharacterName("Solo", holder: "h\(t)", ttlMillis: 100) { names.add(1, ordering: .relaxed) }
                } catch {
                    failures.add(1, ordering: .relaxed)
                }
            }
            rounds[10 * polls.load(ordering: .relaxed) + names.load(ordering: .relaxed), default: 0] += 1
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(rounds == [11: 50], "rounds by (poll grants × 10 + name grants)")
    }
}
