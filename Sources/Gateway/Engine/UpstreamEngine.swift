import HTTPWire
import Inflate
import Translation
import Upstream

/// Drives one upstream exchange for one caller, whatever the endpoint: nginx's upstream module
/// for Veil. It owns everything around the endpoint's hooks:
/// - starting the transfer (the configuration's timeouts applied), cancelling it when the client
///   leaves, and back-pressure (a slow client pauses the transfer, its draining resumes it);
/// - latency (`upstream_ms`), the stream metrics, the size cap of buffered answers;
/// - decoding: an answer the upstream compressed although Veil asked for identity is inflated
///   before anything looks at it (bomb-limited), or refused with 502 when its coding is unknown —
///   never relayed encoded, where the redactor could not see the key;
/// - key redaction: every streamed byte passes one `KeyRedactor` (or the hooks' own filter when
///   it redacts, `redactsStream`); buffered answers are redacted by `Exchange`, where every answer
///   goes out;
/// - error mapping (`APIError.upstream`), and ending every path in exactly one answer (or one
///   value handed to the flow), after which the exchange's leases go with it.
///
/// Two ways in: `proxy` answers the caller itself (chat, models, video content); `fetch` hands the
/// hooks' value to a continuation that goes on (store writes, a second call) and answers later.
final class UpstreamEngine<H: UpstreamHooks>: UpstreamDelegate {
    private enum Phase {
        case waitingHead
        case streaming
        case buffering(limit: Int)
        case done
    }

    private let x: Exchange
    /// Unchecked exclusivity: loop-confined, and the hooks are pure (their `emit` writes to the
    /// exchange, never back into this engine), so accesses cannot overlap.
    @exclusivity(unchecked) private var hooks: H
    private var phase = Phase.waitingHead
    private var transfer: UpstreamTransfer?
    private var redactor: KeyRedactor
    private var head: UpstreamResponseHead?
    private var body: [UInt8] = []
    private var firstByteSeen = false
    private var countsAsStream = false
    /// Set when the upstream compressed its answer anyway.
    private var inflater: Inflater?
    /// `fetch` only: where the value (or the caller's error) goes.
    private var continuation: ((Result<H.Value, APIError>) -> Void)?

    private init(_ x: Exchange, _ hooks: H) {
        self.x = x
        self.hooks = hooks
        redactor = KeyRedactor(secret: x.snapshot.apiKeyBytes)
    }

    /// Runs the exchange and answers the caller.
    static func proxy(_ x: Exchange, _ hooks: H) {
        UpstreamEngine(x, hooks).start()
    }

    /// Runs the exchange and hands its value to `then` (on the same loop); failures the caller
    /// must see arrive as `.failure` (the flow answers with them). A client that leaves cancels
    /// the transfer; `then` still runs (with `.failure`), so the flow's own end is always reached.
    static func fetch(_ x: Exchange, _ hooks: H, then: @escaping (Result<H.Value, APIError>) -> Void) {
        let e = UpstreamEngine(x, hooks)
        e.continuation = then
        e.start()
    }

    private func start() {
        var request: UpstreamRequest
        switch hooks.makeRequest() {
        case .failure(let e): return complete(.fail(e))
        case .success(let r): request = r
        }
        let up = x.snapshot.config.upstream
        if request.connectTimeoutMillis == UpstreamRequest.defaults.connectTimeoutMillis { request.connectTimeoutMillis = up.connectTimeoutMillis }
        if request.timeoutMillis == UpstreamRequest.defaults.timeoutMillis { request.timeoutMillis = up.requestTimeoutMillis }
        if request.stallTimeoutMillis == 0 { request.stallTimeoutMillis = up.stallTimeoutMillis }
        if hooks.cancelWhenClientLeaves { x.onClientGone { [weak self] in self?.transfer?.cancel() } }
        transfer = x.context.upstream.start(request, delegate: self)
    }

    // MARK: UpstreamDelegate

    func upstreamDidReceiveHead(_ head: UpstreamResponseHead) {
        x.upstreamLatencyMillis = x.elapsedMillis
        switch ContentCoding.parse(head.header("content-encoding")) {
        case .success(.identity): break
        case .success(let coding): inflater = Inflater(coding: coding, limits: UpstreamEngine.streamInflateLimits)
        case .failure:
            phase = .done
            transfer?.cancel()
            transfer = nil
            return complete(.fail(APIError(502, "The upstream answered in a content coding Veil cannot check.", code: "upstream_unsupported_encoding")))
        }
        switch hooks.onHead(head) {
        case .stream(let status, var headers):
            phase = .streaming
            if inflater != nil { headers.remove("content-length") }   // the decoded length differs
            x.sendHead(status, headers: headers)          // values redacted by the exchange
            x.releaseAfterHead()          // the transfer holds its own copy of the request body
            if status == 200 && isEventStream(headers) {
                countsAsStream = true
                x.context.ops?.metrics.streamOpened()
            }
        case .buffer(let limit):
            self.head = head
            let cap = limit ?? x.snapshot.config.upstream.maxResponseBytes
            phase = .buffering(limit: cap)
            if let coding = inflater?.coding { inflater = Inflater(coding: coding, limits: InflateLimits(maxOutputBytes: cap)) }
        case .fail(let e, let headers):
            phase = .done
            transfer?.cancel()
            transfer = nil
            complete(.fail(e, headers: headers))
        }
    }

    func upstreamDidReceive(_ bytes: UnsafeRawBufferPointer) {
        guard let inflater else { return take(bytes) }
        do throws(InflateError) {
            try inflater.process(bytes) { take($0) }
        } catch {
            undecodable(error)
        }
    }

    /// Decoded body bytes.
    private func take(_ bytes: UnsafeRawBufferPointer) {
        switch phase {
        case .streaming:
            if countsAsStream && !firstByteSeen {
                firstByteSeen = true
                x.context.ops?.metrics.firstStreamByte(afterMillis: x.elapsedMillis)
            }
            var going = true
            if hooks.redactsStream {
                going = hooks.filter(bytes) { x.write($0) }
            } else {
                redactor.process(bytes) { clean in if going { going = hooks.filter(clean) { x.write($0) } } }
            }
            if !going { return stopStream(.broken("the upstream's stream was refused by Veil's filter")) }
            if !x.isWritable {
                transfer?.pause()
                x.onWritable { [weak self] in self?.transfer?.resume() }
            }
        case .buffering(let limit):
            if body.count + bytes.count > limit {
                phase = .done
                transfer?.cancel()
                transfer = nil
                return complete(.fail(hooks.failure(.tooLarge)))
            }
            body.append(contentsOf: bytes)
        case .waitingHead, .done:
            break
        }
    }

    /// A compressed answer that does not decode (corrupt, cut, a bomb): never relayed.
    private func undecodable(_ error: InflateError) {
        x.log.logger.warning("upstream answer could not be decoded", metadata: ["request_id": "\(x.requestID)", "error": "\(error)"])
        switch phase {
        case .streaming:
            stopStream(.broken("undecodable content coding"))
        case .buffering, .waitingHead:
            phase = .done
            transfer?.cancel()
            transfer = nil
            complete(.fail(APIError(502, "The upstream's compressed answer could not be decoded.", code: "upstream_bad_encoding")))
        case .done:
            break
        }
    }

    /// Ends a stream early (Veil refused what came): the transfer is cancelled, the hooks say how
    /// the answer ends.
    private func stopStream(_ error: UpstreamError) {
        transfer?.cancel()
        transfer = nil
        finishStream(error)
    }

    func upstreamDidFinish(_ error: UpstreamError?) {
        transfer = nil
        if error == nil, let inflater {
            // A compressed body must end where its coding says (a cut gzip is not a whole answer).
            do throws(InflateError) { try inflater.finish() } catch { return undecodable(error) }
        }
        switch phase {
        case .done:
            return
        case .streaming:
            finishStream(error)
        case .waitingHead, .buffering:
            phase = .done
            if let error {
                if error == .cancelled && !x.isOpen { return complete(.fail(APIError(499, "The client closed the connection.", code: "client_closed"))) }
                x.logUpstreamFailure(error)
                return complete(.fail(hooks.failure(error)))
            }
            guard let head else { return complete(.fail(.upstream(.broken("no response head")))) }
            let outcome = hooks.finish(UpstreamAnswer(head: head, body: body))
            body = []
            if let u = hooks.usage { x.usage = u }
            complete(outcome)
        }
    }

    /// The one end of a stream.
    private func finishStream(_ error: UpstreamError?) {
        guard case .streaming = phase else { return }
        phase = .done
        if countsAsStream { x.context.ops?.metrics.streamClosed() }
        if !hooks.redactsStream {
            // A held-back key prefix is not released (a stream cut inside the key).
            redactor.finish { clean in _ = hooks.filter(clean) { x.write($0) } }
        }
        hooks.flush { x.write($0) }
        let ending = hooks.streamEnded(error)
        if let u = hooks.usage { x.usage = u }
        if error == .cancelled && !x.isOpen { return x.abandon("client_closed") }
        switch ending {
        case .end:
            x.end()
        case .endWith(let bytes, let code):
            x.errorCode = code
            bytes.withUnsafeBytes { x.write($0) }
            x.end()
        case .abort(let reason):
            x.abandon(reason)
        }
    }

    /// The one exit of a buffered exchange: an answer for the caller, or the flow's value.
    private func complete(_ outcome: Outcome<H.Value>) {
        if let next = continuation {
            continuation = nil
            switch outcome {
            case .value(let v): return next(.success(v))
            case .fail(let e, _): return next(.failure(e))
            case .json, .raw:
                // Hooks run through `fetch` hand values to their flow; answering is the flow's job.
                return next(.failure(APIError(500, "An upstream exchange answered instead of handing on its value.", code: "internal_error")))
            }
        }
        switch outcome {
        case .json(let status, let body, let headers): x.send(status, body, headers: headers)
        case .raw(let status, let body, let contentType, let headers): x.sendRaw(status, body, contentType: contentType, headers: headers)
        case .fail(let e, let headers): x.fail(e, headers: headers)
        case .value: x.fail(APIError(500, "An upstream exchange ended without an answer.", code: "internal_error"))
        }
    }

    /// Decoding limits of a streamed compressed answer: it may be large (a video) and is never
    /// held whole, so only the ratio guards it; a buffered one gets its buffer's cap.
    static var streamInflateLimits: InflateLimits { InflateLimits(maxOutputBytes: Int.max) }

    private func isEventStream(_ h: HTTPHeaders) -> Bool {
        guard let ct = h["content-type"] else { return false }
        return asciiCaseInsensitiveEquals(Substring(ct.utf8.prefix(17)), "text/event-stream")
    }
}
