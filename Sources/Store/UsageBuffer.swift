import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Usage records waiting to be written, and the thread that writes them (PostgreSQL's; SQLite
/// keeps its own, older copy of the same logic in `SQLiteStore.Core`).
///
/// `append` (called on the event loops for every request) takes a short lock and returns: it never
/// waits for a write. The writer thread takes the whole buffer every `intervalMillis`, or within
/// 10 ms once `threshold` records wait, and hands it to `write`. A batch that fails (the database
/// unreachable) goes back in front of what arrived since and is retried at the next tick, so
/// records wait while the database is away and are written when it returns. The buffer is capped
/// at `cap` records: past it the oldest are dropped (and counted in `dropped`).
public final class UsageBuffer: Sendable {
    public let cap: Int
    let threshold: Int
    private let pending = Mutex<[UsageRecord]>([])
    private let stopping = Atomic<Bool>(false)
    private let droppedCount = Atomic<Int>(0)
    /// Serialises whole flushes (the writer thread, `flush()` from a reader, `close`) so batches
    /// are written in order.
    private let flushing = Mutex<Void>(())
    private let write: @Sendable ([UsageRecord]) throws -> Void
    private let thread = Mutex<pthread_t?>(nil)

    /// `write` writes one batch (one transaction) or throws.
    public init(cap: Int, threshold: Int = 256, intervalMillis: Int, write: @escaping @Sendable ([UsageRecord]) throws -> Void) {
        self.cap = max(1, cap)
        self.threshold = max(1, threshold)
        self.write = write
        if intervalMillis > 0 { start(intervalMillis: intervalMillis) }
    }

    /// Buffers one record (false once stopped: it would never be written).
    @discardableResult
    public func append(_ u: UsageRecord) -> Bool {
        guard !stopping.load(ordering: .acquiring) else { return false }
        pending.withLock { p in
            p.append(u)
            drop(&p)
        }
        return true
    }

    public var count: Int { pending.withLock { $0.count } }
    /// Records dropped because the buffer was full.
    public var dropped: Int { droppedCount.load(ordering: .relaxed) }

    /// Writes everything buffered now; on failure the records stay (in order) and the error is thrown.
    public func flush() throws {
        try flushing.withLock { _ in
            var batch = pending.withLock { p -> [UsageRecord] in
                var b: [UsageRecord] = []
                swap(&b, &p)         // O(1): no copy of a large backlog
                return b
            }
            guard !batch.isEmpty else { return }
            do {
                try write(batch)
            } catch {
                pending.withLock { p in
                    if !p.isEmpty { batch.append(contentsOf: p) }
                    swap(&batch, &p)
                    drop(&p)
                }
                throw error
            }
        }
    }

    /// Stops the writer thread after one last flush attempt (what can't be written is lost).
    public func close() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if let t = thread.withLock({ $0 }) { pthread_join(t, nil) }
        try? flush()
    }

    private func drop(_ p: inout [UsageRecord]) {
        guard p.count > cap else { return }
        let n = p.count - cap
        p.removeFirst(n)
        droppedCount.add(n, ordering: .relaxed)
    }

    private final class Context {
        let buffer: UsageBuffer
        let interval: Int
        init(_ b: UsageBuffer, _ i: Int) { buffer = b; interval = i }
    }

    private func start(intervalMillis: Int) {
        let context = Unmanaged.passRetained(Context(self, intervalMillis))
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let c = Unmanaged<Context>.fromOpaque(arg!).takeRetainedValue()
            c.buffer.run(intervalMillis: c.interval)
            return nil
        }, context.toOpaque())
        if rc == 0 { thread.withLock { $0 = t } } else { context.release() }
    }

    /// After a failed write, the next attempt waits at least this long (not the threshold's 10 ms).
    static let retryMillis = 500

    private func run(intervalMillis: Int) {
        let tick = min(intervalMillis, 10)       // checks `stopping` and the threshold this often
        var elapsed = 0
        var wait = intervalMillis
        while !stopping.load(ordering: .acquiring) {
            var ts = timespec(tv_sec: 0, tv_nsec: tick * 1_000_000)
            nanosleep(&ts, nil)
            elapsed += tick
            guard elapsed >= wait || (wait == intervalMillis && count >= threshold) else { continue }
            elapsed = 0
            do {
                try flush()
                wait = intervalMillis
            } catch {
                wait = max(intervalMillis, UsageBuffer.retryMillis)   // kept; retried later
            }
        }
    }
}
