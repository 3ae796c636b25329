import HTTPServer
import Reactor
import Store
import Upstream

/// What a request handler may use, read-only once built: the configuration snapshot and its
/// derived views. Rebuilt whole on SIGHUP and handed to every loop, so reads take no lock.
public final class ConfigSnapshot: Sendable {
    public let config: GatewayConfig
    public let authenticator: TokenAuthenticator
    public let generation: Int
    /// Upstream base URL without a trailing slash.
    public let upstreamBase: String

    public let policy: Policy
    public let cors: CORSPolicy
    /// Peers whose `X-Forwarded-For` is believed (`trusted_proxies`).
    public let trustedProxies: TrustedProxies
    /// The upstream key's bytes (redactors), the chat URL, and the fields every upstream request
    /// carries (`Authorization`, `Accept-Encoding`) as a block the client encodes once, behind each
    /// request's own: built once per configuration instead of once per request.
    public let apiKeyBytes: [UInt8]
    public let chatCompletionsURL: String
    public let upstreamHeaders: UpstreamHeaderBlock
    /// The same plus `Content-Type: application/json`, for bodies Veil parsed as JSON.
    public let upstreamJSONHeaders: UpstreamHeaderBlock

    /// `share`: this replica's part of the deployment-wide limits (from the store's heartbeats).
    public init(config: GatewayConfig, generation: Int, previous: ConfigSnapshot? = nil, share: ReplicaShare = .whole) {
        self.config = config
        self.authenticator = TokenAuthenticator(teams: config.teams)
        self.generation = generation
        self.policy = Policy(teams: config.teams, previous: previous?.policy, share: share)
        self.cors = CORSPolicy(config.cors)
        self.trustedProxies = TrustedProxies(config.trustedProxies)
        var b = config.upstream.baseURL
        while b.hasSuffix("/") { b.removeLast() }
        upstreamBase = b
        apiKeyBytes = Array(config.upstream.apiKey.utf8)
        chatCompletionsURL = b + "/v1/chat/completions"
        upstreamHeaders = HeaderPolicy.sharedUpstreamHeaders(authorization: "Bearer " + config.upstream.apiKey)
        upstreamJSONHeaders = HeaderPolicy.sharedUpstreamHeaders(authorization: "Bearer " + config.upstream.apiKey, json: true)
    }

    public func team(_ index: Int) -> GatewayConfig.Team { config.teams[index] }
}

/// One loop's share of the gateway: its upstream client, the store seam and its per-loop state.
/// Touched only on that loop's thread.
public final class LoopContext: @unchecked Sendable {
    public let loop: EventLoop
    public let upstream: UpstreamClientProtocol
    public var snapshot: ConfigSnapshot
    let storeExecutor: StoreExecutor
    /// Team tokens this loop verified lately.
    let verifiedTokens = VerifiedTokens()
    /// Metrics, readiness and usage recording for this loop (set by `Gateway.attach`).
    public internal(set) var ops: LoopOps?

    init(loop: EventLoop, upstream: UpstreamClientProtocol, snapshot: ConfigSnapshot, store: StoreExecutor) {
        self.loop = loop
        self.upstream = upstream
        self.snapshot = snapshot
        self.storeExecutor = store
    }

    /// Runs `operation` against the store on a store thread; `then` runs back on this loop, once,
    /// within `store.timeout_ms` (plus `storeGuardGraceMillis`) whatever the backend does: the
    /// executor and a networked backend answer `unavailable` at the deadline themselves; this
    /// loop's own timer covers a call stuck where nothing can bound it (a stalled disk, a host
    /// name being resolved) — its late answer is then dropped.
    func store<T: Sendable>(_ operation: @escaping @Sendable (any StoreBackend) throws -> T,
                            then: @escaping (Result<T, StoreError>) -> Void) {
        let call = GuardedStoreCall(then)
        call.timer = loop.schedule(afterMillis: storeExecutor.callTimeoutMillis + LoopContext.storeGuardGraceMillis) {
            call.finish(.failure(.unavailable("no answer from the store within store.timeout_ms")))
        }
        storeExecutor.run(on: loop, operation) { result in call.finish(result) }
    }

    /// How much later than the store's own deadline the loop stops waiting for it.
    static let storeGuardGraceMillis = 250
}

/// A store call's completion, delivered once: by the store or by the loop's guard timer, first
/// come (both on the loop's thread).
private final class GuardedStoreCall<T> {
    private var then: ((Result<T, StoreError>) -> Void)?
    var timer: LoopTimer?

    init(_ then: @escaping (Result<T, StoreError>) -> Void) { self.then = then }

    func finish(_ result: Result<T, StoreError>) {
        guard let then else { return }
        self.then = nil
        timer?.cancel()
        timer = nil
        then(result)
    }
}

extension EventLoop: StoreCompletionTarget {
    public func deliver(_ work: @escaping @Sendable () -> Void) { execute(work) }
}
