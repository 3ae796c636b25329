import HTTPWire
import Store
import Translation
import Upstream

/// `POST /v1/videos` upstream: multipart with the image as a file and — the quirk — the key in
/// `size`. Its value: the new task, translated.
struct VideoCreateHooks: UpstreamHooks {
    struct Created { var upstreamID: String; var object: VideoObject }

    let request: UpstreamRequest
    let spec: VideoSpec
    let key: [UInt8]
    let now: Int
    private var status = 0

    init(_ snapshot: ConfigSnapshot, requestID: String, spec: VideoSpec, now: Int) {
        var form = MultipartEncoder()
        if case .bytes(let b, let filename, let ct)? = spec.image {
            let kind = ImageKind.sniff(b)
            form.addFile(name: "input_reference", filename: filename ?? "input.\(kind?.fileExtension ?? "png")",
                         contentType: ct ?? kind?.mimeType ?? "application/octet-stream", data: b)
        }
        form.addField(name: "prompt", value: spec.prompt)
        form.addField(name: "model", value: spec.model)
        let up = snapshot.config.upstream
        form.addField(name: "size", value: up.keyInSizeField ? up.apiKey : spec.size)
        let (body, contentType) = form.finish()
        request = HeaderPolicy.upstreamRequest(snapshot, requestID: requestID, "POST", snapshot.upstreamBase + "/v1/videos",
                                               extra: ["content-type": contentType], body: body)
        self.spec = spec
        key = snapshot.apiKeyBytes
        self.now = now
    }

    func makeRequest() -> Result<UpstreamRequest, APIError> { .success(request) }

    mutating func onHead(_ head: UpstreamResponseHead) -> HeadDecision {
        status = head.status
        return .buffer(limit: nil)
    }

    mutating func finish(_ answer: UpstreamAnswer) -> Outcome<Created> {
        guard status == 200 || status == 201 else { return .fail(.upstreamStatus(status, answer.body, key: key)) }
        let task: UpstreamVideoTask
        do { task = try UpstreamVideoTask(json: answer.body) } catch {
            return .fail(APIError(502, "The upstream's answer to the video request was not understood.", code: "upstream_invalid_response"))
        }
        guard let upstreamID = task.id, let veilID = VeilID.videoID(upstream: upstreamID) else {
            return .fail(APIError(502, "The upstream's answer carried no usable video id.", code: "upstream_invalid_response"))
        }
        let facts = VideoFacts(veilID: veilID, model: spec.model, size: spec.size, seconds: spec.seconds,
                               prompt: spec.prompt, createdAt: task.createdAt ?? now)
        return .value(Created(upstreamID: upstreamID, object: translateVideo(task, facts: facts, now: now)))
    }
}

/// `GET /v1/videos/{id}` upstream: a video's state, translated with the facts Veil kept.
struct VideoPollHooks: UpstreamHooks {
    let request: UpstreamRequest
    let facts: VideoFacts
    let key: [UInt8]
    let now: Int
    private var status = 0

    init(_ snapshot: ConfigSnapshot, requestID: String, record: VideoRecord, now: Int) {
        request = HeaderPolicy.upstreamRequest(snapshot, requestID: requestID, "GET", snapshot.upstreamBase + "/v1/videos/" + record.upstreamID)
        facts = record.facts
        key = snapshot.apiKeyBytes
        self.now = now
    }

    func makeRequest() -> Result<UpstreamRequest, APIError> { .success(request) }

    /// A shared poll: one caller leaving must not cancel it for the others.
    var cancelWhenClientLeaves: Bool { false }

    mutating func onHead(_ head: UpstreamResponseHead) -> HeadDecision {
        status = head.status
        return .buffer(limit: nil)
    }

    mutating func finish(_ answer: UpstreamAnswer) -> Outcome<VideoObject> {
        guard status == 200 else { return .fail(.upstreamStatus(status, answer.body, key: key)) }
        guard let task = try? UpstreamVideoTask(json: answer.body) else {
            return .fail(APIError(502, "The upstream's video status was not understood.", code: "upstream_invalid_response"))
        }
        return .value(translateVideo(task, facts: facts, now: now))
    }
}

/// `GET /v1/videos/{id}/content`: the file streamed from its signed URL as it arrives (never
/// whole in memory), `Range` forwarded, the host's headers allow-listed; the key is never sent to
/// the file host, and every byte and header passes the redactor like every other answer.
struct VideoContentHooks: UpstreamHooks {
    let request: UpstreamRequest

    static let forwardedFields: [String] = ["content-type", "content-length", "content-range", "accept-ranges", "etag", "last-modified"]

    init(url: String, range: String?) {
        var headers: HTTPHeaders = ["accept": "*/*"]
        if let range { headers.add("range", range) }
        var r = UpstreamRequest(method: "GET", url: url, headers: headers)
        r.allowedSchemes = ["http", "https"]
        r.receiveBufferBytes = 64 * 1024      // bulk: fewer reads and callbacks per megabyte
        request = r
    }

    func makeRequest() -> Result<UpstreamRequest, APIError> { .success(request) }

    mutating func onHead(_ head: UpstreamResponseHead) -> HeadDecision {
        var h = HTTPHeaders()
        for f in head.headers {
            guard let lower = Self.forwardedFields.first(where: { asciiCaseInsensitiveEquals($0, f.name) }) else { continue }
            h.add(lower, f.value)
        }
        if !h.contains("accept-ranges") { h.add("accept-ranges", "bytes") }
        switch head.status {
        case 200, 206:
            return .stream(status: head.status, headers: h)
        case 416:
            // No body worth relaying; keep the host's Content-Range (`bytes */N`).
            var e = HTTPHeaders()
            if let cr = h["content-range"] { e.add("content-range", cr) }
            e.add("accept-ranges", "bytes")
            return .fail(APIError(416, "The requested range is outside the file.", code: "range_not_satisfiable"), headers: e)
        case 403, 404, 410:
            return .fail(APIError(502, "The video file's signed URL was refused by its host (HTTP \(head.status)); it may have expired.", code: "file_unavailable"))
        default:
            return .fail(APIError(502, "The video file's host answered HTTP \(head.status).", code: "file_unavailable"))
        }
    }

    mutating func finish(_ answer: UpstreamAnswer) -> Outcome<Never> {
        .fail(APIError(502, "The video file's host answered without a body.", code: "file_unavailable"))
    }

    /// Mid-body: the client must see a truncated message, not a complete one.
    mutating func streamEnded(_ error: UpstreamError?) -> StreamEnding {
        guard let error else { return .end }
        return .abort(reason: error == .cancelled ? "client_closed" : "file_transfer_cut")
    }

    /// A single byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`). Several ranges are refused:
    /// multipart/byteranges is not worth its complexity for video players.
    static func isByteRange(_ v: String) -> Bool {
        guard v.hasPrefix("bytes="), v.utf8.count <= 64 else { return false }
        let spec = v.dropFirst(6)
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return false }
        let digits: (Substring) -> Bool = { $0.utf8.allSatisfy { $0 >= 48 && $0 <= 57 } && $0.utf8.count <= 18 }
        guard digits(parts[0]), digits(parts[1]), !(parts[0].isEmpty && parts[1].isEmpty) else { return false }
        if let a = Int(parts[0]), let b = Int(parts[1]), a > b { return false }
        return true
    }
}

/// Fetches a caller-supplied `image_url` for a video's `input_reference`, with strict limits:
/// https only (unless `image_fetch.allow_http`), no loopback/private/link-local address (checked
/// on the address actually connected, so DNS rebinding can't dodge it) unless allow-listed, a size
/// cap, a timeout, no redirects, and never the upstream key. Its value: the image's bytes.
struct ImageFetchHooks: UpstreamHooks {
    let request: UpstreamRequest
    let maxBytes: Int
    private var status = 0

    init(url: String, settings: GatewayConfig.VideoSettings) {
        var r = UpstreamRequest(method: "GET", url: url, headers: ["accept": "image/*"])
        r.refusePrivateAddresses = true
        r.addressAllowList = settings.imageFetch.allowPrivate
        r.allowedSchemes = settings.imageFetch.allowHTTP ? ["http", "https"] : ["https"]
        r.maxResponseBytes = settings.maxImageBytes
        r.connectTimeoutMillis = min(settings.imageFetch.timeoutMillis, 5_000)
        r.timeoutMillis = settings.imageFetch.timeoutMillis
        request = r
        maxBytes = settings.maxImageBytes
    }

    func makeRequest() -> Result<UpstreamRequest, APIError> { .success(request) }

    mutating func onHead(_ head: UpstreamResponseHead) -> HeadDecision {
        status = head.status
        return .buffer(limit: maxBytes)
    }

    mutating func finish(_ answer: UpstreamAnswer) -> Outcome<[UInt8]> {
        guard status == 200 else {
            return .fail(APIError(400, "`input_reference` URL answered HTTP \(status).", param: "input_reference", code: "image_url_unreachable"))
        }
        if let e = VideoValidation.checkImage(answer.body, maxBytes: maxBytes) { return .fail(e) }
        return .value(answer.body)
    }

    /// Failures are the caller's URL's, not the upstream's: 400s naming `input_reference`.
    func failure(_ error: UpstreamError) -> APIError {
        switch error {
        case .refused(let d): return APIError(400, "`input_reference` URL refused: \(d)", param: "input_reference", code: "image_url_refused")
        case .tooLarge: return APIError(400, "`input_reference` image is larger than \(maxBytes) bytes.", param: "input_reference", code: "image_too_large")
        case .timeout: return APIError(400, "`input_reference` URL did not answer in time.", param: "input_reference", code: "image_url_timeout")
        case .cancelled: return APIError(499, "The client closed the connection.", code: "client_closed")
        case .connect, .broken:
            return APIError(400, "`input_reference` URL could not be fetched.", param: "input_reference", code: "image_url_unreachable")
        }
    }
}
