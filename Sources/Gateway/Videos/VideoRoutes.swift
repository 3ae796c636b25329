import Glibc
import HTTPWire
import Store
import Translation
import Upstream

/// The OpenAI Videos API over the upstream (issue: videos). Every video belongs to the team
/// that made it; another team's id and an unknown id get the same 404, so ids can't be probed.
enum VideoRoutes {
    static func route(_ x: Exchange, _ gateway: Gateway) {
        let path = x.request.path
        let method = x.request.method
        if path == "/v1/videos" {
            switch method {
            case "POST": return create(x, gateway)
            case "GET": return list(x, gateway)
            default: return x.fail(gateway.methodNotAllowed(method, allowed: "GET, POST"), headers: ["allow": "GET, POST"])
            }
        }
        // /v1/videos/{id}[/content|/remix]
        let rest = path.dropFirst("/v1/videos/".count)
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 1, parts.count <= 2, let upstreamID = VeilID.upstreamVideoID(fromVeil: String(parts[0])) else {
            return x.fail(.notFound("No such video."))
        }
        let id = String(parts[0])
        if parts.count == 1 {
            switch method {
            case "GET": return retrieve(x, gateway, id: id)
            case "DELETE": return delete(x, gateway, id: id)
            default: return x.fail(gateway.methodNotAllowed(method, allowed: "GET, DELETE"), headers: ["allow": "GET, DELETE"])
            }
        }
        switch (method, parts[1]) {
        case ("GET", "content"): return VideoContent.start(x, gateway, id: id)
        case (_, "content"): return x.fail(gateway.methodNotAllowed(method, allowed: "GET"), headers: ["allow": "GET"])
        case (_, "remix"):
            // 4xx, never 5xx: the SDKs retry 5xx.
            return x.fail(APIError(400, "Remixing is not supported by this upstream; create a new video with POST /v1/videos.", code: "unsupported_operation"))
        default:
            _ = upstreamID
            return x.fail(.notFound("No such video endpoint."))
        }
    }

    // MARK: create

    static func create(_ x: Exchange, _ g: Gateway) {
        let cfg = x.snapshot.config
        guard let team = x.team else { return x.fail(.unauthorized) }
        let input: VideoCreateInput
        switch VideoCreateInput.parse(body: x.request.body, contentType: x.request.headers["content-type"]) {
        case .failure(let e): return x.fail(e)
        case .success(let i): input = i
        }
        let spec: VideoSpec
        switch VideoValidation.validate(input, settings: cfg.videos, teamModels: team.models) {
        case .failure(let e): return x.fail(e)
        case .success(let s): spec = s
        }
        x.model = spec.model
        if cfg.log.prompts { x.prompt = spec.prompt }
        // @name isolation: a character another team made can't be used in this team's prompt
        // (loose scan, see `characterNameCandidates`; a store failure refuses rather than passes).
        do {
            if let name = try CharacterRoutes.foreignCharacterMention(in: spec.prompt, team: team.name, store: g.store) {
                return x.fail(APIError(403, "The prompt uses @\(name), a character that belongs to another team.", param: "prompt", code: "character_not_owned"))
            }
        } catch { return x.fail(storeFailure(g, error)) }
        if let refusal = x.snapshot.policy.admitVideo(x, team: team) { return x.fail(refusal.error, headers: refusal.headers) }
        switch spec.image {
        case .url(let u)?:
            ImageFetch.start(x, url: u, settings: cfg.videos) { result in
                switch result {
                case .failure(let e): x.snapshot.policy.videoFinished(team: team.name); x.fail(e)
                case .success(let bytes):
                    var s = spec
                    s.image = .bytes(bytes, filename: nil, contentType: ImageKind.sniff(bytes)?.mimeType)
                    submit(x, g, s, team: team)
                }
            }
        default:
            submit(x, g, spec, team: team)
        }
    }

    /// The upstream call: multipart with the image as a file and — the quirk — the key in `size`.
    static func submit(_ x: Exchange, _ g: Gateway, _ spec: VideoSpec, team: GatewayConfig.Team) {
        let cfg = x.snapshot.config
        var form = MultipartEncoder()
        if case .bytes(let b, let filename, let ct)? = spec.image {
            let kind = ImageKind.sniff(b)
            form.addFile(name: "input_reference", filename: filename ?? "input.\(kind?.fileExtension ?? "png")",
                         contentType: ct ?? kind?.mimeType ?? "application/octet-stream", data: b)
        }
        form.addField(name: "prompt", value: spec.prompt)
        form.addField(name: "model", value: spec.model)
        form.addField(name: "size", value: cfg.upstream.keyInSizeField ? cfg.upstream.apiKey : spec.size)
        let (body, contentType) = form.finish()
        let r = HeaderPolicy.upstreamRequest(x, "POST", x.snapshot.upstreamBase + "/v1/videos", extra: [("content-type", contentType)], body: body)
        let call = BufferedCall.start(x.context, r) { result in
            x.upstreamLatencyMillis = x.elapsedMillis
            let key = x.snapshot.apiKeyBytes
            switch result {
            case .failure(let e):
                x.snapshot.policy.videoFinished(team: team.name)
                return x.fail(APIError.from(e))
            case .success(let (head, raw)):
                guard head.status == 200 || head.status == 201 else {
                    x.snapshot.policy.videoFinished(team: team.name)
                    return x.fail(upstreamError(head.status, raw, key: key))
                }
                let task: UpstreamVideoTask
                do { task = try UpstreamVideoTask(json: raw) } catch {
                    x.snapshot.policy.videoFinished(team: team.name)
                    return x.fail(APIError(502, "The upstream's answer to the video request was not understood.", code: "upstream_invalid_response"))
                }
                guard let upstreamID = task.id, let veilID = VeilID.videoID(upstream: upstreamID) else {
                    x.snapshot.policy.videoFinished(team: team.name)
                    return x.fail(APIError(502, "The upstream's answer carried no usable video id.", code: "upstream_invalid_response"))
                }
                let now = Int(time(nil))
                let facts = VideoFacts(veilID: veilID, model: spec.model, size: spec.size, seconds: spec.seconds,
                                       prompt: spec.prompt, createdAt: task.createdAt ?? now)
                let object = translateVideo(task, facts: facts, now: now)
                let record = VideoRecord(object: object, upstreamID: upstreamID, team: team.name, now: now)
                do { try g.store.insertVideo(record) } catch {
                    g.log.logger.error("store: cannot record a new video", metadata: ["video": "\(veilID)", "error": "\(error)"])
                    return x.fail(APIError(500, "The video was submitted but could not be recorded; contact the platform team with this request id.", code: "store_failed"))
                }
                if object.status == .completed || object.status == .failed { x.snapshot.policy.videoFinished(team: team.name) }
                x.send(200, KeyRedactor.redact(object.jsonBytes, secret: key), headers: pollHeaders(object, cfg))
            }
        }
        x.response.onClose = { call.cancel() }
    }

    // MARK: retrieve

    /// The caller's team's video `id`, or nil once the exchange is answered: 401 without a team,
    /// 404 for an unknown id and for another team's (the same answer), 500 if the store fails.
    static func ownedVideo(_ x: Exchange, _ g: Gateway, id: String) -> VideoRecord? {
        guard let team = x.team else { x.fail(.unauthorized); return nil }
        do {
            guard let r = try g.store.video(id: id, team: team.name) else { x.fail(.notFound("No such video.")); return nil }
            return r
        } catch {
            x.fail(storeFailure(g, error))
            return nil
        }
    }

    static func retrieve(_ x: Exchange, _ g: Gateway, id: String) {
        guard let record = ownedVideo(x, g, id: id) else { return }
        x.model = record.model
        let cfg = x.snapshot.config
        let key = x.snapshot.apiKeyBytes
        if record.status == "completed" || record.status == "failed" {
            // Finished: answered from the store, no upstream call.
            return x.send(200, KeyRedactor.redact(record.object.jsonBytes, secret: key))
        }
        poll(x, g, record) { outcome in
            switch outcome {
            case .failure(let e): x.fail(e)
            case .success(let object): x.send(200, KeyRedactor.redact(object.jsonBytes, secret: key), headers: pollHeaders(object, cfg))
            }
        }
    }

    /// Asks the upstream for a video's state, sharing the call with concurrent polls; the
    /// fetching poll writes the new state to the store.
    static func poll(_ x: Exchange, _ g: Gateway, _ record: VideoRecord, then deliver: @escaping (PollCoalescer.Outcome) -> Void) {
        let cfg = x.snapshot.config
        let waiter = PollCoalescer.Waiter(loop: x.context.loop, deliver: deliver)
        switch g.polls.join(record.id, cacheMillis: cfg.videos.pollCacheMillis, now: x.context.loop.now, waiter: waiter) {
        case .ready(let outcome): return deliver(outcome)
        case .wait: return
        case .fetch: break
        }
        let r = HeaderPolicy.upstreamRequest(x, "GET", x.snapshot.upstreamBase + "/v1/videos/" + record.upstreamID)
        BufferedCall.start(x.context, r) { result in
            x.upstreamLatencyMillis = x.elapsedMillis
            let key = x.snapshot.apiKeyBytes
            let outcome: PollCoalescer.Outcome
            switch result {
            case .failure(let e): outcome = .failure(APIError.from(e))
            case .success(let (head, raw)):
                if head.status != 200 {
                    outcome = .failure(upstreamError(head.status, raw, key: key))
                } else if let task = try? UpstreamVideoTask(json: raw) {
                    let now = Int(time(nil))
                    let object = translateVideo(task, facts: record.facts, now: now)
                    var updated = record
                    updated.apply(object, now: now)
                    if updated != record {
                        do { try g.store.updateVideo(updated) } catch {
                            g.log.logger.error("store: cannot update a video", metadata: ["video": "\(record.id)", "error": "\(error)"])
                        }
                    }
                    if (object.status == .completed || object.status == .failed) && record.status != object.status.rawValue {
                        x.snapshot.policy.videoFinished(team: record.team)
                    }
                    outcome = .success(object)
                } else {
                    outcome = .failure(APIError(502, "The upstream's video status was not understood.", code: "upstream_invalid_response"))
                }
            }
            g.polls.complete(record.id, outcome, now: x.context.loop.now, cache: true)
        }
    }

    // MARK: list, delete

    static func list(_ x: Exchange, _ g: Gateway) {
        guard let team = x.team else { return x.fail(.unauthorized) }
        let query: ListQuery
        switch ListQuery.parse(x.request.head.query, isID: { VeilID.upstreamVideoID(fromVeil: $0) != nil }, kind: "video") {
        case .failure(let e): return x.fail(e)
        case .success(let q): query = q
        }
        do {
            let page = try g.store.listVideos(team: team.name, after: query.after, limit: query.limit, descending: query.descending)
            let body = ListQuery.body(items: page.items.map(\.object.jsonBytes), firstID: page.items.first?.id,
                                      lastID: page.items.last?.id, hasMore: page.hasMore)
            x.send(200, KeyRedactor.redact(body, secret: x.snapshot.apiKeyBytes))
        } catch { x.fail(storeFailure(g, error)) }
    }

    static func delete(_ x: Exchange, _ g: Gateway, id: String) {
        guard let team = x.team else { return x.fail(.unauthorized) }
        do {
            // An unfinished video deleted now will never be polled to its end: free its in-flight slot.
            let unfinished = (try g.store.video(id: id, team: team.name)).map { $0.status == "queued" || $0.status == "in_progress" } ?? false
            guard try g.store.deleteVideo(id: id, team: team.name) else { return x.fail(.notFound("No such video.")) }
            if unfinished { x.snapshot.policy.videoFinished(team: team.name) }
            g.polls.forget(id)
            var w = JSONObjectWriter()
            w.string("id", id)
            w.string("object", "video.deleted")
            w.bool("deleted", true)
            x.send(200, w.finish())
        } catch { x.fail(storeFailure(g, error)) }
    }

    // MARK: helpers

    static func pollHeaders(_ o: VideoObject, _ cfg: GatewayConfig) -> HTTPHeaders {
        (o.status == .queued || o.status == .inProgress) ? ["openai-poll-after-ms": String(cfg.videos.pollAfterMillis)] : HTTPHeaders()
    }

    static func storeFailure(_ g: Gateway, _ error: Error) -> APIError {
        g.log.logger.error("store failure", metadata: ["error": "\(error)"])
        return APIError(500, "The gateway's store failed; try again.", code: "store_failed")
    }

    /// An upstream error answer in Veil's envelope, its message redacted (also after JSON
    /// decoding). 4xx keep their status; 5xx become 502 unless `keepStatus` (chat and models
    /// relay the upstream's status as is).
    static func upstreamError(_ status: Int, _ raw: [UInt8], key: [UInt8], keepStatus: Bool = false) -> APIError {
        var message = "The upstream refused the request (HTTP \(status))."
        // Redacted after JSON decoding too: a key written with escapes would otherwise come back.
        if let m = upstreamErrorMessage(raw, secret: key) {
            message = "The upstream refused the request (HTTP \(status)): \(m)"
        }
        let s = keepStatus && status >= 400 ? status : (status >= 500 ? 502 : (status >= 400 ? status : 502))
        return APIError(s, message, code: "upstream_error")
    }
}

extension VideoRecord {
    init(object o: VideoObject, upstreamID: String, team: String, now: Int) {
        self.init(id: o.id, upstreamID: upstreamID, team: team, model: o.model, prompt: o.prompt ?? "",
                  size: o.size, seconds: o.seconds, status: o.status.rawValue, progress: o.progress,
                  createdAt: o.createdAt, completedAt: o.completedAt, expiresAt: o.expiresAt,
                  errorCode: o.error?.code, errorMessage: o.error?.message,
                  videoURL: o.videoURL, watermarkedURL: o.watermarkedVideoURL, updatedAt: now)
    }

    var facts: VideoFacts {
        VideoFacts(veilID: id, model: model, size: size, seconds: seconds, prompt: prompt, createdAt: createdAt)
    }

    /// The stored state as Veil's object.
    var object: VideoObject {
        VideoObject(id: id, model: model, status: VideoStatus(rawValue: status) ?? .inProgress, progress: progress,
                    createdAt: createdAt, completedAt: completedAt, expiresAt: expiresAt, size: size, seconds: seconds,
                    prompt: prompt, error: errorCode.map { VideoError(code: $0, message: errorMessage ?? "") },
                    videoURL: videoURL, watermarkedVideoURL: watermarkedURL)
    }

    /// Takes a newer upstream state; the first completion time is kept.
    mutating func apply(_ o: VideoObject, now: Int) {
        status = o.status.rawValue
        progress = o.progress
        completedAt = completedAt ?? o.completedAt
        expiresAt = o.expiresAt
        errorCode = o.error?.code
        errorMessage = o.error?.message
        videoURL = o.videoURL
        watermarkedURL = o.watermarkedVideoURL
        if size == nil { size = o.size }
        if seconds == nil { seconds = o.seconds }
        updatedAt = now
    }
}

/// `a=1&b=2` → dictionary (first value wins), percent-decoded. Pure.
enum QueryString {
    static func parse(_ q: Substring?) -> [String: String] {
        var out: [String: String] = [:]
        guard let q else { return out }
        for pair in q.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let k = percentDecode(kv[0]) else { continue }
            let v = kv.count > 1 ? (percentDecode(kv[1]) ?? "") : ""
            if out[k] == nil { out[k] = v }
        }
        return out
    }

    static func percentDecode(_ s: Substring) -> String? {
        var out: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let c = it.popFirst() {
            if c == UInt8(ascii: "+") { out.append(0x20); continue }
            if c == UInt8(ascii: "%") {
                guard it.count >= 2, let h = hex(it[it.startIndex]), let l = hex(it[it.startIndex + 1]) else { return nil }
                out.append(h << 4 | l)
                it = it.dropFirst(2)
                continue
            }
            out.append(c)
        }
        return String(validating: out, as: UTF8.self)
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 65...70: return c - 55
        case 97...102: return c - 87
        default: return nil
        }
    }
}
