@testable import Gateway
import Reactor
import Testing
import Translation

/// Each loop has its own `now` (refreshed once per iteration); shared state stamped by one loop
/// may be read by another whose `now` is a millisecond behind. That must not trap.
@Test func pollCoalescerToleratesAReaderWhoseClockIsBehind() {
    let c = PollCoalescer()
    let loop = EventLoop()
    let w = PollCoalescer.Waiter(loop: loop, deliver: { _ in })
    #expect({ if case .fetch = c.join("v", cacheMillis: 1000, now: 5_001, waiter: w) { return true }; return false }())
    let object = VideoObject(id: "video_x", model: "sora-2", status: .completed, progress: 100, createdAt: 0)
    c.complete("v", .success(object), now: 5_001, cache: true)
    // Another loop, 1 ms behind the loop that cached the answer.
    #expect({ if case .ready = c.join("v", cacheMillis: 1000, now: 5_000, waiter: w) { return true }; return false }())
}
