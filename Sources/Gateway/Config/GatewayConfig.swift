import HTTPServer
import HTTPWire
import Store

/// Veil's whole configuration, checked once at start (and on SIGHUP). Defaults are documented
/// in the README; every field maps to a key of `config/veil.yaml`.
public struct GatewayConfig: Sendable {
    public var listen = "0.0.0.0:8080"
    /// Event loops; 0 = one per core.
    public var workers = 0
    public var upstream = UpstreamSettings()
    public var limits = LimitSettings()
    public var store = StoreSettings()
    public var videos = VideoSettings()
    public var characters = CharacterSettings()
    public var teams: [Team] = []
    public var log = LogSettings()
    public var cors = CORSSettings()
    public var metrics = MetricsSettings()
    /// Signed webhook deliveries (issue 16); each team's endpoint is `teams[].webhook`.
    public var webhooks = WebhookSettings()
    public var shutdownGraceMillis = 30_000
    /// Proxies (IPs or CIDRs) whose `X-Forwarded-For` is believed: when the peer is one of them,
    /// the client address in logs and limits comes from that header (`ClientAddress`).
    public var trustedProxies: [String] = []

    public init() {}

    public struct UpstreamSettings: Sendable {
        public var baseURL = "https://ai.yijiarj.cn"
        public var apiKey = ""
        public var connectTimeoutMillis = 5_000
        public var requestTimeoutMillis = 600_000
        /// No byte from the upstream for this long aborts the transfer (504).
        public var stallTimeoutMillis = 120_000
        /// Largest non-streamed upstream body Veil reads (JSON answers) → 502 past it.
        public var maxResponseBytes = 8 * 1024 * 1024
        /// The upstream's quirk: the key travels in the `size` form field of POST /v1/videos.
        public var keyInSizeField = true
        /// Suffixes the upstream appends to model names (`sora-2-yijia`), removed in `/v1/models`.
        public var modelSuffixes = ["-yijia"]
        /// A PEM file of extra trusted CAs for an `https://` upstream (added to the system store).
        public var caFile: String? = nil
        /// Certificate verification of an `https://` upstream. Off only for a test upstream with a
        /// self-signed certificate: Veil then logs a warning at every start.
        public var tlsVerify = true
        /// HTTP/2 to an `https://` upstream when it offers it by ALPN (`auto`), or never (`off`).
        public var http2 = "auto"
        /// Idle upstream connections kept per event loop (nginx's `keepalive N`).
        public var maxIdleConnections = 256
        /// OpenAI endpoints passed through to the upstream as they are (key injected, answers
        /// redacted, the team's allow-list and limits applied): a subset of `Passthrough.supported`.
        public var passthrough = Passthrough.supported
    }

    public struct LimitSettings: Sendable {
        public var requestLineBytes = 8 * 1024
        public var headerBytes = 32 * 1024
        public var headerCount = 100
        public var bodyBytes = 32 * 1024 * 1024
        public var headerTimeoutMillis = 10_000
        public var bodyTimeoutMillis = 30_000
        public var idleTimeoutMillis = 75_000
        public var maxConnections = 20_000
        public var writeHighWaterBytes = 256 * 1024
        public var sendTimeoutMillis = 60_000
        public var lingeringTimeMillis = 30_000
        public var lingeringTimeoutMillis = 5_000
        public var lingeringBytes = 64 * 1024 * 1024
    }

    public struct StoreSettings: Sendable {
        /// SQLite file (one box); used when `url` is nil.
        public var path = "veil.sqlite3"
        /// PostgreSQL URI (`postgres://…`): the store every replica shares. Environment: `VEIL_STORE_URL`.
        public var url: String?
        /// PostgreSQL connections for the store threads (one more is made for the usage writer).
        public var poolSize = 4
        /// One PostgreSQL connection attempt.
        public var connectTimeoutMillis = 2_000
        /// PostgreSQL cancels a statement running longer (`SET statement_timeout`).
        public var statementTimeoutMillis = 2_500
        /// A store call's whole budget, queueing included: past it the caller gets 503
        /// `store_unavailable` (both backends).
        public var timeoutMillis = 3_000
        /// How often a replica tells the store it is alive (limits are shared among the live ones;
        /// a replica silent for 3 periods is gone).
        public var heartbeatMillis = 2_000
        /// Usage records kept in memory while the database can't take them (the oldest go first).
        public var usageBufferRecords = 100_000

        public init() {}

        /// The store as logs show it: the SQLite path, or the URL without its password.
        public var label: String { url.map(StoreURL.redacted) ?? path }
    }

    public struct VideoSettings: Sendable {
        public var models = ["sora-2", "sora-2-pro"]
        public var sizes = ["720x1280", "1280x720", "1024x1792", "1792x1024", "720x720"]
        public var seconds = ["4", "8", "12"]
        public var defaultModel = "sora-2"
        public var defaultSize = "720x1280"
        public var defaultSeconds = "4"
        public var maxPromptChars = 8_000
        public var maxImageBytes = 10 * 1024 * 1024
        /// How long an upstream status answer is shared between polls of one video.
        public var pollCacheMillis = 1_000
        /// `openai-poll-after-ms` sent with unfinished videos.
        public var pollAfterMillis = 2_000
        /// An unfinished video holds a `max_videos_in_flight` slot for at most this long after its
        /// creation (one nobody polls to its end must not hold it forever).
        public var inFlightMaxAgeSeconds = 3_600
        public var imageFetch = ImageFetchSettings()
        /// Veil polls unfinished videos itself (at `pollAfterMillis`, backing off as they age)
        /// until they finish or `watchMaxSeconds` pass: webhooks and event streams need no caller.
        public var watch = true
        /// A video is watched at most this long after its creation (an event stream keeps
        /// watching it past that while someone listens).
        public var watchMaxSeconds = 7_200
        /// The back-off's ceiling: an old unfinished video is polled at least this often.
        public var watchMaxIntervalMillis = 30_000
        /// Videos watched at once by this replica (a bound on memory; more wait for the rescan).
        public var watchMaxVideos = 10_000
        /// How often the store is asked for unfinished videos no replica has polled for three
        /// `watchMaxIntervalMillis` (a replica died; they are taken over), or that found no room.
        public var watchRescanMillis = 60_000
        /// `GET /v1/videos/{id}/events`: a comment line this often keeps proxies from closing it.
        public var eventsHeartbeatMillis = 15_000
    }

    /// Delivery of the teams' webhooks (`teams[].webhook`): the address policy of image fetching
    /// (https only, no loopback/private address unless listed, no redirects), a timeout per
    /// attempt, exponential back-off with jitter for up to `retryForSeconds`.
    public struct WebhookSettings: Sendable {
        public var allowHTTP = false
        /// Hosts, IPs or CIDRs that may be delivered to even though private/loopback.
        public var allowPrivate: [String] = []
        /// One attempt, connect to last byte; past it the attempt failed (and is retried).
        public var timeoutMillis = 10_000
        /// Retries stop this long after the event (OpenAI retries for 72 hours).
        public var retryForSeconds = 259_200
        /// The first retry's delay; each next one doubles, up to `backoffMaxMillis` (with jitter).
        public var backoffInitialMillis = 5_000
        public var backoffMaxMillis = 3_600_000
        /// Attempts in flight per team endpoint on this replica: a slow or dead endpoint never
        /// holds more, and never delays another team's deliveries.
        public var maxConcurrentPerEndpoint = 4
        /// How often this replica looks for due deliveries (new events of its own go at once).
        public var pollMillis = 1_000
        /// Delivered events are kept this long (`veil webhooks list`), then deleted.
        public var keepDeliveredSeconds = 604_800
    }

    /// A team's webhook endpoint: Standard Webhooks signing, as OpenAI's own.
    public struct TeamWebhook: Sendable {
        public var url: String
        /// The HMAC key: the base64 after `whsec_` in the configured secret, decoded.
        public var key: [UInt8]
        public init(url: String, key: [UInt8]) { self.url = url; self.key = key }
    }

    public struct ImageFetchSettings: Sendable {
        public var allowHTTP = false
        /// Hosts, IPs or CIDRs that may be fetched even though private/loopback.
        public var allowPrivate: [String] = []
        public var timeoutMillis = 10_000
    }

    public struct CharacterSettings: Sendable {
        /// The upstream's `create_time` zone (IANA name or ±HH:MM).
        public var timeZone = "Asia/Shanghai"
    }

    public struct Team: Sendable {
        public var name: String
        public var tokens: [TeamToken]
        /// nil = every model allowed.
        public var models: [String]?
        public var requestsPerMinute: Int?
        public var maxConcurrentStreams: Int?
        public var maxVideosInFlight: Int?
        public var videosPerDay: Int?
        /// Where the team's `video.completed` / `video.failed` events go (nil: nowhere).
        public var webhook: TeamWebhook?
    }

    public struct TeamToken: Sendable {
        /// Lower-case hex SHA-256 of the token.
        public var sha256: String
        /// Unix seconds after which the token is refused; nil = never.
        public var expiresAt: Int?
    }

    public struct LogSettings: Sendable {
        public var level = "info"
        public var prompts = false
        public var access = true
        /// Operations log format: `text` or `json`; nil = text when stderr is a terminal, else JSON.
        public var format: LogFormat? = nil
        /// Access lines are gathered per event loop and written when this many bytes are waiting
        /// or `flushMillis` after the first, and at shutdown (nginx's `access_log … buffer= flush=`).
        public var bufferBytes = 64 * 1024
        public var flushMillis = 1_000
    }

    public struct CORSSettings: Sendable {
        public var allowedOrigins: [String] = []
        public var maxAgeSeconds = 600
        /// `GET /v1/videos/{id}/events?token=…` (a browser's `EventSource` can't send headers):
        /// refused unless set. The query is never logged.
        public var allowQueryToken = false
    }

    public struct MetricsSettings: Sendable {
        public var enabled = true
        /// SHA-256 hex of a bearer token required for /metrics; nil = open.
        public var tokenSHA256: String?
    }

    /// The server's connection settings derived from this configuration.
    public func serverConfig(host: String, port: UInt16) -> ServerConfig {
        var s = ServerConfig()
        s.host = host
        s.port = port
        s.workers = workers
        s.limits.maxRequestLineBytes = limits.requestLineBytes
        s.limits.maxHeaderBytes = limits.headerBytes
        s.limits.maxHeaderCount = limits.headerCount
        s.limits.maxBodyBytes = limits.bodyBytes
        s.connection.headerTimeoutMillis = limits.headerTimeoutMillis
        s.connection.bodyTimeoutMillis = limits.bodyTimeoutMillis
        s.connection.idleTimeoutMillis = limits.idleTimeoutMillis
        s.connection.sendTimeoutMillis = limits.sendTimeoutMillis
        s.connection.writeHighWaterBytes = limits.writeHighWaterBytes
        s.connection.writeLowWaterBytes = max(1, limits.writeHighWaterBytes / 4)
        s.connection.lingeringTimeMillis = limits.lingeringTimeMillis
        s.connection.lingeringTimeoutMillis = limits.lingeringTimeoutMillis
        s.connection.lingeringBytes = limits.lingeringBytes
        s.maxConnections = limits.maxConnections
        s.errorBody = { status, message in ("application/json", APIError(status, message).body) }
        return s
    }
}
