import Glibc
import HTTPWire
import Store
import Translation
import Upstream

/// The OpenAI Videos API over the upstream. Every video belongs to the team that made it;
/// another team's id and an unknown id get the same 404, so ids can't be probed. Each handler is
/// a short flow: pure checks, then store calls (on a store thread, answered on this loop) and
/// upstream exchanges (hook sets in VideoHooks.swift, driven by `UpstreamEngine`).
enum VideoRoutes {
    /// An operation of OpenAI's Videos API that the upstream can't do: 400, answered from the head.
    static func unsupported(_ what: String) -> @Sendable (Exchange, Gateway) -> Void {
        { x, _ in x.fail(APIError(400, "\(what) is not supported by this upstream; create a new video with POST /v1/videos.", code: "unsupported_operation")) }
    }

    // MARK: create

    static func create(_ x: Exchange, _ g: Gateway) {
        let cfg = x.snapshot.config
        guard let team = x.team else { return x.fail(.unauthorized) }
        let input: VideoCreateInput
        switch VideoCreateInput.parse(body: x.request.body, contentType: x.request.headers["content-type"]) {
        case .failure(let e): return x.fail(e)
        case .success(let i): input = i
        }
        let spec: VideoSpec
        switch VideoValidation.validate(input, settings: cfg.videos, teamModels: team.models) {
        case .failure(let e): return x.fail(e)
        case .success(let s): spec = s
        }
        x.model = spec.model
        if cfg.log.prompts { x.prompt = spec.prompt }
        // One store call: @name isolation (a character another team made can't be used in this
        // team's prompt; loose and normalised, see `mentionCandidates`), then one atomic reservation
        // against the team's video limits for the whole deployment. Made for every team, limits or
        // not: nothing reaches the upstream unless the store can record what it makes.
        let candidates = mentionCandidates(in: spec.prompt)
        let teamName = team.name
        let limits = VideoLimits(perDay: team.videosPerDay, inFlight: team.maxVideosInFlight,
                                 inFlightMaxAgeSeconds: cfg.videos.inFlightMaxAgeSeconds)
        let reservationID = newReservationID()
        let now = Int(time(nil))
        let expiresAt = now + reservationSeconds(cfg)
        x.context.store({ db -> (foreign: String?, reservation: VideoReservation?) in
            if let foreign = try CharacterRoutes.foreignCharacter(among: candidates, team: teamName, in: db) { return (foreign, nil) }
            return (nil, try db.reserveVideo(id: reservationID, team: teamName, limits: limits, now: now, expiresAt: expiresAt))
        }) { result in
            let checks: (foreign: String?, reservation: VideoReservation?)
            switch result {
            case .failure(let e): return failStore(x, g, e)
            case .success(let c): checks = c
            }
            if let name = checks.foreign {
                return x.fail(APIError(403, "The prompt uses @\(name), a character that belongs to another team.", param: "prompt", code: "character_not_owned"))
            }
            var reserved: String?
            if let r = checks.reservation {
                if let refusal = Policy.videoRefusal(team: team, r) { return x.fail(refusal.error, headers: refusal.headers) }
                if case .reserved(let id) = r { reserved = id }
            }
            let lease = reserved.map { reservationLease(x, $0) }
            if let lease { x.leases.append(lease) }
            guard case .url(let u)? = spec.image else { return submit(x, g, spec, team: team, reservation: reserved, lease: lease) }
            UpstreamEngine.fetch(x, ImageFetchHooks(url: u, settings: cfg.videos)) { fetched in
                switch fetched {
                case .failure(let e): x.fail(e)
                case .success(let bytes):
                    var s = spec
                    s.image = .bytes(bytes, filename: nil, contentType: ImageKind.sniff(bytes)?.mimeType)
                    submit(x, g, s, team: team, reservation: reserved, lease: lease)
                }
            }
        }
    }

    /// The upstream call, then the store: the video is recorded for the team (its row replacing
    /// the reservation, one transaction) before the caller hears of it. An exchange that ends any
    /// other way gives the reservation back (`lease`); one that dies with its replica leaves it to
    /// expire (`reservationSeconds`).
    static func submit(_ x: Exchange, _ g: Gateway, _ spec: VideoSpec, team: GatewayConfig.Team, reservation: String?, lease: Lease?) {
        let now = Int(time(nil))
        UpstreamEngine.fetch(x, VideoCreateHooks(x.snapshot, requestID: x.requestID, spec: spec, now: now)) { result in
            let created: VideoCreateHooks.Created
            switch result {
            case .failure(let e): return x.fail(e)
            case .success(let c): created = c
            }
            let record = VideoRecord(object: created.object, upstreamID: created.upstreamID, team: team.name, now: now)
            x.context.store({ db in try db.confirmVideo(reservation: reservation, record) }) { stored in
                if case .failure(let e) = stored {
                    if case .conflict = e {
                        // The upstream answered with the id of a video already recorded (perhaps
                        // another team's): never recorded twice, never handed to this caller.
                        g.log.logger.error("upstream: a new video came back with an id already recorded; refused",
                                           metadata: ["video": "\(record.id)", "request_id": "\(x.requestID)"])
                        return x.fail(APIError(502, "The upstream answered with the id of a video that already exists; nothing was recorded.",
                                               code: "upstream_invalid_response"))
                    }
                    g.log.logger.error("store: cannot record a new video", metadata: ["video": "\(record.id)", "request_id": "\(x.requestID)", "error": "\(e)"])
                    return x.fail(APIError(500, "The video was submitted but could not be recorded; contact the platform team with this request id.", code: "store_failed"))
                }
                lease?.keep()               // the reservation became the video's row
                g.watcher.watch(record)     // polled from now on, whoever asks (webhooks, event streams)
                let object = created.object
                x.send(200, object.jsonBytes, headers: pollHeaders(object, x.snapshot.config))
            }
        }
    }

    /// How long a reservation may wait for its confirmation: the longest a create can take (the
    /// image fetch, the upstream call, two store calls) and a minute's margin. Past it, the slot
    /// of a replica that died mid-create is free again.
    static func reservationSeconds(_ cfg: GatewayConfig) -> Int {
        (cfg.videos.imageFetch.timeoutMillis + cfg.upstream.requestTimeoutMillis + 2 * cfg.store.timeoutMillis) / 1000 + 60
    }

    static func newReservationID() -> String {
        var rng = SystemRandomNumberGenerator()
        let n = rng.next() as UInt64
        return "vres_" + String(n, radix: 16)
    }

    /// The reservation as a slot the exchange holds: let go (not kept) → given back in the store.
    static func reservationLease(_ x: Exchange, _ id: String) -> Lease {
        let ctx = x.context
        return Lease(reservation: {
            ctx.storeExecutor.run(on: ctx.loop, { db in try db.releaseVideoReservation(id: id) }) { _ in }
        })
    }

    // MARK: retrieve

    /// The caller's team's video `id` (the route's parameter), then `found`; answers 404 for an
    /// unknown id and for another team's (the same answer), 500 if the store fails.
    static func withOwnedVideo(_ x: Exchange, _ g: Gateway, _ found: @escaping (VideoRecord) -> Void) {
        guard let team = x.team else { return x.fail(.unauthorized) }
        guard let id = x.params.first.map(String.init), VeilID.upstreamVideoID(fromVeil: id) != nil else {
            return x.fail(.notFound("No such video."))
        }
        let teamName = team.name
        x.context.store({ db in try db.video(id: id, team: teamName) }) { result in
            switch result {
            case .failure(let e): failStore(x, g, e)
            case .success(nil): x.fail(.notFound("No such video."))
            case .success(let r?): found(r)
            }
        }
    }

    static func retrieve(_ x: Exchange, _ g: Gateway) {
        withOwnedVideo(x, g) { record in
            x.model = record.model
            let cfg = x.snapshot.config
            if record.status == "completed" || record.status == "failed" {
                return x.send(200, record.object.jsonBytes)      // finished: from the store, no upstream call
            }
            poll(x, g, record) { outcome in
                switch outcome {
                case .failure(let e): x.fail(e)
                case .success(let object): x.send(200, object.jsonBytes, headers: pollHeaders(object, cfg))
                }
            }
        }
    }

    /// Asks the upstream for a video's state through this exchange (its access line gets the
    /// upstream latency), shared with every concurrent poll and with the watcher: `VideoPolling`.
    static func poll(_ x: Exchange, _ g: Gateway, _ record: VideoRecord, then deliver: @escaping (PollCoalescer.Outcome) -> Void) {
        VideoPolling.poll(x.context, g, record, requestID: x.requestID,
                          start: { hooks, done in UpstreamEngine.fetch(x, hooks, then: done) }, deliver: deliver)
    }

    // MARK: list, delete

    static func list(_ x: Exchange, _ g: Gateway) {
        guard let team = x.team else { return x.fail(.unauthorized) }
        let query: ListQuery
        switch ListQuery.parse(x.request.head.query, isID: { VeilID.upstreamVideoID(fromVeil: $0) != nil }, kind: "video") {
        case .failure(let e): return x.fail(e)
        case .success(let q): query = q
        }
        let teamName = team.name
        x.context.store({ db in
            try db.listVideos(team: teamName, after: query.after, limit: query.limit, descending: query.descending)
        }) { result in
            switch result {
            case .failure(let e): failStore(x, g, e)
            case .success(let page):
                x.send(200, ListQuery.body(items: page.items.map(\.object.jsonBytes), firstID: page.items.first?.id,
                                           lastID: page.items.last?.id, hasMore: page.hasMore))
            }
        }
    }

    static func delete(_ x: Exchange, _ g: Gateway) {
        withOwnedVideo(x, g) { record in
            let teamName = record.team
            x.context.store({ db in try db.deleteVideo(id: record.id, team: teamName) }) { result in
                switch result {
                case .failure(let e): return failStore(x, g, e)
                case .success(false): return x.fail(.notFound("No such video."))
                case .success(true): break
                }
                // (A deleted video no longer counts as in flight: the store counts live rows.)
                g.polls.forget(record.id)
                g.watcher.forget(record.id)
                var w = JSONObjectWriter()
                w.string("id", record.id)
                w.string("object", "video.deleted")
                w.bool("deleted", true)
                x.send(200, w.finish())
            }
        }
    }

    // MARK: content

    static func content(_ x: Exchange, _ g: Gateway) {
        let variant = QueryString.parse(x.request.head.query)["variant"] ?? "video"
        switch variant {
        case "video", "watermarked": break
        case "thumbnail", "spritesheet":
            return x.fail(APIError(404, "This upstream produces no \(variant); only `video` and `watermarked` are available.", param: "variant", code: "variant_unavailable"))
        default:
            return x.fail(APIError(400, "`variant` must be `video` or `watermarked`.", param: "variant", code: "invalid_variant"))
        }
        let range = x.request.headers["range"]
        if let range, !VideoContentHooks.isByteRange(range) {
            return x.fail(APIError(416, "`Range` must be `bytes=start-end`, `bytes=start-` or `bytes=-suffix`.", code: "invalid_range"), headers: ["accept-ranges": "bytes"])
        }
        withOwnedVideo(x, g) { record in
            x.model = record.model
            guard record.status == "completed" else {
                return x.fail(APIError(400, "Video \(record.id) is \(record.status); its content is available once it is completed.", code: "video_not_ready"))
            }
            guard let url = variant == "watermarked" ? record.watermarkedURL : record.videoURL, !url.isEmpty else {
                return x.fail(APIError(404, "Video \(record.id) has no \(variant == "watermarked" ? "watermarked " : "")file.", param: "variant", code: "variant_unavailable"))
            }
            UpstreamEngine.proxy(x, VideoContentHooks(url: url, range: range))
        }
    }

    // MARK: helpers

    static func pollHeaders(_ o: VideoObject, _ cfg: GatewayConfig) -> HTTPHeaders {
        (o.status == .queued || o.status == .inProgress) ? ["openai-poll-after-ms": String(cfg.videos.pollAfterMillis)] : HTTPHeaders()
    }

    /// The answer to a failed store call: 503 `store_unavailable` when the store can't answer now
    /// (a database unreachable or restarting, past `store.timeout_ms`), 500 `store_failed` otherwise.
    static func storeFailure(_ g: Gateway, _ error: StoreError) -> APIError {
        if case .unavailable = error {
            g.logStoreUnavailable(error)
            return APIError(503, "The gateway's store is unavailable; try again shortly.", code: "store_unavailable")
        }
        g.log.logger.error("store failure", metadata: ["error": "\(error)"])
        return APIError(500, "The gateway's store failed; try again.", code: "store_failed")
    }

    /// Answers a failed store call (a 503 says when to try again).
    static func failStore(_ x: Exchange, _ g: Gateway, _ error: StoreError) {
        let e = storeFailure(g, error)
        x.fail(e, headers: e.status == 503 ? ["retry-after": "1"] : HTTPHeaders())
    }
}

extension VideoStatus {
    var isFinal: Bool { self == .completed || self == .failed }
}
