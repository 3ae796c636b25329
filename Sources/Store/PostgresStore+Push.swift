#if canImport(Glibc)
import Glibc
#endif

// PostgreSQL's side of `VideoWatchStore` and `WebhookStore` (see PushRecords.swift). Claims are
// conditional updates re-checked under the row lock (READ COMMITTED re-evaluates the WHERE on the
// row a concurrent claimer just changed), so two replicas never hold one delivery at once; the
// database's clock times claims and attempts.

extension PostgresStore {
    enum PushSQL {
        static let nowMillis = PostgresStore.SQL.nowMillis
        static let recordVideoState = PostgresStore.SQL.updateVideo
            + " AND deleted_at IS NULL AND status IN ('queued', 'in_progress')"
        static let unfinishedVideos = """
            SELECT \(PostgresStore.SQL.videoColumns) FROM videos WHERE status IN ('queued', 'in_progress') \
            AND deleted_at IS NULL AND created_at >= $1::bigint \
            AND (poll_claimed_ms IS NULL OR poll_claimed_ms <= \(nowMillis) - $2::bigint) \
            ORDER BY created_at, id LIMIT $3::bigint
            """

        static let eventColumns = [
            "id", "team", "type", "video_id", "payload", "created_at", "retry_from", "status", "attempts", "next_attempt_ms",
            "last_status", "last_error", "delivered_at",
        ]
        static let columns = eventColumns.joined(separator: ", ")
        static let insertEvent = """
            INSERT INTO webhook_events (id, team, type, video_id, payload, created_at, retry_from, status, attempts, next_attempt_ms) \
            VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::bigint, $7::bigint, 'pending', 0, \(nowMillis))
            """
        /// One statement: the due rows (at most $3 per team, the teams of the array $4 left out,
        /// oldest due first) claimed for $1 until now + $5. The UPDATE repeats every condition
        /// that can change under it: READ COMMITTED re-checks only the UPDATE's own WHERE on the
        /// row's newest version, so without `next_attempt_ms` a retry settled by a holder whose
        /// lease had run out (committed after this statement's snapshot) was claimed at once.
        static let claim = """
            WITH t AS (SELECT \(nowMillis) AS ms), \
            due AS (SELECT id FROM (SELECT e.id, e.next_attempt_ms, \
            row_number() OVER (PARTITION BY e.team ORDER BY e.next_attempt_ms, e.id) AS rn \
            FROM webhook_events e, t WHERE e.status = 'pending' AND e.next_attempt_ms <= t.ms \
            AND (e.claimed_until_ms IS NULL OR e.claimed_until_ms <= t.ms) AND e.team <> ALL ($4::text[])) x \
            WHERE rn <= $3::bigint ORDER BY next_attempt_ms, id LIMIT $2::bigint) \
            UPDATE webhook_events w SET claimed_by = $1::text, claimed_until_ms = t.ms + $5::bigint FROM t, due \
            WHERE w.id = due.id AND w.status = 'pending' AND w.next_attempt_ms <= t.ms \
            AND (w.claimed_until_ms IS NULL OR w.claimed_until_ms <= t.ms) \
            RETURNING \(eventColumns.map { "w." + $0 }.joined(separator: ", "))
            """
        static let settleDelivered = """
            UPDATE webhook_events SET status = 'delivered', attempts = attempts + 1, last_status = $2::integer, last_error = NULL, \
            delivered_at = $3::bigint, claimed_by = NULL, claimed_until_ms = NULL WHERE id = $1::text AND status = 'pending'
            """
        static let settleRetry = """
            UPDATE webhook_events SET attempts = attempts + 1, next_attempt_ms = \(nowMillis) + $3::bigint, \
            last_status = $4::integer, last_error = $5::text, claimed_by = NULL, claimed_until_ms = NULL \
            WHERE id = $1::text AND claimed_by = $2::text AND status = 'pending'
            """
        static let settleFailed = """
            UPDATE webhook_events SET status = 'failed', attempts = attempts + 1, last_status = $3::integer, last_error = $4::text, \
            claimed_by = NULL, claimed_until_ms = NULL WHERE id = $1::text AND claimed_by = $2::text AND status = 'pending'
            """
        static let release = "UPDATE webhook_events SET claimed_by = NULL, claimed_until_ms = NULL WHERE id = $1::text AND claimed_by = $2::text"
        static let releaseAll = "UPDATE webhook_events SET claimed_by = NULL, claimed_until_ms = NULL WHERE claimed_by = $1::text"
        static let listAll = "SELECT \(columns) FROM webhook_events ORDER BY created_at DESC, id DESC LIMIT $1::bigint"
        static let listStatus = "SELECT \(columns) FROM webhook_events WHERE status = $2::text ORDER BY created_at DESC, id DESC LIMIT $1::bigint"
        static let replay = """
            UPDATE webhook_events SET status = 'pending', next_attempt_ms = \(nowMillis), retry_from = $2::bigint, claimed_by = NULL, \
            claimed_until_ms = NULL, delivered_at = NULL WHERE id = $1::text \
            AND NOT (status = 'pending' AND claimed_until_ms IS NOT NULL AND claimed_until_ms > \(nowMillis))
            """
        static let exists = "SELECT 1 FROM webhook_events WHERE id = $1::text"
        static let counts = """
            SELECT (SELECT count(*) FROM webhook_events WHERE status = 'pending'), \
            (SELECT count(*) FROM webhook_events WHERE status = 'failed')
            """
        static let prune = "DELETE FROM webhook_events WHERE status = 'delivered' AND delivered_at < $1::bigint"
    }

    static func readEvent(_ r: [String?]) -> WebhookDelivery {
        WebhookDelivery(id: r[0] ?? "", team: r[1] ?? "", type: r[2] ?? "", videoID: r[3] ?? "", payload: r[4] ?? "",
                        createdAt: int(r[5]), retryFrom: int(r[6]), status: WebhookDeliveryStatus(rawValue: r[7] ?? "") ?? .pending,
                        attempts: int(r[8]), nextAttemptMillis: int(r[9]), lastStatus: intOrNil(r[10]), lastError: r[11],
                        deliveredAt: intOrNil(r[12]))
    }

    /// A text[] literal of team names (letters, digits, `-_.`; quoted, and anything else dropped).
    static func textArray(_ items: [String]) -> String {
        "{" + items.map { t in "\"" + String(t.filter { $0 != "\"" && $0 != "\\" && !$0.isNewline }) + "\"" }.joined(separator: ",") + "}"
    }

    // MARK: - VideoWatchStore

    public func recordVideoState(_ v: VideoRecord, event: WebhookDelivery?) throws -> Bool {
        try run { c, d in
            try c.transaction(deadline: d) { () throws -> Bool in
                guard try c.query(PushSQL.recordVideoState, Self.videoValues(v), deadline: d).affected > 0 else { return false }
                if let e = event {
                    try c.query(PushSQL.insertEvent, [e.id, e.team, e.type, e.videoID, e.payload, String(e.createdAt), String(e.retryFrom)], deadline: d)
                }
                return true
            }
        }
    }

    public func unfinishedVideos(createdSince: Int, notPolledForMillis: Int, limit: Int) throws -> [VideoRecord] {
        try run { c, d in
            try c.query(PushSQL.unfinishedVideos, [String(createdSince), String(max(0, notPolledForMillis)), String(max(0, limit))], deadline: d)
                .rows.map(Self.readVideo)
        }
    }

    // MARK: - WebhookStore

    public func claimWebhookDeliveries(holder: String, limit: Int, perTeam: Int, skipTeams: [String], leaseMillis: Int) throws -> [WebhookDelivery] {
        guard limit > 0, perTeam > 0 else { return [] }
        return try run { c, d in
            try c.query(PushSQL.claim, [holder, String(limit), String(perTeam), Self.textArray(skipTeams), String(max(1, leaseMillis))], deadline: d)
                .rows.map(Self.readEvent).sorted { ($0.nextAttemptMillis, $0.id) < ($1.nextAttemptMillis, $1.id) }
        }
    }

    public func settleWebhookDelivery(id: String, holder: String, _ outcome: WebhookAttemptOutcome) throws {
        try run { c, d in
            switch outcome {
            case .delivered(let status):
                try c.query(PushSQL.settleDelivered, [id, String(status), String(Int(time(nil)))], deadline: d)
            case .retry(let after, let status, let error):
                try c.query(PushSQL.settleRetry, [id, holder, String(max(0, after)), status.map(String.init), error], deadline: d)
            case .failed(let status, let error):
                try c.query(PushSQL.settleFailed, [id, holder, status.map(String.init), error], deadline: d)
            case .released:
                try c.query(PushSQL.release, [id, holder], deadline: d)
            }
        }
    }

    public func releaseWebhookClaims(holder: String) throws {
        try run { c, d in try c.query(PushSQL.releaseAll, [holder], deadline: d) }
    }

    public func webhookDeliveries(status: WebhookDeliveryStatus?, limit: Int) throws -> [WebhookDelivery] {
        let n = String(max(0, limit))
        return try run { c, d in
            let rows = try status.map { try c.query(PushSQL.listStatus, [n, $0.rawValue], deadline: d) }
                ?? c.query(PushSQL.listAll, [n], deadline: d)
            return rows.rows.map(Self.readEvent)
        }
    }

    public func replayWebhookDelivery(id: String, now: Int) throws -> WebhookReplay {
        try run { c, d in
            if try c.query(PushSQL.replay, [id, String(now)], deadline: d).affected > 0 { return .replayed }
            return try c.query(PushSQL.exists, [id], deadline: d).first == nil ? .unknown : .inFlight
        }
    }

    public func webhookOutboxCounts() throws -> WebhookOutboxCounts {
        try run { c, d in
            let r = try c.query(PushSQL.counts, deadline: d).first
            return WebhookOutboxCounts(pending: Self.int(r?[0] ?? nil), failed: Self.int(r?[1] ?? nil))
        }
    }

    public func pruneWebhookDeliveries(deliveredBefore: Int) throws -> Int {
        try run { c, d in try c.query(PushSQL.prune, [String(deliveredBefore)], deadline: d).affected }
    }
}
