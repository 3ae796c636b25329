import Inflate
import Upstream

/// Runs a buffered hook set for the gateway itself, with no caller behind it: the video watcher's
/// polls. The buffered half of `UpstreamEngine` without an `Exchange` (no client to cancel, pause
/// or answer): the configuration's timeouts, the size cap, decoding of an answer compressed anyway
/// (bomb-limited; an unknown coding is refused), the hooks' error mapping, and exactly one call of
/// `then` on the loop that started it. Its value is never sent anywhere as it is: whoever serves
/// it later redacts it on the way out (as `Exchange` does every answer).
final class DetachedFetch<H: UpstreamHooks>: UpstreamDelegate {
    private let ctx: LoopContext
    private var hooks: H
    private var then: ((Result<H.Value, APIError>) -> Void)?
    private var transfer: UpstreamTransfer?
    private var head: UpstreamResponseHead?
    private var body: [UInt8] = []
    private var limit = 0
    private var inflater: Inflater?

    private init(_ ctx: LoopContext, _ hooks: H, then: @escaping (Result<H.Value, APIError>) -> Void) {
        self.ctx = ctx
        self.hooks = hooks
        self.then = then
    }

    /// Starts the exchange on `ctx`'s loop (call it there); `then` runs there once.
    static func run(_ ctx: LoopContext, _ hooks: H, then: @escaping (Result<H.Value, APIError>) -> Void) {
        let f = DetachedFetch(ctx, hooks, then: then)
        var request: UpstreamRequest
        switch f.hooks.makeRequest() {
        case .failure(let e): return f.complete(.failure(e))
        case .success(let r): request = r
        }
        let up = ctx.snapshot.config.upstream
        if request.connectTimeoutMillis == UpstreamRequest.defaults.connectTimeoutMillis { request.connectTimeoutMillis = up.connectTimeoutMillis }
        if request.timeoutMillis == UpstreamRequest.defaults.timeoutMillis { request.timeoutMillis = up.requestTimeoutMillis }
        if request.stallTimeoutMillis == 0 { request.stallTimeoutMillis = up.stallTimeoutMillis }
        f.limit = up.maxResponseBytes
        // The transfer keeps its delegate (this object) alive until it finishes.
        f.transfer = ctx.upstream.start(request, delegate: f)
    }

    func upstreamDidReceiveHead(_ head: UpstreamResponseHead) {
        switch ContentCoding.parse(head.header("content-encoding")) {
        case .success(.identity): break
        case .success(let coding): inflater = Inflater(coding: coding, limits: InflateLimits(maxOutputBytes: limit))
        case .failure:
            return stop(APIError(502, "The upstream answered in a content coding Veil cannot check.", code: "upstream_unsupported_encoding"))
        }
        switch hooks.onHead(head) {
        case .buffer(let cap):
            self.head = head
            if let cap { limit = cap }
            if let coding = inflater?.coding { inflater = Inflater(coding: coding, limits: InflateLimits(maxOutputBytes: limit)) }
        case .stream:
            stop(APIError(500, "A detached upstream exchange can't stream.", code: "internal_error"))
        case .fail(let e, _):
            stop(e)
        }
    }

    func upstreamDidReceive(_ bytes: UnsafeRawBufferPointer) {
        guard then != nil else { return }
        guard let inflater else { return take(bytes) }
        do throws(InflateError) { try inflater.process(bytes) { take($0) } } catch {
            stop(APIError(502, "The upstream's compressed answer could not be decoded.", code: "upstream_bad_encoding"))
        }
    }

    private func take(_ bytes: UnsafeRawBufferPointer) {
        guard then != nil else { return }
        if body.count + bytes.count > limit { return stop(hooks.failure(.tooLarge)) }
        body.append(contentsOf: bytes)
    }

    func upstreamDidFinish(_ error: UpstreamError?) {
        transfer = nil
        guard then != nil else { return }
        if let error { return complete(.failure(hooks.failure(error))) }
        if let inflater {
            do throws(InflateError) { try inflater.finish() } catch {
                return complete(.failure(APIError(502, "The upstream's compressed answer could not be decoded.", code: "upstream_bad_encoding")))
            }
        }
        guard let head else { return complete(.failure(.upstream(.broken("no response head")))) }
        switch hooks.finish(UpstreamAnswer(head: head, body: body)) {
        case .value(let v): complete(.success(v))
        case .fail(let e, _): complete(.failure(e))
        case .json, .raw: complete(.failure(APIError(500, "A detached upstream exchange answered instead of handing on its value.", code: "internal_error")))
        }
        body = []
    }

    /// Ends early: the transfer is cancelled (its finish then finds nothing left to do).
    private func stop(_ error: APIError) {
        complete(.failure(error))
        transfer?.cancel()
        transfer = nil
    }

    private func complete(_ result: Result<H.Value, APIError>) {
        guard let next = then else { return }
        then = nil
        next(result)
    }
}
