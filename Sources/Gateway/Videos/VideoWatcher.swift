import Glibc
import Reactor
import Store
import Synchronization
import Translation

/// What a video's event stream hears from the watcher (on the stream's own loop).
enum VideoWatchUpdate {
    /// A newer state (status or progress changed); the last one a stream hears is final.
    case state(VideoObject)
    /// Nothing more will come: the video was deleted, or this replica is shutting down.
    case gone(reason: String)
}

/// Veil's own poller of unfinished videos (issue 16), one per process: every video created here,
/// every unfinished one found in the store at start (restart-safe) or left unpolled by a replica
/// that died, and every one an event stream listens to. Each video is polled on one loop (its
/// id's hash picks it), at `videos.poll_after_ms`, backing off as it ages (`interval`), until it
/// is final or `videos.watch_max_s` old (a listener keeps it watched past that).
///
/// Its polls are ordinary polls (`VideoPolling`): shared with callers' polls through the
/// coalescer and the store's poll claim, so however many watch, the deployment asks the upstream
/// about a video at most once per period. Every poll's outcome — whoever made it — is shown to
/// the watcher (`observe`): its own next poll waits a whole interval after the last answer, and
/// the video's event streams hear of every change.
///
/// State is one map under a mutex (entries are touched on the loops of their polls and of their
/// streams); timers and deliveries run on the loops. No store call, no upstream call, no wait
/// under the lock.
final class VideoWatcher: @unchecked Sendable {
    struct Subscriber: @unchecked Sendable {
        let id: UInt64
        let loop: EventLoop
        let deliver: (VideoWatchUpdate) -> Void
    }

    private struct Entry: @unchecked Sendable {
        /// The latest state known (the facts a poll needs; the `was` state of the next write).
        var record: VideoRecord
        /// The state last told to subscribers.
        var told: VideoObject?
        var subscribers: [Subscriber] = []
        /// Index of the loop its polls run on.
        let loop: Int
        /// Identifies this entry's timer chain (an id watched again starts a new one).
        let generation: UInt64
        /// Monotonic ms of the last answer about it (any poller of this replica); 0: none yet.
        var answeredAt: UInt64 = 0
    }

    private struct State: @unchecked Sendable {
        var entries: [String: Entry] = [:]
        var nextID: UInt64 = 0
        var draining = false
        var loops = 1
    }

    private let state = Mutex(State())
    /// Set once by the gateway's init; the gateway owns the watcher.
    weak var gateway: Gateway?

    /// Past this age an unfinished video is polled less often: `interval`.
    static let backoffStepSeconds = 60
    /// A video no replica polled for this many of its longest intervals is adopted by the rescan.
    static let takeoverIntervals = 3

    /// The shortest pause between two polls (`poll_after_ms: 0` must not make a busy loop).
    static let minIntervalMillis = 100

    /// The pause between two polls of a video `ageSeconds` old: `base` for its first minute, then
    /// `base · (1 + age / 60 s)`, at most `max` (and never below `base`, nor 100 ms). Pure.
    static func interval(ageSeconds: Int, base configured: Int, max maxMillis: Int) -> Int {
        let base = Swift.max(configured, minIntervalMillis)
        let steps = Swift.max(0, ageSeconds) / backoffStepSeconds
        let (scaled, overflow) = base.multipliedReportingOverflow(by: 1 + steps)
        return Swift.max(base, Swift.min(overflow ? maxMillis : scaled, Swift.max(maxMillis, base)))
    }

    /// FNV-1a of the id: the loop a video's polls run on (stable within the process).
    static func loopIndex(_ id: String, loops: Int) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in id.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Int(h % UInt64(Swift.max(1, loops)))
    }

    /// Videos watched now (metrics, tests).
    var count: Int { state.withLock { $0.entries.count } }

    /// Event streams listening now (tests).
    var subscriberCount: Int { state.withLock { s in s.entries.values.reduce(0) { $0 + $1.subscribers.count } } }

    // MARK: start, drain

    /// Starts watching what the store holds unfinished (restart-safe), then rescans now and then.
    /// Called once the loops run.
    func start() {
        guard let g = gateway, let ctx = g.contexts.first else { return }
        state.withLock { $0.loops = g.contexts.count }
        ctx.loop.execute { [self] in rescan(initial: true) }
    }

    static let drainingReason = "Veil is shutting down; reconnect"

    /// Shutting down: streams end (their clients reconnect elsewhere), polling stops.
    func drain() {
        let everyone: [Subscriber] = state.withLock { s in
            s.draining = true
            var all: [Subscriber] = []
            for (k, var e) in s.entries where !e.subscribers.isEmpty {
                all += e.subscribers
                e.subscribers = []
                s.entries[k] = e
            }
            return all
        }
        tell(everyone, .gone(reason: VideoWatcher.drainingReason))
    }

    private func rescan(initial: Bool) {
        guard let g = gateway, let ctx = g.contexts.first else { return }
        let cfg = ctx.snapshot.config.videos
        let (draining, room) = state.withLock { ($0.draining, cfg.watchMaxVideos - $0.entries.count) }
        if draining { return }
        guard cfg.watch, room > 0 else {
            ctx.loop.schedule(afterMillis: cfg.watchRescanMillis) { [self] in rescan(initial: false) }
            return
        }
        let since = Int(time(nil)) - cfg.watchMaxSeconds
        // At start every unfinished video; later only those no replica has polled for a while.
        let unpolled = initial ? 0 : VideoWatcher.takeoverIntervals * Swift.max(cfg.watchMaxIntervalMillis, cfg.pollCacheMillis)
        ctx.store({ db in try db.unfinishedVideos(createdSince: since, notPolledForMillis: unpolled, limit: room) }) { [self] result in
            switch result {
            case .success(let videos):
                // Spread over one interval, so a restart with many unfinished videos doesn't ask
                // the upstream about all of them at once.
                var rng = SystemRandomNumberGenerator()
                for v in videos { watch(v, firstPollWithinMillis: Swift.max(1, cfg.pollAfterMillis), rng: &rng) }
                if initial && !videos.isEmpty {
                    g.log.logger.info("watching unfinished videos from the store", metadata: ["videos": "\(videos.count)"])
                }
            case .failure(let e):
                g.log.logger.warning("store: cannot list unfinished videos to watch", metadata: ["error": "\(g.log.redact("\(e)"))"])
            }
            ctx.loop.schedule(afterMillis: cfg.watchRescanMillis) { [self] in rescan(initial: false) }
        }
    }

    // MARK: watching

    /// Watches `record` from now (a video just created: its first poll one `poll_after_ms` away).
    /// Finished videos, a full watch list, or `videos.watch: false` are ignored.
    func watch(_ record: VideoRecord) {
        var rng = SystemRandomNumberGenerator()
        watch(record, firstPollWithinMillis: nil, rng: &rng)
    }

    private func watch(_ record: VideoRecord, firstPollWithinMillis spread: Int?, rng: inout SystemRandomNumberGenerator) {
        guard let g = gateway, !g.contexts.isEmpty else { return }
        let cfg = g.contexts[0].snapshot.config.videos
        guard cfg.watch, !(VideoStatus(rawValue: record.status)?.isFinal ?? false) else { return }
        let added: (loop: Int, generation: UInt64)? = state.withLock { s in
            guard !s.draining, s.entries[record.id] == nil, s.entries.count < cfg.watchMaxVideos else { return nil }
            s.nextID += 1
            let e = Entry(record: record, loop: VideoWatcher.loopIndex(record.id, loops: s.loops), generation: s.nextID)
            s.entries[record.id] = e
            return (e.loop, e.generation)
        }
        guard let added else { return }
        let age = Int(time(nil)) - record.createdAt
        let first = spread.map { Int.random(in: 0...$0, using: &rng) }
            ?? VideoWatcher.interval(ageSeconds: age, base: cfg.pollAfterMillis, max: cfg.watchMaxIntervalMillis)
        schedule(record.id, added.generation, onLoop: added.loop, afterMillis: first)
    }

    /// Stops watching (the video was deleted); its streams end.
    func forget(_ id: String) {
        let gone: [Subscriber] = state.withLock { s in s.entries.removeValue(forKey: id)?.subscribers ?? [] }
        tell(gone, .gone(reason: "the video was deleted"))
    }

    /// An answer about video `id` from any poll of this replica (its own, a caller's, another
    /// replica's stored state). Subscribers hear of a changed status or progress; a final state or
    /// a 404 ends the watch.
    func observe(_ id: String, _ outcome: PollCoalescer.Outcome, now: UInt64) {
        var tellThem: [Subscriber] = []
        var update: VideoWatchUpdate?
        state.withLock { s in
            guard var e = s.entries[id] else { return }
            switch outcome {
            case .success(let o):
                e.answeredAt = now
                if e.told.map({ VideoWatcher.changed($0, o) }) ?? true {
                    e.told = o
                    update = .state(o)
                    tellThem = e.subscribers
                }
                e.record.apply(o, now: Int(time(nil)))
                s.entries[id] = o.status.isFinal ? nil : e
            case .failure(let err) where err.status == 404:
                s.entries[id] = nil
                update = .gone(reason: "the video no longer exists")
                tellThem = e.subscribers
            case .failure(let err):
                // The upstream was asked (and failed): that counts as this period's poll. A store
                // that can't answer does not: the next tick tries again on time.
                if err.code != "store_unavailable" && err.code != "store_failed" { e.answeredAt = now }
                s.entries[id] = e
            }
        }
        if let update { tell(tellThem, update) }
    }

    /// Whether a stream should hear about `new` after `old`: status, progress or error changed.
    static func changed(_ old: VideoObject, _ new: VideoObject) -> Bool {
        old.status != new.status || old.progress != new.progress || old.error != new.error
    }

    // MARK: subscribers (event streams)

    /// A stream starts listening to `record` (watched from now if it wasn't, whatever its age or
    /// `videos.watch`). Answers its token and the freshest state known, if newer than the store's.
    /// While draining it is not added: `deliver` hears `.gone` at once, before this returns.
    func subscribe(_ record: VideoRecord, loop: EventLoop, deliver: @escaping (VideoWatchUpdate) -> Void) -> (token: UInt64, latest: VideoObject?) {
        var toSchedule: (loop: Int, generation: UInt64)?
        let answer: (UInt64, VideoObject?)? = state.withLock { s in
            // Draining: `drain` has told every subscriber; one arriving later (its video was
            // still being looked up) would never hear of the end and hold the shutdown.
            if s.draining { return nil }
            s.nextID += 1
            let sub = Subscriber(id: s.nextID, loop: loop, deliver: deliver)
            if var e = s.entries[record.id] {
                e.subscribers.append(sub)
                s.entries[record.id] = e
                return (sub.id, e.told)
            }
            s.nextID += 1
            var e = Entry(record: record, loop: VideoWatcher.loopIndex(record.id, loops: s.loops), generation: s.nextID)
            e.subscribers = [sub]
            s.entries[record.id] = e
            if !s.draining { toSchedule = (e.loop, e.generation) }
            return (sub.id, nil)
        }
        guard let answer else {
            deliver(.gone(reason: VideoWatcher.drainingReason))
            return (0, nil)
        }
        // Nobody watched it: a first poll now (shared, as every poll).
        if let t = toSchedule { schedule(record.id, t.generation, onLoop: t.loop, afterMillis: 0) }
        return answer
    }

    func unsubscribe(_ id: String, token: UInt64) {
        state.withLock { s in
            guard var e = s.entries[id] else { return }
            e.subscribers.removeAll { $0.id == token }
            s.entries[id] = e
        }
    }

    private func tell(_ subscribers: [Subscriber], _ update: VideoWatchUpdate) {
        for sub in subscribers {
            let deliver = sub.deliver
            if sub.loop.inLoopThread { deliver(update) } else { sub.loop.execute(Unchecked { deliver(update) }.run) }
        }
    }

    // MARK: polling

    private func schedule(_ id: String, _ generation: UInt64, onLoop index: Int, afterMillis ms: Int) {
        guard let g = gateway, index < g.contexts.count else { return }
        let loop = g.contexts[index].loop
        let arm = Unchecked { [self] in
            loop.schedule(afterMillis: ms) { [self] in tick(id, generation, index) }
        }
        if loop.inLoopThread { arm.run() } else { loop.execute(arm.run) }
    }

    private enum Step { case stop, wait(Int), poll(VideoRecord) }

    /// One timer of a video's chain, on its loop: stop, wait for the rest of the interval (another
    /// poll answered lately), or poll.
    private func tick(_ id: String, _ generation: UInt64, _ index: Int) {
        guard let g = gateway else { return }
        let ctx = g.contexts[index]
        let cfg = ctx.snapshot.config.videos
        let nowUnix = Int(time(nil)), now = ctx.loop.now
        let step: Step = state.withLock { s in
            guard let e = s.entries[id], e.generation == generation, !s.draining else { return .stop }
            let age = nowUnix - e.record.createdAt
            if e.subscribers.isEmpty && (!cfg.watch || age >= cfg.watchMaxSeconds) {
                s.entries[id] = nil
                return .stop
            }
            let every = VideoWatcher.interval(ageSeconds: age, base: cfg.pollAfterMillis, max: cfg.watchMaxIntervalMillis)
            let since = now >= e.answeredAt ? Int(now - e.answeredAt) : 0
            if e.answeredAt != 0 && since < every { return .wait(every - since) }
            return .poll(e.record)
        }
        switch step {
        case .stop: return
        case .wait(let ms): schedule(id, generation, onLoop: index, afterMillis: ms)
        case .poll(let record):
            let requestID = Exchange.requestID(from: nil)
            VideoPolling.poll(ctx, g, record, requestID: requestID,
                              start: { hooks, done in DetachedFetch.run(ctx, hooks, then: done) }) { [self] _ in
                // The outcome was observed where the poll completed; the next tick decides.
                let every = state.withLock { s -> Int? in
                    guard let e = s.entries[id], e.generation == generation else { return nil }
                    return VideoWatcher.interval(ageSeconds: Int(time(nil)) - e.record.createdAt,
                                                 base: cfg.pollAfterMillis, max: cfg.watchMaxIntervalMillis)
                }
                if let every { schedule(id, generation, onLoop: index, afterMillis: every) }
            }
        }
    }
}

/// A closure handed to another loop exactly once (loop-confined state inside is only touched
/// there).
private struct Unchecked: @unchecked Sendable {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
    var run: @Sendable () -> Void { { body() } }
}
