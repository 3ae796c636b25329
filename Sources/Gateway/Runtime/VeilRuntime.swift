import CSystem
import Glibc
import HTTPServer
import Reactor
import Synchronization
import Store
import Upstream
import UpstreamHTTP

/// Builds and runs Veil: N event loops (threads), the gateway on each, the HTTP server across them.
/// Used by `veil serve` and, in-process, by the integration tests.
public final class VeilRuntime: @unchecked Sendable {
    public private(set) var config: GatewayConfig
    public let gateway: Gateway
    public private(set) var server: HTTPServer!
    public private(set) var loops: [EventLoop] = []
    private let generation = Atomic<Int>(1)
    /// The snapshot the loops run, and this replica's share it was built with; replaced whole by
    /// `reload` (the signal thread) and by a heartbeat seeing the replicas change (loop 0).
    private let published = Mutex<(snapshot: ConfigSnapshot?, share: ReplicaShare)>((nil, .whole))
    private let stoppedLoops = Atomic<Int>(0)
    private let backend: any StoreBackend
    private let closeBackend: () -> Void
    public var log: GatewayLog { gateway.log }
    /// This replica's share of the teams' rate and stream limits (tests, the log).
    public var share: ReplicaShare { published.withLock { $0.share } }
    /// `store.heartbeat_ms` as started (a reload does not change it).
    private let heartbeatMillis: Int

    /// Opens the store (failing with a message naming its path, or its URL without the password)
    /// and prepares the gateway. `backend` replaces the configured store (tests: a slow or
    /// failing one), served by `backendThreads` store threads (several: calls overtake one
    /// another, as on a PostgreSQL pool).
    public init(config: GatewayConfig, log: GatewayLog? = nil, backend: (any StoreBackend)? = nil, backendThreads: Int = 1) throws {
        self.config = config
        heartbeatMillis = config.store.heartbeatMillis
        var threads = 1
        if let backend {
            self.backend = backend
            closeBackend = {}
            threads = max(1, backendThreads)
        } else if let url = config.store.url {
            let store: PostgresStore
            do { store = try PostgresStore(settings: VeilRuntime.postgresSettings(config.store, url: url)) } catch {
                throw ConfigError("store.url", "cannot open the store: \(error)")
            }
            self.backend = store
            closeBackend = { store.close() }
            threads = config.store.poolSize       // one connection per store thread
        } else {
            let store: SQLiteStore
            do { store = try SQLiteStore(path: config.store.path) } catch {
                throw ConfigError("store.path", "cannot open the store: \(error)")
            }
            self.backend = store
            closeBackend = { store.close() }
        }
        self.gateway = Gateway(log: log ?? GatewayLog(upstreamKey: config.upstream.apiKey, accessLog: config.log.access),
                               store: StoreExecutor(backend: self.backend, threads: threads, callTimeoutMillis: config.store.timeoutMillis))
    }

    /// The PostgreSQL backend's settings from `store.*`.
    public static func postgresSettings(_ s: GatewayConfig.StoreSettings, url: String) -> PostgresSettings {
        var p = PostgresSettings(url: url)
        p.poolSize = s.poolSize
        p.connectTimeoutMillis = s.connectTimeoutMillis
        p.statementTimeoutMillis = s.statementTimeoutMillis
        p.callTimeoutMillis = s.timeoutMillis
        p.usageBufferRecords = s.usageBufferRecords
        return p
    }

    /// A replica silent for this many heartbeat periods is no longer counted.
    static let heartbeatsMissedBeforeGone = 3
    var replicaTTLMillis: Int { heartbeatMillis * VeilRuntime.heartbeatsMissedBeforeGone }

    /// How long `stop()` waits for the loops to return from their last iteration.
    static let loopStopWaitMillis: UInt64 = 2_000
    /// The period at which shutdown re-checks what it waits for.
    static let pollMicros: UInt32 = 10_000

    /// The upstream client's settings from the configuration.
    static func upstreamSettings(_ c: GatewayConfig) -> HTTPUpstreamSettings {
        var s = HTTPUpstreamSettings()
        s.tls.caFile = c.upstream.caFile
        s.tls.verifyPeer = c.upstream.tlsVerify
        s.http2 = c.upstream.http2 == "off" ? .off : .auto
        s.maxIdleConnections = c.upstream.maxIdleConnections
        return s
    }

    public static func loopCount(_ workers: Int) -> Int {
        workers > 0 ? workers : max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// Starts the loops and binds the listener. Returns the bound port.
    @discardableResult
    public func start() throws -> UInt16 {
        Socket.raiseFileLimit()
        signal(SIGPIPE, SIG_IGN) // sends use MSG_NOSIGNAL; this covers every other write
        guard let (host, port) = ConfigLoader.parseListen(config.listen) else {
            throw ConfigError("listen", "`\(config.listen)` is not host:port")
        }
        let n = VeilRuntime.loopCount(config.workers)
        // The first heartbeat before serving: a replica joining never starts with whole limits.
        let ttl = replicaTTLMillis, me = gateway.replicaID
        var share = ReplicaShare.whole
        switch gateway.store.runHere({ db in try db.heartbeat(replica: me, ttlMillis: ttl) }) {
        case .success(let ids): share = ReplicaShare(live: ids, me: me)
        case .failure(let e): log.logger.warning("store: first heartbeat failed; limits are whole until one succeeds", metadata: ["error": "\(log.redact("\(e)"))"])
        }
        let snapshot = ConfigSnapshot(config: config, generation: 1, share: share)
        published.withLock { $0 = (snapshot, share) }
        loops = (0..<n).map { EventLoop(id: $0) }
        let upstreamSettings = VeilRuntime.upstreamSettings(config)
        // An https upstream gets its TLS context (the CA store loaded, `ca_file` checked) before the
        // first request; a plain one only if a caller's https URL (an image, a video file) needs it.
        if config.upstream.baseURL.hasPrefix("https://") || config.upstream.caFile != nil,
           let problem = HTTPUpstreamClient.validate(upstreamSettings) {
            throw ConfigError("upstream.ca_file", problem)
        }
        if !config.upstream.tlsVerify {
            log.logger.warning("upstream TLS certificate verification is OFF (upstream.tls_verify: false): anyone on the path can read the upstream key")
        }
        gateway.contexts = loops.map { LoopContext(loop: $0, upstream: HTTPUpstreamClient(loop: $0, settings: upstreamSettings), snapshot: snapshot, store: gateway.store) }
        server = try HTTPServer(config: config.serverConfig(host: host, port: port), handler: gateway, loops: loops)
        gateway.attach(server: server)
        for loop in loops {
            let ctx = gateway.contexts[loop.id]
            startThread(name: "veil-loop-\(loop.id)") { [self] in
                loop.run()
                ctx.ops?.flushAccessLog()             // nothing buffered is lost at shutdown
                stoppedLoops.add(1, ordering: .relaxed)
            }
        }
        gateway.startPush()         // before the first request: a video created then is watched on its loop
        server.start()
        if let first = gateway.contexts.first { first.loop.execute { [self] in scheduleHeartbeat(first) } }
        return server.port
    }

    /// Every `store.heartbeat_ms` on loop 0: tells the store this replica is alive and, when the
    /// live replicas changed, publishes a snapshot with the new share. A failed heartbeat keeps
    /// the share (an outage must not hand every replica the whole limit).
    private func scheduleHeartbeat(_ ctx: LoopContext) {
        ctx.loop.schedule(afterMillis: heartbeatMillis) { [self] in
            let ttl = replicaTTLMillis, me = gateway.replicaID
            ctx.store({ db in try db.heartbeat(replica: me, ttlMillis: ttl) }) { [self] result in
                if case .success(let ids) = result { publish(share: ReplicaShare(live: ids, me: me)) }
                scheduleHeartbeat(ctx)
            }
        }
    }

    /// Snapshots are handed to the loops under `published`'s lock, so a reload and a share change
    /// racing reach every loop in the order they were made.
    private func publish(share: ReplicaShare) {
        let changed: Bool = published.withLock { p in
            guard p.share != share, let current = p.snapshot else { return false }
            let snap = ConfigSnapshot(config: current.config, generation: current.generation, previous: current, share: share)
            p = (snap, share)
            for ctx in gateway.contexts { ctx.loop.execute { ctx.snapshot = snap } }
            return true
        }
        if changed { log.logger.notice("replicas changed: this one enforces its share of the teams' limits", metadata: ["share": "\(share)"]) }
    }

    /// Swaps in a new configuration (SIGHUP): teams, tokens, limits. Connections stay open;
    /// requests already running finish under the snapshot they started with.
    public func reload(_ newConfig: GatewayConfig) {
        let g = generation.add(1, ordering: .relaxed).newValue
        config = newConfig
        log.updateKey(newConfig.upstream.apiKey)
        published.withLock { p in
            let snap = ConfigSnapshot(config: newConfig, generation: g, previous: p.snapshot, share: p.share)
            p.snapshot = snap
            for ctx in gateway.contexts { ctx.loop.execute { ctx.snapshot = snap } }
        }
    }

    /// Graceful stop: no new connections, in-flight responses finish (up to `graceMillis`), then the loops end.
    public func shutdown(graceMillis: Int) {
        server.beginDrain()
        gateway.beginDrain()
        let deadline = EventLoop.monotonicMillis() + UInt64(graceMillis)
        while server.openConnections.current > 0 && EventLoop.monotonicMillis() < deadline {
            usleep(VeilRuntime.pollMicros)
        }
        stop()
    }

    /// Stops the loops at once (tests), then closes the store (buffered usage is written).
    public func stop() {
        for l in loops { l.stop() }
        let deadline = EventLoop.monotonicMillis() + VeilRuntime.loopStopWaitMillis
        while stoppedLoops.load(ordering: .relaxed) < loops.count && EventLoop.monotonicMillis() < deadline { usleep(VeilRuntime.pollMicros) }
        gateway.store.shutdown()
        // The other replicas take over this one's share at their next heartbeat.
        let me = gateway.replicaID
        _ = gateway.store.runHere { db in try db.leave(replica: me) }
        // Deliveries this replica claimed and did not settle are due again at once for the next.
        _ = gateway.store.runHere { db in try db.releaseWebhookClaims(holder: me) }
        closeBackend()
    }
}
