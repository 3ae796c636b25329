import Testing
import Synchronization
import PostgresTestSupport
@testable import Store
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Helpers

private let counter = Atomic<Int>(0)

/// A unique database path under /tmp; `remove(_:)` deletes it with its -wal/-shm files.
private func tempPath() -> String {
    let n = counter.wrappingAdd(1, ordering: .relaxed).newValue
    return "/tmp/veil-store-test-\(getpid())-\(n)-\(UInt32.random(in: 0...UInt32.max)).sqlite"
}

private func remove(_ path: String) {
    for suffix in ["", "-wal", "-shm", "-journal"] { unlink(path + suffix) }
}

/// SQLite-only tests (WAL, the flusher's internals, file errors).
private func withStore(_ body: (SQLiteStore, String) throws -> Void) throws {
    let path = tempPath()
    defer { remove(path) }
    let store = try SQLiteStore(path: path)
    defer { store.close() }
    try body(store, path)
}

// MARK: - One contract, two backends

/// The backends every contract test runs against. PostgreSQL runs in a private cluster the test
/// process starts (`PostgresCluster`); without PostgreSQL installed these tests FAIL, saying so.
enum Backend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres
    var testDescription: String { rawValue }
}

/// What the contract tests need besides the protocols.
protocol ContractStore: StoreBackend {
    func close()
    func flushUsage() throws
}
extension SQLiteStore: ContractStore {}
extension PostgresStore: ContractStore {}

/// A store's location (a file, a database), to open it (again: the same data) and remove it.
final class StoreFixture: @unchecked Sendable {
    let backend: Backend
    let location: String

    init(_ backend: Backend) throws {
        self.backend = backend
        switch backend {
        case .sqlite: location = tempPath()
        case .postgres: location = try PostgresCluster.shared().createDatabase()
        }
    }

    func open() throws -> any ContractStore {
        switch backend {
        case .sqlite: return try SQLiteStore(path: location)
        case .postgres: return try PostgresStore(settings: PostgresSettings(url: location))
        }
    }

    func cleanup() {
        if backend == .sqlite { remove(location) }
    }
}

func withStore(_ backend: Backend, _ body: (any ContractStore, StoreFixture) throws -> Void) throws {
    let fixture = try StoreFixture(backend)
    defer { fixture.cleanup() }
    let store = try fixture.open()
    defer { store.close() }
    try body(store, fixture)
}

func video(_ n: Int, team: String = "team-a", createdAt: Int = 1_700_000_000) -> VideoRecord {
    VideoRecord(id: "video_\(n)", upstreamID: "\(n)", team: team, model: "sora-2", prompt: "prompt \(n)",
                size: "1280x720", seconds: "8", createdAt: createdAt)
}

func character(_ n: Int, name: String, team: String = "team-a", createdAt: Int = 1_700_000_000) -> CharacterRecord {
    CharacterRecord(id: "char_\(n)", upstreamID: "\(n)", team: team, name: name, description: "desc \(n)",
                    videoID: "video_1", start: 1.5, end: 3.25, createdAt: createdAt)
}

func usage(_ team: String, _ endpoint: String, status: Int = 200, time: Int = 2_000,
                   tokens: (Int, Int)? = nil) -> UsageRecord {
    UsageRecord(time: time, team: team, endpoint: endpoint, model: "m", status: status,
                upstreamLatencyMillis: 12, bytesIn: 10, bytesOut: 20,
                promptTokens: tokens?.0, completionTokens: tokens?.1, totalTokens: tokens.map { $0.0 + $0.1 },
                requestID: "req")
}

/// Runs `body(i)` on `count` plain pthreads and joins them.
final class ThreadBox {
    let index: Int
    let body: (Int) -> Void
    init(index: Int, body: @escaping (Int) -> Void) { self.index = index; self.body = body }
}

func runThreads(_ count: Int, _ body: @escaping (Int) -> Void) {
    var threads: [pthread_t] = []
    for i in 0..<count {
        let box = Unmanaged.passRetained(ThreadBox(index: i, body: body)).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let box = Unmanaged<ThreadBox>.fromOpaque(arg!).takeRetainedValue()
            box.body(box.index)
            return nil
        }, box)
        precondition(rc == 0)
        threads.append(t)
    }
    for t in threads { pthread_join(t, nil) }
}

// MARK: - Videos

@Test(arguments: Backend.allCases) func insertGetUpdate(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        var v = video(4078)
        try store.insertVideo(v)
        #expect(try store.video(id: "video_4078", team: "team-a") == v)
        #expect(try store.videoAnyTeam(id: "video_4078") == v)

        v.status = "completed"
        v.progress = 100
        v.completedAt = 1_700_000_100
        v.expiresAt = 1_700_086_500
        v.videoURL = "https://cdn/x.mp4"
        v.watermarkedURL = "https://cdn/x-wm.mp4"
        v.errorCode = nil
        v.updatedAt = 1_700_000_100
        try store.updateVideo(v)
        #expect(try store.video(id: "video_4078", team: "team-a") == v)

        // Empty strings survive (not turned into NULL) and unknown ids are nil.
        var w = video(1)
        w.prompt = ""
        w.errorMessage = ""
        try store.insertVideo(w)
        #expect(try store.video(id: "video_1", team: "team-a") == w)
        #expect(try store.video(id: "video_nope", team: "team-a") == nil)

        // Duplicate id is a conflict.
        #expect(throws: StoreError.self) { try store.insertVideo(video(1)) }
    }
}

@Test(arguments: Backend.allCases) func anotherTeamGetsNil(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        try store.insertVideo(video(7, team: "team-a"))
        #expect(try store.video(id: "video_7", team: "team-b") == nil)
        #expect(try store.videoAnyTeam(id: "video_7")?.team == "team-a")
        #expect(try store.deleteVideo(id: "video_7", team: "team-b") == false)
        // An update carrying the wrong team does not touch the row.
        var stolen = video(7, team: "team-b")
        stolen.status = "failed"
        try store.updateVideo(stolen)
        #expect(try store.video(id: "video_7", team: "team-a")?.status == "queued")
    }
}

@Test(arguments: Backend.allCases) func listPagination(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        var expected: [VideoRecord] = []
        for i in 0..<250 {
            // Three videos per second so that ties are broken by id.
            let v = video(i, team: "team-a", createdAt: 1_000 + i / 3)
            try store.insertVideo(v)
            expected.append(v)
            try store.insertVideo(video(10_000 + i, team: "team-b", createdAt: 1_000 + i / 3))
        }
        expected.sort { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }

        for descending in [false, true] {
            let want = descending ? Array(expected.reversed()) : expected
            var got: [VideoRecord] = []
            var after: String? = nil
            var pages: [(Int, Bool)] = []
            while true {
                let page = try store.listVideos(team: "team-a", after: after, limit: 100, descending: descending)
                pages.append((page.items.count, page.hasMore))
                got += page.items
                guard page.hasMore else { break }
                after = page.items.last?.id
            }
            #expect(pages.map(\.0) == [100, 100, 50])
            #expect(pages.map(\.1) == [true, true, false])
            #expect(got == want)
        }

        // `after` in the middle, small limit.
        let page = try store.listVideos(team: "team-a", after: expected[10].id, limit: 2, descending: false)
        #expect(page.items.map(\.id) == [expected[11].id, expected[12].id])
        #expect(page.hasMore)
        let last = try store.listVideos(team: "team-a", after: expected[248].id, limit: 5, descending: false)
        #expect(last.items.map(\.id) == [expected[249].id])
        #expect(!last.hasMore)

        // Limit is clamped to 1...100.
        #expect(try store.listVideos(team: "team-a", after: nil, limit: 1_000, descending: true).items.count == 100)
        #expect(try store.listVideos(team: "team-a", after: nil, limit: 0, descending: true).items.count == 1)

        // Another team's id, or an unknown id, is not a cursor.
        #expect(try store.listVideos(team: "team-a", after: "video_10000", limit: 10, descending: false).items.isEmpty)
        #expect(try store.listVideos(team: "team-a", after: "video_nope", limit: 10, descending: false).items.isEmpty)

        // A deleted video disappears from the list but still works as a cursor.
        #expect(try store.deleteVideo(id: expected[5].id, team: "team-a"))
        let all = try store.listVideos(team: "team-a", after: nil, limit: 100, descending: false).items
        #expect(!all.contains { $0.id == expected[5].id })
        let afterDeleted = try store.listVideos(team: "team-a", after: expected[5].id, limit: 1, descending: false)
        #expect(afterDeleted.items.map(\.id) == [expected[6].id])
    }
}

@Test(arguments: Backend.allCases) func softDeleteHidesButCountsForQuota(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        for i in 1...3 { try store.insertVideo(video(i, createdAt: 5_000 + i)) }
        try store.insertVideo(video(99, createdAt: 100))  // before the quota window
        try store.insertVideo(video(50, team: "team-b", createdAt: 5_001))

        #expect(try store.deleteVideo(id: "video_2", team: "team-a"))
        #expect(try store.deleteVideo(id: "video_2", team: "team-a") == false)  // already deleted
        #expect(try store.video(id: "video_2", team: "team-a") == nil)
        #expect(try store.videoAnyTeam(id: "video_2") == nil)
        #expect(try store.listVideos(team: "team-a", after: nil, limit: 100, descending: true).items.map(\.id)
                == ["video_3", "video_1", "video_99"])
        #expect(try store.countVideos(team: "team-a", since: 5_000) == 3)
        #expect(try store.countVideos(team: "team-a", since: 0) == 4)
        #expect(try store.countVideos(team: "team-b", since: 5_000) == 1)
        #expect(try store.countVideos(team: "team-c", since: 0) == 0)
    }
}

// MARK: - Characters

@Test(arguments: Backend.allCases) func characterNameConflictIsCaseInsensitiveAndFreedAfterDelete(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        try store.insertCharacter(character(1, name: "Alice", team: "team-a"))
        #expect(throws: StoreError.conflict("character name 'ALICE' is already taken")) {
            try store.insertCharacter(character(2, name: "ALICE", team: "team-b"))
        }
        #expect(try store.characterByName("aLiCe")?.id == "char_1")
        #expect(try store.characterByName("bob") == nil)

        // Unicode case folding, not just ASCII.
        try store.insertCharacter(character(3, name: "Émile", team: "team-a"))
        #expect(throws: StoreError.self) { try store.insertCharacter(character(4, name: "émile", team: "team-b")) }

        #expect(try store.deleteCharacter(id: "char_1", team: "team-b") == false)  // not theirs
        #expect(try store.deleteCharacter(id: "char_1", team: "team-a"))
        #expect(try store.deleteCharacter(id: "char_1", team: "team-a") == false)
        #expect(try store.characterByName("alice") == nil)
        #expect(try store.character(id: "char_1", team: "team-a") == nil)

        let reuse = character(5, name: "alice", team: "team-b")
        try store.insertCharacter(reuse)
        #expect(try store.characterByName("ALICE") == reuse)
        #expect(try store.character(id: "char_5", team: "team-b") == reuse)
        #expect(try store.character(id: "char_5", team: "team-a") == nil)
    }
}

@Test(arguments: Backend.allCases) func charactersNewestFirstAndStatusBatchUpdate(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        for i in 1...4 { try store.insertCharacter(character(i, name: "c\(i)", createdAt: 100 + i)) }
        try store.insertCharacter(character(9, name: "other", team: "team-b"))
        #expect(try store.characters(team: "team-a").map(\.id) == ["char_4", "char_3", "char_2", "char_1"])

        try store.updateCharacterStatuses([(id: "char_1", status: "ready"), (id: "char_3", status: "failed"),
                                           (id: "char_missing", status: "ready")])
        let byID = Dictionary(uniqueKeysWithValues: try store.characters(team: "team-a").map { ($0.id, $0) })
        #expect(byID["char_1"]?.status == "ready")
        #expect(byID["char_2"]?.status == "processing")
        #expect(byID["char_3"]?.status == "failed")
        #expect(byID["char_4"]?.status == "processing")
        #expect((byID["char_1"]?.updatedAt ?? 0) > 1_600_000_000)  // stamped with "now"
        #expect(byID["char_1"]?.start == 1.5 && byID["char_1"]?.end == 3.25)
        try store.updateCharacterStatuses([])
    }
}

// MARK: - Usage

@Test(arguments: Backend.allCases) func usageSummaryAggregates(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        let v = UsageRecord.videoCreateEndpoint
        try store.recordUsage(usage("team-b", v, status: 200))
        try store.recordUsage(usage("team-b", v, status: 429))
        try store.recordUsage(usage("team-b", "GET /v1/videos/{id}", status: 404))
        try store.recordUsage(usage("team-a", "POST /v1/chat/completions", tokens: (10, 5)))
        try store.recordUsage(usage("team-a", "POST /v1/chat/completions", tokens: (7, 3)))
        try store.recordUsage(usage("team-a", v, status: 201))
        try store.recordUsage(usage("team-a", v, status: 200, time: 1_000))  // before `since`
        try store.recordUsage(usage("team-c", v, status: 200, time: 1_000))  // only before `since`

        let all = try store.usageSummary(team: nil, since: 2_000)
        #expect(all == [
            UsageSummary(team: "team-a", requests: 3, errors: 0, promptTokens: 17, completionTokens: 8,
                         totalTokens: 25, videos: 1),
            UsageSummary(team: "team-b", requests: 3, errors: 2, promptTokens: 0, completionTokens: 0,
                         totalTokens: 0, videos: 1),
        ])
        #expect(try store.usageSummary(team: "team-b", since: 2_000) == [all[1]])
        #expect(try store.usageSummary(team: "team-a", since: 0).first?.videos == 2)
        #expect(try store.usageSummary(team: "team-z", since: 0).isEmpty)
    }
}

@Test func usageIsFlushedInTheBackground() throws {
    let path = tempPath()
    defer { remove(path) }
    let store = try SQLiteStore(path: path, usageFlushIntervalMillis: 50)
    defer { store.close() }
    try store.recordUsage(usage("team-a", "GET /v1/models"))
    let reader = try SQLiteConnection(path: path)
    defer { reader.close() }
    var rows = 0
    for _ in 0..<50 where rows == 0 {  // up to ~1 s; the flusher runs every 50 ms
        usleep(20_000)
        rows = try reader.scalarInt("SELECT count(*) FROM usage") ?? 0
    }
    #expect(rows == 1)
}

/// Regression (found profiling the chat benchmark): `recordUsage` took the connection's lock, so
/// an event loop recording a request waited for the flusher's whole batch to be written, and every
/// 256th record was written on the loop itself. Now it only appends to the buffer: it completes
/// even while the connection's lock is held (here, by this very thread: it used to deadlock).
@Test func recordingUsageNeverWaitsForTheConnection() throws {
    let path = tempPath()
    defer { remove(path) }
    let store = try SQLiteStore(path: path, usageFlushIntervalMillis: 60_000)
    defer { store.close() }
    try store.core.with { _ in
        for i in 0..<300 { try store.recordUsage(usage("team-a", "POST /v1/chat/completions #\(i)")) }
    }
    #expect(store.core.pendingCount == 300, "nothing is written on the caller's thread")
    // Past the threshold, the flusher writes them within its 10 ms tick (not at the 60 s interval).
    let reader = try SQLiteConnection(path: path)
    defer { reader.close() }
    var rows = 0
    for _ in 0..<100 where rows < 300 {
        usleep(20_000)
        rows = try reader.scalarInt("SELECT count(*) FROM usage") ?? 0
    }
    #expect(rows == 300)
    #expect(store.core.pendingCount == 0)
}

/// A batch that fails to write goes back in front of the buffer, in order, and is written by the
/// next flush that succeeds; the buffer never grows past its cap (the oldest records go first).
@Test func failedUsageBatchesAreKeptInOrderAndCapped() throws {
    let path = tempPath()
    defer { remove(path) }
    let store = try SQLiteStore(path: path, usageFlushIntervalMillis: 60_000)
    defer { store.close() }
    for i in 0..<10 { try store.recordUsage(usage("team-a", "GET /v1/models", time: i)) }
    try store.core.with { c in try c.execute("ALTER TABLE usage RENAME TO usage_away") }
    #expect(throws: (any Error).self) { try store.flushUsage() }
    try store.recordUsage(usage("team-a", "GET /v1/models", time: 10))
    #expect(store.core.pending.withLock { $0.map(\.time) } == Array(0...10), "the failed batch comes back first")
    try store.core.with { c in try c.execute("ALTER TABLE usage_away RENAME TO usage") }
    try store.flushUsage()
    #expect(store.core.pendingCount == 0)
    let reader = try SQLiteConnection(path: path)
    defer { reader.close() }
    #expect(try reader.scalarInt("SELECT count(*) FROM usage") == 11)
    #expect(try reader.scalarInt("SELECT sum(time) FROM usage") == 55)

    // Past the cap, the oldest are dropped (the background flusher keeps failing meanwhile).
    try store.core.with { c in try c.execute("ALTER TABLE usage RENAME TO usage_away") }
    let cap = SQLiteStore.pendingUsageCap
    for i in 0..<(cap + 5) { store.core.buffer(usage("team-a", "x", time: i)) }
    var first = -1, count = 0
    for _ in 0..<200 {      // the flusher may hold the batch for a moment while it fails
        (first, count) = store.core.pending.withLock { ($0.first?.time ?? -1, $0.count) }
        if count == cap { break }
        usleep(5_000)
    }
    #expect(count == cap)
    #expect(first == 5)
    try store.core.with { c in try c.execute("ALTER TABLE usage_away RENAME TO usage") }
}

@Test func writeThroughUsage() throws {
    let path = tempPath()
    defer { remove(path) }
    let store = try SQLiteStore(path: path, usageFlushIntervalMillis: 0)
    defer { store.close() }
    try store.recordUsage(usage("team-a", "GET /v1/models"))
    let reader = try SQLiteConnection(path: path)
    defer { reader.close() }
    #expect(try reader.scalarInt("SELECT count(*) FROM usage") == 1)
}

// MARK: - Durability, configuration, concurrency

@Test(arguments: Backend.allCases) func persistenceAcrossReopen(_ backend: Backend) throws {
    let fixture = try StoreFixture(backend)
    defer { fixture.cleanup() }
    let v = video(4078, team: "team-a")
    let ch = character(58, name: "Nova", team: "team-a")
    do {
        let store = try fixture.open()
        try store.insertVideo(v)
        try store.insertCharacter(ch)
        try store.recordUsage(usage("team-a", UsageRecord.videoCreateEndpoint))  // buffered; close flushes
        try store.insertVideo(video(2))
        #expect(try store.deleteVideo(id: "video_2", team: "team-a"))
        store.close()
        store.close()  // idempotent
        #expect(throws: StoreError.sql("store is closed")) { try store.video(id: v.id, team: "team-a") }
        // Buffered usage too: a record taken after close() would never be written.
        #expect(throws: StoreError.sql("store is closed")) { try store.recordUsage(usage("team-a", "GET /v1/models")) }
    }
    let store = try fixture.open()
    defer { store.close() }
    #expect(try store.video(id: v.id, team: "team-a") == v)
    #expect(try store.video(id: v.id, team: "team-b") == nil)
    #expect(try store.characterByName("nova") == ch)
    #expect(try store.usageSummary(team: "team-a", since: 0).first?.videos == 1)
    #expect(try store.countVideos(team: "team-a", since: 0) == 2)
    #expect(try store.video(id: "video_2", team: "team-a") == nil)

    switch backend {
    case .sqlite:
        let c = try SQLiteConnection(path: fixture.location)
        defer { c.close() }
        #expect(try c.scalarInt("PRAGMA user_version") == SQLiteStore.schemaVersion)
    case .postgres:
        let c = try PostgresConnection(conninfo: fixture.location, deadline: StoreClock.monotonicMillis() + 5_000, statementTimeoutMillis: 0)
        defer { c.close() }
        let status = try PostgresSchema.status(c, deadline: StoreClock.monotonicMillis() + 5_000)
        #expect(status.current == status.expected && status.expected == PostgresSchema.version)
    }
}

@Test func walModeIsOn() throws {
    try withStore { _, path in
        let c = try SQLiteConnection(path: path)
        defer { c.close() }
        #expect(try c.scalarText("PRAGMA journal_mode") == "wal")
    }
}

@Test func inMemoryStoreWorks() throws {
    let store = try SQLiteStore(path: ":memory:")
    defer { store.close() }
    try store.insertVideo(video(1))
    #expect(try store.video(id: "video_1", team: "team-a") != nil)
}

@Test(arguments: Backend.allCases) func concurrentInsertsFromFourThreads(_ backend: Backend) throws {
    try withStore(backend) { store, _ in
        let failures = Atomic<Int>(0)
        runThreads(4) { t in
            for i in 0..<100 {
                let n = t * 1_000 + i
                do {
                    try store.insertVideo(video(n, team: "team-\(t)", createdAt: 1_000 + i))
                    try store.recordUsage(usage("team-\(t)", UsageRecord.videoCreateEndpoint))
                    _ = try store.video(id: "video_\(n)", team: "team-\(t)")
                } catch {
                    failures.add(1, ordering: .relaxed)
                }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        for t in 0..<4 {
            #expect(try store.countVideos(team: "team-\(t)", since: 0) == 100)
        }
        let summary = try store.usageSummary(team: nil, since: 0)
        #expect(summary.map(\.team) == ["team-0", "team-1", "team-2", "team-3"])
        #expect(summary.allSatisfy { $0.requests == 100 && $0.videos == 100 })
    }
}

@Test func badPathNamesThePath() throws {
    let path = "/tmp/veil-no-such-dir-\(UInt32.random(in: 0...UInt32.max))/sub/store.sqlite"
    do {
        _ = try SQLiteStore(path: path)
        Issue.record("opening \(path) should fail")
    } catch let StoreError.open(p, message) {
        #expect(p == path)
        #expect(!message.isEmpty)
        #expect("\(StoreError.open(path: p, message: message))".contains(path))
    }
}

@Test func notADatabaseIsAnOpenError() throws {
    let path = tempPath()
    defer { remove(path) }
    let fd = open(path, O_CREAT | O_WRONLY, 0o600)
    let junk = Array(repeating: UInt8(ascii: "x"), count: 4096)
    _ = junk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
    #expect {
        _ = try SQLiteStore(path: path)
    } throws: { error in
        guard case StoreError.open(let p, _) = error else { return false }
        return p == path
    }
}

@Test func connectionTransactionRollsBack() throws {
    let c = try SQLiteConnection(path: ":memory:")
    defer { c.close() }
    try c.execute("CREATE TABLE t (x INTEGER)")
    struct Boom: Error {}
    #expect(throws: Boom.self) {
        try c.transaction {
            try c.prepare("INSERT INTO t VALUES (?1)").run(1)
            // Nested transaction is a savepoint.
            try c.transaction { try c.prepare("INSERT INTO t VALUES (?1)").run(2) }
            throw Boom()
        }
    }
    #expect(try c.scalarInt("SELECT count(*) FROM t") == 0)
    #expect(!c.inTransaction)
    let n: Int = try c.transaction {
        try c.prepare("INSERT INTO t VALUES (?1)").run(3)
        return c.changes
    }
    #expect(n == 1)
    #expect(try c.prepare("SELECT x FROM t").query { $0.int(0) } == [3])
}
