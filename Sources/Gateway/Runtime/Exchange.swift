import Synchronization
import HTTPServer
import HTTPWire
import Reactor
import Translation
import Upstream
import Glibc

/// One request's journey through the gateway, from admission (head only) to its last byte: who
/// asked, which route, what was answered, how long it took. Every answer goes through it, so each
/// carries the request id and the CORS/rate-limit headers, every JSON body passes the key
/// redactor, the access log gets one line and the usage log one record. It owns the team slots
/// the request holds (`leases`): they go when it finishes, whichever way that happens.
public final class Exchange {
    public private(set) var request: HTTPRequest
    /// The request body's size, kept when the body itself is let go (`releaseAfterHead`).
    public private(set) var bytesIn = 0
    public let response: HTTPResponder
    public let context: LoopContext
    public let snapshot: ConfigSnapshot
    let log: GatewayLog
    /// The route the request resolved to (nil for answers given before routing: CORS, 404).
    var route: Route?
    /// The values of the route's `{…}` segments.
    var params: [Substring] = []
    /// The authenticated team, as an index into this exchange's configuration snapshot: the
    /// `Team` value itself is ~100 bytes, held by every open stream otherwise.
    public var teamIndex: Int?
    public var team: GatewayConfig.Team? { teamIndex.map { snapshot.team($0) } }
    /// The credential presented (header or `?token=`), kept only on routes whose answer may
    /// outlive it (event streams), which ask it again as they go.
    var authorization: String?
    public let requestID: String
    /// The client as logs know it: the peer, or — behind a trusted proxy (`trusted_proxies`) —
    /// the address its `X-Forwarded-For` names (read at admission: the fields go once a stream starts).
    public let clientAddress: String
    public let startedAt: UInt64
    // Filled as the exchange proceeds, read by the access log.
    public var status = 0
    public var model: String?
    public var upstreamLatencyMillis: Int?
    public var bytesOut = 0
    public var usage: Usage?
    public var errorCode: String?
    /// The prompt, for the access log when `log.prompts: true` (nil otherwise).
    public var prompt: String?
    /// Extra headers every answer of this exchange carries (CORS, rate limits).
    public var commonHeaders = HTTPHeaders()
    /// Team slots held while the request runs (a stream, a video in flight); released when the
    /// exchange finishes unless the flow kept them (`Lease.keep`).
    var leases: [Lease] = []
    private var finished = false

    init(head: HTTPRequestHead, response: HTTPResponder, peer: String, context: LoopContext, snapshot: ConfigSnapshot, log: GatewayLog) {
        self.request = HTTPRequest(head: head, body: [], remoteAddress: peer, loop: context.loop)
        self.response = response
        self.context = context
        self.snapshot = snapshot
        self.log = log
        // The loop's clock (refreshed once per iteration), not a fresh reading: handlers compute
        // `loop.now - startedAt` later, and a fresh reading can be 1 ms ahead of `loop.now` for the
        // rest of this iteration — an upstream head arriving in it made that UInt64 subtraction trap.
        self.startedAt = context.loop.now
        self.requestID = Exchange.requestID(from: head.headers["x-request-id"])
        clientAddress = snapshot.trustedProxies.isEmpty ? peer
            : forwardedClientAddress(peer: peer, forwardedFor: head.headers.values("x-forwarded-for"), trusted: snapshot.trustedProxies)
        commonHeaders.add("x-request-id", requestID)
    }

    /// The admitted request's body arrived.
    func received(body: [UInt8]) {
        request.body = body
        bytesIn = body.count
    }

    /// A caller's request id is kept when it is short and plain; otherwise Veil makes one.
    static func requestID(from header: String?) -> String {
        if let h = header, !h.isEmpty, h.utf8.count <= 128,
           h.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 || $0 == 46 || $0 == 58 }) {
            return h
        }
        // No syscall per request (the system generator makes one per call; this used to make
        // twelve): a process-wide random salt plus an atomic counter, mixed by SplitMix64 twice
        // with a second salt between (a bijection of the counter), so ids are unique within the
        // process and differ across processes. They are labels, not secrets.
        let n = requestIDCounter.add(1, ordering: .relaxed).newValue
        var w = splitMix64(splitMix64(requestIDSalt.0 &+ n) ^ requestIDSalt.1)
        // "req_" + 11 base-62 digits (62^11 > 2^64): 15 bytes, which Swift keeps inline in the
        // String itself — no allocation per request, none held per open stream.
        return String(unsafeUninitializedCapacity: 15) { out in
            let alphabet: StaticString = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
            let digits = alphabet.utf8Start
            out[0] = 0x72; out[1] = 0x65; out[2] = 0x71; out[3] = 0x5F          // "req_"
            for i in 0..<11 {
                out[4 + i] = digits[Int(w % 62)]
                w /= 62
            }
            return 15
        }
    }

    public var path: Substring { request.path }


    /// Lets go of what a stream no longer needs once its head is sent: the request's body and
    /// header fields (its prompt can be many KiB, held for minutes otherwise) and the answer's
    /// common fields (already sent). Method, target, the request id and `bytesIn` stay for the
    /// access log and the usage record.
    public func releaseAfterHead() {
        request.body = []
        request.head.headers = HTTPHeaders()
        commonHeaders = HTTPHeaders()
    }

    /// Milliseconds from `start` to `now`, never negative. The loop's cached `now` (read once per
    /// iteration) can be older than `startedAt` (read fresh when the exchange began): an upstream
    /// call that finishes within the iteration that started it must not trap on `now - startedAt`.
    public static func millis(from start: UInt64, to now: UInt64) -> Int { now > start ? Int(now - start) : 0 }

    /// Time since the exchange started, by the loop's clock (upstream latency in the access log).
    public var elapsedMillis: Int { Exchange.millis(from: startedAt, to: context.loop.now) }

    // MARK: the client

    /// The client is still there and the answer still open.
    public var isOpen: Bool { response.isOpen }
    /// False when the client is slow: producers pause until `onWritable`.
    var isWritable: Bool { response.isWritable }

    /// Called once if the client leaves before the answer ended.
    func onClientGone(_ f: @escaping () -> Void) { response.onClose = f }
    /// Called once the client drained what it was slow to take.
    func onWritable(_ f: @escaping () -> Void) { response.onWritable = f }

    // MARK: answers

    /// The common fields plus `extra`, whose values are redacted (they may come from upstream).
    public func headers(_ extra: HTTPHeaders = HTTPHeaders()) -> HTTPHeaders {
        if extra.count == 0 { return commonHeaders }
        var h = commonHeaders
        h.fields.reserveCapacity(h.count + extra.count + 5)   // room for what the responder adds
        for f in extra { h.replace(f.name, log.redact(f.value)) }
        return h
    }

    /// A whole JSON answer. The key never leaves in it (redacted; the usual case, no key in the
    /// body, costs one scan and no copy).
    public func send(_ status: Int, _ body: [UInt8], headers extra: HTTPHeaders = HTTPHeaders()) {
        let clean = KeyRedactor.redact(body, secret: snapshot.apiKeyBytes)
        self.status = status
        bytesOut += clean.count
        response.json(status, clean, headers: headers(extra))
        finish()
    }

    public func fail(_ error: APIError, headers extra: HTTPHeaders = HTTPHeaders()) {
        // Safety net: whatever an error message quotes (an upstream text, the caller's own path),
        // the upstream key never leaves in it.
        var error = error
        error.message = log.redact(error.message)
        status = error.status
        errorCode = error.code ?? error.type
        if error.code == APIError.upstreamAuthFailedCode {
            log.logger.critical("the upstream refused the gateway's own key: every team is affected until it is fixed",
                                metadata: ["request_id": "\(requestID)", "path": "\(String(path.prefix(128)))"])
            context.ops?.metrics.upstreamAuthFailed()
        }
        let b = error.body
        bytesOut += b.count
        response.fail(error, headers: headers(extra))
        finish()
    }

    /// A whole answer that is not JSON (metrics text, an empty 204, binary audio).
    public func sendRaw(_ status: Int, _ body: [UInt8], contentType: String?, headers extra: HTTPHeaders = HTTPHeaders()) {
        let clean = KeyRedactor.redact(body, secret: snapshot.apiKeyBytes)
        self.status = status
        bytesOut += clean.count
        var h = headers(extra)
        if let contentType { h.replace("content-type", contentType) }
        response.respond(status: status, headers: h, body: clean)
        finish()
    }

    /// Streaming: the head now, body later through `write`, then `end`. Body bytes must already
    /// be redacted (the engine's stream redactor).
    public func sendHead(_ status: Int, headers extra: HTTPHeaders) {
        self.status = status
        response.sendHead(HTTPResponseHead(status: status, headers: headers(extra)))
    }

    public func write(_ bytes: UnsafeRawBufferPointer) {
        bytesOut += bytes.count
        response.write(bytes)
    }

    public func end() {
        response.end()
        finish()
    }

    /// The client left, or the answer was cut: log what happened.
    public func abandon(_ reason: String) {
        if errorCode == nil { errorCode = reason }
        response.abort()
        finish()
    }

    /// The transport's detail of an upstream failure, for operators (the caller gets a generic
    /// message): with the request id, so the two can be matched.
    func logUpstreamFailure(_ error: UpstreamError) {
        guard error != .cancelled else { return }
        log.logger.warning("upstream failure", metadata: ["request_id": "\(requestID)", "path": "\(String(path.prefix(128)))",
                                                          "error": "\(log.redact(String(describing: error)))"])
    }

    func finish() {
        guard !finished else { return }
        finished = true
        for l in leases { l.release() }
        leases = []
        let duration = Exchange.millis(from: startedAt, to: EventLoop.monotonicMillis())
        if let ops = context.ops {
            ops.logAccess(self, durationMillis: duration)
            ops.finished(self)
        } else {
            var line: [UInt8] = []
            log.access(self, durationMillis: duration, into: &line)
            line.withUnsafeBytes { GatewayLog.writeOut($0) }
        }
    }
}

private let requestIDSalt: (UInt64, UInt64) = {
    var rng = SystemRandomNumberGenerator()
    return (rng.next(), rng.next())
}()
private let requestIDCounter = Atomic<UInt64>(0)

@inline(__always)
private func splitMix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}
