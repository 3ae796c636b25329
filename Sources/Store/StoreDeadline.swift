#if canImport(Glibc)
import Glibc
#endif

/// Clocks the store uses: a monotonic one for deadlines, the wall clock for times shared with
/// other processes (SQLite's leases; PostgreSQL uses the database's own clock for those).
public enum StoreClock {
    /// Monotonic milliseconds (CLOCK_MONOTONIC): per-call deadlines.
    public static func monotonicMillis() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    /// Unix time in milliseconds (CLOCK_REALTIME).
    public static func wallMillis() -> Int {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int(ts.tv_sec) * 1000 + Int(ts.tv_nsec) / 1_000_000
    }
}

/// The deadline of the store call running on this thread (a monotonic millisecond), set by
/// `StoreExecutor` around each call so a backend doing network I/O (PostgreSQL) bounds every
/// wait by it: connecting, waiting for a pooled connection, waiting for an answer. Kept in a
/// thread-specific slot (the value itself is the slot's pointer bits: no allocation per call).
public enum StoreDeadline {
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        precondition(pthread_key_create(&k, nil) == 0, "pthread_key_create failed")
        return k
    }()

    /// The deadline of the call running on this thread, if any.
    public static var current: UInt64? {
        guard let p = pthread_getspecific(key) else { return nil }
        return UInt64(UInt(bitPattern: p))
    }

    /// Runs `body` with `deadline` as this thread's current deadline (restoring the previous one).
    public static func with<R>(_ deadline: UInt64?, _ body: () throws -> R) rethrows -> R {
        let previous = pthread_getspecific(key)
        pthread_setspecific(key, deadline.flatMap { UnsafeRawPointer(bitPattern: UInt($0)) })
        defer { pthread_setspecific(key, previous) }
        return try body()
    }

    /// The current deadline, or `now + fallbackMillis` for calls made outside an executor
    /// (the command line, tests calling a backend directly).
    public static func current(orIn fallbackMillis: Int) -> UInt64 {
        current ?? StoreClock.monotonicMillis() + UInt64(max(0, fallbackMillis))
    }
}
