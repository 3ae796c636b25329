import HTTPServer
import Synchronization
import HTTPWire
import Reactor

/// Routes and answers the sandbox's requests. Runs only on the sandbox's loop thread (the server
/// calls it there; `abortAll` is sent there with `execute`), hence `@unchecked Sendable`.
/// Shared state lives in `SandboxCore` behind a mutex.
final class SandboxHandler: HTTPHandler, @unchecked Sendable {
    let core: SandboxCore
    var config: SandboxConfig { core.config }
    /// Responses that outlive `handle` (streams, stalls, delayed answers, file bodies), so `stop()`
    /// can abort them.
    private var live: [ObjectIdentifier: HTTPResponder] = [:]

    static let moderationText = "此内容可能违反关于裸露、性内容或色情内容的相关规定。"

    init(core: SandboxCore) { self.core = core }

    // MARK: entry

    func handle(_ request: HTTPRequest, _ res: HTTPResponder) {
        let path = String(request.path)
        let method = request.method
        let form = parseForm(request)
        core.record(RecordedRequest(
            method: method, target: request.head.target, path: path, headers: request.headers,
            body: request.body, form: form.fields, files: form.files, unixMicros: Clock.unixMicros()))

        if let fault = core.takeFault(method, path) {
            applyFault(fault, request, res, path: path)
            return
        }
        route(request, res, method: method, path: path, form: form)
    }

    private func route(_ request: HTTPRequest, _ res: HTTPResponder, method: String, path: String, form: ParsedForm) {
        let segs = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        // segs[0] is "" (the path starts with "/").
        switch (method, segs.dropFirst().first ?? "") {
        case (_, "files") where (method == "GET" || method == "HEAD") && segs.count == 4 && segs[2] == "images":
            serveImage(res, name: segs[3])
            return
        case (_, "files") where (method == "GET" || method == "HEAD") && segs.count == 4:
            serveFile(request, res, videoID: segs[2], file: segs[3])
            return
        default: break
        }
        let known: Bool
        switch (method, path) {
        case ("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("POST", "/v1/videos"),
             ("POST", "/v1/characters"), ("GET", "/v1/characters"),
             ("POST", "/v1/responses"), ("POST", "/v1/embeddings"), ("POST", "/v1/images/generations"),
             ("POST", "/v1/moderations"), ("POST", "/v1/audio/speech"), ("POST", "/v1/audio/transcriptions"):
            known = true
        default:
            known = method == "GET" && segs.count == 4 && segs[1] == "v1" && segs[2] == "videos" && !segs[3].isEmpty
        }
        guard known else {
            sendError(res, 404, "Invalid URL (\(method) \(path))", type: "invalid_request_error")
            return
        }
        guard authorized(request, res) else { return }
        switch (method, path) {
        case ("POST", "/v1/chat/completions"): chat(request, res)
        case ("GET", "/v1/models"): models(res)
        case ("POST", "/v1/videos"): createVideo(request, res, form: form)
        case ("POST", "/v1/characters"): createCharacter(request, res)
        case ("GET", "/v1/characters"): listCharacters(res)
        case ("POST", "/v1/responses"): responses(request, res)
        case ("POST", "/v1/embeddings"): embeddings(request, res)
        case ("POST", "/v1/images/generations"): images(request, res)
        case ("POST", "/v1/moderations"): moderations(request, res)
        case ("POST", "/v1/audio/speech"): speech(request, res)
        case ("POST", "/v1/audio/transcriptions"): transcriptions(request, res, form: form)
        default: getVideo(res, id: segs[3])
        }
    }

    // MARK: auth

    private func presentedKey(_ request: HTTPRequest) -> String? {
        guard let auth = request.headers["authorization"]?.trimmingASCIISpaces() else { return nil }
        let lower = auth.lowercased()
        if lower.hasPrefix("bearer ") { return String(auth.dropFirst(7)).trimmingASCIISpaces() }
        return nil
    }

    /// Refuses with new-api's 401 unless the Bearer token is the key.
    private func authorized(_ request: HTTPRequest, _ res: HTTPResponder) -> Bool {
        guard let key = presentedKey(request), !key.isEmpty else {
            sendError(res, 401, "无效的令牌: 未提供令牌 (request id: \(requestID()))")
            return false
        }
        guard key == config.apiKey else {
            sendError(res, 401, "无效的令牌 (request id: \(requestID()))")
            return false
        }
        return true
    }

    /// 401 that leaks the presented key in its body and a header (what Veil must redact).
    private func echoKey(_ request: HTTPRequest, _ res: HTTPResponder) {
        let key = presentedKey(request) ?? ""
        var h = jsonHeaders()
        h.add("x-debug-authorization", "Bearer \(key)")
        respondJSON(res, 401, SandboxHandler.errorJSON(message: "无效的令牌 \(key) (request id: \(requestID()))", type: "new_api_error"), headers: h)
    }

    // MARK: chat

    private func chat(_ request: HTTPRequest, _ res: HTTPResponder) {
        guard let body = JSONValue.parse(request.body), case .object = body else {
            sendError(res, 400, "Invalid request: request body is not valid JSON", type: "invalid_request_error")
            return
        }
        guard let model = body["model"]?.stringValue, !model.isEmpty else {
            sendError(res, 400, "model is required (request id: \(requestID()))", type: "invalid_request_error")
            return
        }
        if model == "sandbox-echo-key" { echoKey(request, res); return }
        let cue = ModelCue.from(model: model)
        if answeredErrorCue(cue, model: model, res) { return }
        guard let messages = body["messages"]?.arrayValue, !messages.isEmpty else {
            sendError(res, 400, "'messages' is a required property", type: "invalid_request_error")
            return
        }
        let stream = body["stream"]?.boolValue ?? false
        let reply = ChatReply(model: model, messages: messages, id: "chatcmpl-sandbox-\(core.nextCounter())",
                              tools: body["tools"]?.arrayValue, callTool: cue == .tools)
        let go: () -> Void = { [self] in
            if stream {
                startStream(reply, res, loop: request.loop, cutAfter: nil, slow: cue == .slowStream)
            } else {
                var out = reply.completionObject()
                out.append(("sent_at_us", .int(Clock.unixMicros())))
                respondJSON(res, 200, .object(out))
            }
        }
        if model.hasSuffix("-slow") {
            track(res)
            res.onClose = { [self] in clientLeft(res) }
            request.loop.schedule(afterMillis: config.slowModelDelayMillis) { [self] in
                untrack(res)
                guard res.isOpen else { return }
                res.onClose = nil
                go()
            }
        } else {
            go()
        }
    }

    func startStream(_ reply: any SSEEvents, _ res: HTTPResponder, loop: EventLoop, cutAfter: Int?, slow: Bool = false) {
        var h = HTTPHeaders()
        h.add("content-type", "text/event-stream")
        h.add("cache-control", "no-cache")
        h.add("x-accel-buffering", "no")
        res.sendHead(HTTPResponseHead(status: 200, headers: h))
        track(res)
        let delay = slow ? config.slowStreamGapMillis : config.sseChunkDelayMillis
        let s = SSEStream(reply: reply, res: res, loop: loop, delay: delay, cutAfter: cutAfter, clientLeft: { [weak self] in self?.clientLeft(res) }) { [weak self] in
            self?.untrack(res)
        }
        s.start()
    }

    private func models(_ res: HTTPResponder) {
        let ids: [(String, String)] = [("gpt-3.5-turbo", "openai"), ("gpt-4o-mini", "openai"), ("sora-2", "openai"), ("sora-2-yijia", "custom"),
                                       ("text-embedding-3-small", "openai"), ("gpt-image-1", "openai"), ("dall-e-3", "openai"),
                                       ("omni-moderation-latest", "openai"), ("tts-1", "openai"), ("whisper-1", "openai")]
        let data: [JSONOut] = ids.map { id, owner in
            .object([("id", .string(id)), ("object", .string("model")), ("created", .int(1_626_777_600)),
                     ("owned_by", .string(owner)), ("supported_endpoint_types", .array([.string("openai")]))])
        }
        respondJSON(res, 200, .object([("data", .array(data)), ("object", .string("list")), ("success", .bool(true))]))
    }

    // MARK: videos

    private func createVideo(_ request: HTTPRequest, _ res: HTTPResponder, form: ParsedForm) {
        guard form.isForm else {
            sendError(res, 400, "Invalid request: expected multipart/form-data (request id: \(requestID()))", type: "invalid_request_error")
            return
        }
        if form.broken {
            sendError(res, 400, "Invalid request: malformed multipart body (request id: \(requestID()))", type: "invalid_request_error")
            return
        }
        // The quirk: the key rides in `size` too, and the upstream checks it.
        guard form.fields["size"] == config.apiKey else {
            sendError(res, 401, "无效的令牌: size 字段中的令牌无效 (invalid token in size) (request id: \(requestID()))")
            return
        }
        guard let prompt = form.fields["prompt"], !prompt.isEmpty else {
            sendError(res, 400, "prompt is required (request id: \(requestID()))", type: "invalid_request_error")
            return
        }
        guard let model = form.fields["model"], !model.isEmpty else {
            sendError(res, 400, "model is required (request id: \(requestID()))", type: "invalid_request_error")
            return
        }
        let now = Clock.unixSeconds()
        let seconds = form.fields["seconds"].flatMap { Int($0) }.map(String.init) ?? "2"
        let id = core.withState { s -> String in
            let id = String(s.nextVideoID)
            s.nextVideoID += 1
            s.videos[id] = VideoRecord(id: id, requestedModel: model, prompt: prompt, createdAt: now,
                                       createdMillis: EventLoop.monotonicMillis(), outcome: VideoOutcome.from(prompt: prompt), seconds: seconds)
            return id
        }
        respondJSON(res, 200, .object([
            ("id", .string(id)), ("object", .string("video")), ("model", .string(model)), ("status", .string("queued")),
            ("progress", .int(0)), ("created_at", .int(now)), ("size", .string("720x720")),
        ]))
    }

    private func getVideo(_ res: HTTPResponder, id: String) {
        let cfg = config
        let nowMillis = EventLoop.monotonicMillis()
        let now = Clock.unixSeconds()
        let apiKey = cfg.apiKey
        let v: VideoRecord? = core.withState { s in
            guard var v = s.videos[id] else { return nil }
            v.polls += 1
            let done: Bool
            if let ms = cfg.videoMillisToComplete {
                done = nowMillis >= v.createdMillis + UInt64(max(ms, 0))
            } else {
                done = v.polls >= cfg.videoPollsToComplete
            }
            if done && !v.finished {
                v.finished = true
                if v.outcome == .success {
                    let exp = now + Int64(cfg.fileURLTTLSeconds)
                    v.cleanURL = SandboxHandler.signedURL(base: s.baseURL, apiKey: apiKey, videoID: id, variant: "clean", expires: exp)
                    v.watermarkedURL = SandboxHandler.signedURL(base: s.baseURL, apiKey: apiKey, videoID: id, variant: "wm", expires: exp)
                }
            }
            s.videos[id] = v
            return v
        }
        guard let v else {
            sendError(res, 404, "task_not_exist: video \(id) not found (request id: \(requestID()))", type: "invalid_request_error")
            return
        }
        respondJSON(res, 200, .object(videoStatusObject(v, nowMillis: nowMillis)))
    }

    private func videoStatusObject(_ v: VideoRecord, nowMillis: UInt64) -> [(String, JSONOut)] {
        var url = "", size = "720x720", status = "completed", quality = "standard", seconds = v.seconds, progress = 100
        if !v.finished {
            status = "processing"; quality = ""; seconds = ""
            if let ms = config.videoMillisToComplete, ms > 0 {
                progress = min(99, Int((nowMillis - v.createdMillis) * 100 / UInt64(ms)))
            } else {
                progress = min(99, v.polls * 100 / max(config.videoPollsToComplete, 1))
            }
        } else {
            switch v.outcome {
            case .success:
                url = v.cleanURL ?? ""; size = v.watermarkedURL ?? ""  // the swap: `size` is the watermarked one
            case .moderated:
                size = "1024x1808"; quality = SandboxHandler.moderationText
            case .failed:
                status = "error"; quality = ""; progress = 0
            case .noURL:
                break
            }
        }
        return [
            ("id", .string(v.id)), ("url", .string(url)), ("size", .string(size)), ("model", .string("sora-2-yijia")),
            ("object", .string("video")), ("status", .string(status)), ("quality", .string(quality)),
            ("seconds", .string(seconds)), ("progress", .int(progress)), ("created_at", .int(v.createdAt)),
        ]
    }

    // MARK: signed files

    static func signature(apiKey: String, videoID: String, variant: String, se: String) -> String {
        Digest.keyed("\(videoID)/\(variant)|\(se)", key: "sandbox-files:" + apiKey)
    }

    static func signedURL(base: String, apiKey: String, videoID: String, variant: String, expires: Int64) -> String {
        let se = Clock.iso8601(expires)
        let sig = signature(apiKey: apiKey, videoID: videoID, variant: variant, se: se)
        return "\(base)/files/\(videoID)/\(variant).mp4?se=\(Forms.percentEncode(se))&sp=r&sv=2024-08-04&sr=b&sig=\(sig)"
    }

    func storageError(_ res: HTTPResponder, _ status: Int, _ code: String, _ message: String) {
        var h = HTTPHeaders()
        h.add("content-type", "application/xml")
        let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>\(code)</Code><Message>\(message)</Message></Error>"
        res.respond(status: status, headers: h, body: Array(body.utf8))
    }

    private func serveFile(_ request: HTTPRequest, _ res: HTTPResponder, videoID: String, file: String) {
        guard file == "clean.mp4" || file == "wm.mp4", !videoID.isEmpty else {
            storageError(res, 404, "BlobNotFound", "The specified blob does not exist.")
            return
        }
        let variant = file == "clean.mp4" ? "clean" : "wm"
        var se: String?, sig: String?
        for (k, v) in Forms.parseQuery(request.head.query ?? "") {
            if k == "se" { se = v } else if k == "sig" { sig = v }
        }
        guard let se, let sig, !sig.isEmpty,
              sig == SandboxHandler.signature(apiKey: config.apiKey, videoID: videoID, variant: variant, se: se) else {
            storageError(res, 403, "AuthenticationFailed", "Server failed to authenticate the request. Make sure the value of the signature is formed correctly.")
            return
        }
        guard let expiry = Clock.parseISO8601(se), expiry > Clock.unixSeconds() else {
            storageError(res, 403, "AuthenticationFailed", "Signed expiry time [\(se)] must be after the current time.")
            return
        }
        let total = config.videoFileBytes
        var h = HTTPHeaders()
        h.add("content-type", "video/mp4")
        h.add("accept-ranges", "bytes")
        h.add("etag", "\"\(Digest.hex(SandboxVideoFile.seed(videoID: videoID, variant: variant)))\"")
        var status = 200
        var range = 0..<total
        if let rh = request.headers["range"] {
            switch ByteRange.parse(rh, total: total) {
            case .ignore: break
            case .unsatisfiable:
                var eh = HTTPHeaders()
                eh.add("content-range", "bytes */\(total)")
                eh.add("content-type", "application/xml")
                let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>InvalidRange</Code><Message>The range specified is invalid for the current size of the resource.</Message></Error>"
                res.respond(status: 416, headers: eh, body: Array(body.utf8))
                return
            case .range(let r):
                status = 206
                range = r
                h.add("content-range", "bytes \(r.lowerBound)-\(r.upperBound - 1)/\(total)")
            }
        }
        h.add("content-length", String(range.count))
        res.sendHead(HTTPResponseHead(status: status, headers: h))
        if request.method == "HEAD" || range.isEmpty { res.end(); return }
        let header = SandboxVideoFile.header(total: total)
        let pattern = SandboxVideoFile.pattern(seed: SandboxVideoFile.seed(videoID: videoID, variant: variant))
        streamBody(res, count: range.count) { buf, produced in
            SandboxVideoFile.fill(&buf, offset: range.lowerBound + produced, total: total, header: header, pattern: pattern)
        }
    }

    /// Writes `count` bytes made by `fill` in 64 KiB pieces, pausing while the client is slow.
    private func streamBody(_ res: HTTPResponder, count: Int, abortAfter: Int? = nil, fill: @escaping (inout [UInt8], Int) -> Void) {
        track(res)
        let s = BodyStreamer(res: res, count: count, abortAfter: abortAfter, fill: fill,
                             clientLeft: { [weak self] in self?.clientLeft(res) }) { [weak self] in self?.untrack(res) }
        s.start()
    }

    // MARK: characters

    private func characterFailure(_ res: HTTPResponder, _ message: String) {
        respondJSON(res, 400, .object([("success", .bool(false)), ("message", .string(message))]))
    }

    private func createCharacter(_ request: HTTPRequest, _ res: HTTPResponder) {
        guard let body = JSONValue.parse(request.body), case .object = body else {
            characterFailure(res, "请求参数错误: 无效的 JSON")
            return
        }
        guard let instruction = body["instruction_value"]?.stringValue, !instruction.isEmpty else { characterFailure(res, "instruction_value 不能为空"); return }
        guard let timestamps = body["timestamps"]?.looseString, !timestamps.isEmpty else { characterFailure(res, "timestamps 不能为空"); return }
        guard let videoID = body["video_id"]?.looseString, !videoID.isEmpty else { characterFailure(res, "video_id 不能为空"); return }
        guard let uuid = body["uuid"]?.stringValue, !uuid.isEmpty else { characterFailure(res, "uuid 不能为空"); return }
        let stampParts = timestamps.split(separator: "-", omittingEmptySubsequences: false)
        guard stampParts.count == 2, let start = Double(stampParts[0].trimmingASCIISpaces()), let end = Double(stampParts[1].trimmingASCIISpaces()),
              start >= 0, end > start, end - start <= 3 else {
            characterFailure(res, "timestamps 格式错误: 应为 开始秒-结束秒, 且不超过3秒 (例如 0-3)")
            return
        }
        let now = Clock.unixSeconds()
        let apiKey = config.apiKey
        enum Outcome { case notFound, notReady, ok(CharacterRecord) }
        let outcome: Outcome = core.withState { s in
            guard let v = s.videos[videoID] else { return .notFound }
            guard v.finished, v.outcome == .success else { return .notReady }
            let id = String(s.nextCharacterID)
            s.nextCharacterID += 1
            let gen = "gen_01k9" + Digest.hex(Digest.fnv64(Array("\(id)|\(uuid)".utf8), seed: 3))
            let c = CharacterRecord(id: id, username: SandboxState.username, instructionValue: instruction, timestamps: timestamps,
                                    apiKey: apiKey, tokenID: SandboxState.tokenID, genID: gen, uuid: uuid, videoID: videoID,
                                    createdAt: now, createTime: Clock.shanghaiLocal(now),
                                    finalStatus: instruction.lowercased().contains("fail") ? -1 : 999, ready: false)
            s.characters.append(c)
            return .ok(c)
        }
        switch outcome {
        case .notFound: characterFailure(res, "视频不存在: \(videoID)")
        case .notReady: characterFailure(res, "视频未完成或生成失败, 无法创建角色: \(videoID)")
        case .ok(let c):
            respondJSON(res, 200, .object([("success", .bool(true)), ("data", .object([
                ("id", .string(c.id)), ("instruction_value", .string(c.instructionValue)), ("timestamps", .string(c.timestamps)),
                ("api_key", .string(c.apiKey)), ("token_id", .int(c.tokenID)), ("gen_id", .string(c.genID)),
                ("uuid", .string(c.uuid)), ("status", .int(0)),
            ]))]))
        }
    }

    private func listCharacters(_ res: HTTPResponder) {
        let threshold = config.characterListsToReady
        let list: [CharacterRecord] = core.withState { s in
            for i in s.characters.indices where !s.characters[i].ready {
                s.characters[i].listsSeen += 1
                if s.characters[i].listsSeen > threshold { s.characters[i].ready = true }
            }
            return s.characters
        }
        let data: [JSONOut] = list.map { c in
            .object([
                ("id", .string(c.id)), ("username", .string(c.username)), ("instruction_value", .string(c.instructionValue)),
                ("api_key", .string(c.apiKey)), ("status", .int(c.ready ? c.finalStatus : 0)),
                ("create_time", .string(c.createTime)), ("token_id", .int(c.tokenID)), ("uuid", .string(c.uuid)),
            ])
        }
        respondJSON(res, 200, .object([("success", .bool(true)), ("data", .array(data))]))
    }

    // MARK: faults

    private func applyFault(_ fault: SandboxFault, _ request: HTTPRequest, _ res: HTTPResponder, path: String) {
        switch fault {
        case .status(let code, let body):
            var h = HTTPHeaders()
            h.add("content-type", body.hasPrefix("{") || body.hasPrefix("[") ? "application/json; charset=utf-8" : "text/plain; charset=utf-8")
            res.respond(status: code, headers: h, body: Array(body.utf8))
        case .reset:
            res.abort()
        case .resetMidBody:
            midBodyReset(res)
        case .stall:
            track(res)
            res.onClose = { [weak self] in self?.clientLeft(res) }
        case .invalidJSON:
            var h = jsonHeaders()
            h.add("x-sandbox-fault", "invalid-json")
            res.respond(status: 200, headers: h, body: Array("{\"id\":\"4078\",\"object\":\"video\",\"status\":\"queu".utf8))
        case .hugeBody(let n):
            var h = jsonHeaders()
            h.add("content-length", String(n))
            res.sendHead(HTTPResponseHead(status: 200, headers: h))
            let prefix = Array("{\"padding\":\"".utf8), suffix = Array("\"}".utf8)
            streamBody(res, count: n) { buf, produced in
                for i in 0..<buf.count {
                    let pos = produced + i
                    if n >= prefix.count + suffix.count {
                        if pos < prefix.count { buf[i] = prefix[pos]; continue }
                        if pos >= n - suffix.count { buf[i] = suffix[pos - (n - suffix.count)]; continue }
                    }
                    buf[i] = 0x61  // "a"
                }
            }
        case .cutStream:
            if path == "/v1/chat/completions", let body = JSONValue.parse(request.body), body["stream"]?.boolValue == true,
               let messages = body["messages"]?.arrayValue {
                let model = body["model"]?.stringValue ?? "gpt-3.5-turbo"
                startStream(ChatReply(model: model, messages: messages, id: "chatcmpl-sandbox-\(core.nextCounter())"), res, loop: request.loop, cutAfter: 2)
            } else {
                midBodyReset(res)
            }
        case .echoKey:
            echoKey(request, res)
        case .raw(let status, let headers, let body, let cutAfter):
            var h = headers
            h.replace("content-length", String(body.count))
            res.sendHead(HTTPResponseHead(status: status, headers: h))
            if let cut = cutAfter {
                res.write(Array(body.prefix(cut)))
                res.abort()
            } else {
                res.write(body)
                res.end()
            }
        }
    }

    private func midBodyReset(_ res: HTTPResponder) {
        var h = jsonHeaders()
        let full = Array("{\"id\":\"4078\",\"object\":\"video\",\"model\":\"sora-2\",\"status\":\"queued\",\"progress\":0,\"created_at\":1762415032,\"size\":\"720x720\"}".utf8)
        h.add("content-length", String(full.count + 64))
        res.sendHead(HTTPResponseHead(status: 200, headers: h))
        res.write(Array(full[0..<(full.count / 2)]))
        res.abort()
    }

    // MARK: responses

    func jsonHeaders() -> HTTPHeaders {
        var h = HTTPHeaders()
        h.add("content-type", "application/json; charset=utf-8")
        return h
    }

    func respondJSON(_ res: HTTPResponder, _ status: Int, _ body: JSONOut, headers: HTTPHeaders? = nil) {
        res.respond(status: status, headers: headers ?? jsonHeaders(), body: body.bytes)
    }

    static func errorJSON(message: String, type: String) -> JSONOut {
        .object([("error", .object([("message", .string(message)), ("type", .string(type))]))])
    }

    func sendError(_ res: HTTPResponder, _ status: Int, _ message: String, type: String = "new_api_error") {
        respondJSON(res, status, SandboxHandler.errorJSON(message: message, type: type))
    }

    /// new-api style request id: local time digits plus a counter.
    func requestID() -> String {
        let n = core.nextCounter()
        let digits = Clock.shanghaiLocal(Clock.unixSeconds()).filter(\.isNumber)
        let c = String(n)
        return digits + String(repeating: "0", count: max(0, 8 - c.count)) + c
    }

    // MARK: live responses

    private func track(_ res: HTTPResponder) {
        live[ObjectIdentifier(res)] = res
        core.openResponses.store(live.count, ordering: .relaxed)
    }

    private func untrack(_ res: HTTPResponder) {
        live.removeValue(forKey: ObjectIdentifier(res))
        core.openResponses.store(live.count, ordering: .relaxed)
    }

    /// The client left before the response ended.
    private func clientLeft(_ res: HTTPResponder) {
        core.clientDisconnects.add(1, ordering: .relaxed)
        untrack(res)
    }

    /// Aborts every response still in progress (on the loop thread, from `Sandbox.stop()`).
    func abortAll() {
        let all = Array(live.values)
        live = [:]
        core.openResponses.store(0, ordering: .relaxed)
        for r in all { r.abort() }
    }

    // MARK: forms

    struct ParsedForm {
        var isForm = false
        var broken = false
        var fields: [String: String] = [:]
        var files: [String: RecordedFile] = [:]
    }

    private func parseForm(_ request: HTTPRequest) -> ParsedForm {
        var out = ParsedForm()
        let ct = request.headers["content-type"]
        if Forms.isMultipart(ct) {
            out.isForm = true
            guard let boundary = Forms.headerParameter(ct!, "boundary"),
                  let parts = Forms.parseMultipart(request.body, boundary: boundary) else {
                out.broken = true
                return out
            }
            for p in parts {
                if p.filename != nil {
                    out.files[p.name] = RecordedFile(filename: p.filename, contentType: p.contentType, byteCount: p.body.count)
                } else {
                    out.fields[p.name] = String(decoding: p.body, as: UTF8.self)
                }
            }
        } else if Forms.isURLEncoded(ct) {
            out.isForm = true
            for (k, v) in Forms.parseURLEncoded(request.body) { out.fields[k] = v }
        }
        return out
    }
}
