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
    private var current: ConfigSnapshot?
    private let stoppedLoops = Atomic<Int>(0)
    private let backend: any StoreBackend
    private let closeBackend: () -> Void
    public var log: GatewayLog { gateway.log }

    /// Opens the store (failing with a message naming its path) and prepares the gateway.
    /// `backend` replaces the configured store (tests: a slow or failing one).
    public init(config: GatewayConfig, log: GatewayLog? = nil, backend: (any StoreBackend)? = nil) throws {
        self.config = config
        if let backend {
            self.backend = backend
            closeBackend = {}
        } else {
            let store: SQLiteStore
            do { store = try SQLiteStore(path: config.store.path) } catch {
                throw ConfigError("store.path", "cannot open the store: \(error)")
            }
            self.backend = store
            closeBackend = { store.close() }
        }
        self.gateway = Gateway(log: log ?? GatewayLog(upstreamKey: config.upstream.apiKey, accessLog: config.log.access),
                               store: StoreExecutor(backend: self.backend))
    }

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
        let snapshot = ConfigSnapshot(config: config, generation: 1)
        current = snapshot
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
        server.start()
        return server.port
    }

    /// Swaps in a new configuration (SIGHUP): teams, tokens, limits. Connections stay open;
    /// requests already running finish under the snapshot they started with.
    public func reload(_ newConfig: GatewayConfig) {
        let g = generation.add(1, ordering: .relaxed).newValue
        let snap = ConfigSnapshot(config: newConfig, generation: g, previous: current)
        current = snap
        config = newConfig
        log.updateKey(newConfig.upstream.apiKey)
        for ctx in gateway.contexts {
            ctx.loop.execute { ctx.snapshot = snap }
        }
    }

    /// Graceful stop: no new connections, in-flight responses finish (up to `graceMillis`), then the loops end.
    public func shutdown(graceMillis: Int) {
        server.beginDrain()
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
        closeBackend()
    }
}
