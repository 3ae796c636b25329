import HTTPWire
import Translation
import Upstream

/// `POST /v1/chat/completions`. The caller's body goes upstream as is (only the key is Veil's).
/// Streams are passed straight through as each chunk arrives — no re-encoding, no buffering of
/// events — with the key redacted on the fly and the final `usage` read in passing. A slow
/// client pauses the upstream transfer; a client that leaves cancels it.
final class ChatProxy: UpstreamDelegate {
    let x: Exchange
    var transfer: UpstreamTransfer?
    var redactor: KeyRedactor
    var usageScanner = SSEUsageScanner()
    var streaming = false
    var headSent = false
    var buffered: [UInt8] = []
    var upstreamStatus = 0
    var upstreamHeaders: [(name: String, value: String)] = []
    let maxBuffered: Int
    /// The team whose concurrent-stream slot this request holds (released once, at the end).
    var streamSlot: String?
    var firstByteSeen = false

    static let streamReceiveBufferBytes = 1024

    init(_ x: Exchange) {
        self.x = x
        redactor = KeyRedactor(secret: x.snapshot.apiKeyBytes)
        maxBuffered = x.snapshot.config.upstream.maxResponseBytes
    }

    static func start(_ x: Exchange) {
        let info: (model: String?, stream: Bool)
        do { info = try ChatRequestInfo.parse(x.request.body) } catch {
            return x.fail(APIError(400, "The request body must be a JSON object with `model` and `messages`.", code: "invalid_json"))
        }
        guard let model = info.model, !model.isEmpty else {
            return x.fail(APIError(400, "`model` is required.", param: "model", code: "missing_model"))
        }
        x.model = model
        if x.snapshot.config.log.prompts { x.prompt = lastUserMessage(x.request.body) }
        if let allowed = x.team?.models, !allowed.contains(model) {
            return x.fail(APIError(403, "Model `\(model)` is not allowed for this team.", param: "model", code: "model_not_allowed"))
        }
        var slot: String?
        if info.stream, let team = x.team {
            if let refusal = x.snapshot.policy.admitStream(team: team) { return x.fail(refusal.error, headers: refusal.headers) }
            slot = team.name
        }
        let p = ChatProxy(x)
        p.streamSlot = slot
        let cfg = x.snapshot.config.upstream
        var r = HeaderPolicy.upstreamRequest(x, "POST", x.snapshot.chatCompletionsURL, forwarding: x.request.headers, body: x.request.body, json: true)
        r.connectTimeoutMillis = cfg.connectTimeoutMillis
        r.timeoutMillis = cfg.requestTimeoutMillis
        r.stallTimeoutMillis = cfg.stallTimeoutMillis
        // A stream lives for minutes and its events are a few hundred bytes: libcurl's receive
        // buffer is held (and its first page touched) for all that time. Small buffers pack
        // several streams per page; a burst larger than this simply takes another read.
        if info.stream { r.receiveBufferBytes = ChatProxy.streamReceiveBufferBytes }
        x.response.onClose = { [weak p] in p?.clientLeft() }
        p.transfer = x.context.upstream.start(r, delegate: p)
    }

    func clientLeft() {
        transfer?.cancel()
    }

    /// A 200 whose media type is `text/event-stream`, in any case, parameters allowed (compared
    /// as bytes: no lower-cased copy per response).
    static func isEventStream(status: Int, contentType: String?) -> Bool {
        guard status == 200, let ct = contentType else { return false }
        return asciiCaseInsensitiveEquals(Substring(ct.utf8.prefix(17)), "text/event-stream")
    }

    // MARK: UpstreamDelegate

    func upstreamDidReceiveHead(_ head: UpstreamResponseHead) {
        upstreamStatus = head.status
        upstreamHeaders = head.headers
        x.upstreamLatencyMillis = x.elapsedMillis
        streaming = ChatProxy.isEventStream(status: head.status, contentType: head.header("content-type"))
        guard streaming else { return }
        // Headers go out at once: the client sees the stream open before the first event.
        var h = HeaderPolicy.callerHeaders(from: head.headers, redact: x.log.redact)
        h.replace("cache-control", "no-cache")
        h.replace("x-accel-buffering", "no")
        x.sendHead(200, headers: h)
        headSent = true
        upstreamHeaders = []          // sent; not held for the stream's lifetime
        x.releaseAfterHead()          // libcurl holds its own copy of the body until the end
        x.context.ops?.metrics.streamOpened()
    }

    func upstreamDidReceive(_ bytes: UnsafeRawBufferPointer) {
        if streaming {
            if !firstByteSeen {
                firstByteSeen = true
                x.context.ops?.metrics.firstStreamByte(afterMillis: x.elapsedMillis)
            }
            usageScanner.feed(bytes)
            redactor.process(bytes) { x.write($0) }
            if !x.response.isWritable {
                transfer?.pause()
                x.response.onWritable = { [weak self] in self?.transfer?.resume() }
            }
        } else {
            if buffered.count + bytes.count > maxBuffered {
                transfer?.cancel()
                return
            }
            buffered.append(contentsOf: bytes)
        }
    }

    /// What the caller gets instead of a buffered upstream answer, or nil when it may pass (2xx
    /// JSON, redacted). Upstream errors become Veil's OpenAI envelope (5xx → 502, 4xx kept) with
    /// the upstream's message redacted after decoding; a 2xx that is not JSON, or JSON hiding the
    /// key behind `\u` escapes, is a 502: never the raw page, never the key.
    /// Ends a stream the upstream cut: one `data: {"error":...}` event (what the OpenAI SDKs raise
    /// as an APIError), then a proper end of the chunked body.
    func endWithErrorEvent(_ e: APIError) {
        x.errorCode = e.code
        let event: [UInt8] = Array("data: ".utf8) + e.body + Array("\n\n".utf8)
        event.withUnsafeBytes { x.write($0) }
        x.end()
    }

    static func refusal(status: Int, raw: [UInt8], key: [UInt8]) -> APIError? {
        var unused: Usage?
        return refusal(status: status, raw: raw, key: key, usage: &unused)
    }

    /// The same, reading the top-level `usage` in the validating pass (one pass over the answer).
    static func refusal(status: Int, raw: [UInt8], key: [UInt8], usage: inout Usage?) -> APIError? {
        if status >= 300 { return VideoRoutes.upstreamError(status, raw, key: key, keepStatus: true) }
        do { usage = try extractUsage(fromJSON: raw) } catch {
            return APIError(502, "The upstream's answer was not valid JSON.", code: "upstream_invalid_response")
        }
        if jsonHidesSecret(raw, secret: key) {
            return APIError(502, "The upstream's answer was withheld: it contained the upstream credential.", code: "upstream_invalid_response")
        }
        return nil
    }

    func upstreamDidFinish(_ error: UpstreamError?) {
        transfer = nil
        if let team = streamSlot {
            streamSlot = nil
            x.snapshot.policy.streamFinished(team: team)
        }
        if headSent { x.context.ops?.metrics.streamClosed() }
        if streaming {
            redactor.finish { x.write($0) }
            if let u = usageScanner.usage { x.usage = (u.promptTokens, u.completionTokens, u.totalTokens) }
            if let error, error != .cancelled || x.response.isOpen {
                // Cut mid-stream: say so in a way the OpenAI SDKs raise, then end the stream cleanly.
                endWithErrorEvent(APIError.from(error))
            } else if error == .cancelled {
                x.abandon("client_closed")
            } else if !usageScanner.sawDone && x.response.isOpen {
                endWithErrorEvent(APIError(502, "The upstream ended the stream without [DONE].", code: "upstream_stream_incomplete"))
            } else {
                x.end()
            }
            return
        }
        if let error {
            if error == .cancelled && !x.response.isOpen { return x.abandon("client_closed") }
            if error == .cancelled { return x.fail(APIError.from(.tooLarge)) }
            return x.fail(APIError.from(error))
        }
        // Whole JSON answer (or an upstream error).
        let key = x.snapshot.apiKeyBytes
        var usage: Usage?
        if let e = Self.refusal(status: upstreamStatus, raw: buffered, key: key, usage: &usage) { return x.fail(e) }
        let body = KeyRedactor.redact(buffered, secret: key)
        if let u = usage { x.usage = (u.promptTokens, u.completionTokens, u.totalTokens) }
        x.send(upstreamStatus, body, headers: HeaderPolicy.callerHeaders(from: upstreamHeaders, redact: x.log.redact))
    }
}

/// `GET /v1/models`: forwarded, redacted.
enum ModelsProxy {
    static func start(_ x: Exchange) {
        let r = HeaderPolicy.upstreamRequest(x, "GET", x.snapshot.upstreamBase + "/v1/models", forwarding: x.request.headers)
        let call = BufferedCall.start(x.context, r) { result in
            switch result {
            case .failure(let e): x.fail(APIError.from(e))
            case .success(let (head, body)):
                x.upstreamLatencyMillis = x.elapsedMillis
                let key = x.snapshot.apiKeyBytes
                if let e = ChatProxy.refusal(status: head.status, raw: body, key: key) { return x.fail(e) }
                x.send(head.status, KeyRedactor.redact(body, secret: key), headers: HeaderPolicy.callerHeaders(from: head.headers, redact: x.log.redact))
            }
        }
        x.response.onClose = { call.cancel() }
    }
}

/// The last user message's text (for `log.prompts: true` only): a string content, or the text parts.
func lastUserMessage(_ body: [UInt8]) -> String? {
    guard let v = try? JSONValue.parse(body), case .array(let messages)? = v["messages"] else { return nil }
    for m in messages.reversed() where m["role"]?.stringValue == "user" {
        if let s = m["content"]?.stringValue { return s }
        if case .array(let parts)? = m["content"] {
            return parts.compactMap { $0["type"]?.stringValue == "text" ? $0["text"]?.stringValue : nil }.joined(separator: "\n")
        }
        return nil
    }
    return nil
}
