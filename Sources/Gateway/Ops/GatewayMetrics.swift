import HTTPServer
import Prometheus
import Synchronization

/// Veil's Prometheus metrics (swift-prometheus). Counters are atomics; each loop keeps its own
/// cache of the labelled series it has used (`LoopMetrics`), so the request path never takes the
/// registry's lock after a series' first use. Server-wide numbers (connections, bytes) live in
/// the HTTP server's atomic counters and are copied into the registry when `/metrics` is read.
public final class GatewayMetrics: @unchecked Sendable {
    public let registry = PrometheusCollectorRegistry()
    /// Set once by `VeilRuntime.start` before the listeners open.
    var server: HTTPServer?
    /// Chat streams open right now (all teams).
    let openStreams = Atomic<Int>(0)
    /// `GET /v1/videos/{id}/events` streams open right now.
    let eventStreams = Atomic<Int>(0)
    /// Unfinished videos this replica polls by itself (read from the watcher at each scrape).
    var videosWatched: (@Sendable () -> Int)?

    /// Metric names and help texts (one descriptor per name: the registry wants one help per name).
    enum Desc {
        static func d(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "veil", metricName: name, unitName: unit, helpText: help)
        }
        static var requests: MetricNameDescriptor { d("requests", "total", "Requests answered, by route template, method, status and team.") }
        static var upstreamLatency: MetricNameDescriptor { d("upstream_latency", "seconds", "Time from the request's arrival to the upstream's response head, by route template.") }
        static var firstByte: MetricNameDescriptor { d("stream_first_byte", "seconds", "Chat streams: time from the request's arrival to the first SSE bytes sent to the caller.") }
        static var refusals: MetricNameDescriptor { d("rate_limit_refusals", "total", "Requests refused by a team limit (rate, concurrent streams, videos in flight, daily quota).") }
        static var openConnections: MetricNameDescriptor { d("open_connections", "", "Client connections open now.") }
        static var openStreams: MetricNameDescriptor { d("open_streams", "", "Chat streams (SSE) open now.") }
        static var bytesIn: MetricNameDescriptor { d("bytes_received", "total", "Bytes read from clients.") }
        static var bytesOut: MetricNameDescriptor { d("bytes_sent", "total", "Bytes written to clients.") }
        static var timeouts: MetricNameDescriptor { d("connection_timeouts", "total", "Client connections closed by a header, body or idle timeout.") }
        static var refusedConnections: MetricNameDescriptor { d("connections_refused", "total", "Connections refused with 503: over limits.max_connections, or out of descriptors.") }
        static var acceptExhausted: MetricNameDescriptor { d("accept_exhausted", "total", "Times a loop ran out of descriptors accepting and paused accepting (EMFILE/ENFILE).") }
        static var upstreamAuthFailures: MetricNameDescriptor { d("upstream_auth_failures", "total", "Upstream answers refusing the gateway's own key (401, or 403 about the key): every team is affected.") }
        static var videosWatched: MetricNameDescriptor { d("videos_watched", "", "Unfinished videos this replica polls by itself (webhooks and event streams).") }
        static var eventStreams: MetricNameDescriptor { d("video_event_streams", "", "GET /v1/videos/{id}/events streams open now.") }
        static var eventUpdatesSkipped: MetricNameDescriptor { d("video_event_updates_skipped", "total", "Video event stream updates replaced by a newer one before a slow client took them (its output stayed above limits.write_high_water_bytes).") }
        static var webhookDeliveries: MetricNameDescriptor { d("webhook_deliveries", "total", "Webhook attempts a receiver accepted (2xx).") }
        static var webhookFailures: MetricNameDescriptor { d("webhook_failures", "total", "Webhook attempts that failed, by reason: status (non-2xx), timeout, connect, refused (address policy), other; gave_up counts events given up.") }
        static var outboxPending: MetricNameDescriptor { d("webhook_outbox_pending", "", "Webhook events waiting for delivery, the whole store's (refreshed every few seconds).") }
        static var outboxFailed: MetricNameDescriptor { d("webhook_outbox_failed", "", "Webhook events given up, the whole store's (`veil webhooks replay` sends one again).") }
    }
    static let latencyBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]

    private let openConnectionsGauge: Gauge
    private let openStreamsGauge: Gauge
    private let bytesIn: Prometheus.Counter
    private let bytesOut: Prometheus.Counter
    private let timeouts: Prometheus.Counter
    private let refusedConnections: Prometheus.Counter
    private let acceptExhausted: Prometheus.Counter
    let upstreamAuthFailures: Prometheus.Counter
    private let videosWatchedGauge: Gauge
    private let eventStreamsGauge: Gauge
    /// A slow event-stream client is sent only the latest state: each one replaced counts here.
    let eventUpdatesSkipped: Prometheus.Counter
    let webhookDeliveries: Prometheus.Counter
    /// By reason (`WebhookDeliverer.FailureReason`), made at start so every series reads 0 at first.
    let webhookFailures: [String: Prometheus.Counter]
    let outboxPending: Gauge
    let outboxFailed: Gauge
    /// Server counter values already added to the registry's counters (scrapes are rare).
    private let exported = Mutex<[Int]>([0, 0, 0, 0, 0])

    public init() {
        openConnectionsGauge = registry.makeGauge(descriptor: Desc.openConnections)
        openStreamsGauge = registry.makeGauge(descriptor: Desc.openStreams)
        bytesIn = registry.makeCounter(descriptor: Desc.bytesIn)
        bytesOut = registry.makeCounter(descriptor: Desc.bytesOut)
        timeouts = registry.makeCounter(descriptor: Desc.timeouts)
        refusedConnections = registry.makeCounter(descriptor: Desc.refusedConnections)
        acceptExhausted = registry.makeCounter(descriptor: Desc.acceptExhausted)
        upstreamAuthFailures = registry.makeCounter(descriptor: Desc.upstreamAuthFailures)
        videosWatchedGauge = registry.makeGauge(descriptor: Desc.videosWatched)
        eventStreamsGauge = registry.makeGauge(descriptor: Desc.eventStreams)
        eventUpdatesSkipped = registry.makeCounter(descriptor: Desc.eventUpdatesSkipped)
        webhookDeliveries = registry.makeCounter(descriptor: Desc.webhookDeliveries)
        var failures: [String: Prometheus.Counter] = [:]
        for reason in GatewayMetrics.webhookFailureReasons {
            failures[reason] = registry.makeCounter(descriptor: Desc.webhookFailures, labels: [("reason", reason)])
        }
        webhookFailures = failures
        outboxPending = registry.makeGauge(descriptor: Desc.outboxPending)
        outboxFailed = registry.makeGauge(descriptor: Desc.outboxFailed)
    }

    /// The `reason` label values of `veil_webhook_failures_total`.
    static let webhookFailureReasons = ["status", "timeout", "connect", "refused", "other", "gave_up"]

    func webhookFailed(_ reason: String) { webhookFailures[reason]?.increment() }

    /// The Prometheus text exposition.
    public func render() -> [UInt8] {
        if let s = server {
            openConnectionsGauge.set(Double(s.openConnections.current))
            let now = [s.bytesIn.current, s.bytesOut.current, s.timeouts.current, s.refusedOverCapacity.current, s.acceptExhausted.current]
            let targets = [bytesIn, bytesOut, timeouts, refusedConnections, acceptExhausted]
            exported.withLock { last in
                for i in 0..<now.count where now[i] > last[i] {
                    targets[i].increment(by: Int64(now[i] - last[i]))
                    last[i] = now[i]
                }
            }
        }
        openStreamsGauge.set(Double(openStreams.load(ordering: .relaxed)))
        eventStreamsGauge.set(Double(eventStreams.load(ordering: .relaxed)))
        videosWatchedGauge.set(Double(videosWatched?() ?? 0))
        var out: [UInt8] = []
        out.reserveCapacity(8192)
        registry.emit(into: &out)
        return out
    }
}

/// One loop's handles on the metrics: dictionaries touched only on that loop's thread.
final class LoopMetrics {
    let metrics: GatewayMetrics
    private struct RequestKey: Hashable { let route: String; let method: String; let status: Int; let team: String }
    private struct RefusalKey: Hashable { let team: String; let reason: String }
    private var requests: [RequestKey: Prometheus.Counter] = [:]
    private var refusals: [RefusalKey: Prometheus.Counter] = [:]
    private var upstreamLatency: [String: ValueHistogram] = [:]
    private var firstByte: ValueHistogram?

    static let refusalCodes: Set<String> = ["rate_limit_exceeded", "concurrent_streams_exceeded", "videos_in_flight_exceeded", "quota_exceeded"]

    init(_ metrics: GatewayMetrics) { self.metrics = metrics }

    /// The last series used (most requests repeat it): found without hashing four strings.
    private var lastRequest: (key: RequestKey, counter: Prometheus.Counter)?
    private var lastLatency: (route: String, histogram: ValueHistogram)?

    func request(route: String, method: String, status: Int, team: String?, errorCode: String?, upstreamMillis: Int?) {
        let t = team ?? "none"
        let key = RequestKey(route: route, method: method, status: status, team: t)
        let c: Prometheus.Counter
        if let last = lastRequest, last.key == key { c = last.counter } else if let hit = requests[key] { c = hit; lastRequest = (key, hit) } else {
            c = metrics.registry.makeCounter(descriptor: GatewayMetrics.Desc.requests,
                                             labels: [("route", route), ("method", method), ("status", String(status)), ("team", t)])
            requests[key] = c
            lastRequest = (key, c)
        }
        c.increment()
        if let ms = upstreamMillis {
            let h: ValueHistogram
            if let last = lastLatency, last.route == route { h = last.histogram } else if let hit = upstreamLatency[route] { h = hit; lastLatency = (route, hit) } else {
                h = metrics.registry.makeValueHistogram(descriptor: GatewayMetrics.Desc.upstreamLatency, labels: [("route", route)],
                                                        buckets: GatewayMetrics.latencyBuckets)
                upstreamLatency[route] = h
                lastLatency = (route, h)
            }
            h.record(Double(ms) / 1000)
        }
        if status == 429, let code = errorCode, LoopMetrics.refusalCodes.contains(code) {
            let rk = RefusalKey(team: t, reason: code)
            let rc: Prometheus.Counter
            if let hit = refusals[rk] { rc = hit } else {
                rc = metrics.registry.makeCounter(descriptor: GatewayMetrics.Desc.refusals, labels: [("team", t), ("reason", code)])
                refusals[rk] = rc
            }
            rc.increment()
        }
    }

    func streamOpened() { metrics.openStreams.add(1, ordering: .relaxed) }
    func upstreamAuthFailed() { metrics.upstreamAuthFailures.increment() }
    func streamClosed() { metrics.openStreams.subtract(1, ordering: .relaxed) }

    func firstStreamByte(afterMillis ms: Int) {
        let h: ValueHistogram
        if let f = firstByte { h = f } else {
            h = metrics.registry.makeValueHistogram(descriptor: GatewayMetrics.Desc.firstByte, buckets: GatewayMetrics.latencyBuckets)
            firstByte = h
        }
        h.record(Double(ms) / 1000)
    }
}
