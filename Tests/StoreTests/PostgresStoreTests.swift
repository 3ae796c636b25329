import PostgresTestSupport
import Synchronization
import Testing
@testable import Store
#if canImport(Glibc)
import Glibc
#endif

// PostgreSQL only: what a networked database adds to the contract — its schema's migrations, the
// URL in logs, COPY's encoding, and faults (the server stopped, restarted, returning).

@Suite struct PostgresPureTests {
    @Test(arguments: [
        ("postgres://veil:s3cret@db:5432/veil", "postgres://veil:***@db:5432/veil"),
        ("postgresql://veil@db/veil?sslmode=require", "postgresql://veil@db/veil?sslmode=require"),
        ("postgres://u:p%40ss@h/d?password=zz&sslmode=require", "postgres://u:***@h/d?password=***&sslmode=require"),
        ("postgres://h/d?sslmode=verify-full&password=zz", "postgres://h/d?sslmode=verify-full&password=***"),
        ("postgres://u:pw@[::1]:5432/d", "postgres://u:***@[::1]:5432/d"),
        ("postgres://h/d?application_name=x:y@z", "postgres://h/d?application_name=x:y@z"),
        ("postgres://h/d?mypassword=1", "postgres://h/d?mypassword=1"),
    ])
    func urlsAreRedacted(_ url: String, _ shown: String) {
        #expect(StoreURL.redacted(url) == shown)
    }

    @Test func onlyPostgresURIsArePostgres() {
        #expect(StoreURL.isPostgres("postgres://h/d"))
        #expect(StoreURL.isPostgres("postgresql://h/d"))
        #expect(!StoreURL.isPostgres("host=h dbname=d"))
        #expect(!StoreURL.isPostgres("/var/lib/veil/veil.sqlite3"))
    }

    @Test func copyTextFormatEscapes() {
        let rows: [[String?]] = [["1", "a\tb", nil, "x\\y"], ["line\nnext\r", "", "N", "é"]]
        #expect(String(decoding: PostgresCopy.encode(rows), as: UTF8.self)
                == "1\ta\\tb\t\\N\tx\\\\y\nline\\nnext\\r\t\tN\té\n")
        #expect(PostgresCopy.encode([]).isEmpty)
    }

    @Test(arguments: [("08006", true), ("08001", true), ("57P01", true), ("57P03", true), ("53300", true), ("57014", true),
                      ("25006", true), ("23505", false), ("42P01", false), ("40001", false)])
    func transientStates(_ state: String, _ transient: Bool) {
        #expect(PostgresError.isTransient(sqlState: state) == transient)
        #expect(PostgresError(.server, "x", sqlState: state).isUnavailable == transient)
    }
}

@Suite struct PostgresStoreTests {
    /// Without PostgreSQL's programs a test that needs them fails, and says what to install.
    @Test func aMissingServerFailsWithWhatToInstall() {
        #expect {
            _ = try PostgresCluster(binaries: "/nonexistent/postgresql/bin")
        } throws: { e in
            guard let e = e as? PostgresCluster.PostgresMissing else { return false }
            return e.description.contains("apt-get install postgresql") && e.description.contains("fails")
        }
    }

    @Test func replicasStartingTogetherMigrateOnce() throws {
        let url = try PostgresCluster.shared().createDatabase()
        let opened = Atomic<Int>(0)
        let errors = Mutex<[String]>([])
        runThreads(6) { _ in
            do {
                let s = try PostgresStore(settings: PostgresSettings(url: url))
                s.close()
                opened.add(1, ordering: .relaxed)
            } catch {
                errors.withLock { $0.append("\(error)") }
            }
        }
        #expect(errors.withLock { $0 } == [])
        #expect(opened.load(ordering: .relaxed) == 6)
        let c = try PostgresConnection(conninfo: url, deadline: StoreClock.monotonicMillis() + 5_000, statementTimeoutMillis: 0)
        defer { c.close() }
        let rows = try c.query("SELECT version FROM veil_migrations ORDER BY version", deadline: StoreClock.monotonicMillis() + 5_000)
        #expect(rows.rows.map { $0[0] } == (1...PostgresSchema.version).map { String($0) })
    }

    @Test func aNewerSchemaIsRefusedAndANotMigratedOneTooWithoutMigrate() throws {
        let url = try PostgresCluster.shared().createDatabase()
        // Without migrating, an empty database is not current.
        #expect {
            _ = try PostgresStore(settings: PostgresSettings(url: url), migrate: false)
        } throws: { e in
            guard case StoreError.open(_, let message) = e else { return false }
            return message.contains("version 0") && message.contains("veil migrate")
        }
        try PostgresStore(settings: PostgresSettings(url: url)).close()
        let c = try PostgresConnection(conninfo: url, deadline: StoreClock.monotonicMillis() + 5_000, statementTimeoutMillis: 0)
        defer { c.close() }
        try c.execute("INSERT INTO veil_migrations (version) VALUES (999)", deadline: StoreClock.monotonicMillis() + 5_000)
        #expect {
            _ = try PostgresStore(settings: PostgresSettings(url: url))
        } throws: { e in
            guard case StoreError.open(_, let message) = e else { return false }
            return message.contains("newer")
        }
    }

    @Test func anUnreachableServerIsAnOpenErrorWithoutThePassword() throws {
        var s = PostgresSettings(url: "postgres://veil:hunter2@127.0.0.1:\(PostgresCluster.freePort())/veil")
        s.connectTimeoutMillis = 500
        let t0 = StoreClock.monotonicMillis()
        #expect {
            _ = try PostgresStore(settings: s)
        } throws: { e in
            guard case StoreError.open(let label, _) = e else { return false }
            return label.contains("***") && !"\(e)".contains("hunter2")
        }
        #expect(StoreClock.monotonicMillis() - t0 < 2_000)
    }

    /// The server stops (a restart, a fail-over): calls answer `unavailable` within their
    /// deadline, usage waits in the buffer; the server returns: the store recovers by itself and
    /// the waiting usage is written.
    @Test func aStoppedServerIsUnavailableFastAndTheStoreRecovers() throws {
        let cluster = try PostgresCluster()              // its own: this test stops it
        defer { cluster.destroy() }
        let url = try cluster.createDatabase()
        var settings = PostgresSettings(url: url)
        settings.connectTimeoutMillis = 500
        let store = try PostgresStore(settings: settings)
        defer { store.close() }
        try store.insertVideo(video(1))
        try store.recordUsage(usage("team-a", "GET /v1/models", time: 10))
        try store.flushUsage()

        try cluster.stop()
        for i in 0..<3 {
            let t0 = StoreClock.monotonicMillis()
            let r = StoreDeadline.with(t0 + 700) { Result { try store.video(id: "video_1", team: "team-a") } }
            let took = StoreClock.monotonicMillis() - t0
            guard case .failure(StoreError.unavailable) = r.mapError({ $0 as! StoreError }) else {
                Issue.record("call \(i): expected unavailable, got \(r)")
                return
            }
            #expect(took < 1_000, "call \(i) took \(took) ms")
        }
        // Usage keeps being taken while the server is away.
        for t in 11...15 { try store.recordUsage(usage("team-a", "GET /v1/models", time: t)) }
        #expect(throws: StoreError.self) { try store.flushUsage() }
        #expect(store.pendingUsage.waiting == 5)

        try cluster.start()
        // Back within the reconnect back-off (at most 2 s), without a new store.
        var back: VideoRecord?
        for _ in 0..<60 where back == nil {
            back = try? store.video(id: "video_1", team: "team-a")
            if back == nil { usleep(100_000) }
        }
        #expect(back == video(1))
        var written = 0
        for _ in 0..<50 where written < 6 {
            written = (try? store.usageSummary(team: "team-a", since: 0))?.first?.requests ?? 0
            if written < 6 { usleep(100_000) }
        }
        #expect(written == 6)
        #expect(store.pendingUsage == (waiting: 0, dropped: 0))
    }

    /// A restart while the pool's connections are idle: the next call notices the dead connection
    /// before using it and answers from a new one (no error at all).
    @Test func aRestartBetweenCallsIsInvisible() throws {
        let cluster = try PostgresCluster()
        defer { cluster.destroy() }
        let store = try PostgresStore(settings: PostgresSettings(url: try cluster.createDatabase()))
        defer { store.close() }
        try store.insertVideo(video(1))
        #expect(try store.video(id: "video_1", team: "team-a") != nil)
        try cluster.stop(mode: "fast")
        try cluster.start()
        #expect(try store.video(id: "video_1", team: "team-a") == video(1))
    }

    /// The buffer is capped while the server is away: the oldest records go first.
    @Test func theUsageBufferIsCapped() throws {
        let written = Mutex<[Int]>([])
        let fail = Atomic<Bool>(true)
        let buffer = UsageBuffer(cap: 5, intervalMillis: 0) { batch in
            if fail.load(ordering: .relaxed) { throw StoreError.unavailable("down") }
            written.withLock { $0 += batch.map(\.time) }
        }
        for t in 1...8 { buffer.append(usage("team-a", "x", time: t)) }
        #expect(throws: StoreError.self) { try buffer.flush() }
        buffer.append(usage("team-a", "x", time: 9))
        #expect(buffer.count == 5)
        #expect(buffer.dropped == 4)
        fail.store(false, ordering: .relaxed)
        try buffer.flush()
        #expect(written.withLock { $0 } == [5, 6, 7, 8, 9])
        buffer.close()
        #expect(buffer.append(usage("team-a", "x", time: 10)) == false)
    }

    /// A call's deadline also bounds waiting for a connection when every one is busy.
    @Test func waitingForAConnectionIsBoundedByTheDeadline() throws {
        var settings = PostgresSettings(url: try PostgresCluster.shared().createDatabase())
        settings.poolSize = 0          // one connection (the pool keeps poolSize + 1)
        let store = try PostgresStore(settings: settings)
        defer { store.close() }
        let started = Atomic<Bool>(false)
        let sleeper = Thread2 {
            _ = try? store.run { c, d in
                started.store(true, ordering: .relaxed)
                try c.execute("SELECT pg_sleep(1)", deadline: d)
            }
        }
        while !started.load(ordering: .relaxed) { usleep(1_000) }
        let t0 = StoreClock.monotonicMillis()
        let r = StoreDeadline.with(t0 + 200) { Result { try store.countVideos(team: "t", since: 0) } }
        let took = StoreClock.monotonicMillis() - t0
        #expect(took >= 190 && took < 800, "took \(took) ms")
        guard case .failure(let e) = r, case StoreError.unavailable = e as! StoreError else {
            Issue.record("expected unavailable, got \(r)")
            return
        }
        sleeper.join()
    }
}

/// A joinable pthread running `body`.
final class Thread2: @unchecked Sendable {
    private var thread = pthread_t()
    init(_ body: @escaping () -> Void) {
        let box = Unmanaged.passRetained(ThreadBox(index: 0) { _ in body() }).toOpaque()
        precondition(pthread_create(&thread, nil, { arg in
            let b = Unmanaged<ThreadBox>.fromOpaque(arg!).takeRetainedValue()
            b.body(b.index)
            return nil
        }, box) == 0)
    }
    func join() { pthread_join(thread, nil) }
}
