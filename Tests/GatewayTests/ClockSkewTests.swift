import Reactor
import Testing
import Translation
@testable import Gateway

/// Regression (found by scripts/soak, issue: hardening): loop clocks are cached per iteration and
/// differ between loops, so "now" can be earlier than a timestamp taken elsewhere. Unsigned
/// subtractions trapped (`arithmetic overflow`) and took the whole process down.
@Suite struct ClockSkewTests {
    @Test func elapsedTimeNeverGoesNegative() {
        #expect(Exchange.millis(from: 1_000, to: 999) == 0)
        #expect(Exchange.millis(from: 1_000, to: 1_250) == 250)
    }

    @Test func aPollCachedByAnotherLoopSlightlyInTheFutureIsServedFromTheCache() {
        let c = PollCoalescer()
        let loop = EventLoop(id: 7)
        let video = VideoObject(id: "video_1", model: "sora-2", status: .inProgress, progress: 10, createdAt: 0)
        let w = PollCoalescer.Waiter(loop: loop, deliver: { _ in })
        guard case .fetch = c.join("video_1", cacheMillis: 1_000, now: 5_000, waiter: w) else { Issue.record("expected fetch"); return }
        // Loop A completes at its now = 5_002 ...
        c.complete("video_1", .success(video), now: 5_002, cache: true)
        // ... loop B, whose cached now is still 5_001, polls: fresh answer, no trap.
        guard case .ready(.success(let v)) = c.join("video_1", cacheMillis: 1_000, now: 5_001, waiter: w) else { Issue.record("expected the cached answer"); return }
        #expect(v.id == "video_1")
        // And after the cache period it is fetched again.
        guard case .fetch = c.join("video_1", cacheMillis: 1_000, now: 6_100, waiter: w) else { Issue.record("expected a new fetch"); return }
    }
}
