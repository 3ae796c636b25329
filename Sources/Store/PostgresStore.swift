#if canImport(Glibc)
import Glibc
#endif

/// How to reach PostgreSQL and how long to wait for it (`store.*` in the configuration).
public struct PostgresSettings: Sendable {
    /// A libpq URI: `postgres://user@host:5432/db?sslmode=require` (the password from the URI,
    /// `PGPASSWORD` or `~/.pgpass`).
    public var url: String
    /// Connections for the store threads (`store.pool_size`); one more is made for the usage writer.
    public var poolSize = 4
    /// One connection attempt (`store.connect_timeout_ms`).
    public var connectTimeoutMillis = 2_000
    /// The server cancels a statement running longer (`store.statement_timeout_ms`).
    public var statementTimeoutMillis = 2_500
    /// The deadline of calls made outside a `StoreExecutor` (the command line); the executor
    /// sets its own (`store.timeout_ms`).
    public var callTimeoutMillis = 3_000
    /// Usage records kept while the database is away (`store.usage_buffer_records`).
    public var usageBufferRecords = 100_000
    /// How often buffered usage is written; 0 = write-through (the command line).
    public var usageFlushIntervalMillis = 100
    /// How long start-up waits for the migration lock and the migrations themselves.
    public var migrationTimeoutMillis = 60_000

    public init(url: String) { self.url = url }
}

/// Veil's tables in PostgreSQL: the store for a deployment of several replicas.
///
/// Every call checks a connection out of a small pool (`PostgresPool`), runs one or a few
/// statements (prepared once per connection) within the call's deadline (`StoreDeadline`), and
/// gives it back. Calls run on store threads only (`StoreExecutor` with `poolSize` threads).
/// Coordination between replicas is done by the database: a unique index for character names,
/// a per-team advisory lock around video admission, a conditional update for poll claims, the
/// database's clock for everything measured in milliseconds. Usage records are buffered
/// (`UsageBuffer`) and copied in batches (`COPY`); while the database is away they wait.
///
/// The schema is versioned (`veil_migrations`); `PostgresStore.init` applies what is missing
/// under a session advisory lock, so replicas starting together migrate once.
public final class PostgresStore: StoreBackend, Sendable {
    public let settings: PostgresSettings
    let pool: PostgresPool
    let usage: UsageBuffer

    /// Connects, checks the schema and (with `migrate`) brings it up to date; throws
    /// `StoreError.open` naming the URL without its password.
    public init(settings: PostgresSettings, migrate: Bool = true) throws {
        self.settings = settings
        let pool = PostgresPool(conninfo: settings.url, capacity: settings.poolSize + 1,
                                connectTimeoutMillis: settings.connectTimeoutMillis,
                                statementTimeoutMillis: settings.statementTimeoutMillis)
        self.pool = pool
        let label = StoreURL.redacted(settings.url)
        do {
            let deadline = StoreClock.monotonicMillis() + UInt64(settings.connectTimeoutMillis)
            let c = try PostgresConnection(conninfo: settings.url, deadline: deadline, statementTimeoutMillis: 0)
            defer { c.close() }
            if migrate {
                try PostgresSchema.migrate(c, timeoutMillis: settings.migrationTimeoutMillis)
            } else {
                let status = try PostgresSchema.status(c, deadline: StoreClock.monotonicMillis() + UInt64(settings.migrationTimeoutMillis))
                if status.current != status.expected {
                    throw PostgresError(.server, "the schema is at version \(status.current), this build needs \(status.expected) (`veil migrate` applies it)")
                }
            }
        } catch let e as PostgresError {
            throw StoreError.open(path: label, message: e.message)
        }
        let batchWriter: @Sendable ([UsageRecord]) throws -> Void = { batch in
            let deadline = StoreClock.monotonicMillis() + UInt64(settings.callTimeoutMillis)
            try pool.with(deadline: deadline) { c in try c.copyIn(SQL.copyUsage, data: PostgresCopy.encode(batch.map(PostgresStore.usageRow)), deadline: deadline) }
        }
        usage = UsageBuffer(cap: settings.usageBufferRecords, intervalMillis: settings.usageFlushIntervalMillis, write: batchWriter)
    }

    deinit { close() }

    /// Connects (nothing else) and reads the schema's version: `veil check-config`. Throws
    /// `StoreError.open` naming the URL without its password.
    public static func schemaStatus(settings: PostgresSettings) throws -> (current: Int, expected: Int) {
        do {
            let deadline = StoreClock.monotonicMillis() + UInt64(settings.connectTimeoutMillis + settings.callTimeoutMillis)
            let c = try PostgresConnection(conninfo: settings.url, deadline: deadline, statementTimeoutMillis: settings.statementTimeoutMillis)
            defer { c.close() }
            return try PostgresSchema.status(c, deadline: deadline)
        } catch {
            throw StoreError.open(path: StoreURL.redacted(settings.url), message: error.message)
        }
    }

    /// Writes buffered usage (one attempt), then closes the connections. Later calls throw.
    public func close() {
        usage.close()
        pool.close()
    }

    /// Runs `body` with a pooled connection and this call's deadline.
    @discardableResult
    func run<R>(_ body: (PostgresConnection, UInt64) throws -> R) throws -> R {
        let deadline = StoreDeadline.current(orIn: settings.callTimeoutMillis)
        return try pool.with(deadline: deadline) { c in try body(c, deadline) }
    }

    // MARK: - VideoStore

    public func insertVideo(_ v: VideoRecord) throws {
        try run { c, d in try c.query(SQL.insertVideo, Self.videoValues(v), deadline: d) }
    }

    public func video(id: String, team: String) throws -> VideoRecord? {
        try run { c, d in try c.query(SQL.videoByIDTeam, [id, team], deadline: d).first.map(Self.readVideo) }
    }

    public func videoAnyTeam(id: String) throws -> VideoRecord? {
        try run { c, d in try c.query(SQL.videoByID, [id], deadline: d).first.map(Self.readVideo) }
    }

    public func updateVideo(_ v: VideoRecord) throws {
        try run { c, d in try c.query(SQL.updateVideo, Self.videoValues(v), deadline: d) }
    }

    public func listVideos(team: String, after: String?, limit: Int, descending: Bool) throws -> (items: [VideoRecord], hasMore: Bool) {
        let limit = min(max(limit, 1), 100)
        return try run { c, d in
            var rows: [VideoRecord]
            if let after {
                guard let cursor = try c.query(SQL.videoCursor, [after, team], deadline: d).first else { return (items: [], hasMore: false) }
                rows = try c.query(SQL.listVideos(descending: descending, after: true), [team, String(limit + 1), cursor[0], cursor[1]], deadline: d)
                    .rows.map(Self.readVideo)
            } else {
                rows = try c.query(SQL.listVideos(descending: descending, after: false), [team, String(limit + 1)], deadline: d)
                    .rows.map(Self.readVideo)
            }
            let hasMore = rows.count > limit
            if hasMore { rows.removeLast(rows.count - limit) }
            return (items: rows, hasMore: hasMore)
        }
    }

    public func deleteVideo(id: String, team: String) throws -> Bool {
        try run { c, d in try c.query(SQL.deleteVideo, [id, team, String(Self.now())], deadline: d).affected > 0 }
    }

    public func countVideos(team: String, since: Int) throws -> Int {
        try run { c, d in Self.int(try c.query(SQL.countVideos, [team, String(since)], deadline: d).first?[0] ?? nil) }
    }

    // MARK: - CharacterStore

    public func insertCharacter(_ ch: CharacterRecord) throws {
        let values: [String?] = [ch.id, ch.upstreamID, ch.team, ch.name, ch.description, ch.videoID, String(ch.start), String(ch.end),
                                 ch.status, String(ch.createdAt), String(ch.updatedAt), Self.nameKey(ch.name)]
        try run { c, d in
            do {
                try c.query(SQL.insertCharacter, values, deadline: d)
            } catch let e as PostgresError where e.sqlState == "23505" && e.constraint == "characters_live_name" {
                throw StoreError.conflict("character name '\(ch.name)' is already taken")
            }
        }
    }

    public func character(id: String, team: String) throws -> CharacterRecord? {
        try run { c, d in try c.query(SQL.characterByIDTeam, [id, team], deadline: d).first.map(Self.readCharacter) }
    }

    public func characters(team: String) throws -> [CharacterRecord] {
        try run { c, d in try c.query(SQL.charactersByTeam, [team], deadline: d).rows.map(Self.readCharacter) }
    }

    public func characterByName(_ name: String) throws -> CharacterRecord? {
        try run { c, d in try c.query(SQL.characterByName, [Self.nameKey(name)], deadline: d).first.map(Self.readCharacter) }
    }

    public func updateCharacterStatuses(_ updates: [(id: String, status: String)]) throws {
        try updateCharacters(updates.map { CharacterUpdate(id: $0.id, status: $0.status) })
    }

    public func updateCharacters(_ updates: [CharacterUpdate]) throws {
        guard !updates.isEmpty else { return }
        let now = String(Self.now())
        try run { c, d in
            try c.transaction(deadline: d) {
                for u in updates { try c.query(SQL.updateCharacterStatus, [u.id, u.status, now, u.createdAt.map(String.init)], deadline: d) }
            }
        }
    }

    public func deleteCharacter(id: String, team: String) throws -> Bool {
        try run { c, d in try c.query(SQL.deleteCharacter, [id, team, String(Self.now())], deadline: d).affected > 0 }
    }

    // MARK: - UsageStore

    public func recordUsage(_ u: UsageRecord) throws {
        if settings.usageFlushIntervalMillis > 0 {
            guard usage.append(u) else { throw StoreError.sql("store is closed") }
        } else {
            try run { c, d in try c.copyIn(SQL.copyUsage, data: PostgresCopy.encode([Self.usageRow(u)]), deadline: d) }
        }
    }

    /// Writes buffered usage records now.
    public func flushUsage() throws { try usage.flush() }

    /// Records waiting to be written, and those dropped because the buffer was full.
    public var pendingUsage: (waiting: Int, dropped: Int) { (usage.count, usage.dropped) }

    public func usageSummary(team: String?, since: Int) throws -> [UsageSummary] {
        try? usage.flush()      // this process's own recent records, when the database takes them
        return try run { c, d in
            let rows: PostgresRows
            if let team {
                rows = try c.query(SQL.usageSummary(byTeam: true), [String(since), UsageRecord.videoCreateEndpoint, team], deadline: d)
            } else {
                rows = try c.query(SQL.usageSummary(byTeam: false), [String(since), UsageRecord.videoCreateEndpoint], deadline: d)
            }
            return rows.rows.map { r in
                UsageSummary(team: r[0] ?? "", requests: Self.int(r[1]), errors: Self.int(r[2]), promptTokens: Self.int(r[3]),
                             completionTokens: Self.int(r[4]), totalTokens: Self.int(r[5]), videos: Self.int(r[6]))
            }
        }
    }

    // MARK: - CoordinationStore

    public func reserveVideo(id: String, team: String, limits: VideoLimits, now: Int, expiresAt: Int) throws -> VideoReservation {
        try run { c, d in
            try c.transaction(deadline: d) { () throws -> VideoReservation in
                // One admission at a time per team, across every replica (released at COMMIT).
                try c.query(SQL.lockTeam, [team], deadline: d)
                try c.query(SQL.dropExpiredReservations, [team, String(now)], deadline: d)
                let counts = try c.query(SQL.admissionCounts, [team, String(now - 86_400), String(now),
                                                               String(now - limits.inFlightMaxAgeSeconds)], deadline: d).first
                let used = Self.int(counts?[0] ?? nil), inFlight = Self.int(counts?[1] ?? nil)
                if let perDay = limits.perDay, used >= perDay { return .overDailyQuota(used: used) }
                if let max = limits.inFlight, inFlight >= max { return .overInFlight(count: inFlight) }
                try c.query(SQL.insertReservation, [id, team, String(now), String(expiresAt)], deadline: d)
                return .reserved(id: id)
            }
        }
    }

    public func confirmVideo(reservation: String?, _ v: VideoRecord) throws {
        try run { c, d in
            try c.transaction(deadline: d) {
                try c.query(SQL.insertVideo, Self.videoValues(v), deadline: d)
                if let reservation { try c.query(SQL.deleteReservation, [reservation], deadline: d) }
            }
        }
    }

    public func releaseVideoReservation(id: String) throws {
        try run { c, d in try c.query(SQL.deleteReservation, [id], deadline: d) }
    }

    public func claimVideoPoll(id: String, periodMillis: Int) throws -> VideoPollClaim {
        try run { c, d in
            let rows = try c.query(SQL.claimPoll, [id, String(max(0, periodMillis))], deadline: d)
            guard let row = rows.first else { return .taken(nil) }
            if row[0] == "t" { return .granted }
            return .taken(Self.readVideo(Array(row.dropFirst())))
        }
    }

    public func claimCharacterName(_ name: String, holder: String, ttlMillis: Int) throws -> Bool {
        try run { c, d in try c.query(SQL.claimName, [Self.nameKey(name), holder, String(max(0, ttlMillis))], deadline: d).affected > 0 }
    }

    public func releaseCharacterName(_ name: String, holder: String, keepMillis: Int) throws {
        try run { c, d in
            if keepMillis > 0 {
                try c.query(SQL.keepName, [Self.nameKey(name), holder, String(keepMillis)], deadline: d)
            } else {
                try c.query(SQL.releaseName, [Self.nameKey(name), holder], deadline: d)
            }
        }
    }

    public func heartbeat(replica: String, ttlMillis: Int) throws -> [String] {
        try run { c, d in try c.query(SQL.heartbeat, [replica, String(max(1, ttlMillis))], deadline: d).rows.compactMap { $0[0] } }
    }

    public func leave(replica: String) throws {
        try run { c, d in try c.query(SQL.leave, [replica], deadline: d) }
    }

    // MARK: - Rows

    static func now() -> Int { Int(time(nil)) }

    /// The case-folding key of a character name (the same as SQLite's: full Unicode lowercasing).
    static func nameKey(_ name: String) -> String { name.lowercased() }

    static func int(_ v: String?) -> Int { v.flatMap { Int($0) } ?? 0 }
    static func intOrNil(_ v: String?) -> Int? { v.flatMap { Int($0) } }

    static func videoValues(_ v: VideoRecord) -> [String?] {
        [v.id, v.upstreamID, v.team, v.model, v.prompt, v.size, v.seconds, v.status, String(v.progress), String(v.createdAt),
         v.completedAt.map(String.init), v.expiresAt.map(String.init), v.errorCode, v.errorMessage, v.videoURL,
         v.watermarkedURL, String(v.updatedAt)]
    }

    static func readVideo(_ r: [String?]) -> VideoRecord {
        VideoRecord(id: r[0] ?? "", upstreamID: r[1] ?? "", team: r[2] ?? "", model: r[3] ?? "", prompt: r[4] ?? "",
                    size: r[5], seconds: r[6], status: r[7] ?? "", progress: int(r[8]), createdAt: int(r[9]),
                    completedAt: intOrNil(r[10]), expiresAt: intOrNil(r[11]), errorCode: r[12], errorMessage: r[13],
                    videoURL: r[14], watermarkedURL: r[15], updatedAt: int(r[16]))
    }

    static func readCharacter(_ r: [String?]) -> CharacterRecord {
        CharacterRecord(id: r[0] ?? "", upstreamID: r[1] ?? "", team: r[2] ?? "", name: r[3] ?? "", description: r[4] ?? "",
                        videoID: r[5] ?? "", start: r[6].flatMap { Double($0) } ?? 0, end: r[7].flatMap { Double($0) } ?? 0,
                        status: r[8] ?? "", createdAt: int(r[9]), updatedAt: int(r[10]))
    }

    static func usageRow(_ u: UsageRecord) -> [String?] {
        [String(u.time), u.team, u.endpoint, u.model, String(u.status), u.upstreamLatencyMillis.map(String.init), String(u.bytesIn),
         String(u.bytesOut), u.promptTokens.map(String.init), u.completionTokens.map(String.init), u.totalTokens.map(String.init), u.requestID]
    }

    // MARK: - SQL

    enum SQL {
        /// The database's clock in milliseconds (poll claims, name claims, heartbeats).
        static let nowMillis = "(extract(epoch from clock_timestamp()) * 1000)::bigint"

        static let videoColumns = """
            id, upstream_id, team, model, prompt, size, seconds, status, progress, created_at, \
            completed_at, expires_at, error_code, error_message, video_url, watermarked_url, updated_at
            """
        static let insertVideo = """
            INSERT INTO videos (\(videoColumns)) VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, \
            $7::text, $8::text, $9::integer, $10::bigint, $11::bigint, $12::bigint, $13::text, $14::text, $15::text, $16::text, $17::bigint)
            """
        static let updateVideo = """
            UPDATE videos SET upstream_id = $2::text, model = $4::text, prompt = $5::text, size = $6::text, seconds = $7::text, \
            status = $8::text, progress = $9::integer, created_at = $10::bigint, completed_at = $11::bigint, expires_at = $12::bigint, \
            error_code = $13::text, error_message = $14::text, video_url = $15::text, watermarked_url = $16::text, updated_at = $17::bigint \
            WHERE id = $1::text AND team = $3::text
            """
        static let videoByIDTeam = "SELECT \(videoColumns) FROM videos WHERE id = $1::text AND team = $2::text AND deleted_at IS NULL"
        static let videoByID = "SELECT \(videoColumns) FROM videos WHERE id = $1::text AND deleted_at IS NULL"
        static let videoCursor = "SELECT created_at, id FROM videos WHERE id = $1::text AND team = $2::text"
        static func listVideos(descending: Bool, after: Bool) -> String {
            let order = descending ? "DESC" : "ASC"
            let cursor = after ? " AND (created_at, id) \(descending ? "<" : ">") ($3::bigint, $4::text)" : ""
            return "SELECT \(videoColumns) FROM videos WHERE team = $1::text AND deleted_at IS NULL\(cursor) "
                + "ORDER BY created_at \(order), id \(order) LIMIT $2::bigint"
        }
        static let deleteVideo = "UPDATE videos SET deleted_at = $3::bigint, updated_at = $3::bigint WHERE id = $1::text AND team = $2::text AND deleted_at IS NULL"
        static let countVideos = "SELECT count(*) FROM videos WHERE team = $1::text AND created_at >= $2::bigint"

        static let characterColumns = """
            id, upstream_id, team, name, description, video_id, start_seconds, end_seconds, status, created_at, updated_at
            """
        static let insertCharacter = """
            INSERT INTO characters (\(characterColumns), name_key) VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, \
            $6::text, $7::double precision, $8::double precision, $9::text, $10::bigint, $11::bigint, $12::text)
            """
        static let characterByIDTeam = "SELECT \(characterColumns) FROM characters WHERE id = $1::text AND team = $2::text AND deleted_at IS NULL"
        static let charactersByTeam = "SELECT \(characterColumns) FROM characters WHERE team = $1::text AND deleted_at IS NULL ORDER BY created_at DESC, id DESC"
        static let characterByName = "SELECT \(characterColumns) FROM characters WHERE name_key = $1::text AND deleted_at IS NULL"
        static let updateCharacterStatus = """
            UPDATE characters SET status = $2::text, updated_at = $3::bigint, created_at = COALESCE($4::bigint, created_at) WHERE id = $1::text
            """
        static let deleteCharacter = "UPDATE characters SET deleted_at = $3::bigint, updated_at = $3::bigint WHERE id = $1::text AND team = $2::text AND deleted_at IS NULL"

        static let copyUsage = """
            COPY usage (time, team, endpoint, model, status, upstream_latency_ms, bytes_in, bytes_out, prompt_tokens, \
            completion_tokens, total_tokens, request_id) FROM STDIN
            """
        static func usageSummary(byTeam: Bool) -> String {
            """
            SELECT team, count(*), coalesce(sum((status >= 400)::int), 0), coalesce(sum(prompt_tokens), 0), \
            coalesce(sum(completion_tokens), 0), coalesce(sum(total_tokens), 0), \
            coalesce(sum((endpoint = $2::text AND status < 400)::int), 0) \
            FROM usage WHERE \(byTeam ? "team = $3::text AND " : "")time >= $1::bigint GROUP BY team ORDER BY team
            """
        }

        // Video admission: a transaction-scoped advisory lock per team (two keys: Veil's, the team's hash).
        static let lockTeam = "SELECT pg_advisory_xact_lock(\(PostgresSchema.lockKey), hashtext($1::text))"
        static let dropExpiredReservations = "DELETE FROM video_reservations WHERE team = $1::text AND expires_at <= $2::bigint"
        static let admissionCounts = """
            SELECT \
            (SELECT count(*) FROM videos WHERE team = $1::text AND created_at >= $2::bigint) + \
            (SELECT count(*) FROM video_reservations WHERE team = $1::text AND created_at >= $2::bigint AND expires_at > $3::bigint), \
            (SELECT count(*) FROM videos WHERE team = $1::text AND status IN ('queued', 'in_progress') AND deleted_at IS NULL \
            AND created_at >= $4::bigint) + \
            (SELECT count(*) FROM video_reservations WHERE team = $1::text AND expires_at > $3::bigint)
            """
        static let insertReservation = "INSERT INTO video_reservations (id, team, created_at, expires_at) VALUES ($1::text, $2::text, $3::bigint, $4::bigint)"
        static let deleteReservation = "DELETE FROM video_reservations WHERE id = $1::text"

        /// One statement: the claim (a conditional update; a concurrent claimer waits for the row
        /// lock and then sees the new time) and the stored row as it was.
        static let claimPoll = """
            WITH t AS (SELECT \(nowMillis) AS ms), \
            claim AS (UPDATE videos SET poll_claimed_ms = t.ms FROM t WHERE videos.id = $1::text AND videos.deleted_at IS NULL \
            AND (videos.poll_claimed_ms IS NULL OR videos.poll_claimed_ms <= t.ms - $2::bigint) RETURNING videos.id) \
            SELECT EXISTS (SELECT 1 FROM claim), \(videoColumns) FROM videos WHERE id = $1::text AND deleted_at IS NULL
            """
        static let claimName = """
            INSERT INTO character_name_claims (name_key, holder, expires_ms) \
            SELECT $1::text, $2::text, \(nowMillis) + $3::bigint \
            WHERE NOT EXISTS (SELECT 1 FROM characters WHERE name_key = $1::text AND deleted_at IS NULL) \
            ON CONFLICT (name_key) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms \
            WHERE character_name_claims.expires_ms <= excluded.expires_ms - $3::bigint OR character_name_claims.holder = excluded.holder
            """
        static let releaseName = "DELETE FROM character_name_claims WHERE name_key = $1::text AND holder = $2::text"
        static let keepName = "UPDATE character_name_claims SET expires_ms = \(nowMillis) + $3::bigint WHERE name_key = $1::text AND holder = $2::text"

        static let heartbeat = """
            WITH t AS (SELECT \(nowMillis) AS ms), \
            me AS (INSERT INTO replicas (id, seen_ms) SELECT $1::text, t.ms FROM t \
            ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms RETURNING id), \
            gone AS (DELETE FROM replicas USING t WHERE replicas.id <> $1::text AND replicas.seen_ms <= t.ms - $2::bigint) \
            SELECT id FROM me UNION SELECT replicas.id FROM replicas, t WHERE replicas.id <> $1::text AND replicas.seen_ms > t.ms - $2::bigint \
            ORDER BY 1
            """
        static let leave = "DELETE FROM replicas WHERE id = $1::text"
    }
}

/// Veil's schema in PostgreSQL and its migrations.
public enum PostgresSchema {
    /// Veil's advisory lock key (ASCII "veil"): the migration lock, and the first half of the
    /// per-team admission lock.
    static let lockKey = 1_986_356_588

    /// Entry N brings the schema from version N to N+1. Append only, never edit: replicas of the
    /// previous version keep running during a rolling update, so a migration only adds.
    static let migrations: [String] = [
        """
        CREATE TABLE videos (
            id              TEXT COLLATE "C" PRIMARY KEY,
            upstream_id     TEXT NOT NULL,
            team            TEXT COLLATE "C" NOT NULL,
            model           TEXT NOT NULL,
            prompt          TEXT NOT NULL,
            size            TEXT,
            seconds         TEXT,
            status          TEXT NOT NULL,
            progress        INTEGER NOT NULL DEFAULT 0,
            created_at      BIGINT NOT NULL,
            completed_at    BIGINT,
            expires_at      BIGINT,
            error_code      TEXT,
            error_message   TEXT,
            video_url       TEXT,
            watermarked_url TEXT,
            updated_at      BIGINT NOT NULL,
            deleted_at      BIGINT,
            poll_claimed_ms BIGINT
        );
        CREATE INDEX videos_team_created ON videos (team, created_at, id);
        CREATE INDEX videos_unfinished ON videos (team, created_at) WHERE status IN ('queued', 'in_progress') AND deleted_at IS NULL;

        CREATE TABLE characters (
            id            TEXT COLLATE "C" PRIMARY KEY,
            upstream_id   TEXT NOT NULL,
            team          TEXT COLLATE "C" NOT NULL,
            name          TEXT NOT NULL,
            name_key      TEXT COLLATE "C" NOT NULL,
            description   TEXT NOT NULL,
            video_id      TEXT NOT NULL,
            start_seconds DOUBLE PRECISION NOT NULL,
            end_seconds   DOUBLE PRECISION NOT NULL,
            status        TEXT NOT NULL,
            created_at    BIGINT NOT NULL,
            updated_at    BIGINT NOT NULL,
            deleted_at    BIGINT
        );
        CREATE UNIQUE INDEX characters_live_name ON characters (name_key) WHERE deleted_at IS NULL;
        CREATE INDEX characters_team_created ON characters (team, created_at, id);

        CREATE TABLE usage (
            id                  BIGSERIAL PRIMARY KEY,
            time                BIGINT NOT NULL,
            team                TEXT COLLATE "C" NOT NULL,
            endpoint            TEXT NOT NULL,
            model               TEXT,
            status              INTEGER NOT NULL,
            upstream_latency_ms BIGINT,
            bytes_in            BIGINT NOT NULL,
            bytes_out           BIGINT NOT NULL,
            prompt_tokens       BIGINT,
            completion_tokens   BIGINT,
            total_tokens        BIGINT,
            request_id          TEXT NOT NULL
        );
        CREATE INDEX usage_team_time ON usage (team, time);

        CREATE TABLE video_reservations (
            id         TEXT COLLATE "C" PRIMARY KEY,
            team       TEXT COLLATE "C" NOT NULL,
            created_at BIGINT NOT NULL,
            expires_at BIGINT NOT NULL
        );
        CREATE INDEX video_reservations_team ON video_reservations (team, expires_at);

        CREATE TABLE character_name_claims (
            name_key   TEXT COLLATE "C" PRIMARY KEY,
            holder     TEXT NOT NULL,
            expires_ms BIGINT NOT NULL
        );

        CREATE TABLE replicas (
            id      TEXT COLLATE "C" PRIMARY KEY,
            seen_ms BIGINT NOT NULL
        );
        """,
        // 2: the webhook outbox (`WebhookStore`), written with the video state change it reports.
        """
        CREATE TABLE webhook_events (
            id               TEXT COLLATE "C" PRIMARY KEY,
            team             TEXT COLLATE "C" NOT NULL,
            type             TEXT NOT NULL,
            video_id         TEXT NOT NULL,
            payload          TEXT NOT NULL,
            created_at       BIGINT NOT NULL,
            retry_from       BIGINT NOT NULL,
            status           TEXT NOT NULL,
            attempts         INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms  BIGINT NOT NULL,
            claimed_by       TEXT,
            claimed_until_ms BIGINT,
            last_status      INTEGER,
            last_error       TEXT,
            delivered_at     BIGINT
        );
        CREATE INDEX webhook_events_due ON webhook_events (next_attempt_ms) WHERE status = 'pending';
        CREATE INDEX webhook_events_status ON webhook_events (status, created_at);
        """,
    ]

    /// The schema version this build needs.
    public static var version: Int { migrations.count }

    /// The database's schema version (0: none) and this build's.
    public static func status(_ c: PostgresConnection, deadline: UInt64) throws(PostgresError) -> (current: Int, expected: Int) {
        let exists = (try c.query("SELECT to_regclass('veil_migrations') IS NOT NULL", deadline: deadline).first?[0] ?? nil) == "t"
        guard exists else { return (0, version) }
        let v = try c.query("SELECT coalesce(max(version), 0) FROM veil_migrations", deadline: deadline).first?[0] ?? nil
        return (v.flatMap { Int($0) } ?? 0, version)
    }

    /// Applies the missing migrations, each in its own transaction, under a session advisory lock
    /// (another replica migrating at the same moment waits, then finds nothing to do). Refuses a
    /// schema newer than this build.
    static func migrate(_ c: PostgresConnection, timeoutMillis: Int) throws {
        let deadline = StoreClock.monotonicMillis() + UInt64(timeoutMillis)
        try c.execute("SELECT pg_advisory_lock(\(lockKey))", deadline: deadline)
        defer { try? c.execute("SELECT pg_advisory_unlock(\(lockKey))", deadline: deadline) }
        try c.execute("""
            CREATE TABLE IF NOT EXISTS veil_migrations (
                version    INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )
            """, deadline: deadline)
        let current = try status(c, deadline: deadline).current
        if current > version {
            throw PostgresError(.server, "schema version \(current) is newer than this build supports (\(version))")
        }
        for v in current..<version {
            try c.transaction(deadline: deadline) {
                try c.execute(migrations[v], deadline: deadline)
                try c.query("INSERT INTO veil_migrations (version) VALUES ($1::integer)", [String(v + 1)], deadline: deadline)
            }
        }
    }
}

/// Store URLs as logs may show them.
public enum StoreURL {
    /// True for a PostgreSQL URI (`postgres://` or `postgresql://`).
    public static func isPostgres(_ s: String) -> Bool {
        s.hasPrefix("postgres://") || s.hasPrefix("postgresql://")
    }

    /// The URL with its password (`user:secret@`) and any `password=` parameter replaced by `***`.
    public static func redacted(_ url: String) -> String {
        var s = url
        if let scheme = s.firstRange(of: "://") {
            let rest = s[scheme.upperBound...]
            let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
            if let at = rest[..<authorityEnd].lastIndex(of: "@"),
               let colon = rest[..<at].firstIndex(of: ":") {
                s.replaceSubrange(s.index(after: colon)..<at, with: "***")
            }
        }
        // `?password=…` / `&password=…`
        var out = ""
        var rest = Substring(s)
        while let r = rest.firstRange(of: "password=") {
            let before = rest[..<r.lowerBound]
            let isParameter = before.last == "?" || before.last == "&"
            out += rest[..<r.upperBound]
            rest = rest[r.upperBound...]
            if isParameter {
                let end = rest.firstIndex(of: "&") ?? rest.endIndex
                out += "***"
                rest = rest[end...]
            }
        }
        return out + rest
    }
}
