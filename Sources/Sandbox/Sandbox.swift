import Glibc
import HTTPServer
import HTTPWire
import Reactor
import Synchronization

/// The stand-in upstream: a loopback HTTP server that behaves like the reseller described in
/// `shared/UPSTREAM.md` — its key checks (Bearer header, key in the `size` form field), its field
/// swaps (clean URL in `url`, watermarked URL in `size`), its moderation text in `quality`, its key
/// leak in the character list — deterministically, so tests and `veil serve --sandbox` can rely on it.
///
/// It runs its own `EventLoop` on its own thread. Introspection (`requests`, `count`, `reset`,
/// faults) is thread-safe.
///
/// Prompt cues for `POST /v1/videos` (case-insensitive, first match wins): `nsfw` → completed,
/// `url:""`, `size:"1024x1808"`, moderation text in `quality`; `fail` → status `error`; `nourl` →
/// completed, `quality:"standard"`, `url:""`, `size:"720x720"`; anything else succeeds.
/// Chat models: missing → 400; ending with `-slow` → answered after `slowModelDelayMillis`;
/// `sandbox-echo-key` → 401 echoing the presented key (body and `X-Debug-Authorization` header).
/// Characters: an `instruction_value` containing `fail` ends with status -1.
public final class Sandbox: @unchecked Sendable {
    public let config: SandboxConfig
    let core: SandboxCore
    private let lifecycle = Mutex<Lifecycle>(Lifecycle())

    private struct Lifecycle: @unchecked Sendable {
        var loop: EventLoop?
        var server: HTTPServer?
        var handler: SandboxHandler?
        var exited: ExitFlag?
        var port: UInt16 = 0
    }

    private final class ExitFlag: Sendable {
        let done = Atomic<Bool>(false)
    }

    public init(config: SandboxConfig) {
        self.config = config
        self.core = SandboxCore(config: config)
    }

    deinit { stop() }

    /// Binds, starts the loop thread and returns the bound port. Throws if the port is taken.
    @discardableResult
    public func start() throws -> UInt16 {
        if let p = lifecycle.withLock({ $0.server != nil ? $0.port : nil }) { return p }
        var sc = ServerConfig()
        sc.host = config.host
        sc.port = config.port
        sc.workers = 1
        sc.limits.maxBodyBytes = 256 * 1024 * 1024
        sc.errorBody = { _, message in
            ("application/json; charset=utf-8", SandboxHandler.errorJSON(message: message, type: "new_api_error").bytes)
        }
        let loop = EventLoop(id: 900)
        let handler = SandboxHandler(core: core)
        let server = try HTTPServer(config: sc, handler: handler, loops: [loop])
        let port = server.port
        let host = config.host.contains(":") ? "[\(config.host)]" : config.host
        core.withState { $0.baseURL = config.publicBaseURL ?? "http://\(host):\(port)" }
        let exited = ExitFlag()
        lifecycle.withLock { l in
            l.loop = loop; l.server = server; l.handler = handler; l.exited = exited; l.port = port
        }
        server.start()
        // The thread keeps the server and handler alive until the loop has returned (the server's
        // workers and connections refer to it unowned).
        startThread(name: "veil-sandbox") {
            loop.run()
            withExtendedLifetime((server, handler)) {}
            exited.done.store(true, ordering: .releasing)
        }
        return port
    }

    /// Stops accepting, aborts responses still in progress (streams, stalls), stops the loop and
    /// waits (up to 2 s) for its thread to finish. The port is free again afterwards.
    public func stop() {
        let (loop, server, handler, exited) = lifecycle.withLock { l -> (EventLoop?, HTTPServer?, SandboxHandler?, ExitFlag?) in
            let r = (l.loop, l.server, l.handler, l.exited)
            l.loop = nil; l.server = nil; l.handler = nil; l.exited = nil
            return r
        }
        guard let loop, let server else { return }
        server.beginDrain()
        if let handler { loop.execute { handler.abortAll() } }
        loop.stop()
        guard !loop.inLoopThread, let exited else { return }
        for _ in 0..<2_000 where !exited.done.load(ordering: .acquiring) { usleep(1_000) }
    }

    /// Responses in progress that outlive their handler: SSE streams, stalls, delayed (`-slow`)
    /// answers, file and huge bodies. Drops back when they end or their client leaves.
    public var openResponses: Int { core.openResponses.load(ordering: .relaxed) }

    /// How many of those responses were abandoned by their client before they ended (e.g. Veil
    /// cancelling the upstream stream when its own client went away).
    public var clientDisconnects: Int { core.clientDisconnects.load(ordering: .relaxed) }

    /// The port bound by `start()` (0 before).
    public var port: UInt16 { lifecycle.withLock { $0.port } }

    /// `http://host:port` (valid after `start()`).
    public var baseURL: String {
        let host = config.host.contains(":") ? "[\(config.host)]" : config.host
        return "http://\(host):\(port)"
    }

    // MARK: introspection

    /// Requests whose path starts with `pathPrefix`, oldest first.
    public func requests(matching pathPrefix: String = "") -> [RecordedRequest] {
        core.withState { s in s.recorded.filter { $0.path.hasPrefix(pathPrefix) } }
    }

    public func count(_ method: String, _ pathPrefix: String) -> Int {
        core.withState { s in s.recorded.reduce(0) { $0 + ($1.method == method && $1.path.hasPrefix(pathPrefix) ? 1 : 0) } }
    }

    /// Forgets recorded requests, faults, videos and characters (the seeded one comes back); ids
    /// start over.
    public func reset() {
        core.withState { s in
            let base = s.baseURL
            s = SandboxState(apiKey: config.apiKey)
            s.baseURL = base
        }
    }

    // MARK: faults

    /// The next request (any method and path) gets this fault, once. Reading returns the first
    /// pending fault; setting nil clears them all.
    public var fault: SandboxFault? {
        get { core.withState { $0.faults.first?.fault } }
        set {
            core.withState { s in
                if let f = newValue { s.faults = [FaultRule(fault: f, method: nil, pathPrefix: nil, remaining: 1)] } else { s.faults = [] }
            }
        }
    }

    /// Adds a fault for requests matching `method` (nil = any) and `pathPrefix` (nil = any):
    /// `times` requests get it (nil = every matching request until `clearFaults()`).
    /// Rules are tried in the order they were added.
    public func inject(_ fault: SandboxFault, method: String? = nil, pathPrefix: String? = nil, times: Int? = 1) {
        core.withState { $0.faults.append(FaultRule(fault: fault, method: method, pathPrefix: pathPrefix, remaining: times)) }
    }

    public func clearFaults() { core.withState { $0.faults = [] } }

    // MARK: helpers for tests

    /// A signed file URL as the sandbox would mint it, for any expiry (e.g. in the past).
    public func signedFileURL(videoID: String, variant: String, expiresAt unixSeconds: Int64) -> String {
        SandboxHandler.signedURL(base: core.withState { $0.baseURL }, apiKey: config.apiKey, videoID: videoID, variant: variant, expires: unixSeconds)
    }

    /// The expected content of a generated file (`variant` is `clean` or `wm`).
    public func expectedFileBytes(videoID: String, variant: String, range: Range<Int>? = nil) -> [UInt8] {
        SandboxVideoFile.bytes(videoID: videoID, variant: variant, total: config.videoFileBytes, range: range)
    }
}
