import HTTPWire
import Translation
import Upstream

/// `POST /v1/chat/completions`. The caller's body goes upstream as is (only the key is Veil's).
/// Streams are passed straight through as each chunk arrives — no re-encoding, no buffering of
/// events — with the key redacted on the fly (the engine) and the final `usage` read in passing.
enum ChatCompletions {
    static func start(_ x: Exchange, _ g: Gateway) {
        let hooks: ChatHooks
        switch ChatHooks.make(body: x.request.body, callerHeaders: x.request.headers, requestID: x.requestID,
                              team: x.team, snapshot: x.snapshot) {
        case .failure(let e): return x.fail(e)
        case .success(let h): hooks = h
        }
        x.model = hooks.model
        if x.snapshot.config.log.prompts { x.prompt = lastUserMessage(x.request.body) }
        if hooks.stream, let team = x.team {
            switch x.snapshot.policy.admitStream(team: team) {
            case .failure(let refusal): return x.fail(refusal.error, headers: refusal.headers)
            case .success(let lease): if let lease { x.leases.append(lease) }
            }
        }
        UpstreamEngine.proxy(x, hooks)
    }
}

/// The chat completion's hooks: pure decisions over the caller's body and the upstream's answer.
/// A stream goes through one `SSEEventFilter`: the key redacted (also JSON-escaped inside an
/// event), usage and `[DONE]` read in passing, and the final usage-only chunk removed when the
/// caller did not ask for it (Veil always asks the upstream for usage: it needs the counts).
struct ChatHooks: UpstreamHooks {
    let request: UpstreamRequest
    let model: String
    /// The caller asked for a stream.
    let stream: Bool
    let key: [UInt8]
    private var status = 0
    private var headers = HTTPHeaders()
    /// Made when the answer turns out to be a stream (a buffered answer needs none).
    private var events: SSEEventFilter?
    private let dropUsageChunk: Bool
    private var filterFailed = false
    private(set) var usage: Usage?

    /// A stream lives for minutes and its events are a few hundred bytes: the client's receive
    /// buffer is held (and its first page touched) for all that time. Small buffers pack several
    /// streams per page; a burst larger than this simply takes another read.
    static let streamReceiveBufferBytes = 1024

    /// Checks the caller's body against the team's policy and builds the upstream request. Pure.
    static func make(body: [UInt8], callerHeaders: HTTPHeaders, requestID: String, team: GatewayConfig.Team?,
                     snapshot: ConfigSnapshot) -> Result<ChatHooks, APIError> {
        let info: ChatRequest
        do throws(TranslationError) { info = try ChatRequestInfo.read(body) } catch {
            return .failure(refusal(error))
        }
        guard let model = info.model, !model.isEmpty else {
            return .failure(APIError(400, "`model` is required.", param: "model", code: "missing_model"))
        }
        if snapshot.config.videos.models.contains(model) {
            return .failure(APIError(400, "`\(model)` is a video model: create videos with POST /v1/videos (its quota and checks apply there).",
                                     param: "model", code: "video_model_on_chat"))
        }
        if let allowed = team?.models, !allowed.contains(model) {
            return .failure(APIError(403, "Model `\(model)` is not allowed for this team.", param: "model", code: "model_not_allowed"))
        }
        var upstreamBody = body
        var dropUsageChunk = false
        if info.stream {
            do throws(TranslationError) {
                let asked = try ChatRequestInfo.askingUpstreamForUsage(body)
                upstreamBody = asked.body
                dropUsageChunk = !asked.callerAskedForUsage
            } catch { return .failure(refusal(error)) }
        }
        var r = HeaderPolicy.upstreamRequest(snapshot, requestID: requestID, "POST", snapshot.chatCompletionsURL,
                                             forwarding: callerHeaders, body: upstreamBody, json: true)
        if info.stream { r.receiveBufferBytes = streamReceiveBufferBytes }
        return .success(ChatHooks(request: r, model: model, stream: info.stream, key: snapshot.apiKeyBytes, dropUsageChunk: dropUsageChunk))
    }

    /// A body Veil can't decide on: ambiguous members (`{"model":"A","MODEL":"B"}`: the upstream's
    /// Go decoder would run B) are named in `param`.
    static func refusal(_ error: TranslationError) -> APIError {
        if error.kind == .ambiguousMember {
            let p = error.param ?? "model"
            return APIError(400, "The member `\(p)` is given more than once (names are compared ignoring case): the upstream could read another value than Veil checked.",
                            param: p, code: "ambiguous_member")
        }
        if let p = error.param {
            return APIError(400, "`\(p)` has a value Veil cannot read: \(error.message)", param: p, code: "invalid_value")
        }
        return APIError(400, "The request body must be a JSON object with `model` and `messages`.", code: "invalid_json")
    }

    private init(request: UpstreamRequest, model: String, stream: Bool, key: [UInt8], dropUsageChunk: Bool) {
        self.request = request; self.model = model; self.stream = stream; self.key = key; self.dropUsageChunk = dropUsageChunk
    }

    func makeRequest() -> Result<UpstreamRequest, APIError> { .success(request) }

    /// A 200 `text/event-stream` is relayed as it comes (headers at once: the client sees the
    /// stream open before the first event); anything else is read whole and checked.
    mutating func onHead(_ head: UpstreamResponseHead) -> HeadDecision {
        if ChatHooks.isEventStream(status: head.status, contentType: head.header("content-type")) {
            var h = HeaderPolicy.callerHeaders(from: head.headers)
            h.replace("cache-control", "no-cache")
            h.replace("x-accel-buffering", "no")
            events = SSEEventFilter(secret: key, dropUsageChunk: dropUsageChunk)
            return .stream(status: 200, headers: h)
        }
        status = head.status
        headers = head.headers
        return .buffer(limit: nil)
    }

    /// A 200 whose media type is `text/event-stream`, in any case, parameters allowed (compared
    /// as bytes: no lower-cased copy per response).
    static func isEventStream(status: Int, contentType: String?) -> Bool {
        guard status == 200, let ct = contentType else { return false }
        return asciiCaseInsensitiveEquals(Substring(ct.utf8.prefix(17)), "text/event-stream")
    }

    var redactsStream: Bool { true }

    mutating func filter(_ bytes: UnsafeRawBufferPointer, emit: (UnsafeRawBufferPointer) -> Void) -> Bool {
        do throws(SSEFilterError) { try events?.process(bytes, emit: emit) } catch {
            filterFailed = true
            return false
        }
        return true
    }

    mutating func flush(emit: (UnsafeRawBufferPointer) -> Void) {
        guard !filterFailed else { return }
        try? events?.finish(emit: emit)
    }

    /// A stream the upstream cut, or ended without `[DONE]`, ends with one `data: {"error":…}`
    /// event (what the OpenAI SDKs raise as an APIError), then a proper end of the chunked body.
    mutating func streamEnded(_ error: UpstreamError?) -> StreamEnding {
        usage = events?.usage
        if filterFailed {
            let e = APIError(502, "The upstream sent a stream event larger than Veil accepts.", code: "upstream_event_too_large")
            return .endWith(ChatHooks.errorEvent(e), code: e.code!)
        }
        if let error {
            if error == .cancelled { return .abort(reason: "client_closed") }
            let e = APIError.upstream(error)
            return .endWith(ChatHooks.errorEvent(e), code: e.code ?? "upstream_error")
        }
        if events?.sawDone != true {
            let e = APIError(502, "The upstream ended the stream without [DONE].", code: "upstream_stream_incomplete")
            return .endWith(ChatHooks.errorEvent(e), code: e.code!)
        }
        return .end
    }

    static func errorEvent(_ e: APIError) -> [UInt8] { Array("data: ".utf8) + e.body + Array("\n\n".utf8) }

    /// Upstream errors become Veil's OpenAI envelope (status kept; 401 is the gateway's key);
    /// a 2xx that is not JSON, or JSON hiding the key behind `\u` escapes, is a 502: never the
    /// raw page, never the key.
    mutating func finish(_ answer: UpstreamAnswer) -> Outcome<Never> {
        if let e = ChatHooks.refusal(status: status, raw: answer.body, key: key, usage: &usage) { return .fail(e) }
        return .json(status: status, body: answer.body, headers: HeaderPolicy.callerHeaders(from: headers))
    }

    /// What the caller gets instead of a buffered upstream answer, or nil when it may pass; reads
    /// the top-level `usage` in the validating pass (one pass over the answer).
    static func refusal(status: Int, raw: [UInt8], key: [UInt8], usage: inout Usage?) -> APIError? {
        if status >= 300 { return .upstreamStatus(status, raw, key: key, keepStatus: true) }
        do { usage = try extractUsage(fromJSON: raw) } catch {
            return APIError(502, "The upstream's answer was not valid JSON.", code: "upstream_invalid_response")
        }
        if jsonHidesSecret(raw, secret: key) {
            return APIError(502, "The upstream's answer was withheld: it contained the upstream credential.", code: "upstream_invalid_response")
        }
        return nil
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
