import Glibc
import HTTPServer
import HTTPWire
import Reactor
import Synchronization

/// The stand-in upstream: a loopback HTTP server that behaves like the reseller described in
/// `shared/UPSTREAM.md` — its key checks (Bearer header, key in the `size` form field), its field
/// swaps (clean URL in `url`, watermarked URL in `size`), its moderation text in `quality`, its key
/// leak in the character list — deterministically, so tests and `veil serve --sandbox` can rely on it.
/// It must behave like the real upstream, not like whatever Veil happens to send.
///
/// It runs its own `EventLoop` on its own thread (`start()` returns the bound port, `stop()` ends
/// everything). Introspection (`requests`, `count`, `openResponses`, `clientDisconnects`, `reset`)
/// and fault injection (`fault`, `inject`) are thread-safe.
///
/// Endpoints (all but `/files` need `Authorization: Bearer <apiKey>`, else 401
/// `{"error":{"message":"无效的令牌 …","type":"new_api_error"}}`; unknown routes → 404 first):
/// - `POST /v1/chat/completions`: `stream: true` → SSE chunks (role, one per word of the reply
///   "Sandbox reply to: <last user message words>", finish, usage with `choices: []`, `[DONE]`),
///   `sseChunkDelayMillis` apart; each JSON event carries `sent_at_us`. Otherwise one
///   `chat.completion` with usage and `sent_at_us`. Model missing → 400; ending with `-slow` →
///   answered after `slowModelDelayMillis`; `sandbox-echo-key` → 401 echoing the presented key in
///   the body and the `X-Debug-Authorization` header.
///   The usage chunk comes whether or not the caller asked (`stream_options.include_usage`), as
///   the real upstream does.
/// - `GET /v1/models`: `gpt-3.5-turbo`, `gpt-4o-mini`, `sora-2`, `sora-2-yijia`, and one model per
///   pass-through endpoint below (new-api adds `"success":true` and `supported_endpoint_types`).
/// - Pass-through OpenAI endpoints, answered in OpenAI's shapes (see `OpenAIEndpoints.swift`):
///   `POST /v1/responses` (JSON, or with `stream: true` OpenAI's typed events from
///   `response.created` to `response.completed`, which carries `usage`), `POST /v1/embeddings`
///   (floats or `encoding_format: base64`; `usage`), `POST /v1/images/generations` (64×64 PNGs
///   as URLs under `/files/images/` or `b64_json`; `gpt-image-*` with `usage`),
///   `POST /v1/moderations` (`nsfw` / `violence` in the input flag it), `POST /v1/audio/speech`
///   (binary mp3, wav or pcm), `POST /v1/audio/transcriptions` (multipart with a `file`; json,
///   verbose_json, text, srt, vtt; `usage`).
/// - Model cues, wherever a request names a model (`ModelCue`): `sandbox-rate-limited` → 429
///   with new-api's rate-limit body; `sandbox-upstream-error` → 500 (new-api's relay error);
///   `sandbox-missing-model` → 404 OpenAI `model_not_found`; `sandbox-tools` → a function call
///   (chat: `tool_calls` deltas in OpenAI's chunk shape; responses: `function_call` item and
///   `response.function_call_arguments.delta` events); `sandbox-slow-stream` → events
///   `slowStreamGapMillis` apart.
/// - `POST /v1/videos` (multipart/form-data or urlencoded): `size` must equal the key (else 401),
///   then `prompt`, `model` required (400). Answers `queued` with ids from 4000. Prompt cues
///   (case-insensitive, first match wins): `nsfw` → completed, `url:""`, `size:"1024x1808"`,
///   moderation text in `quality`; `fail` → status `error`; `nourl` → completed,
///   `quality:"standard"`, `url:""`, `size:"720x720"`; anything else succeeds.
/// - `GET /v1/videos/{id}` (a body and Content-Type are tolerated): `processing` with growing
///   progress, then the final state (see `SandboxConfig.videoPollsToComplete` /
///   `videoMillisToComplete`). Success: `url` = clean file, `size` = WATERMARKED file,
///   `model:"sora-2-yijia"`, `seconds:"2"` (or the form's `seconds`), `progress:100`. Unknown → 404.
/// - `GET|HEAD /files/{id}/{clean|wm}.mp4?se=<ISO 8601, percent-encoded>&sig=<hex>`: no auth;
///   bad or missing signature, or expiry passed → 403 (Azure-style XML). `videoFileBytes` of
///   deterministic MP4-looking bytes (`SandboxVideoFile.bytes`), `Accept-Ranges`, one `Range`
///   (`a-b`, `a-`, `-n`) → 206 + `Content-Range`, unsatisfiable → 416 `bytes */N`. Streamed in
///   64 KiB pieces with back-pressure.
/// - `POST /v1/characters`: the video must exist and have succeeded, `timestamps` `S-E` with
///   0 <= S < E <= S+3, all four fields present; else 400 `{"success":false,"message":…}`.
///   Answers `{"success":true,"data":{…,"api_key":<THE KEY>,"token_id":17,"gen_id":"gen_…","status":0}}`.
/// - `GET /v1/characters`: every character made with the key, the seeded id 58 / `123AMO2M`
///   included, each with `api_key` in clear, `username`, `token_id`, `status` (0, then 999 — or -1
///   when `instruction_value` contains `fail` — once listed `characterListsToReady` times) and
///   `create_time` in Asia/Shanghai local time `YYYY-MM-DD HH:MM:SS`.
///
/// Faults (`SandboxFault`) are checked before routing and authentication, after the request was
/// recorded. `fault = x` arms a one-shot fault for the next request of any kind; `inject` adds
/// rules restricted by method and path prefix, for a number of requests or sticky (`times: nil`).
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
