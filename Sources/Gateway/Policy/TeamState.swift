import Synchronization

/// A team's live counters on this replica, shared by every loop without locks (atomics only).
/// Survives SIGHUP: a reload hands the same object to the new snapshot when the team keeps its
/// name. (Videos in flight are counted in the store, for the whole deployment.)
public final class TeamState: Sendable {
    public let name: String
    let openStreams = Atomic<Int>(0)

    init(name: String) {
        self.name = name
    }

    /// Takes one slot if fewer than `max` are taken.
    static func acquire(_ counter: borrowing Atomic<Int>, max: Int) -> Bool {
        var current = counter.load(ordering: .relaxed)
        while current < max {
            let (exchanged, original) = counter.compareExchange(expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    static func release(_ counter: borrowing Atomic<Int>) {
        var current = counter.load(ordering: .relaxed)
        while current > 0 {
            let (exchanged, original) = counter.compareExchange(expected: current, desired: current - 1, ordering: .acquiringAndReleasing)
            if exchanged { return }
            current = original
        }
    }
}

/// A lock-free token bucket: one 64-bit word holds the last refill time (ms, 36 bits) and the
/// tokens (28 bits, fixed point scaled so a full bucket fits), updated by compare-and-swap.
final class TokenBucket: Sendable {
    let capacity: Int
    private let scale: UInt64
    private let refillUnitsPerMilli: Double
    private let word: Atomic<UInt64>
    private static let tokenBits: UInt64 = 28
    private static let tokenMask: UInt64 = (1 << 28) - 1

    init(capacity: Int, refillPerMillis: Double) {
        self.capacity = max(1, capacity)
        scale = max(1, TokenBucket.tokenMask / UInt64(self.capacity))
        refillUnitsPerMilli = refillPerMillis * Double(scale)
        let full = UInt64(self.capacity) * scale
        word = Atomic(full) // time 0: refilled lazily on first use
    }

    /// A bucket `fill` full (0...1) at `now`: a replica's share changing carries the level over
    /// instead of handing out a fresh full bucket.
    init(capacity: Int, refillPerMillis: Double, fill: Double, now: UInt64) {
        self.capacity = max(1, capacity)
        scale = max(1, TokenBucket.tokenMask / UInt64(self.capacity))
        refillUnitsPerMilli = refillPerMillis * Double(scale)
        let full = UInt64(self.capacity) * scale
        let tokens = UInt64((Double(full) * min(max(fill, 0), 1)).rounded(.down))
        word = Atomic(((now & ((1 << 36) - 1)) << TokenBucket.tokenBits) | tokens)
    }

    /// How full the bucket is at `now` (0...1), refill included, without taking a token.
    func fill(now: UInt64) -> Double {
        let w = word.load(ordering: .relaxed)
        let last = w >> TokenBucket.tokenBits
        var tokens = w & TokenBucket.tokenMask
        let full = UInt64(capacity) * scale
        let t = now & ((1 << 36) - 1)
        if t > last { tokens = min(full, tokens + UInt64((Double(t - last) * refillUnitsPerMilli).rounded())) }
        return Double(tokens) / Double(full)
    }

    struct Outcome { let allowed: Bool; let remaining: Int; let millisUntilOne: Int; let millisUntilFull: Int }

    /// Takes one token at `now` (monotonic ms).
    func take(now: UInt64) -> Outcome {
        let full = UInt64(capacity) * scale
        var old = word.load(ordering: .relaxed)
        while true {
            let last = old >> TokenBucket.tokenBits
            var tokens = old & TokenBucket.tokenMask
            // Never move the refill time backwards (a loop with an older `now` lost a race).
            let t = max(now & ((1 << 36) - 1), last)
            if t > last {
                let add = UInt64((Double(t - last) * refillUnitsPerMilli).rounded())
                tokens = min(full, tokens + add)
            }
            let allowed = tokens >= scale
            if allowed { tokens -= scale }
            let new = (t << TokenBucket.tokenBits) | tokens
            let (ok, current) = word.compareExchange(expected: old, desired: new, ordering: .acquiringAndReleasing)
            if ok {
                let missingForOne = allowed ? 0 : scale - tokens
                let untilOne = Int((Double(missingForOne) / refillUnitsPerMilli).rounded(.up))
                let untilFull = Int((Double(full - tokens) / refillUnitsPerMilli).rounded(.up))
                return Outcome(allowed: allowed, remaining: Int(tokens / scale), millisUntilOne: untilOne, millisUntilFull: untilFull)
            }
            old = current
        }
    }
}
