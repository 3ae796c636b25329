import HTTPServer
import Synchronization
import HTTPWire
import Reactor
import Upstream
import Translation
import Glibc
import Store

/// The gateway's request handler. At admission (head only, no body byte read): request id, CORS,
/// the route, the team token, the rate limit and the body limit — a refused request is answered
/// without its body ever being buffered. Once the body is in: the route's handler. Runs on the loop
/// that owns the connection; everything it starts (upstream exchanges, timers) stays on that loop,
/// and the store is reached only through `LoopContext.store` (a store thread).
public final class Gateway: HTTPHandler, @unchecked Sendable {
    /// Indexed by `EventLoop.id`; filled before the server starts.
    public var contexts: [LoopContext] = []
    public let log: GatewayLog
    public let store: StoreExecutor
    /// This process among the replicas sharing the store (heartbeats, claims' holders).
    public let replicaID: String
    let polls = PollCoalescer()
    /// Polls unfinished videos by itself and tells their event streams (issue 16).
    let watcher = VideoWatcher()
    /// Sends the teams' webhooks from the store's outbox (issue 16).
    let deliverer = WebhookDeliverer()
    public let metrics = GatewayMetrics()
    let routes = Gateway.routeTable
    /// When "store unavailable" was last logged (monotonic ms): once a second is enough in an outage.
    private let storeUnavailableLoggedAt = Atomic<UInt64>(0)
    static let storeUnavailableLogIntervalMillis: UInt64 = 1_000

    public init(log: GatewayLog, store: StoreExecutor, replicaID: String = Gateway.newReplicaID()) {
        self.log = log
        self.store = store
        self.replicaID = replicaID
        watcher.gateway = self
        deliverer.gateway = self
        metrics.videosWatched = { [watcher] in watcher.count }
    }

    /// Starts pushing (once the loops run): the watcher takes up the store's unfinished videos,
    /// the deliverer what the outbox holds.
    public func startPush() {
        guard let first = contexts.first else { return }
        watcher.start()
        deliverer.start(on: first)
    }

    /// Shutting down: event streams end (their clients reconnect elsewhere), no new polls, no new
    /// webhook attempt (pending ones stay in the outbox for the next run or another replica).
    public func beginDrain() {
        watcher.drain()
        deliverer.stop()
    }

    /// `host-pid-random`: unique among replicas, readable in the `replicas` table.
    public static func newReplicaID() -> String {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        var rng = SystemRandomNumberGenerator()
        let host = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(host.isEmpty ? "veil" : host)-\(getpid())-\(String(rng.next() as UInt32, radix: 16))"
    }

    /// Logs that the store can't answer, at most once per `storeUnavailableLogIntervalMillis`.
    func logStoreUnavailable(_ error: StoreError) {
        let now = EventLoop.monotonicMillis()
        let last = storeUnavailableLoggedAt.load(ordering: .relaxed)
        guard now >= last + Gateway.storeUnavailableLogIntervalMillis,
              storeUnavailableLoggedAt.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged else { return }
        log.logger.warning("store unavailable: answering 503", metadata: ["reason": "\(log.redact("\(error)"))"])
    }

    /// Every route Veil serves (see `Route`).
    static let routeTable = RouteTable([
        Route("GET", "/healthz", access: .open) { x, _ in x.send(200, Array("{\"status\":\"ok\"}".utf8)) },
        Route("GET", "/readyz", access: .open, OpsRoutes.readyz),
        Route("GET", "/metrics", access: .open, OpsRoutes.metrics),

        Route("POST", "/v1/chat/completions", body: .configured, ChatCompletions.start),
        Route("GET", "/v1/models", Models.list),
        Route("GET", "/v1/models/{id}", Models.retrieve),
        Route("POST", "/v1/responses", body: .configured, Passthrough.start),
        Route("POST", "/v1/embeddings", body: .configured, Passthrough.start),
        Route("POST", "/v1/images/generations", body: .configured, Passthrough.start),
        Route("POST", "/v1/moderations", body: .configured, Passthrough.start),
        Route("POST", "/v1/audio/speech", body: .configured, Passthrough.start),
        Route("POST", "/v1/audio/transcriptions", body: .configured, Passthrough.start),

        Route("POST", "/v1/videos", body: .configured, VideoRoutes.create),
        Route("GET", "/v1/videos", VideoRoutes.list),
        Route("GET", "/v1/videos/{id}", VideoRoutes.retrieve),
        Route("DELETE", "/v1/videos/{id}", VideoRoutes.delete),
        Route("GET", "/v1/videos/{id}/content", VideoRoutes.content),
        Route("GET", "/v1/videos/{id}/events", queryToken: true, VideoEventRoutes.events),
        // The SDK has these; the upstream can't: 4xx, never a 5xx the SDKs would retry.
        Route("POST", "/v1/videos/{id}/remix", body: .answeredAtHead, VideoRoutes.unsupported("Remixing")),
        Route("POST", "/v1/videos/edits", body: .answeredAtHead, VideoRoutes.unsupported("Editing a video")),
        Route("POST", "/v1/videos/extensions", body: .answeredAtHead, VideoRoutes.unsupported("Extending a video")),

        Route("POST", "/v1/characters", body: .atMost(CharacterCreateInput.maxBodyBytes), CharacterRoutes.create),
        Route("GET", "/v1/characters", CharacterRoutes.list),
        Route("GET", "/v1/characters/{id}", CharacterRoutes.retrieve),
        Route("DELETE", "/v1/characters/{id}", CharacterRoutes.delete),
        Route("GET", "/v1/videos/characters/{id}", CharacterRoutes.sdkRetrieve),
        Route("POST", "/v1/videos/characters", body: .answeredAtHead, CharacterRoutes.unsupportedUpload),
    ])

    // MARK: HTTPHandler

    public func admit(_ head: HTTPRequestHead, _ response: HTTPResponder, peer: String, loop: EventLoop) -> HTTPAdmission {
        let ctx = contexts[loop.id]
        let x = Exchange(head: head, response: response, peer: peer, context: ctx, snapshot: ctx.snapshot, log: log)
        // CORS headers on every answer; a preflight needs no token and no route.
        if OpsRoutes.applyCORS(x) { return .answered }
        let path = head.path
        let underV1 = path.hasBytePrefix("/v1/") || path == "/v1"
        let match = routes.match(method: head.method, path: path)
        var needsTeam = underV1
        if case .found(let r, _) = match { needsTeam = r.access == .team }
        if needsTeam {
            var authorization = head.headers["authorization"]
            if authorization == nil, case .found(let r, _) = match, r.acceptsQueryToken, let token = QueryString.parse(head.query)["token"] {
                // Never logged: the access log and every message carry the path without its query.
                guard x.snapshot.config.cors.allowQueryToken else {
                    x.fail(APIError(401, "A token in the query is not accepted (config `cors.allow_query_token` is off); send `Authorization: Bearer <token>`.",
                                    code: "query_token_not_allowed"))
                    return .answered
                }
                authorization = "Bearer " + token
            }
            switch Gateway.authenticate(authorization, x.snapshot, ctx.verifiedTokens) {
            case .team(let i):
                x.teamIndex = i
                if case .found(let r, _) = match, r.acceptsQueryToken { x.authorization = authorization }
            case .expired: x.fail(.tokenExpired); return .answered
            case .missing, .invalid: x.fail(.unauthorized); return .answered
            }
        }
        switch match {
        case .notFound:
            let off = Set(Passthrough.supported).subtracting(x.snapshot.config.upstream.passthrough)
            let served = underV1 ? " Veil serves: \(routes.servedSummary(disabled: off))." : " Veil serves the OpenAI API under /v1."
            x.fail(.notFound("Unknown route \(head.method) \(String(path.prefix(200))).\(served)"))
            return .answered
        case .methodNotAllowed(let allow):
            x.fail(APIError(405, "Method \(head.method) is not allowed here; use \(allow).", code: "method_not_allowed"), headers: ["allow": allow])
            return .answered
        case .found(let route, let params):
            x.route = route
            x.params = params
            if let team = x.team, let refusal = x.snapshot.policy.admitRequest(x, team: team) {
                x.fail(refusal.error, headers: refusal.headers)
                return .answered
            }
            let limit: Int
            switch route.body {
            case .answeredAtHead:
                route.handler(x, self)
                return .answered
            case .none: limit = RouteTable.ignoredBodyLimit
            case .configured: limit = x.snapshot.config.limits.bodyBytes
            case .atMost(let n): limit = min(n, x.snapshot.config.limits.bodyBytes)
            }
            if let declared = Gateway.declaredLength(head), declared > limit {
                x.fail(APIError(413, "The request body is \(declared) bytes; this endpoint accepts at most \(limit).", code: "request_too_large"))
                return .answered
            }
            response.attachment = x
            return .readBody(limit: limit)
        }
    }

    public func handle(_ request: HTTPRequest, _ response: HTTPResponder) {
        guard let x = response.attachment as? Exchange, let route = x.route else {
            return response.respond(status: 500, headers: ["content-type": "application/json"],
                                    body: APIError(500, "The request lost its admission.", code: "internal_error").body)
        }
        response.attachment = nil
        x.received(body: request.body)
        route.handler(x, self)
    }

    /// The team token's verdict: this loop's recent verdict for the very same value, else a SHA-256
    /// against the configured digests (remembered when it names a team).
    static func authenticate(_ authorization: String?, _ snapshot: ConfigSnapshot, _ cache: VerifiedTokens) -> TokenAuthenticator.Outcome {
        let now = Int(time(nil))
        guard let authorization else { return .missing }
        if let hit = cache.lookup(authorization, generation: snapshot.generation, now: now) { return hit }
        let (outcome, expiry) = snapshot.authenticator.authenticateWithExpiry(authorization: authorization, now: now)
        if case .team(let t) = outcome { cache.remember(authorization, team: t, expiresAt: expiry, generation: snapshot.generation) }
        return outcome
    }

    /// The `Content-Length` of a head (already validated by the parser: digits, equal repeats).
    static func declaredLength(_ head: HTTPRequestHead) -> Int? {
        guard let v = head.headers["content-length"] else { return nil }
        var n = 0
        for c in v.utf8 {
            if c == 0x2C { break }                       // "5, 5": the parser checked they agree
            if c >= 0x30 && c <= 0x39 { n = n &* 10 &+ Int(c - 0x30) }
        }
        return n
    }

    /// Gives each loop its operations state and the metrics their server; before the server starts.
    public func attach(server: HTTPServer) {
        metrics.server = server
        for c in contexts { c.ops = LoopOps(metrics: metrics, log: log, loop: c.loop) }
    }
}
