// SQLite's side of `VideoWatchStore` and `WebhookStore` (see PushRecords.swift). Each call is one
// transaction under the store's mutex; `BEGIN IMMEDIATE` also serialises processes sharing the file.

extension SQLiteStore {
    enum PushSQL {
        static let recordVideoState = SQLiteStore.SQL.updateVideo
            + " AND deleted_at IS NULL AND status IN ('queued', 'in_progress')"
        static let unfinishedVideos = """
            SELECT \(SQLiteStore.SQL.videoColumns) FROM videos WHERE status IN ('queued', 'in_progress') \
            AND deleted_at IS NULL AND created_at >= ?1 AND (poll_claimed_ms IS NULL OR poll_claimed_ms <= ?2) \
            ORDER BY created_at, id LIMIT ?3
            """

        static let eventColumns = """
            id, team, type, video_id, payload, created_at, retry_from, status, attempts, next_attempt_ms, \
            last_status, last_error, delivered_at
            """
        static let insertEvent = """
            INSERT INTO webhook_events (id, team, type, video_id, payload, created_at, retry_from, status, attempts, next_attempt_ms) \
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8)
            """
        /// Due and unclaimed (or the claim ran out), at most ?3 per team, the teams of the JSON
        /// array ?4 left out, oldest due first.
        static let dueEvents = """
            SELECT \(eventColumns) FROM (SELECT *, row_number() OVER (PARTITION BY team ORDER BY next_attempt_ms, id) AS rn \
            FROM webhook_events WHERE status = 'pending' AND next_attempt_ms <= ?1 \
            AND (claimed_until_ms IS NULL OR claimed_until_ms <= ?1) \
            AND team NOT IN (SELECT value FROM json_each(?4))) \
            WHERE rn <= ?3 ORDER BY next_attempt_ms, id LIMIT ?2
            """
        static let claimEvent = "UPDATE webhook_events SET claimed_by = ?2, claimed_until_ms = ?3 WHERE id = ?1"
        static let settleDelivered = """
            UPDATE webhook_events SET status = 'delivered', attempts = attempts + 1, last_status = ?2, last_error = NULL, \
            delivered_at = ?3, claimed_by = NULL, claimed_until_ms = NULL WHERE id = ?1 AND status = 'pending'
            """
        static let settleRetry = """
            UPDATE webhook_events SET attempts = attempts + 1, next_attempt_ms = ?3, last_status = ?4, last_error = ?5, \
            claimed_by = NULL, claimed_until_ms = NULL WHERE id = ?1 AND claimed_by = ?2 AND status = 'pending'
            """
        static let settleFailed = """
            UPDATE webhook_events SET status = 'failed', attempts = attempts + 1, last_status = ?3, last_error = ?4, \
            claimed_by = NULL, claimed_until_ms = NULL WHERE id = ?1 AND claimed_by = ?2 AND status = 'pending'
            """
        static let release = "UPDATE webhook_events SET claimed_by = NULL, claimed_until_ms = NULL WHERE id = ?1 AND claimed_by = ?2"
        static let releaseAll = "UPDATE webhook_events SET claimed_by = NULL, claimed_until_ms = NULL WHERE claimed_by = ?1"
        static let listAll = "SELECT \(eventColumns) FROM webhook_events ORDER BY created_at DESC, id DESC LIMIT ?1"
        static let listStatus = "SELECT \(eventColumns) FROM webhook_events WHERE status = ?2 ORDER BY created_at DESC, id DESC LIMIT ?1"
        static let replay = """
            UPDATE webhook_events SET status = 'pending', next_attempt_ms = ?2, retry_from = ?3, claimed_by = NULL, \
            claimed_until_ms = NULL, delivered_at = NULL WHERE id = ?1 \
            AND NOT (status = 'pending' AND claimed_until_ms IS NOT NULL AND claimed_until_ms > ?2)
            """
        static let exists = "SELECT 1 FROM webhook_events WHERE id = ?1"
        static let counts = """
            SELECT (SELECT count(*) FROM webhook_events WHERE status = 'pending'), \
            (SELECT count(*) FROM webhook_events WHERE status = 'failed')
            """
        static let prune = "DELETE FROM webhook_events WHERE status = 'delivered' AND delivered_at < ?1"
    }

    static func readEvent(_ s: SQLiteStatement) -> WebhookDelivery {
        WebhookDelivery(id: s.text(0), team: s.text(1), type: s.text(2), videoID: s.text(3), payload: s.text(4),
                        createdAt: s.int(5), retryFrom: s.int(6), status: WebhookDeliveryStatus(rawValue: s.text(7)) ?? .pending,
                        attempts: s.int(8), nextAttemptMillis: s.int(9), lastStatus: s.intOrNil(10), lastError: s.textOrNil(11),
                        deliveredAt: s.intOrNil(12))
    }

    /// Team names as a JSON array for `json_each` (names are letters, digits, `-_.`; escaped anyway).
    static func jsonArray(_ items: [String]) -> String {
        var out: [UInt8] = [UInt8(ascii: "[")]
        for (i, t) in items.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: "\""))
            for b in t.utf8 where b >= 0x20 && b != UInt8(ascii: "\"") && b != UInt8(ascii: "\\") { out.append(b) }
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "]"))
        return String(decoding: out, as: UTF8.self)
    }

    // MARK: - VideoWatchStore

    public func recordVideoState(_ v: VideoRecord, event: WebhookDelivery?) throws -> Bool {
        let now = StoreClock.wallMillis()
        return try core.with { c in
            try c.transaction { () throws -> Bool in
                try c.prepare(PushSQL.recordVideoState).run(Self.videoValues(v))
                guard c.changes > 0 else { return false }
                if let e = event {
                    try c.prepare(PushSQL.insertEvent).run(e.id, e.team, e.type, e.videoID, e.payload, e.createdAt, e.retryFrom, now)
                }
                return true
            }
        }
    }

    public func unfinishedVideos(createdSince: Int, notPolledForMillis: Int, limit: Int) throws -> [VideoRecord] {
        let cutoff = StoreClock.wallMillis() - max(0, notPolledForMillis)
        return try core.with { c in
            try c.prepare(PushSQL.unfinishedVideos).query(createdSince, cutoff, max(0, limit), row: Self.readVideo)
        }
    }

    // MARK: - WebhookStore

    public func claimWebhookDeliveries(holder: String, limit: Int, perTeam: Int, skipTeams: [String], leaseMillis: Int) throws -> [WebhookDelivery] {
        guard limit > 0, perTeam > 0 else { return [] }
        let now = StoreClock.wallMillis()
        return try core.with { c in
            try c.transaction { () throws -> [WebhookDelivery] in
                let due = try c.prepare(PushSQL.dueEvents).query(now, limit, perTeam, Self.jsonArray(skipTeams), row: Self.readEvent)
                let claim = try c.prepare(PushSQL.claimEvent)
                for d in due { try claim.run(d.id, holder, now + max(1, leaseMillis)) }
                return due
            }
        }
    }

    public func settleWebhookDelivery(id: String, holder: String, _ outcome: WebhookAttemptOutcome) throws {
        let nowMillis = StoreClock.wallMillis()
        try core.with { c in
            switch outcome {
            case .delivered(let status):
                try c.prepare(PushSQL.settleDelivered).run(id, status, nowMillis / 1000)
            case .retry(let after, let status, let error):
                try c.prepare(PushSQL.settleRetry).run(id, holder, nowMillis + max(0, after), status, error)
            case .failed(let status, let error):
                try c.prepare(PushSQL.settleFailed).run(id, holder, status, error)
            case .released:
                try c.prepare(PushSQL.release).run(id, holder)
            }
        }
    }

    public func releaseWebhookClaims(holder: String) throws {
        try core.with { c in try c.prepare(PushSQL.releaseAll).run(holder) }
    }

    public func webhookDeliveries(status: WebhookDeliveryStatus?, limit: Int) throws -> [WebhookDelivery] {
        let n = max(0, limit)
        return try core.with { c in
            if let status { return try c.prepare(PushSQL.listStatus).query(n, status.rawValue, row: Self.readEvent) }
            return try c.prepare(PushSQL.listAll).query(n, row: Self.readEvent)
        }
    }

    public func replayWebhookDelivery(id: String, now: Int) throws -> WebhookReplay {
        let nowMillis = StoreClock.wallMillis()
        return try core.with { c in
            try c.prepare(PushSQL.replay).run(id, nowMillis, now)
            if c.changes > 0 { return .replayed }
            return try c.prepare(PushSQL.exists).first(id, row: { _ in true }) == true ? .inFlight : .unknown
        }
    }

    public func webhookOutboxCounts() throws -> WebhookOutboxCounts {
        try core.with { c in
            try c.prepare(PushSQL.counts).first { WebhookOutboxCounts(pending: $0.int(0), failed: $0.int(1)) } ?? WebhookOutboxCounts(pending: 0, failed: 0)
        }
    }

    public func pruneWebhookDeliveries(deliveredBefore: Int) throws -> Int {
        try core.with { c in
            try c.prepare(PushSQL.prune).run(deliveredBefore)
            return c.changes
        }
    }
}
