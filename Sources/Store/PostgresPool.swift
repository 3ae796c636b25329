#if canImport(Glibc)
import Glibc
#endif

/// A few PostgreSQL connections shared by the store threads (and the usage writer), made on
/// demand and remade after a failure with back-off.
///
/// While the database is unreachable, the first call after each back-off period tries to connect
/// (bounded by `store.connect_timeout_ms` and its own deadline); every other call fails at once
/// with `StoreError.unavailable`. The period doubles from `backoffMinMillis` to
/// `backoffMaxMillis` and is reset by the first connection that succeeds: Veil recovers on its own
/// within `backoffMaxMillis` of the database's return.
final class PostgresPool: @unchecked Sendable {
    static let backoffMinMillis: UInt64 = 100
    static let backoffMaxMillis: UInt64 = 2_000

    let conninfo: String
    let capacity: Int
    let connectTimeoutMillis: Int
    let statementTimeoutMillis: Int

    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    // Under `mutex`:
    private var idle: [PostgresConnection] = []
    private var open = 0
    private var retryAt: UInt64 = 0
    private var backoff: UInt64 = 0
    private var lastFailure = ""
    private var closed = false

    init(conninfo: String, capacity: Int, connectTimeoutMillis: Int, statementTimeoutMillis: Int) {
        self.conninfo = conninfo
        self.capacity = max(1, capacity)
        self.connectTimeoutMillis = connectTimeoutMillis
        self.statementTimeoutMillis = statementTimeoutMillis
        pthread_mutex_init(&mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)    // deadlines are monotonic
        pthread_cond_init(&cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    /// Runs `body` with a connection; PostgreSQL errors come out as `StoreError`s (transient ones as
    /// `.unavailable`). A connection that failed is dropped, not returned to the pool.
    @discardableResult
    func with<R>(deadline: UInt64, _ body: (PostgresConnection) throws -> R) throws -> R {
        let c = try checkout(deadline: deadline)
        defer { checkin(c) }
        do {
            return try body(c)
        } catch let e as PostgresError {
            throw PostgresPool.map(e)
        }
    }

    static func map(_ e: PostgresError) -> StoreError {
        if e.isUnavailable { return .unavailable(e.description) }
        if e.sqlState == "23505" { return .conflict(e.message) }
        return .sql(e.description)
    }

    /// True while the pool is in a back-off period after a failed connection attempt.
    var isBackingOff: Bool {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return StoreClock.monotonicMillis() < retryAt
    }

    private func checkout(deadline: UInt64) throws -> PostgresConnection {
        pthread_mutex_lock(&mutex)
        while true {
            if closed {
                pthread_mutex_unlock(&mutex)
                throw StoreError.sql("store is closed")
            }
            if let c = idle.popLast() {
                pthread_mutex_unlock(&mutex)
                if c.isUsable() { return c }
                c.close()                   // the server went away meanwhile: make a new one
                pthread_mutex_lock(&mutex)
                open -= 1
                continue
            }
            let now = StoreClock.monotonicMillis()
            if open < capacity {
                if now < retryAt {
                    let message = "PostgreSQL is unreachable (\(lastFailure)); next attempt in \(retryAt - now) ms"
                    pthread_mutex_unlock(&mutex)
                    throw StoreError.unavailable(message)
                }
                open += 1
                pthread_mutex_unlock(&mutex)
                return try connect(now: now, deadline: deadline)
            }
            guard now < deadline else {
                pthread_mutex_unlock(&mutex)
                throw StoreError.unavailable("no PostgreSQL connection was free within store.timeout_ms")
            }
            var ts = timespec(tv_sec: Int(deadline / 1000), tv_nsec: Int(deadline % 1000) * 1_000_000)
            _ = pthread_cond_timedwait(&cond, &mutex, &ts)
        }
    }

    private func connect(now: UInt64, deadline: UInt64) throws -> PostgresConnection {
        let ownLimit = now + UInt64(connectTimeoutMillis)
        do {
            let c = try PostgresConnection(conninfo: conninfo, deadline: min(ownLimit, deadline), statementTimeoutMillis: statementTimeoutMillis)
            pthread_mutex_lock(&mutex)
            backoff = 0
            retryAt = 0
            pthread_mutex_unlock(&mutex)
            return c
        } catch {
            pthread_mutex_lock(&mutex)
            open -= 1
            // The call's own deadline cutting a slow connection short says nothing about the server.
            if !(error.kind == .timeout && deadline < ownLimit) {
                backoff = backoff == 0 ? PostgresPool.backoffMinMillis : min(backoff * 2, PostgresPool.backoffMaxMillis)
                retryAt = StoreClock.monotonicMillis() + backoff
                lastFailure = error.message
            }
            pthread_cond_broadcast(&cond)
            pthread_mutex_unlock(&mutex)
            throw StoreError.unavailable("cannot connect to PostgreSQL: \(error.message)")
        }
    }

    private func checkin(_ c: PostgresConnection) {
        pthread_mutex_lock(&mutex)
        if c.broken || closed {
            open -= 1
            pthread_cond_signal(&cond)
            pthread_mutex_unlock(&mutex)
            c.close()
            return
        }
        idle.append(c)
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
    }

    /// Closes the idle connections; those in use are closed when they come back.
    func close() {
        pthread_mutex_lock(&mutex)
        closed = true
        let all = idle
        idle = []
        open -= all.count
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
        for c in all { c.close() }
    }
}
