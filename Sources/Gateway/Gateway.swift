import HTTPServer
import HTTPWire
import Reactor
import Upstream
import Translation
import Glibc
import Store

/// Everything Veil keeps: video and character ownership, usage.
public typealias GatewayStore = VideoStore & CharacterStore & UsageStore

/// The gateway's request handler: request id, authentication, routing. Runs on the loop that
/// owns the connection; everything it starts (upstream transfers, timers) stays on that loop.
public final class Gateway: HTTPHandler, @unchecked Sendable {
    /// Indexed by `EventLoop.id`; filled before the server starts.
    public var contexts: [LoopContext] = []
    public let log: GatewayLog
    public let store: any GatewayStore
    let polls = PollCoalescer()
    public let metrics = GatewayMetrics()

    public init(log: GatewayLog, store: any GatewayStore) {
        self.log = log
        self.store = store
    }

    public func handle(_ request: HTTPRequest, _ response: HTTPResponder) {
        let ctx = contexts[request.loop.id]
        let snap = ctx.snapshot
        let exchange = Exchange(request: request, response: response, context: ctx, snapshot: snap, log: log)
        route(exchange)
    }

    func route(_ x: Exchange) {
        let path = x.request.path
        let method = x.request.method
        // CORS headers on every answer; preflights, /readyz and /metrics need no token.
        if OpsRoutes.handle(x, self) { return }
        // Routes that need no token.
        if path == "/healthz" {
            guard method == "GET" || method == "HEAD" else { return x.fail(methodNotAllowed(method, allowed: "GET"), headers: ["allow": "GET, HEAD"]) }
            return x.send(200, Array("{\"status\":\"ok\"}".utf8))
        }
        guard path.hasBytePrefix("/v1/") || path == "/v1" else {
            return x.fail(.notFound("Unknown route \(method) \(String(path.prefix(200))). Veil serves the OpenAI API under /v1."))
        }
        // Everything under /v1 needs a team token.
        switch x.snapshot.authenticator.authenticate(authorization: x.request.headers["authorization"], now: Int(time(nil))) {
        case .team(let i): x.teamIndex = i
        case .expired: return x.fail(.tokenExpired)
        case .missing, .invalid: return x.fail(.unauthorized)
        }
        guard let team = x.team else { return x.fail(.unauthorized) }
        if let refusal = x.snapshot.policy.admitRequest(x, team: team) { return x.fail(refusal.error, headers: refusal.headers) }
        if CharacterRoutes.handles(path) { return CharacterRoutes.route(x, self) }
        if path == "/v1/videos" || path.hasBytePrefix("/v1/videos/") {
            return VideoRoutes.route(x, self)
        }

        switch (method, path) {
        case ("POST", "/v1/chat/completions"):
            ChatProxy.start(x)
        case (_, "/v1/chat/completions"):
            x.fail(methodNotAllowed(method, allowed: "POST"), headers: ["allow": "POST"])
        case ("GET", "/v1/models"):
            ModelsProxy.start(x)
        case (_, "/v1/models"):
            x.fail(methodNotAllowed(method, allowed: "GET"), headers: ["allow": "GET"])
        default:
            x.fail(.notFound("Unknown route \(method) \(String(path.prefix(200)))."))
        }
    }

    /// Gives each loop its operations state and the metrics their server; before the server starts.
    public func attach(server: HTTPServer) {
        metrics.server = server
        for c in contexts { c.ops = LoopOps(metrics: metrics, store: store, log: log) }
    }

    func methodNotAllowed(_ method: String, allowed: String) -> APIError {
        APIError(405, "Method \(method) is not allowed here; use \(allowed).", code: "method_not_allowed")
    }
}
