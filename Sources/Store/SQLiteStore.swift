import CSQLite
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Veil's tables on one SQLite connection.
///
/// Concurrency: the store holds ONE `SQLiteConnection` behind a `Mutex`; every call locks, runs a few
/// cached prepared statements and unlocks. Calls come from the gateway's store thread
/// (`StoreExecutor`), never from an event loop; any other caller serialises on the mutex too.
/// The connection runs in WAL mode with `synchronous=NORMAL` (commits do not fsync; a power cut can lose
/// the last transactions but never corrupts the file) and `busy_timeout=2000` ms (only matters when
/// another process, e.g. the sqlite3 shell, holds the write lock).
///
/// Usage records are buffered in memory and written in one transaction by a background flusher thread:
/// every `usageFlushIntervalMillis` (default 100 ms), within ~10 ms once 256 are pending, before
/// `usageSummary` reads, and on `close()`/deinit. A crash (not a clean close) can therefore lose at most
/// the last ~100 ms of usage records. `usageFlushIntervalMillis: 0` disables buffering (write-through).
/// If a flush fails the records go back to the buffer and are retried (the buffer is capped at 100 000
/// records; beyond that the oldest are dropped). The buffer has its own lock, held only to append or to
/// take the batch: `recordUsage` (called on the event loops for every request) never waits for a write
/// in progress and never writes itself (a batch is an order of magnitude cheaper per record than a
/// write-through commit: BENCHMARKS.md, fix 11). This is the contract of `UsageStore.recordUsage`
/// every backend keeps: the event loops call it for every request.
///
/// Soft deletes: videos and characters get `deleted_at` instead of being removed, so deleted videos still
/// count for quotas and deleted ids still work as pagination cursors.
public final class SQLiteStore: StoreBackend, Sendable {
    public let path: String
    let core: Core
    private let flusher: pthread_t?

    /// Opens (creating and migrating if needed) the store at `path`; `":memory:"` for a private in-memory
    /// store. Throws `StoreError.open(path:message:)` if the file cannot be opened, is not a database, does
    /// not support WAL, or has a schema newer than this build.
    public init(path: String, usageFlushIntervalMillis: Int = 100) throws {
        self.path = path
        let connection: SQLiteConnection
        do {
            connection = try SQLiteConnection(path: path, busyTimeoutMillis: 2000)
            try Self.configure(connection, path: path)
            try Self.migrate(connection, path: path)
        } catch let e as SQLiteError {
            throw StoreError.open(path: path, message: e.message)
        }
        core = Core(connection: connection, batchUsage: usageFlushIntervalMillis > 0)
        if usageFlushIntervalMillis > 0 {
            flusher = Self.startFlusher(core, intervalMillis: usageFlushIntervalMillis)
        } else {
            flusher = nil
        }
    }

    deinit { close() }

    /// Flushes buffered usage, stops the flusher thread and closes the connection. Idempotent; every
    /// later call throws `StoreError.sql("store is closed")`.
    public func close() {
        if !core.stopping.exchange(true, ordering: .acquiringAndReleasing), let flusher {
            pthread_join(flusher, nil)
        }
        try? core.flushPending()
        core.state.withLock { state in
            state.connection?.close()
            state.connection = nil
        }
    }

    // MARK: - Setup

    private static func configure(_ c: SQLiteConnection, path: String) throws {
        let mode = try c.scalarText("PRAGMA journal_mode=WAL")?.lowercased() ?? ""
        // In-memory databases report "memory"; anything else means WAL is unavailable.
        guard mode == "wal" || mode == "memory" else {
            throw StoreError.open(path: path, message: "could not enable WAL (journal_mode is '\(mode)')")
        }
        try c.execute("PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY;")
    }

    /// Schema migrations; entry N upgrades `PRAGMA user_version` N to N+1. Append only, never edit.
    static let migrations: [String] = [
        """
        CREATE TABLE videos (
            id              TEXT PRIMARY KEY NOT NULL,
            upstream_id     TEXT NOT NULL,
            team            TEXT NOT NULL,
            model           TEXT NOT NULL,
            prompt          TEXT NOT NULL,
            size            TEXT,
            seconds         TEXT,
            status          TEXT NOT NULL,
            progress        INTEGER NOT NULL DEFAULT 0,
            created_at      INTEGER NOT NULL,
            completed_at    INTEGER,
            expires_at      INTEGER,
            error_code      TEXT,
            error_message   TEXT,
            video_url       TEXT,
            watermarked_url TEXT,
            updated_at      INTEGER NOT NULL,
            deleted_at      INTEGER
        );
        -- listing (team, order by created_at, id) and quota counting (team, created_at >= ?)
        CREATE INDEX videos_team_created ON videos(team, created_at, id);

        CREATE TABLE characters (
            id            TEXT PRIMARY KEY NOT NULL,
            upstream_id   TEXT NOT NULL,
            team          TEXT NOT NULL,
            name          TEXT NOT NULL,
            name_key      TEXT NOT NULL,   -- Swift lowercased(name): Unicode case-insensitive uniqueness
            description   TEXT NOT NULL,
            video_id      TEXT NOT NULL,
            start_seconds REAL NOT NULL,
            end_seconds   REAL NOT NULL,
            status        TEXT NOT NULL,
            created_at    INTEGER NOT NULL,
            updated_at    INTEGER NOT NULL,
            deleted_at    INTEGER
        );
        CREATE UNIQUE INDEX characters_live_name ON characters(name_key) WHERE deleted_at IS NULL;
        CREATE INDEX characters_team_created ON characters(team, created_at, id);

        CREATE TABLE usage (
            id                  INTEGER PRIMARY KEY,
            time                INTEGER NOT NULL,  -- unix seconds
            team                TEXT NOT NULL,
            endpoint            TEXT NOT NULL,
            model               TEXT,
            status              INTEGER NOT NULL,
            upstream_latency_ms INTEGER,
            bytes_in            INTEGER NOT NULL,
            bytes_out           INTEGER NOT NULL,
            prompt_tokens       INTEGER,
            completion_tokens   INTEGER,
            total_tokens        INTEGER,
            request_id          TEXT NOT NULL
        );
        -- one index only: usage is written on every request, summaries are rare admin reads
        CREATE INDEX usage_team_time ON usage(team, time);
        """,
        // 2: coordination (`CoordinationStore`): video admission as reservations, poll claims,
        // character name claims, replicas' heartbeats.
        """
        ALTER TABLE videos ADD COLUMN poll_claimed_ms INTEGER;
        CREATE INDEX videos_unfinished ON videos(team, created_at) WHERE status IN ('queued', 'in_progress') AND deleted_at IS NULL;
        CREATE TABLE video_reservations (
            id         TEXT PRIMARY KEY NOT NULL,
            team       TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL
        );
        CREATE INDEX video_reservations_team ON video_reservations(team, expires_at);
        CREATE TABLE character_name_claims (
            name_key   TEXT PRIMARY KEY NOT NULL,
            holder     TEXT NOT NULL,
            expires_ms INTEGER NOT NULL
        );
        CREATE TABLE replicas (
            id      TEXT PRIMARY KEY NOT NULL,
            seen_ms INTEGER NOT NULL
        );
        """,
        // 3: the webhook outbox (`WebhookStore`), written with the video state change it reports.
        """
        CREATE TABLE webhook_events (
            id               TEXT PRIMARY KEY NOT NULL,
            team             TEXT NOT NULL,
            type             TEXT NOT NULL,
            video_id         TEXT NOT NULL,
            payload          TEXT NOT NULL,
            created_at       INTEGER NOT NULL,  -- unix seconds
            retry_from       INTEGER NOT NULL,  -- unix seconds: retries are counted from here
            status           TEXT NOT NULL,     -- pending | delivered | failed
            attempts         INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms  INTEGER NOT NULL,  -- store clock
            claimed_by       TEXT,
            claimed_until_ms INTEGER,
            last_status      INTEGER,
            last_error       TEXT,
            delivered_at     INTEGER
        );
        CREATE INDEX webhook_events_due ON webhook_events(next_attempt_ms) WHERE status = 'pending';
        CREATE INDEX webhook_events_status ON webhook_events(status, created_at);
        """,
    ]

    /// The schema version this build creates.
    public static var schemaVersion: Int { migrations.count }

    private static func migrate(_ c: SQLiteConnection, path: String) throws {
        // Version is read inside each write transaction, so two processes migrating at once are safe.
        while try c.transaction({ () throws -> Bool in
            let version = try c.scalarInt("PRAGMA user_version") ?? 0
            if version > migrations.count {
                throw StoreError.open(path: path, message:
                    "schema version \(version) is newer than this build supports (\(migrations.count))")
            }
            guard version < migrations.count else { return false }
            try c.execute(migrations[version])
            try c.execute("PRAGMA user_version = \(version + 1)")
            return true
        }) {}
    }

    // MARK: - Core (state behind the mutex) and the usage flusher

    struct State {
        var connection: SQLiteConnection?
    }

    final class Core: Sendable {
        let state: Mutex<State>
        /// Usage records not written yet; never held across I/O.
        let pending = Mutex<[UsageRecord]>([])
        let stopping = Atomic<Bool>(false)
        let batchUsage: Bool

        init(connection: sending SQLiteConnection, batchUsage: Bool) {
            state = Mutex(State(connection: connection))
            self.batchUsage = batchUsage
        }

        /// Locks, hands the open connection to `body`, maps SQLite errors to `StoreError`.
        func with<R: Sendable>(_ body: (SQLiteConnection) throws -> R) throws -> R {
            try state.withLock { (state: inout State) throws -> R in
                guard let c = state.connection else { throw StoreError.sql("store is closed") }
                do {
                    return try body(c)
                } catch let e as SQLiteError {
                    throw SQLiteStore.map(e)
                }
            }
        }

        /// Buffers one record (dropping the oldest past the cap).
        func buffer(_ u: UsageRecord) {
            pending.withLock { p in
                p.append(u)
                Core.cap(&p)
            }
        }

        /// Drops the oldest records beyond `pendingUsageCap`.
        private static func cap(_ p: inout [UsageRecord]) {
            if p.count > SQLiteStore.pendingUsageCap { p.removeFirst(p.count - SQLiteStore.pendingUsageCap) }
        }

        var pendingCount: Int { pending.withLock { $0.count } }

        /// Takes the buffered records and writes them in one transaction; on failure they go back
        /// in front of anything buffered since (capped) and the error is thrown.
        func flushPending() throws {
            var batch = pending.withLock { p -> [UsageRecord] in
                let b = p
                p.removeAll(keepingCapacity: true)
                return b
            }
            guard !batch.isEmpty else { return }
            do {
                try with { c in try SQLiteStore.flush(c, &batch) }
            } catch {
                pending.withLock { p in
                    p.insert(contentsOf: batch, at: 0)
                    Core.cap(&p)
                }
                throw error
            }
        }

        func runFlusher(intervalMillis: Int) {
            let tick = min(intervalMillis, 10)  // poll `stopping` at least every 10 ms
            var elapsed = 0
            while !stopping.load(ordering: .acquiring) {
                var ts = timespec(tv_sec: 0, tv_nsec: tick * 1_000_000)
                nanosleep(&ts, nil)
                elapsed += tick
                guard elapsed >= intervalMillis || pendingCount >= SQLiteStore.pendingUsageThreshold else { continue }
                elapsed = 0
                try? flushPending()    // on failure: kept and retried
            }
        }
    }

    private final class FlusherContext {
        let core: Core
        let intervalMillis: Int
        init(core: Core, intervalMillis: Int) {
            self.core = core
            self.intervalMillis = intervalMillis
        }
    }

    private static func startFlusher(_ core: Core, intervalMillis: Int) -> pthread_t? {
        let context = Unmanaged.passRetained(FlusherContext(core: core, intervalMillis: intervalMillis))
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            let context = Unmanaged<FlusherContext>.fromOpaque(arg!).takeRetainedValue()
            context.core.runFlusher(intervalMillis: context.intervalMillis)
            return nil
        }, context.toOpaque())
        guard rc == 0 else {
            // No thread: `recordUsage` falls back to write-through (see `recordUsage`).
            context.release()
            return nil
        }
        return thread
    }

    static let pendingUsageThreshold = 256
    static let pendingUsageCap = 100_000

    /// Writes `pending` in one transaction and empties it; on failure it is left as it was.
    static func flush(_ c: SQLiteConnection, _ pending: inout [UsageRecord]) throws {
        guard !pending.isEmpty else { return }
        let insert = try c.prepare(SQL.insertUsage)
        try c.transaction {
            for u in pending { try insert.run(usageValues(u)) }
        }
        pending.removeAll(keepingCapacity: true)
    }

    static func map(_ e: SQLiteError) -> StoreError {
        // 2067 = SQLITE_CONSTRAINT_UNIQUE, 1555 = SQLITE_CONSTRAINT_PRIMARYKEY
        if e.code == 2067 || e.code == 1555 { return .conflict(e.message) }
        return .sql(e.description)
    }

    static func now() -> Int { Int(time(nil)) }

    // MARK: - SQL

    enum SQL {
        static let videoColumns = """
            id, upstream_id, team, model, prompt, size, seconds, status, progress, created_at, \
            completed_at, expires_at, error_code, error_message, video_url, watermarked_url, updated_at
            """
        static let insertVideo = """
            INSERT INTO videos (\(videoColumns)) \
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
            """
        static let updateVideo = """
            UPDATE videos SET upstream_id = ?2, model = ?4, prompt = ?5, size = ?6, seconds = ?7, \
            status = ?8, progress = ?9, created_at = ?10, completed_at = ?11, expires_at = ?12, \
            error_code = ?13, error_message = ?14, video_url = ?15, watermarked_url = ?16, updated_at = ?17 \
            WHERE id = ?1 AND team = ?3
            """
        static let videoByIDTeam = "SELECT \(videoColumns) FROM videos WHERE id = ?1 AND team = ?2 AND deleted_at IS NULL"
        static let videoByID = "SELECT \(videoColumns) FROM videos WHERE id = ?1 AND deleted_at IS NULL"
        static let videoCursor = "SELECT created_at, id FROM videos WHERE id = ?1 AND team = ?2"
        static func listVideos(descending: Bool, after: Bool) -> String {
            let order = descending ? "DESC" : "ASC"
            let cursor = after ? " AND (created_at, id) \(descending ? "<" : ">") (?3, ?4)" : ""
            return "SELECT \(videoColumns) FROM videos WHERE team = ?1 AND deleted_at IS NULL\(cursor) "
                + "ORDER BY created_at \(order), id \(order) LIMIT ?2"
        }
        static let deleteVideo = "UPDATE videos SET deleted_at = ?3, updated_at = ?3 WHERE id = ?1 AND team = ?2 AND deleted_at IS NULL"
        static let countVideos = "SELECT count(*) FROM videos WHERE team = ?1 AND created_at >= ?2"

        static let characterColumns = """
            id, upstream_id, team, name, description, video_id, start_seconds, end_seconds, status, \
            created_at, updated_at
            """
        static let insertCharacter = """
            INSERT INTO characters (\(characterColumns), name_key) \
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
            """
        static let characterByIDTeam = "SELECT \(characterColumns) FROM characters WHERE id = ?1 AND team = ?2 AND deleted_at IS NULL"
        static let charactersByTeam = "SELECT \(characterColumns) FROM characters WHERE team = ?1 AND deleted_at IS NULL ORDER BY created_at DESC, id DESC"
        static let characterByName = "SELECT \(characterColumns) FROM characters WHERE name_key = ?1 AND deleted_at IS NULL"
        static let updateCharacterStatus = "UPDATE characters SET status = ?2, updated_at = ?3, created_at = COALESCE(?4, created_at) WHERE id = ?1"
        static let deleteCharacter = "UPDATE characters SET deleted_at = ?3, updated_at = ?3 WHERE id = ?1 AND team = ?2 AND deleted_at IS NULL"

        static let dropExpiredReservations = "DELETE FROM video_reservations WHERE team = ?1 AND expires_at <= ?2"
        static let admissionCounts = """
            SELECT \
            (SELECT count(*) FROM videos WHERE team = ?1 AND created_at >= ?2) + \
            (SELECT count(*) FROM video_reservations WHERE team = ?1 AND created_at >= ?2 AND expires_at > ?3), \
            (SELECT count(*) FROM videos WHERE team = ?1 AND status IN ('queued', 'in_progress') AND deleted_at IS NULL \
            AND created_at >= ?4) + \
            (SELECT count(*) FROM video_reservations WHERE team = ?1 AND expires_at > ?3)
            """
        static let insertReservation = "INSERT INTO video_reservations (id, team, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)"
        static let deleteReservation = "DELETE FROM video_reservations WHERE id = ?1"
        static let claimPoll = """
            UPDATE videos SET poll_claimed_ms = ?2 WHERE id = ?1 AND deleted_at IS NULL \
            AND (poll_claimed_ms IS NULL OR poll_claimed_ms <= ?2 - ?3)
            """
        static let nameTaken = "SELECT 1 FROM characters WHERE name_key = ?1 AND deleted_at IS NULL"
        static let claimName = """
            INSERT INTO character_name_claims (name_key, holder, expires_ms) VALUES (?1, ?2, ?3 + ?4) \
            ON CONFLICT (name_key) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms \
            WHERE character_name_claims.expires_ms <= ?3 OR character_name_claims.holder = excluded.holder
            """
        static let releaseName = "DELETE FROM character_name_claims WHERE name_key = ?1 AND holder = ?2"
        static let keepName = "UPDATE character_name_claims SET expires_ms = ?3 WHERE name_key = ?1 AND holder = ?2"
        static let upsertReplica = "INSERT INTO replicas (id, seen_ms) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms"
        static let dropReplicas = "DELETE FROM replicas WHERE id <> ?1 AND seen_ms <= ?2 - ?3"
        static let liveReplicas = "SELECT id FROM replicas ORDER BY id"
        static let leave = "DELETE FROM replicas WHERE id = ?1"

        static let insertUsage = """
            INSERT INTO usage (time, team, endpoint, model, status, upstream_latency_ms, bytes_in, bytes_out, \
            prompt_tokens, completion_tokens, total_tokens, request_id) \
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
            """
        static func usageSummary(byTeam: Bool) -> String {
            """
            SELECT team, count(*), sum(status >= 400), coalesce(sum(prompt_tokens), 0), \
            coalesce(sum(completion_tokens), 0), coalesce(sum(total_tokens), 0), \
            sum(endpoint = ?2 AND status < 400) \
            FROM usage WHERE \(byTeam ? "team = ?3 AND " : "")time >= ?1 GROUP BY team ORDER BY team
            """
        }
    }

    static func videoValues(_ v: VideoRecord) -> [any SQLiteBindable] {
        [v.id, v.upstreamID, v.team, v.model, v.prompt, v.size, v.seconds, v.status, v.progress, v.createdAt,
         v.completedAt, v.expiresAt, v.errorCode, v.errorMessage, v.videoURL, v.watermarkedURL, v.updatedAt]
    }

    static func readVideo(_ s: SQLiteStatement) -> VideoRecord {
        VideoRecord(id: s.text(0), upstreamID: s.text(1), team: s.text(2), model: s.text(3), prompt: s.text(4),
                    size: s.textOrNil(5), seconds: s.textOrNil(6), status: s.text(7), progress: s.int(8),
                    createdAt: s.int(9), completedAt: s.intOrNil(10), expiresAt: s.intOrNil(11),
                    errorCode: s.textOrNil(12), errorMessage: s.textOrNil(13), videoURL: s.textOrNil(14),
                    watermarkedURL: s.textOrNil(15), updatedAt: s.int(16))
    }

    static func readCharacter(_ s: SQLiteStatement) -> CharacterRecord {
        CharacterRecord(id: s.text(0), upstreamID: s.text(1), team: s.text(2), name: s.text(3),
                        description: s.text(4), videoID: s.text(5), start: s.double(6), end: s.double(7),
                        status: s.text(8), createdAt: s.int(9), updatedAt: s.int(10))
    }

    static func usageValues(_ u: UsageRecord) -> [any SQLiteBindable] {
        [u.time, u.team, u.endpoint, u.model, u.status, u.upstreamLatencyMillis, u.bytesIn, u.bytesOut,
         u.promptTokens, u.completionTokens, u.totalTokens, u.requestID]
    }

    /// The case-folding key for character names (full Unicode lowercasing, unlike SQLite's ASCII NOCASE).
    static func nameKey(_ name: String) -> String { name.lowercased() }

    // MARK: - VideoStore

    public func insertVideo(_ v: VideoRecord) throws {
        try core.with { c in try c.prepare(SQL.insertVideo).run(Self.videoValues(v)) }
    }

    public func video(id: String, team: String) throws -> VideoRecord? {
        try core.with { c in try c.prepare(SQL.videoByIDTeam).first(id, team, row: Self.readVideo) }
    }

    public func videoAnyTeam(id: String) throws -> VideoRecord? {
        try core.with { c in try c.prepare(SQL.videoByID).first(id, row: Self.readVideo) }
    }

    public func updateVideo(_ v: VideoRecord) throws {
        try core.with { c in try c.prepare(SQL.updateVideo).run(Self.videoValues(v)) }
    }

    public func listVideos(team: String, after: String?, limit: Int, descending: Bool) throws -> (items: [VideoRecord], hasMore: Bool) {
        let limit = min(max(limit, 1), 100)
        return try core.with { c in
            var rows: [VideoRecord]
            if let after {
                guard let cursor = try c.prepare(SQL.videoCursor).first(after, team, row: { s in (s.int(0), s.text(1)) })
                else { return (items: [], hasMore: false) }
                rows = try c.prepare(SQL.listVideos(descending: descending, after: true))
                    .query(team, limit + 1, cursor.0, cursor.1, row: Self.readVideo)
            } else {
                rows = try c.prepare(SQL.listVideos(descending: descending, after: false))
                    .query(team, limit + 1, row: Self.readVideo)
            }
            let hasMore = rows.count > limit
            if hasMore { rows.removeLast(rows.count - limit) }
            return (items: rows, hasMore: hasMore)
        }
    }

    public func deleteVideo(id: String, team: String) throws -> Bool {
        try core.with { c in
            try c.prepare(SQL.deleteVideo).run(id, team, Self.now())
            return c.changes > 0
        }
    }

    public func countVideos(team: String, since: Int) throws -> Int {
        try core.with { c in try c.prepare(SQL.countVideos).first(team, since) { $0.int(0) } ?? 0 }
    }

    // MARK: - CharacterStore

    public func insertCharacter(_ ch: CharacterRecord) throws {
        let key = Self.nameKey(ch.name)
        try core.with { c in
            do {
                try c.prepare(SQL.insertCharacter).run(
                    ch.id, ch.upstreamID, ch.team, ch.name, ch.description, ch.videoID, ch.start, ch.end,
                    ch.status, ch.createdAt, ch.updatedAt, key)
            } catch let e as SQLiteError where e.code == 2067 && e.message.contains("name_key") {
                throw StoreError.conflict("character name '\(ch.name)' is already taken")
            }
        }
    }

    public func character(id: String, team: String) throws -> CharacterRecord? {
        try core.with { c in try c.prepare(SQL.characterByIDTeam).first(id, team, row: Self.readCharacter) }
    }

    public func characters(team: String) throws -> [CharacterRecord] {
        try core.with { c in try c.prepare(SQL.charactersByTeam).query(team, row: Self.readCharacter) }
    }

    public func characterByName(_ name: String) throws -> CharacterRecord? {
        let key = Self.nameKey(name)
        return try core.with { c in try c.prepare(SQL.characterByName).first(key, row: Self.readCharacter) }
    }

    public func updateCharacterStatuses(_ updates: [(id: String, status: String)]) throws {
        try updateCharacters(updates.map { CharacterUpdate(id: $0.id, status: $0.status) })
    }

    public func updateCharacters(_ updates: [CharacterUpdate]) throws {
        guard !updates.isEmpty else { return }
        let now = Self.now()
        try core.with { c in
            let update = try c.prepare(SQL.updateCharacterStatus)
            try c.transaction {
                for u in updates { try update.run(u.id, u.status, now, u.createdAt) }
            }
        }
    }

    public func deleteCharacter(id: String, team: String) throws -> Bool {
        try core.with { c in
            try c.prepare(SQL.deleteCharacter).run(id, team, Self.now())
            return c.changes > 0
        }
    }

    // MARK: - UsageStore

    public func recordUsage(_ u: UsageRecord) throws {
        if core.batchUsage && flusher != nil {
            // Buffered records after close() would never be written: refuse them, as a write would be.
            guard !core.stopping.load(ordering: .acquiring) else { throw StoreError.sql("store is closed") }
            core.buffer(u)
        } else {
            var one = [u]
            try core.with { c in try Self.flush(c, &one) }
        }
    }

    /// Flushes buffered usage records now (also happens automatically; see the type's documentation).
    public func flushUsage() throws {
        try core.flushPending()
    }

    public func usageSummary(team: String?, since: Int) throws -> [UsageSummary] {
        try core.flushPending()
        return try core.with { c in
            let read: (SQLiteStatement) -> UsageSummary = { s in
                UsageSummary(team: s.text(0), requests: s.int(1), errors: s.int(2), promptTokens: s.int(3),
                             completionTokens: s.int(4), totalTokens: s.int(5), videos: s.int(6))
            }
            if let team {
                return try c.prepare(SQL.usageSummary(byTeam: true))
                    .query(since, UsageRecord.videoCreateEndpoint, team, row: read)
            }
            return try c.prepare(SQL.usageSummary(byTeam: false))
                .query(since, UsageRecord.videoCreateEndpoint, row: read)
        }
    }

    // MARK: - CoordinationStore (one transaction each: `BEGIN IMMEDIATE` also serialises processes
    // sharing the file)

    public func reserveVideo(id: String, team: String, limits: VideoLimits, now: Int, expiresAt: Int) throws -> VideoReservation {
        try core.with { c in
            try c.transaction { () throws -> VideoReservation in
                try c.prepare(SQL.dropExpiredReservations).run(team, now)
                let counts = try c.prepare(SQL.admissionCounts).first(team, now - 86_400, now, now - limits.inFlightMaxAgeSeconds) { s in
                    (s.int(0), s.int(1))
                } ?? (0, 0)
                if let perDay = limits.perDay, counts.0 >= perDay { return .overDailyQuota(used: counts.0) }
                if let max = limits.inFlight, counts.1 >= max { return .overInFlight(count: counts.1) }
                try c.prepare(SQL.insertReservation).run(id, team, now, expiresAt)
                return .reserved(id: id)
            }
        }
    }

    public func confirmVideo(reservation: String?, _ v: VideoRecord) throws {
        try core.with { c in
            try c.transaction {
                try c.prepare(SQL.insertVideo).run(Self.videoValues(v))
                if let reservation { try c.prepare(SQL.deleteReservation).run(reservation) }
            }
        }
    }

    public func releaseVideoReservation(id: String) throws {
        try core.with { c in try c.prepare(SQL.deleteReservation).run(id) }
    }

    public func claimVideoPoll(id: String, periodMillis: Int) throws -> VideoPollClaim {
        let now = StoreClock.wallMillis()
        return try core.with { c in
            try c.transaction { () throws -> VideoPollClaim in
                guard let current = try c.prepare(SQL.videoByID).first(id, row: Self.readVideo) else { return .taken(nil) }
                try c.prepare(SQL.claimPoll).run(id, now, max(0, periodMillis))
                return c.changes > 0 ? .granted : .taken(current)
            }
        }
    }

    public func claimCharacterName(_ name: String, holder: String, ttlMillis: Int) throws -> Bool {
        let key = Self.nameKey(name)
        let now = StoreClock.wallMillis()
        return try core.with { c in
            try c.transaction { () throws -> Bool in
                if try c.prepare(SQL.nameTaken).first(key, row: { _ in true }) == true { return false }
                try c.prepare(SQL.claimName).run(key, holder, now, max(0, ttlMillis))
                return c.changes > 0
            }
        }
    }

    public func releaseCharacterName(_ name: String, holder: String, keepMillis: Int) throws {
        let key = Self.nameKey(name)
        if keepMillis > 0 {
            try core.with { c in try c.prepare(SQL.keepName).run(key, holder, StoreClock.wallMillis() + keepMillis) }
        } else {
            try core.with { c in try c.prepare(SQL.releaseName).run(key, holder) }
        }
    }

    public func heartbeat(replica: String, ttlMillis: Int) throws -> [String] {
        let now = StoreClock.wallMillis()
        return try core.with { c in
            try c.transaction { () throws -> [String] in
                try c.prepare(SQL.upsertReplica).run(replica, now)
                try c.prepare(SQL.dropReplicas).run(replica, now, max(1, ttlMillis))
                return try c.prepare(SQL.liveReplicas).query { $0.text(0) }
            }
        }
    }

    public func leave(replica: String) throws {
        try core.with { c in try c.prepare(SQL.leave).run(replica) }
    }
}
