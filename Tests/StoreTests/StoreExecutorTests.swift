import Glibc
import Store
import Synchronization
import Testing

/// The asynchronous seam: calls run on a store thread, in order, and their completions reach the
/// target the caller named, with failures mapped to `StoreError`.
@Suite struct StoreExecutorTests {
    /// Collects delivered work and runs it on the test's own thread, like a loop would.
    final class Inbox: StoreCompletionTarget, @unchecked Sendable {
        private let lock = Mutex<[@Sendable () -> Void]>([])
        func deliver(_ work: @escaping @Sendable () -> Void) { lock.withLock { $0.append(work) } }
        /// Runs what arrived until `n` items ran or the deadline.
        func run(until n: Int, seconds: Double = 5) -> Int {
            var ran = 0
            let deadline = Double(time(nil)) + seconds
            while ran < n && Double(time(nil)) <= deadline {
                let batch = lock.withLock { b -> [@Sendable () -> Void] in let x = b; b.removeAll(); return x }
                for w in batch { w(); ran += 1 }
                if batch.isEmpty { usleep(1_000) }
            }
            return ran
        }
    }

    @Test func callsRunOffTheCallerInOrderAndReportBack() throws {
        let executor = StoreExecutor(backend: try SQLiteStore(path: ":memory:"))
        defer { executor.shutdown() }
        let inbox = Inbox()
        let caller = pthread_self()
        let sawOtherThread = Atomic<Bool>(false)
        var results: [Int] = []
        for i in 0..<50 {
            executor.run(on: inbox, { db in
                if pthread_equal(pthread_self(), caller) == 0 { sawOtherThread.store(true, ordering: .relaxed) }
                try db.insertVideo(VideoRecord(id: "video_\(i)", upstreamID: "\(i)", team: "t", model: "m", prompt: "p", createdAt: i))
                return try db.countVideos(team: "t", since: 0)
            }) { r in results.append((try? r.get()) ?? -1) }
        }
        #expect(inbox.run(until: 50) == 50)
        #expect(results == Array(1...50))          // in order: each saw the inserts before it
        let offCaller = sawOtherThread.load(ordering: .relaxed)
        #expect(offCaller)
    }

    @Test func failuresArriveAsStoreErrors() throws {
        let executor = StoreExecutor(backend: try SQLiteStore(path: ":memory:"))
        defer { executor.shutdown() }
        let inbox = Inbox()
        var outcome: Result<Void, StoreError>?
        let c = CharacterRecord(id: "char_1", upstreamID: "1", team: "a", name: "Alice", description: "d", videoID: "video_1", start: 0, end: 1, createdAt: 1)
        executor.run(on: inbox, { db in try db.insertCharacter(c) }) { _ in }
        executor.run(on: inbox, { db in
            var again = c
            again.id = "char_2"
            try db.insertCharacter(again)                 // the same name: the unique index
        }) { outcome = $0 }
        #expect(inbox.run(until: 2) == 2)
        guard case .failure(.conflict)? = outcome else { Issue.record("expected a conflict, got \(String(describing: outcome))"); return }
    }

    @Test func shutdownRunsWhatIsQueuedThenStops() throws {
        let executor = StoreExecutor(backend: try SQLiteStore(path: ":memory:"))
        let inbox = Inbox()
        for _ in 0..<10 { executor.run(on: inbox, { db in try db.countVideos(team: "t", since: 0) }) { _ in } }
        executor.shutdown()
        #expect(executor.queuedCount == 0)
        #expect(inbox.run(until: 10, seconds: 1) == 10)
    }

    /// A call still queued at its deadline (`store.timeout_ms`) is answered `unavailable`
    /// without running; a running call sees its deadline in `StoreDeadline.current`.
    @Test func callsQueuedPastTheirDeadlineFailWithoutRunning() throws {
        let executor = StoreExecutor(backend: try SQLiteStore(path: ":memory:"), callTimeoutMillis: 150)
        defer { executor.shutdown() }
        let inbox = Inbox()
        let ranSecond = Atomic<Bool>(false)
        let sawDeadline = Atomic<Bool>(false)
        var first: Result<Int, StoreError>?
        var second: Result<Int, StoreError>?
        executor.run(on: inbox, { _ in
            if let d = StoreDeadline.current, d > StoreClock.monotonicMillis() { sawDeadline.store(true, ordering: .relaxed) }
            usleep(300_000)                     // longer than the second call's whole budget
            return 1
        }) { first = $0 }
        executor.run(on: inbox, { _ in ranSecond.store(true, ordering: .relaxed); return 2 }) { second = $0 }
        #expect(inbox.run(until: 2) == 2)
        #expect(try first?.get() == 1)
        guard case .failure(.unavailable)? = second else { Issue.record("expected unavailable, got \(String(describing: second))"); return }
        let secondRan = ranSecond.load(ordering: .relaxed), deadlineSeen = sawDeadline.load(ordering: .relaxed)
        #expect(secondRan == false)
        #expect(deadlineSeen)
        #expect(StoreDeadline.current == nil, "the test's own thread has no deadline")
    }
}
