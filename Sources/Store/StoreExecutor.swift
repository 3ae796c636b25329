#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Everything the gateway keeps, as one blocking backend (`SQLiteStore` or `PostgresStore`). A
/// backend's calls may block (disk, network): they run only on store threads, through `StoreExecutor`.
public typealias StoreBackend = VideoStore & CharacterStore & UsageStore & CoordinationStore & VideoWatchStore & WebhookStore

/// Where a store call's completion is delivered: the event loop that asked (`EventLoop` conforms
/// in the gateway). `deliver` is called from a store thread and must be thread-safe.
public protocol StoreCompletionTarget: AnyObject, Sendable {
    func deliver(_ work: @escaping @Sendable () -> Void)
}

/// The asynchronous store seam: a call runs on a store thread, its result comes back on the
/// caller's loop. No event loop ever waits for the store, whatever the backend does (a slow disk,
/// a networked database that is restarting).
///
/// Every call has a deadline (`callTimeoutMillis` after it was submitted, `store.timeout_ms`): a
/// call still queued at its deadline is answered `StoreError.unavailable` without running, and a
/// running call finds its deadline in `StoreDeadline.current`, which a networked backend bounds
/// every wait by. A backend that ignores it (SQLite on a stalled disk) is caught by the gateway's
/// own guard (`LoopContext.store`).
///
/// With one thread, calls run in the order they were submitted. `threads` > 1 (a connection
/// pool: PostgreSQL) runs them concurrently, in no particular order.
public final class StoreExecutor: Sendable {
    public let backend: any StoreBackend
    /// How long a call may take from submission to its answer (`store.timeout_ms`).
    public let callTimeoutMillis: Int
    private let queue: WorkQueue

    public init(backend: any StoreBackend, threads: Int = 1, name: String = "veil-store", callTimeoutMillis: Int = 3_000) {
        self.backend = backend
        self.callTimeoutMillis = max(1, callTimeoutMillis)
        queue = WorkQueue(threads: max(1, threads), name: name)
    }

    /// Runs `operation` on a store thread, then `completion` on `target` with its result.
    /// `completion` is handed over to the target's thread without being called anywhere else, so
    /// it may capture loop-confined state.
    public func run<T: Sendable>(on target: StoreCompletionTarget,
                                 _ operation: @escaping @Sendable (any StoreBackend) throws -> T,
                                 then completion: @escaping (Result<T, StoreError>) -> Void) {
        let done = LoopBound(completion)
        let backend = self.backend
        let deadline = StoreClock.monotonicMillis() + UInt64(callTimeoutMillis)
        queue.submit {
            let result: Result<T, StoreError>
            if StoreClock.monotonicMillis() >= deadline {
                result = .failure(.unavailable("the call waited for a store thread past store.timeout_ms"))
            } else {
                result = StoreDeadline.with(deadline) { StoreExecutor.perform(operation, backend) }
            }
            target.deliver { done.value(result) }
        }
    }

    /// Runs `operation` now on the calling thread (not an event loop: the command line, start-up)
    /// with the same deadline and error mapping as `run`.
    public func runHere<T>(_ operation: (any StoreBackend) throws -> T) -> Result<T, StoreError> {
        StoreDeadline.with(StoreClock.monotonicMillis() + UInt64(callTimeoutMillis)) { StoreExecutor.perform(operation, backend) }
    }

    private static func perform<T>(_ operation: (any StoreBackend) throws -> T, _ backend: any StoreBackend) -> Result<T, StoreError> {
        do { return .success(try operation(backend)) } catch let e as StoreError {
            return .failure(e)
        } catch {
            return .failure(.sql("\(error)"))
        }
    }

    /// Stops the threads once the work already queued has run (call when no loop submits any more).
    public func shutdown() { queue.shutdown() }

    /// Calls queued and not yet started (tests, metrics).
    public var queuedCount: Int { queue.queuedCount }
}

/// A value that only ever runs on the thread it is delivered to (a loop-confined completion):
/// handed across threads once, never shared.
private struct LoopBound<V>: @unchecked Sendable {
    let value: V
    init(_ v: V) { value = v }
}

/// A FIFO of blocks run by a few dedicated threads (a mutex and a condition variable; the store
/// is off the hot path, so nothing cleverer is needed).
final class WorkQueue: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var items: [@Sendable () -> Void] = []
    private var head = 0
    private var stopping = false
    private var threads: [pthread_t] = []

    init(threads count: Int, name: String) {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
        for _ in 0..<count {
            let box = Unmanaged.passRetained(self).toOpaque()
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { arg in
                let q = Unmanaged<WorkQueue>.fromOpaque(arg!).takeRetainedValue()
                q.work()
                return nil
            }, box)
            precondition(rc == 0, "pthread_create failed for \(name)")
            threads.append(tid)
        }
    }

    func submit(_ block: @escaping @Sendable () -> Void) {
        pthread_mutex_lock(&mutex)
        items.append(block)
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
    }

    var queuedCount: Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return items.count - head
    }

    private func work() {
        while true {
            pthread_mutex_lock(&mutex)
            while head == items.count && !stopping { pthread_cond_wait(&cond, &mutex) }
            if head == items.count {            // stopping, nothing left
                pthread_mutex_unlock(&mutex)
                return
            }
            let block = items[head]
            head += 1
            if head == items.count { items.removeAll(keepingCapacity: true); head = 0 }
            pthread_mutex_unlock(&mutex)
            block()
        }
    }

    func shutdown() {
        pthread_mutex_lock(&mutex)
        let already = stopping
        stopping = true
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&mutex)
        guard !already else { return }
        let me = pthread_self()
        for t in threads where pthread_equal(t, me) == 0 { pthread_join(t, nil) }
    }
}
