import Glibc
import Store
import Translation

/// How one upstream status call for a video is started: through a caller's exchange
/// (`UpstreamEngine.fetch`) or detached (`DetachedFetch`, the watcher). Either way its value is
/// handed to the continuation on the loop that started it.
typealias VideoPollStarter = (VideoPollHooks, @escaping (Result<VideoObject, APIError>) -> Void) -> Void

/// The one way Veil asks the upstream for a video's state, whoever asks: a caller's
/// `GET /v1/videos/{id}`, the character flow, or the watcher (issue 16). The call is shared with
/// every concurrent poll of this replica (across loops, for `videos.poll_cache_ms`) and, through a
/// claim in the store, with every other replica: at most one upstream poll per video per period
/// for the whole deployment. A poll that doesn't get the claim answers from the stored state
/// (which the claimant writes). Every outcome is shown to the watcher, which tells the video's
/// event streams and times its own next poll after it.
enum VideoPolling {
    static func poll(_ ctx: LoopContext, _ g: Gateway, _ record: VideoRecord, requestID: String,
                     start: @escaping VideoPollStarter, deliver: @escaping (PollCoalescer.Outcome) -> Void) {
        let cfg = ctx.snapshot.config
        let waiter = PollCoalescer.Waiter(loop: ctx.loop, deliver: deliver)
        switch g.polls.join(record.id, cacheMillis: cfg.videos.pollCacheMillis, now: ctx.loop.now, waiter: waiter) {
        case .ready(let outcome): return deliver(outcome)
        case .wait: return
        case .fetch: break
        }
        let period = cfg.videos.pollCacheMillis
        ctx.store({ db in try db.claimVideoPoll(id: record.id, periodMillis: period) }) { claim in
            switch claim {
            case .failure(let e):
                complete(ctx, g, record.id, .failure(VideoRoutes.storeFailure(g, e)), cache: false)
            case .success(.taken(let stored)):
                complete(ctx, g, record.id, stored.map { .success($0.object) } ?? .failure(.notFound("No such video.")), cache: true)
            case .success(.granted):
                fetchState(ctx, g, record, requestID: requestID, start: start)
            }
        }
    }

    /// The claimed poll: the upstream's answer, written to the store when it changed anything,
    /// then handed to every waiter. The write is awaited: once a caller has seen a state, every
    /// replica's next read of the store sees it too (a video seen completed on one replica
    /// downloads on another). A failed write is logged and the answer still goes out.
    private static func fetchState(_ ctx: LoopContext, _ g: Gateway, _ record: VideoRecord, requestID: String, start: VideoPollStarter) {
        let now = Int(time(nil))
        start(VideoPollHooks(ctx.snapshot, requestID: requestID, record: record, now: now)) { result in
            if case .success(let object) = result {
                var updated = record
                updated.apply(object, now: now)
                var compared = updated
                compared.updatedAt = record.updatedAt
                if compared != record {
                    return recordState(ctx, g, was: record, updated) { complete(ctx, g, record.id, result, cache: true) }
                }
            }
            complete(ctx, g, record.id, result, cache: true)
        }
    }

    /// Writes a newer state of an unfinished video. When it is the video's end and its team has a
    /// webhook, the event goes into the outbox in the same transaction; the store writes both only
    /// while the row is unfinished, so pollers racing to the end (on any replica) make one event.
    static func recordState(_ ctx: LoopContext, _ g: Gateway, was old: VideoRecord, _ new: VideoRecord, then: @escaping () -> Void) {
        let event = webhookEvent(ctx.snapshot.config, was: old, new, now: Int(time(nil)))
        ctx.store({ db in try db.recordVideoState(new, event: event) }) { stored in
            defer { then() }
            switch stored {
            case .failure(let e):
                g.log.logger.error("store: cannot update a video", metadata: ["video": "\(new.id)", "error": "\(g.log.redact("\(e)"))"])
            case .success(true):
                if event != nil { g.deliverer.nudge() }
            case .success(false):
                break       // finished (or deleted) meanwhile: somebody else recorded the end
            }
        }
    }

    /// The outbox event a state change makes: only the change to a final state, only for a team
    /// with a webhook. Pure.
    static func webhookEvent(_ config: GatewayConfig, was old: VideoRecord, _ new: VideoRecord, now: Int) -> WebhookDelivery? {
        guard !(VideoStatus(rawValue: old.status)?.isFinal ?? false),
              let status = VideoStatus(rawValue: new.status), let type = WebhookPayload.eventType(status),
              config.teams.contains(where: { $0.name == new.team && $0.webhook != nil }) else { return nil }
        var rng = SystemRandomNumberGenerator()
        let id = WebhookPayload.newEventID(using: &rng)
        let body = WebhookPayload.videoEvent(id: id, type: type, createdAt: now, videoID: new.id)
        return WebhookDelivery(id: id, team: new.team, type: type, videoID: new.id,
                               payload: String(decoding: body, as: UTF8.self), createdAt: now)
    }

    private static func complete(_ ctx: LoopContext, _ g: Gateway, _ id: String, _ outcome: PollCoalescer.Outcome, cache: Bool) {
        g.polls.complete(id, outcome, now: ctx.loop.now, cache: cache)
        g.watcher.observe(id, outcome, now: ctx.loop.now)
    }
}
