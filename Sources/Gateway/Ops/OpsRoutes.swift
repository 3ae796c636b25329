import Glibc
import HTTPWire
import Reactor
import Store
import Translation
import Upstream

/// One loop's operational state: metric handles, the access-log buffer, the readiness cache and
/// the usage recorder. Touched only on its loop's thread.
public final class LoopOps: TimerTarget {
    let metrics: LoopMetrics
    let log: GatewayLog
    unowned let loop: EventLoop
    /// Access lines waiting for one `write` (nginx's `access_log … buffer= flush=`): flushed when
    /// `log.buffer_bytes` are waiting, `log.flush_ms` after the first line, and when the loop stops.
    private var accessBuffer: [UInt8] = []
    private var flushTimer: LoopTimer?
    // /readyz: the last probe's answer (upstream and store), shared by the readiness checks of
    // this loop for `readinessCacheMillis`.
    var checkedAt: UInt64 = 0
    var lastState = (upstream: "unknown", store: "unknown")
    var probing = false
    var waiting: [Exchange] = []
    static let readinessCacheMillis: UInt64 = 5_000
    static let probeTimeoutMillis = 2_000

    init(metrics: GatewayMetrics, log: GatewayLog, loop: EventLoop) {
        self.metrics = LoopMetrics(metrics)
        self.log = log
        self.loop = loop
    }

    deinit { flushTimer?.cancel() }

    func logAccess(_ x: Exchange, durationMillis: Int) {
        log.access(x, durationMillis: durationMillis, into: &accessBuffer)
        guard !accessBuffer.isEmpty else { return }
        let settings = x.snapshot.config.log
        if accessBuffer.count >= settings.bufferBytes {
            flushAccessLog()
        } else if flushTimer == nil {
            flushTimer = loop.schedule(afterMillis: settings.flushMillis, target: self)
        }
    }

    public func timerFired(_ timer: LoopTimer) {
        guard timer === flushTimer else { return }
        flushTimer = nil
        flushAccessLog()
    }

    /// Writes what is waiting (loop thread, or any thread once the loop has stopped).
    public func flushAccessLog() {
        flushTimer?.cancel()
        flushTimer = nil
        guard !accessBuffer.isEmpty else { return }
        accessBuffer.withUnsafeBytes { GatewayLog.writeOut($0) }
        accessBuffer.removeAll(keepingCapacity: accessBuffer.capacity <= 256 * 1024)
    }

    /// Every exchange ends here (after its access line): metrics, then the usage log.
    func finished(_ x: Exchange) {
        let label = x.route?.metricLabel ?? "other"
        let method = Route.methodLabel(x.request.method)
        metrics.request(route: label, method: method, status: x.status, team: x.team?.name,
                        errorCode: x.errorCode, upstreamMillis: x.upstreamLatencyMillis)
        // Usage is per team: requests without a valid token are in the access log and metrics only.
        guard let team = x.team else { return }
        let u = x.usage
        let record = UsageRecord(time: Int(time(nil)), team: team.name, endpoint: x.route?.endpoint ?? "\(method) other", model: x.model,
                                 status: x.status, upstreamLatencyMillis: x.upstreamLatencyMillis,
                                 bytesIn: x.bytesIn, bytesOut: x.bytesOut,
                                 promptTokens: u?.promptTokens, completionTokens: u?.completionTokens, totalTokens: u?.totalTokens,
                                 requestID: x.requestID)
        // Buffered by the backend (the contract of `recordUsage`: it never waits for a write).
        do { try x.context.storeExecutor.backend.recordUsage(record) } catch {
            log.logger.error("store: cannot record usage", metadata: ["error": "\(error)", "request_id": "\(x.requestID)"])
        }
    }
}

/// Routes that need no team token besides `/healthz`: CORS preflights, `/readyz`, `/metrics`.
enum OpsRoutes {
    /// Adds the CORS headers every answer carries, then answers a preflight. True when the
    /// exchange was answered.
    static func applyCORS(_ x: Exchange) -> Bool {
        let cors = x.snapshot.cors
        let origin = x.request.headers["origin"]
        if cors.enabled {
            for f in cors.responseHeaders(origin: origin) { x.commonHeaders.replace(f.name, f.value) }
        }
        guard CORSPolicy.isPreflight(method: x.request.method, headers: x.request.headers) else { return false }
        switch cors.evaluatePreflight(origin: origin, requestMethod: x.request.headers["access-control-request-method"],
                                      requestHeaders: x.request.headers["access-control-request-headers"]) {
        case .allowed(let h): x.sendRaw(204, [], contentType: nil, headers: h)
        case .refused(let r): x.fail(APIError(r.status, r.message, code: r.code), headers: r.headers)
        }
        return true
    }

    static func metrics(_ x: Exchange, _ g: Gateway) {
        let m = x.snapshot.config.metrics
        guard m.enabled else { return x.fail(.notFound("Unknown route GET /metrics (config `metrics.enabled: false`).")) }
        if let digest = m.tokenSHA256, !bearerMatches(x.request.headers["authorization"], digest: digest) {
            return x.fail(APIError(401, "/metrics needs its own bearer token (config `metrics.token_sha256`).", code: "invalid_api_key"),
                          headers: ["www-authenticate": "Bearer"])
        }
        x.sendRaw(200, g.metrics.render(), contentType: "text/plain; version=0.0.4; charset=utf-8")
    }

    /// Constant-time comparison of the presented token's digest with the configured one.
    static func bearerMatches(_ authorization: String?, digest: String) -> Bool {
        guard let token = bearerToken(authorization), let expected = digestBytes(hex: digest) else { return false }
        return sameDigest(sha256Digest(token), expected)
    }

    // MARK: readiness

    /// Ready = a configuration is loaded (always, once serving), the store answers, and the
    /// upstream answered a probe (any status below 500) within 2 s. The result is kept for 5 s
    /// per loop, and concurrent checks share one probe. Nothing secret is shown: no URL, no key,
    /// no upstream message.
    static func readyz(_ x: Exchange, _ g: Gateway) {
        guard let ops = x.context.ops else { return answerReady(x, upstream: "unknown", store: "unknown") }
        let now = x.context.loop.now
        if ops.checkedAt != 0 && now >= ops.checkedAt && now - ops.checkedAt < LoopOps.readinessCacheMillis {
            return answerReady(x, upstream: ops.lastState.upstream, store: ops.lastState.store)
        }
        ops.waiting.append(x)
        guard !ops.probing else { return }
        ops.probing = true
        var storeState: String?
        var upstreamState: String?
        func settle() {
            guard let s = storeState, let u = upstreamState else { return }
            ops.lastState = (u, s)
            ops.checkedAt = x.context.loop.now
            ops.probing = false
            let waiting = ops.waiting
            ops.waiting = []
            for w in waiting { answerReady(w, upstream: u, store: s) }
        }
        x.context.store({ db in _ = try db.video(id: "readyz-probe", team: "") }) { result in
            if case .failure = result { storeState = "unavailable" } else { storeState = "ok" }
            settle()
        }
        UpstreamEngine.fetch(x, ReadinessProbeHooks(x.snapshot, requestID: x.requestID)) { result in
            switch result {
            case .success(let status): upstreamState = status < 500 ? "ok" : "upstream_status_\(status)"
            case .failure(let e):
                upstreamState = e.code == "upstream_timeout" ? "timeout" : (e.code == "upstream_response_too_large" ? "ok" : "unreachable")
            }
            settle()
        }
    }

    static func answerReady(_ x: Exchange, upstream: String, store: String) {
        let ready = store == "ok" && upstream == "ok"
        var s = "{\"status\":\(ready ? "\"ready\"" : "\"not_ready\""),\"config_generation\":\(x.snapshot.generation)"
        s += ",\"store\":\"\(store)\",\"upstream\":\"\(upstream)\"}"
        x.send(ready ? 200 : 503, Array(s.utf8), headers: ["cache-control": "no-store"])
    }
}

/// The readiness probe: `GET /v1/models` with a short timeout. Its value: the status.
struct ReadinessProbeHooks: UpstreamHooks {
    let request: UpstreamRequest
    private var status = 0

    init(_ snapshot: ConfigSnapshot, requestID: String) {
        var r = HeaderPolicy.upstreamRequest(snapshot, requestID: requestID, "GET", snapshot.upstreamBase + "/v1/models")
        r.timeoutMillis = LoopOps.probeTimeoutMillis
        request = r
    }

    func makeRequest() -> Result<UpstreamRequest, APIError> { .success(request) }

    /// Shared by every readiness check waiting on this loop.
    var cancelWhenClientLeaves: Bool { false }

    mutating func onHead(_ head: UpstreamResponseHead) -> HeadDecision {
        status = head.status
        return .buffer(limit: 1 << 20)
    }

    mutating func finish(_ answer: UpstreamAnswer) -> Outcome<Int> { .value(status) }
}
