// What pushing needs from the store (issue 16): the video watcher's view of unfinished videos,
// and the webhook outbox. Backend-neutral, like Records.swift: both backends implement these
// protocols and pass the same contract tests.
//
// Times: `createdAt`, `retryFrom`, `deliveredAt` are Unix SECONDS (as everywhere in the store);
// `nextAttemptMillis` and the claims' lease are the store's own clock in milliseconds (the
// database's for PostgreSQL, as for poll claims), so replicas' clock skew does not matter.

/// A webhook event waiting in the outbox (or delivered, or given up), with its delivery state.
public struct WebhookDelivery: Sendable, Equatable {
    /// `evt_…`: also the `webhook-id` of every attempt (receivers deduplicate by it).
    public var id: String
    public var team: String
    /// `video.completed` | `video.failed`
    public var type: String
    public var videoID: String
    /// The exact body sent on every attempt (signed with a fresh timestamp each time).
    public var payload: String
    public var createdAt: Int
    /// Retries are counted from here (`webhooks.retry_for_s`): the creation, or a replay.
    public var retryFrom: Int
    public var status: WebhookDeliveryStatus
    /// Attempts made so far (a claim released without an attempt does not count).
    public var attempts: Int
    /// When the next attempt is due (store clock, ms).
    public var nextAttemptMillis: Int
    /// The receiver's last HTTP status, if it answered.
    public var lastStatus: Int?
    /// Why the last attempt failed (never the secret, never the key).
    public var lastError: String?
    public var deliveredAt: Int?

    public init(id: String, team: String, type: String, videoID: String, payload: String, createdAt: Int,
                retryFrom: Int? = nil, status: WebhookDeliveryStatus = .pending, attempts: Int = 0,
                nextAttemptMillis: Int = 0, lastStatus: Int? = nil, lastError: String? = nil, deliveredAt: Int? = nil) {
        self.id = id
        self.team = team
        self.type = type
        self.videoID = videoID
        self.payload = payload
        self.createdAt = createdAt
        self.retryFrom = retryFrom ?? createdAt
        self.status = status
        self.attempts = attempts
        self.nextAttemptMillis = nextAttemptMillis
        self.lastStatus = lastStatus
        self.lastError = lastError
        self.deliveredAt = deliveredAt
    }
}

public enum WebhookDeliveryStatus: String, Sendable, Equatable, CaseIterable {
    /// Waiting for its first or next attempt.
    case pending
    /// A receiver answered 2xx.
    case delivered
    /// Given up (`webhooks.retry_for_s` passed, or the team has no webhook any more); a replay
    /// makes it pending again.
    case failed
}

/// How one claimed delivery ended (`settleWebhookDelivery`).
public enum WebhookAttemptOutcome: Sendable, Equatable {
    /// The receiver answered 2xx.
    case delivered(status: Int)
    /// Failed; try again `afterMillis` from now (store clock).
    case retry(afterMillis: Int, status: Int?, error: String)
    /// Failed for good.
    case failed(status: Int?, error: String)
    /// Not attempted (the endpoint is busy, the process is stopping): the claim is given back
    /// and nothing else changes.
    case released
}

/// Outbox sizes for `/metrics`.
public struct WebhookOutboxCounts: Sendable, Equatable {
    public var pending: Int
    public var failed: Int
    public init(pending: Int, failed: Int) { self.pending = pending; self.failed = failed }
}

/// The video watcher's part of the store.
public protocol VideoWatchStore: Sendable {
    /// Writes a newer state of an UNFINISHED video: the (id, team) row is overwritten only while
    /// it is still queued/in progress and not deleted. With `event`, the webhook event is added to
    /// the outbox in the same transaction (at least once: the state change and its event commit
    /// together or not at all). Answers false — nothing written — when the row was already
    /// finished, deleted or absent, so two pollers racing to the end record one event.
    func recordVideoState(_ v: VideoRecord, event: WebhookDelivery?) throws -> Bool
    /// Live unfinished videos created at or after `createdSince` (seconds) whose last poll claim
    /// is older than `notPolledForMillis` (store clock; 0: every one), oldest first, at most
    /// `limit`: what a starting (or surviving) replica watches.
    func unfinishedVideos(createdSince: Int, notPolledForMillis: Int, limit: Int) throws -> [VideoRecord]
}

/// The webhook outbox: events written with the state change that caused them, delivered by
/// whichever replica claims them (a lease, so exactly one sends an event at a time).
public protocol WebhookStore: Sendable {
    /// Claims up to `limit` due pending deliveries for `holder` for `leaseMillis` (store clock):
    /// at most `perTeam` per team (one team's dead endpoint can't fill the batch), none of the
    /// teams in `skipTeams` (their endpoints are busy here), oldest due first. A claim whose lease
    /// ran out (its holder died) can be claimed again.
    func claimWebhookDeliveries(holder: String, limit: Int, perTeam: Int, skipTeams: [String], leaseMillis: Int) throws -> [WebhookDelivery]
    /// Records how a claimed attempt ended (only `holder`'s claim; a lost claim is ignored).
    func settleWebhookDelivery(id: String, holder: String, _ outcome: WebhookAttemptOutcome) throws
    /// Gives back every claim `holder` still has (a replica stopping): due again at once.
    func releaseWebhookClaims(holder: String) throws
    /// Deliveries newest first, all or of one status, at most `limit` (`veil webhooks list`).
    func webhookDeliveries(status: WebhookDeliveryStatus?, limit: Int) throws -> [WebhookDelivery]
    /// Makes a delivered, failed or waiting event pending again, due now, its retry period
    /// restarted at `now` (seconds); the same id, body and webhook-id. Never one whose attempt is
    /// in flight (claimed, its lease not run out): that would give it two holders at once.
    func replayWebhookDelivery(id: String, now: Int) throws -> WebhookReplay
    func webhookOutboxCounts() throws -> WebhookOutboxCounts
    /// Deletes delivered events delivered before `deliveredBefore` (seconds); answers how many.
    func pruneWebhookDeliveries(deliveredBefore: Int) throws -> Int
}

/// What `replayWebhookDelivery` did.
public enum WebhookReplay: Sendable, Equatable {
    /// Pending again, due now.
    case replayed
    /// Left alone: a replica is attempting it right now (its answer settles it).
    case inFlight
    /// No such event.
    case unknown
}
