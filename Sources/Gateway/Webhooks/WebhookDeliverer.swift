import Glibc
import Reactor
import Store
import Upstream

/// Delivers the webhook outbox (issue 16), on one event loop of this replica (loop 0).
///
/// - What to send comes from the store only: events are written there with the state change
///   they report (`VideoPolling.recordState`), so a restart or a crash loses none; at start and
///   every `webhooks.poll_ms` this replica claims the due ones (a lease in the store: with several
///   replicas exactly one sends an event at a time; a dead replica's claims run out). A new event
///   of this replica's own is claimed at once (`nudge`).
/// - Each attempt: `POST` of the event's stored body with `webhook-id` (the event id, the same on
///   every retry), `webhook-timestamp` (now) and `webhook-signature` (`WebhookSignature`), through
///   Veil's own client with the image-fetch address policy (https unless `webhooks.allow_http`;
///   loopback/private/link-local addresses refused unless in `webhooks.allow_private`, checked on
///   the address connected; redirects not followed — a 3xx is a failed attempt) and a timeout
///   (`webhooks.timeout_ms`, connect included).
/// - 2xx: delivered. Anything else (a status, a timeout, a refused address): retried after an
///   exponential back-off with jitter (`WebhookBackoff`), until `webhooks.retry_for_s` after the
///   event (or its replay); then the event is marked failed (`veil webhooks list --failed`,
///   `veil webhooks replay`).
/// - Isolation: at most `webhooks.max_concurrent_per_endpoint` attempts in flight per team
///   endpoint, the claim taking no more per team than that and none for a team already at it, so
///   a slow or dead endpoint never holds the others' deliveries back; attempts run concurrently.
final class WebhookDeliverer: @unchecked Sendable {
    /// Set once by the gateway's init; the gateway owns the deliverer.
    weak var gateway: Gateway?
    /// The loop it runs on; set once by `start`, before any other thread can call `nudge`.
    private var ctx: LoopContext?
    // Loop-confined from here on.
    private var inFlight: [String: Int] = [:]
    private var timer: LoopTimer?
    private var claiming = false
    private var again = false
    private var stopped = false
    private var lastHousekeeping: UInt64 = 0
    private var lastPrune: UInt64 = 0

    /// Events claimed per store call.
    static let batch = 32
    /// Attempts in flight on this replica, all endpoints together.
    static let maxInFlight = 256
    /// A claim outlives its attempt's timeout by this much (the attempt's store call included).
    static let leaseMarginMillis = 5_000
    /// Outbox depth for `/metrics`, read this often.
    static let housekeepingMillis: UInt64 = 5_000
    /// Delivered events older than `webhooks.keep_delivered_s` are deleted this often.
    static let pruneMillis: UInt64 = 600_000
    /// A receiver's answer body is read (and dropped) up to this size, so the connection can be
    /// reused; past it the attempt still counts by its status.
    static let maxAnswerBytes = 64 * 1024

    /// Starts on `ctx`'s loop (the first claim at once: what a previous run left pending).
    func start(on ctx: LoopContext) {
        self.ctx = ctx
        ctx.loop.execute { [self] in tick() }
    }

    /// A new event was written: claim it now rather than at the next tick. Any thread.
    func nudge() {
        guard let ctx else { return }
        ctx.loop.execute { [self] in tick() }
    }

    /// No new attempt from now (shutdown); attempts in flight finish or are cut with the loop.
    func stop() {
        guard let ctx else { return }
        ctx.loop.execute { [self] in
            stopped = true
            timer?.cancel()
            timer = nil
        }
    }

    private func scheduleTick(_ ctx: LoopContext) {
        guard !stopped, timer == nil else { return }
        timer = ctx.loop.schedule(afterMillis: ctx.snapshot.config.webhooks.pollMillis) { [self] in
            timer = nil
            tick()
        }
    }

    private func tick() {
        guard !stopped, let g = gateway, let ctx else { return }
        if claiming { again = true; return }
        housekeeping(ctx, g)
        let cfg = ctx.snapshot.config.webhooks
        let per = cfg.maxConcurrentPerEndpoint
        let room = WebhookDeliverer.maxInFlight - inFlight.values.reduce(0, +)
        guard room > 0 else { return scheduleTick(ctx) }
        let busy = inFlight.filter { $0.value >= per }.map(\.key)
        let limit = min(WebhookDeliverer.batch, room)
        let holder = g.replicaID, lease = cfg.timeoutMillis + WebhookDeliverer.leaseMarginMillis
        claiming = true
        ctx.store({ db in
            try db.claimWebhookDeliveries(holder: holder, limit: limit, perTeam: per, skipTeams: busy, leaseMillis: lease)
        }) { [self] result in
            claiming = false
            switch result {
            case .success(let due):
                for d in due { attempt(d, ctx, g) }
                if due.count == limit { again = true }        // more may be due
            case .failure(let e):
                if case .unavailable = e { g.logStoreUnavailable(e) }
                else { g.log.logger.error("store: cannot claim webhook deliveries", metadata: ["error": "\(g.log.redact("\(e)"))"]) }
            }
            if again && !stopped {
                again = false
                tick()
            } else {
                scheduleTick(ctx)
            }
        }
    }

    /// The outbox depth for `/metrics`, and now and then the delivered events past their keep.
    private func housekeeping(_ ctx: LoopContext, _ g: Gateway) {
        let now = ctx.loop.now
        guard lastHousekeeping == 0 || now >= lastHousekeeping + WebhookDeliverer.housekeepingMillis else { return }
        lastHousekeeping = now
        let metrics = g.metrics
        ctx.store({ db in try db.webhookOutboxCounts() }) { result in
            if case .success(let c) = result {
                metrics.outboxPending.set(Double(c.pending))
                metrics.outboxFailed.set(Double(c.failed))
            }
        }
        guard lastPrune == 0 || now >= lastPrune + WebhookDeliverer.pruneMillis else { return }
        lastPrune = now
        let before = Int(time(nil)) - ctx.snapshot.config.webhooks.keepDeliveredSeconds
        ctx.store({ db in try db.pruneWebhookDeliveries(deliveredBefore: before) }) { _ in }
    }

    // MARK: one attempt

    private func attempt(_ d: WebhookDelivery, _ ctx: LoopContext, _ g: Gateway) {
        let snapshot = ctx.snapshot
        let cfg = snapshot.config.webhooks
        guard let hook = snapshot.config.teams.first(where: { $0.name == d.team })?.webhook else {
            // The team (or its webhook) left the configuration: nowhere to send it.
            g.metrics.webhookFailed("gave_up")
            return settle(d, .failed(status: nil, error: "team `\(d.team)` has no webhook configured"), ctx, g)
        }
        guard inFlight[d.team, default: 0] < cfg.maxConcurrentPerEndpoint else { return settle(d, .released, ctx, g) }
        inFlight[d.team, default: 0] += 1
        let request = WebhookDeliverer.request(d, url: hook.url, key: hook.key, settings: cfg, timestamp: Int(time(nil)))
        let a = WebhookAttempt { [self] status, error in
            if let n = inFlight[d.team] { inFlight[d.team] = n > 1 ? n - 1 : nil }
            finished(d, status: status, error: error, ctx, g)
        }
        // The transfer keeps its delegate (the attempt) alive until it finishes.
        a.transfer = ctx.upstream.start(request, delegate: a)
    }

    /// The signed request of one attempt. Pure.
    static func request(_ d: WebhookDelivery, url: String, key: [UInt8], settings cfg: GatewayConfig.WebhookSettings, timestamp: Int) -> UpstreamRequest {
        let body = Array(d.payload.utf8)
        var r = UpstreamRequest(method: "POST", url: url, headers: [
            ("content-type", "application/json"),
            ("user-agent", "Veil-Webhooks/\(VeilVersion.current)"),
            ("webhook-id", d.id),
            ("webhook-timestamp", String(timestamp)),
            ("webhook-signature", WebhookSignature.sign(id: d.id, timestamp: timestamp, body: body, key: key)),
        ], body: body)
        r.refusePrivateAddresses = true
        r.addressAllowList = cfg.allowPrivate
        r.allowedSchemes = cfg.allowHTTP ? ["http", "https"] : ["https"]
        r.connectTimeoutMillis = min(cfg.timeoutMillis, 5_000)
        r.timeoutMillis = cfg.timeoutMillis
        r.stallTimeoutMillis = cfg.timeoutMillis
        // No `maxResponseBytes`: the transport refuses a declared length past it before the head
        // reaches the delegate, so a 2xx with a large body would lose its status and be retried
        // (delivered again and again). `WebhookAttempt` stops reading past `maxAnswerBytes`.
        r.receiveBufferBytes = 4 * 1024
        return r
    }

    /// What an attempt's end means for the event. Pure.
    static func outcome(_ d: WebhookDelivery, status: Int?, error: UpstreamError?, settings cfg: GatewayConfig.WebhookSettings,
                        now: Int, jitter: Double) -> (outcome: WebhookAttemptOutcome, reason: String?) {
        if let status, (200...299).contains(status) { return (.delivered(status: status), nil) }
        let reason: String
        let text: String
        if let status {
            reason = "status"
            text = "the receiver answered HTTP \(status)"
        } else {
            switch error {
            case .timeout(let m)?: reason = "timeout"; text = "timeout: \(m)"
            case .connect(let m)?: reason = "connect"; text = "could not connect: \(m)"
            case .refused(let m)?: reason = "refused"; text = "refused by the address policy (webhooks.allow_http / allow_private): \(m)"
            case .broken(let m)?: reason = "other"; text = "the answer broke off: \(m)"
            case .tooLarge?: reason = "other"; text = "the answer was too large"
            case .cancelled?: reason = "other"; text = "cancelled"
            case nil: reason = "other"; text = "no answer"
            }
        }
        let delay = WebhookBackoff.delayMillis(afterAttempts: d.attempts + 1, initial: cfg.backoffInitialMillis,
                                               max: cfg.backoffMaxMillis, jitter: jitter)
        switch WebhookBackoff.decide(delayMillis: delay, now: now, retryFrom: d.retryFrom, retryForSeconds: cfg.retryForSeconds) {
        case .retry(let ms): return (.retry(afterMillis: ms, status: status, error: text), reason)
        case .giveUp: return (.failed(status: status, error: text + " (retries stopped after webhooks.retry_for_s)"), reason)
        }
    }

    private func finished(_ d: WebhookDelivery, status: Int?, error: UpstreamError?, _ ctx: LoopContext, _ g: Gateway) {
        let cfg = ctx.snapshot.config.webhooks
        var (outcome, reason) = WebhookDeliverer.outcome(d, status: status, error: error, settings: cfg, now: Int(time(nil)),
                                                         jitter: Double.random(in: 0...1))
        switch outcome {
        case .delivered:
            g.metrics.webhookDeliveries.increment()
        case .retry(let after, let s, let text):
            if let reason { g.metrics.webhookFailed(reason) }
            outcome = .retry(afterMillis: after, status: s, error: g.log.redact(text))
            g.log.logger.warning("webhook delivery failed; will retry", metadata: [
                "event": "\(d.id)", "team": "\(d.team)", "attempt": "\(d.attempts + 1)", "retry_in_ms": "\(after)", "error": "\(g.log.redact(text))"])
        case .failed(let s, let text):
            if let reason { g.metrics.webhookFailed(reason) }
            g.metrics.webhookFailed("gave_up")
            outcome = .failed(status: s, error: g.log.redact(text))
            g.log.logger.error("webhook delivery given up", metadata: [
                "event": "\(d.id)", "team": "\(d.team)", "attempts": "\(d.attempts + 1)", "error": "\(g.log.redact(text))"])
        case .released:
            break
        }
        settle(d, outcome, ctx, g)
    }

    private func settle(_ d: WebhookDelivery, _ outcome: WebhookAttemptOutcome, _ ctx: LoopContext, _ g: Gateway) {
        let holder = g.replicaID, id = d.id
        ctx.store({ db in try db.settleWebhookDelivery(id: id, holder: holder, outcome) }) { result in
            if case .failure(let e) = result {
                // The claim runs out and the event is attempted again: at least once.
                g.log.logger.error("store: cannot record a webhook attempt", metadata: ["event": "\(id)", "error": "\(g.log.redact("\(e)"))"])
            }
        }
    }
}

/// One POST's end: the receiver's status (the body is read and dropped), or why there was none.
final class WebhookAttempt: UpstreamDelegate {
    private var status: Int?
    private var done: ((Int?, UpstreamError?) -> Void)?
    private var answerBytes = 0
    /// Its transfer, to stop it past `WebhookDeliverer.maxAnswerBytes` (the transfer owns the
    /// attempt, not the other way round).
    weak var transfer: UpstreamTransfer?

    init(_ done: @escaping (Int?, UpstreamError?) -> Void) { self.done = done }

    func upstreamDidReceiveHead(_ head: UpstreamResponseHead) { status = head.status }
    func upstreamDidReceive(_ bytes: UnsafeRawBufferPointer) {
        answerBytes += bytes.count
        if answerBytes > WebhookDeliverer.maxAnswerBytes { transfer?.cancel() }
    }

    func upstreamDidFinish(_ error: UpstreamError?) {
        guard let d = done else { return }
        done = nil
        // A head arrived: the status decides (an over-long or cut body after a 2xx is delivered).
        if let status { return d(status, nil) }
        d(nil, error ?? .broken("no response head"))
    }
}
