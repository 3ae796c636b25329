import Glibc
import HTTPWire
import Reactor
import Store
import Upstream

/// One loop's operational state: metric handles, the readiness cache and the usage recorder.
/// Touched only on its loop's thread.
public final class LoopOps {
    let metrics: LoopMetrics
    let store: any GatewayStore
    let log: GatewayLog
    // /readyz: the upstream probe's last answer, shared by the readiness checks of this loop.
    var upstreamCheckedAt: UInt64 = 0
    var upstreamState = "unknown"
    var probing = false
    var waiting: [Exchange] = []
    static let readinessCacheMillis: UInt64 = 5_000
    static let probeTimeoutMillis = 2_000

    init(metrics: GatewayMetrics, store: any GatewayStore, log: GatewayLog) {
        self.metrics = LoopMetrics(metrics)
        self.store = store
        self.log = log
    }

    /// Every exchange ends here (after its access line): metrics, then the usage log.
    func finished(_ x: Exchange) {
        let route = RouteTemplate.route(x.request.path)
        let method = RouteTemplate.method(x.request.method)
        metrics.request(route: route, method: method, status: x.status, team: x.team?.name,
                        errorCode: x.errorCode, upstreamMillis: x.upstreamLatencyMillis)
        // Usage is per team: requests without a valid token are in the access log and metrics only.
        guard let team = x.team else { return }
        let u = x.usage
        let record = UsageRecord(time: Int(time(nil)), team: team.name, endpoint: "\(method) \(route)", model: x.model,
                                 status: x.status, upstreamLatencyMillis: x.upstreamLatencyMillis,
                                 bytesIn: x.bytesIn, bytesOut: x.bytesOut,
                                 promptTokens: u?.prompt, completionTokens: u?.completion, totalTokens: u?.total,
                                 requestID: x.requestID)
        do { try store.recordUsage(record) } catch {
            log.logger.error("store: cannot record usage", metadata: ["error": "\(error)", "request_id": "\(x.requestID)"])
        }
    }
}

/// Routes that need no team token besides `/healthz`: CORS preflights, `/readyz`, `/metrics`.
enum OpsRoutes {
    /// Adds the CORS headers every answer carries, then answers preflights and the operations
    /// routes. True when the exchange was answered.
    static func handle(_ x: Exchange, _ g: Gateway) -> Bool {
        let cors = x.snapshot.cors
        let origin = x.request.headers["origin"]
        if cors.enabled {
            for f in cors.responseHeaders(origin: origin) { x.commonHeaders.replace(f.name, f.value) }
        }
        if CORSPolicy.isPreflight(method: x.request.method, headers: x.request.headers) {
            guard let h = cors.preflight(origin: origin, requestMethod: x.request.headers["access-control-request-method"],
                                         requestHeaders: x.request.headers["access-control-request-headers"]) else {
                x.fail(APIError(403, "This origin is not allowed to call Veil from a browser (config `cors.allowed_origins`).", code: "cors_origin_not_allowed"))
                return true
            }
            x.sendRaw(204, [], contentType: nil, headers: h)
            return true
        }
        switch x.request.path {
        case "/readyz":
            guard x.request.method == "GET" || x.request.method == "HEAD" else {
                x.fail(g.methodNotAllowed(x.request.method, allowed: "GET"), headers: ["allow": "GET, HEAD"])
                return true
            }
            readyz(x, g)
            return true
        case "/metrics":
            guard x.snapshot.config.metrics.enabled else { return false }
            guard x.request.method == "GET" || x.request.method == "HEAD" else {
                x.fail(g.methodNotAllowed(x.request.method, allowed: "GET"), headers: ["allow": "GET, HEAD"])
                return true
            }
            if let digest = x.snapshot.config.metrics.tokenSHA256, !bearerMatches(x.request.headers["authorization"], digest: digest) {
                x.fail(APIError(401, "/metrics needs its own bearer token (config `metrics.token_sha256`).", code: "invalid_api_key"),
                       headers: ["www-authenticate": "Bearer"])
                return true
            }
            x.sendRaw(200, g.metrics.render(), contentType: "text/plain; version=0.0.4; charset=utf-8")
            return true
        default:
            return false
        }
    }

    /// Constant-time comparison of the presented token's digest with the configured one.
    static func bearerMatches(_ authorization: String?, digest: String) -> Bool {
        guard let token = bearerToken(authorization), let expected = digestBytes(hex: digest) else { return false }
        return sameDigest(sha256Digest(token), expected)
    }

    // MARK: readiness

    /// Ready = a configuration is loaded (always, once serving), the store answers, and the upstream
    /// answered a probe (any status below 500) within 2 s; the probe's result is kept for 5 s.
    /// Nothing secret is shown: no URL, no key, no upstream message.
    static func readyz(_ x: Exchange, _ g: Gateway) {
        guard let ops = x.context.ops else { return answerReady(x, upstream: "unknown") }
        let now = x.context.loop.now
        if ops.upstreamCheckedAt != 0 && now - ops.upstreamCheckedAt < LoopOps.readinessCacheMillis {
            return answerReady(x, upstream: ops.upstreamState)
        }
        ops.waiting.append(x)
        guard !ops.probing else { return }
        ops.probing = true
        var r = HeaderPolicy.upstreamRequest(x, "GET", x.snapshot.upstreamBase + "/v1/models")
        r.timeoutMillis = LoopOps.probeTimeoutMillis
        r.maxResponseBytes = 1 << 20
        BufferedCall.start(x.context, r) { result in
            let state: String
            switch result {
            case .success(let (head, _)): state = head.status < 500 ? "ok" : "upstream_status_\(head.status)"
            case .failure(.timeout): state = "timeout"
            case .failure(.tooLarge): state = "ok"
            case .failure: state = "unreachable"
            }
            ops.upstreamState = state
            ops.upstreamCheckedAt = x.context.loop.now
            ops.probing = false
            let waiting = ops.waiting
            ops.waiting = []
            for w in waiting { answerReady(w, upstream: state) }
        }
    }

    static func answerReady(_ x: Exchange, upstream: String) {
        var storeState = "ok"
        if let ops = x.context.ops {
            do { _ = try ops.store.video(id: "readyz-probe", team: "") } catch { storeState = "unavailable" }
        }
        let ready = storeState == "ok" && upstream == "ok"
        var s = "{\"status\":\(ready ? "\"ready\"" : "\"not_ready\""),\"config_generation\":\(x.snapshot.generation)"
        s += ",\"store\":\"\(storeState)\",\"upstream\":\"\(upstream)\"}"
        x.send(ready ? 200 : 503, Array(s.utf8), headers: ["cache-control": "no-store"])
    }
}
