import HTTPWire
import Translation
import Upstream

/// The rest of the OpenAI API the upstream serves, passed through as it is (`upstream.passthrough`):
/// the caller's body goes upstream unchanged with Veil's key; answers are checked and redacted;
/// the team's model allow-list, rate limit and stream limit apply; usage is recorded where the
/// answer carries it. JSON answers are read whole (validated, usage read); event streams and
/// binary answers (speech audio, transcripts as text) are relayed as they arrive.
enum Passthrough {
    /// The endpoints Veil knows how to pass through (and their default list).
    static let supported = ["/v1/responses", "/v1/embeddings", "/v1/images/generations", "/v1/moderations",
                            "/v1/audio/speech", "/v1/audio/transcriptions"]

    /// Endpoints whose OpenAI request may omit `model` (the upstream picks its default).
    static let modelOptional: Set<String> = ["/v1/moderations"]

    static func start(_ x: Exchange, _ g: Gateway) {
        let path = x.route?.template ?? String(x.path)
        guard x.snapshot.config.upstream.passthrough.contains(path) else {
            return x.fail(.notFound("Unknown route POST \(path) (not in `upstream.passthrough`)."))
        }
        let request: (model: String?, stream: Bool)
        switch PassthroughHooks.inspect(body: x.request.body, contentType: x.request.headers["content-type"]) {
        case .failure(let e): return x.fail(e)
        case .success(let r): request = r
        }
        if let model = request.model {
            x.model = model
            if let allowed = x.team?.models, !allowed.contains(model) {
                return x.fail(APIError(403, "Model `\(String(model.prefix(128)))` is not allowed for this team.", param: "model", code: "model_not_allowed"))
            }
        } else if !modelOptional.contains(path) {
            return x.fail(APIError(400, "`model` is required.", param: "model", code: "missing_model"))
        }
        if request.stream, let team = x.team {
            switch x.snapshot.policy.admitStream(team: team) {
            case .failure(let refusal): return x.fail(refusal.error, headers: refusal.headers)
            case .success(let lease): if let lease { x.leases.append(lease) }
            }
        }
        var r = HeaderPolicy.upstreamRequest(x.snapshot, requestID: x.requestID, "POST", x.snapshot.upstreamBase + path,
                                             forwarding: x.request.headers, body: x.request.body)
        if request.stream { r.receiveBufferBytes = ChatHooks.streamReceiveBufferBytes }
        UpstreamEngine.proxy(x, PassthroughHooks(request: r, key: x.snapshot.apiKeyBytes))
    }
}

struct PassthroughHooks: UpstreamHooks {
    let request: UpstreamRequest
    let key: [UInt8]
    private var status = 0
    private var headers = HTTPHeaders()
    private var eventStream = false
    /// The Responses API's stream: the key redacted (also escaped inside an event), usage read.
    private var events: SSEEventFilter
    private var filterFailed = false
    private(set) var usage: Usage?

    /// The members Veil decides on in a pass-through JSON body.
    static let decisionMembers: Set<String> = ["model", "stream"]

    init(request: UpstreamRequest, key: [UInt8]) {
        self.request = request
        self.key = key
        events = SSEEventFilter(secret: key)
    }

    /// The model and the stream flag of a pass-through body: JSON (most endpoints) or
    /// multipart/form-data (transcriptions: the `model` and `stream` fields). Pure.
    static func inspect(body: [UInt8], contentType: String?) -> Result<(model: String?, stream: Bool), APIError> {
        let ct = (contentType ?? "").lowercased()
        if ct.hasPrefix("multipart/form-data") {
            guard let boundary = Multipart.boundary(fromContentType: contentType ?? "") else {
                return .failure(APIError(400, "multipart/form-data needs a boundary parameter.", code: "invalid_multipart"))
            }
            let parts: [MultipartPart]
            do { parts = try Multipart.parse(body, boundary: boundary) } catch {
                return .failure(APIError(400, "The multipart body is malformed: \(error.message)", code: "invalid_multipart"))
            }
            let named = { (n: String) in parts.filter { $0.name == n && $0.filename == nil } }
            if let field = Multipart.repeatedField(in: parts, among: decisionMembers) {
                return .failure(APIError(400, "The form field `\(field)` is given more than once.", param: field, code: "ambiguous_member"))
            }
            let stream = named("stream").first.map { $0.text.lowercased() == "true" } ?? false
            return .success((named("model").first?.text, stream))
        }
        guard ct.isEmpty || ct.hasPrefix("application/json") else {
            return .failure(APIError(415, "Send application/json (or multipart/form-data where the endpoint takes files).", code: "unsupported_media_type"))
        }
        do throws(TranslationError) {
            let m = try JSONParser.unambiguousTopLevelMembers(body, wanted: decisionMembers, reading: decisionMembers)
            return .success((m["model"]?.stringValue, m["stream"]?.boolValue ?? false))
        } catch {
            if error.kind == .ambiguousMember { return .failure(ChatHooks.refusal(error)) }
            return .failure(APIError(400, "The request body must be a JSON object.", code: "invalid_json"))
        }
    }

    func makeRequest() -> Result<UpstreamRequest, APIError> { .success(request) }

    /// Errors and JSON are read whole; an event stream or a binary body goes through as it comes.
    mutating func onHead(_ head: UpstreamResponseHead) -> HeadDecision {
        status = head.status
        headers = head.headers
        let ct = (head.header("content-type") ?? "").lowercased()
        guard head.status >= 200 && head.status < 300, !ct.hasPrefix("application/json") else { return .buffer(limit: nil) }
        var h = HeaderPolicy.callerHeaders(from: head.headers)
        if let length = head.header("content-length"), !ct.hasPrefix("text/event-stream") { h.replace("content-length", length) }
        if ct.hasPrefix("text/event-stream") {
            eventStream = true
            h.replace("cache-control", "no-cache")
            h.replace("x-accel-buffering", "no")
        }
        return .stream(status: head.status, headers: h)
    }

    /// Event streams redact through their filter; other bodies (audio) through the engine's.
    var redactsStream: Bool { eventStream }

    mutating func filter(_ bytes: UnsafeRawBufferPointer, emit: (UnsafeRawBufferPointer) -> Void) -> Bool {
        guard eventStream else { emit(bytes); return true }
        do throws(SSEFilterError) { try events.process(bytes, emit: emit) } catch {
            filterFailed = true
            return false
        }
        return true
    }

    mutating func flush(emit: (UnsafeRawBufferPointer) -> Void) {
        if eventStream && !filterFailed { try? events.finish(emit: emit) }
    }

    mutating func streamEnded(_ error: UpstreamError?) -> StreamEnding {
        if eventStream { usage = events.usage }
        if filterFailed {
            let e = APIError(502, "The upstream sent a stream event larger than Veil accepts.", code: "upstream_event_too_large")
            return .endWith(ChatHooks.errorEvent(e), code: e.code!)
        }
        guard let error else { return .end }
        if error == .cancelled || !eventStream { return .abort(reason: error == .cancelled ? "client_closed" : "upstream_cut") }
        let e = APIError.upstream(error)
        return .endWith(ChatHooks.errorEvent(e), code: e.code ?? "upstream_error")
    }

    mutating func finish(_ answer: UpstreamAnswer) -> Outcome<Never> {
        if status >= 300 { return .fail(.upstreamStatus(status, answer.body, key: key, keepStatus: true)) }
        let v: JSONValue
        do { v = try JSONValue.parse(answer.body) } catch {
            return .fail(APIError(502, "The upstream's answer was not valid JSON.", code: "upstream_invalid_response"))
        }
        if jsonHidesSecret(answer.body, secret: key) {
            return .fail(APIError(502, "The upstream's answer was withheld: it contained the upstream credential.", code: "upstream_invalid_response"))
        }
        usage = v["usage"].flatMap(Usage.init)
        return .json(status: status, body: answer.body, headers: HeaderPolicy.callerHeaders(from: headers))
    }
}

extension Multipart {
    /// The first of `fields` that appears more than once among a form's text fields (which one
    /// counts would be up to each reader), or nil.
    static func repeatedField(in parts: [MultipartPart], among fields: Set<String>) -> String? {
        var seen = Set<String>()
        for p in parts where fields.contains(p.name) {
            if !seen.insert(p.name).inserted { return p.name }
        }
        return nil
    }
}
