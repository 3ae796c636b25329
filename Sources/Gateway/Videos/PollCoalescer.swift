import Reactor
import Synchronization
import Translation

/// Shares one upstream status call among every concurrent poll of the same video, across all
/// loops, and keeps the answer for `poll_cache_ms`: a fleet of frontends polling one job costs
/// one upstream request per cache period. The lock guards only this map (video polls, not the
/// chat hot path).
final class PollCoalescer: Sendable {
    typealias Outcome = Result<VideoObject, APIError>

    struct Waiter: @unchecked Sendable {
        let loop: EventLoop
        let deliver: (Outcome) -> Void
    }

    private enum Entry {
        case inFlight([Waiter])
        case cached(Outcome, at: UInt64)
    }

    enum Decision {
        /// Use this fresh answer now.
        case ready(Outcome)
        /// Another poll is fetching; the waiter will be called on its own loop.
        case wait
        /// Fetch it, then call `complete`.
        case fetch
    }

    private let entries = Mutex<[String: Entry]>([:])
    /// Entries past which stale cached answers are swept out (a bound on the map, not a limit on
    /// polling: in-flight entries are never dropped).
    static let pruneAbove = 50_000

    func join(_ key: String, cacheMillis: Int, now: UInt64, waiter: Waiter) -> Decision {
        entries.withLock { map in
            switch map[key] {
            case .cached(let outcome, let at)? where age(now, at) < UInt64(cacheMillis):
                return .ready(outcome)
            case .inFlight(var waiters)?:
                waiters.append(waiter)
                map[key] = .inFlight(waiters)
                return .wait
            default:
                if map.count > PollCoalescer.pruneAbove { prune(&map, now: now, cacheMillis: cacheMillis) }
                map[key] = .inFlight([waiter])
                return .fetch
            }
        }
    }

    /// Hands the outcome to every waiter (each on its own loop) and caches it.
    func complete(_ key: String, _ outcome: Outcome, now: UInt64, cache: Bool) {
        let waiters: [Waiter] = entries.withLock { map in
            guard case .inFlight(let w)? = map[key] else { return [] }
            if cache, case .success = outcome { map[key] = .cached(outcome, at: now) } else { map[key] = nil }
            return w
        }
        for w in waiters {
            if w.loop.inLoopThread { w.deliver(outcome) }
            else { w.loop.execute { w.deliver(outcome) } }
        }
    }

    /// Forgets a video (deleted, or finished and now answered from the store).
    func forget(_ key: String) {
        entries.withLock { map in
            if case .cached? = map[key] { map[key] = nil }
        }
    }

    /// `now - at`, 0 when `at` is later: entries are stamped with the completing loop's clock and
    /// read with another loop's, and each loop's `now` is cached per iteration, so `at` may be a
    /// millisecond or two "in the future" for the reader (a plain subtraction traps).
    private func age(_ now: UInt64, _ at: UInt64) -> UInt64 { now >= at ? now - at : 0 }

    private func prune(_ map: inout [String: Entry], now: UInt64, cacheMillis: Int) {
        for (k, v) in map {
            if case .cached(_, let at) = v, age(now, at) >= UInt64(cacheMillis) { map[k] = nil }
        }
    }
}
