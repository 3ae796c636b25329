#if canImport(Glibc)
import Glibc
#endif

/// `veil store copy`: a one-box deployment's SQLite file into a PostgreSQL database, so replicas
/// can take over. Videos and characters (deleted ones included: they still count for quotas and
/// work as cursors), the whole usage log and the webhook outbox are copied in one transaction, in batches (`COPY`),
/// so a failure leaves the target as it was. The target must hold no Veil data yet. What is only
/// coordination (reservations, claims, heartbeats) is not copied: it expires by itself.
///
/// Stop the one-box Veil first (a copy of a file still being written misses what comes after).
public enum StoreCopy {
    public struct Counts: Sendable, Equatable {
        public var videos = 0
        public var characters = 0
        public var usage = 0
        /// The webhook outbox (pending, failed and delivered events; claims are not copied).
        public var webhookEvents = 0
        public init(videos: Int = 0, characters: Int = 0, usage: Int = 0, webhookEvents: Int = 0) {
            self.videos = videos; self.characters = characters; self.usage = usage; self.webhookEvents = webhookEvents
        }
    }

    /// Rows read from SQLite and sent per `COPY` (bounds the memory a copy takes).
    public static let batchRows = 20_000
    /// The whole copy's deadline.
    public static let timeoutMillis = 3_600_000

    struct Table {
        let name: String
        let columns: [String]
        /// How to read column i from SQLite as COPY text.
        let kinds: [Kind]
        enum Kind { case text, int, double }
    }

    static let videos = Table(name: "videos", columns: [
        "id", "upstream_id", "team", "model", "prompt", "size", "seconds", "status", "progress", "created_at",
        "completed_at", "expires_at", "error_code", "error_message", "video_url", "watermarked_url", "updated_at", "deleted_at",
    ], kinds: [.text, .text, .text, .text, .text, .text, .text, .text, .int, .int, .int, .int, .text, .text, .text, .text, .int, .int])

    static let characters = Table(name: "characters", columns: [
        "id", "upstream_id", "team", "name", "name_key", "description", "video_id", "start_seconds", "end_seconds", "status",
        "created_at", "updated_at", "deleted_at",
    ], kinds: [.text, .text, .text, .text, .text, .text, .text, .double, .double, .text, .int, .int, .int])

    static let usage = Table(name: "usage", columns: [
        "time", "team", "endpoint", "model", "status", "upstream_latency_ms", "bytes_in", "bytes_out", "prompt_tokens",
        "completion_tokens", "total_tokens", "request_id",
    ], kinds: [.int, .text, .text, .text, .int, .int, .int, .int, .int, .int, .int, .text])

    /// Schema 3 and later (the outbox).
    static let webhookEvents = Table(name: "webhook_events", columns: [
        "id", "team", "type", "video_id", "payload", "created_at", "retry_from", "status", "attempts", "next_attempt_ms",
        "last_status", "last_error", "delivered_at",
    ], kinds: [.text, .text, .text, .text, .text, .int, .int, .text, .int, .int, .int, .text, .int])

    /// Copies `sqlitePath` into the database at `url` (migrated first). `progress` hears each table's count.
    @discardableResult
    public static func run(from sqlitePath: String, to url: String, progress: (String, Int) -> Void = { _, _ in }) throws -> Counts {
        guard access(sqlitePath, R_OK) == 0 else { throw StoreError.open(path: sqlitePath, message: "no such file (or not readable)") }
        let source: SQLiteConnection
        do { source = try SQLiteConnection(path: sqlitePath, busyTimeoutMillis: 2000) } catch let e as SQLiteError {
            throw StoreError.open(path: sqlitePath, message: e.message)
        }
        defer { source.close() }
        let version = (try? source.scalarInt("PRAGMA user_version")) ?? 0
        guard version >= 1 else { throw StoreError.open(path: sqlitePath, message: "not a Veil store (schema version \(version))") }

        // Migrated by opening it (as a replica would), then one connection without a statement timeout.
        try PostgresStore(settings: PostgresSettings(url: url)).close()
        let deadline = StoreClock.monotonicMillis() + UInt64(timeoutMillis)
        let label = StoreURL.redacted(url)
        let target: PostgresConnection
        do { target = try PostgresConnection(conninfo: url, deadline: deadline, statementTimeoutMillis: 0) } catch {
            throw StoreError.open(path: label, message: error.message)
        }
        defer { target.close() }
        do {
            let existing = try target.query("SELECT (SELECT count(*) FROM videos) + (SELECT count(*) FROM characters) + (SELECT count(*) FROM usage) + (SELECT count(*) FROM webhook_events)",
                                            deadline: deadline).first?[0] ?? nil
            guard existing == "0" else {
                throw StoreError.sql("the target database already holds Veil data (\(existing ?? "?") rows); copy into an empty one")
            }
            return try target.transaction(deadline: deadline) { () throws -> Counts in
                var counts = Counts()
                counts.videos = try copy(videos, from: source, to: target, deadline: deadline)
                progress("videos", counts.videos)
                counts.characters = try copy(characters, from: source, to: target, deadline: deadline)
                progress("characters", counts.characters)
                counts.usage = try copy(usage, from: source, to: target, deadline: deadline)
                progress("usage", counts.usage)
                if version >= 3 {
                    counts.webhookEvents = try copy(webhookEvents, from: source, to: target, deadline: deadline)
                    progress("webhook_events", counts.webhookEvents)
                }
                return counts
            }
        } catch let e as PostgresError {
            throw PostgresPool.map(e)
        } catch let e as SQLiteError {
            throw StoreError.sql(e.description)
        }
    }

    /// Pages through the SQLite table by rowid and sends each page with one `COPY`.
    static func copy(_ t: Table, from source: SQLiteConnection, to target: PostgresConnection, deadline: UInt64) throws -> Int {
        let select = "SELECT rowid, \(t.columns.joined(separator: ", ")) FROM \(t.name) WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
        let copySQL = "COPY \(t.name) (\(t.columns.joined(separator: ", "))) FROM STDIN"
        var after = 0
        var total = 0
        while true {
            var last = after
            let rows: [[String?]] = try source.prepare(select).query(after, batchRows) { s in
                last = s.int(0)
                return t.kinds.enumerated().map { i, kind in
                    let col = Int32(i + 1)
                    switch kind {
                    case .text: return s.textOrNil(col)
                    case .int: return s.intOrNil(col).map(String.init)
                    case .double: return s.isNull(col) ? nil : String(s.double(col))
                    }
                }
            }
            guard !rows.isEmpty else { return total }
            total += try target.copyIn(copySQL, data: PostgresCopy.encode(rows), deadline: deadline)
            after = last
        }
    }
}
