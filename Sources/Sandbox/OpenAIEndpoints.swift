import HTTPServer
import HTTPWire

/// The OpenAI endpoints the reseller passes through to its channels unchanged (new-api relays
/// them as OpenAI answers them): responses, embeddings, images, moderations, speech and
/// transcriptions. Deterministic answers in OpenAI's shapes, `usage` where OpenAI's answer has
/// it. Every one of them honours the model cues (`ModelCue`).
extension SandboxHandler {
    /// Parses a JSON body with a `model`; answers 400 itself (new-api's wording) when there is none.
    func jsonBodyWithModel(_ request: HTTPRequest, _ res: HTTPResponder) -> (JSONValue, String)? {
        guard let body = JSONValue.parse(request.body), case .object = body else {
            sendError(res, 400, "Invalid request: request body is not valid JSON", type: "invalid_request_error")
            return nil
        }
        guard let model = body["model"]?.stringValue, !model.isEmpty else {
            sendError(res, 400, "model is required (request id: \(requestID()))", type: "invalid_request_error")
            return nil
        }
        return (body, model)
    }

    /// Answers the error cues; true when it did.
    func answeredErrorCue(_ cue: ModelCue, model: String, _ res: HTTPResponder) -> Bool {
        guard let (status, body) = cue.errorAnswer(model: model, requestID: requestID()) else { return false }
        respondJSON(res, status, body)
        return true
    }

    // MARK: responses

    func responses(_ request: HTTPRequest, _ res: HTTPResponder) {
        guard let (body, model) = jsonBodyWithModel(request, res) else { return }
        let cue = ModelCue.from(model: model)
        if answeredErrorCue(cue, model: model, res) { return }
        guard let input = body["input"], !(input.stringValue?.isEmpty ?? false), input != .null else {
            sendError(res, 400, "Missing required parameter: 'input'.", type: "invalid_request_error")
            return
        }
        let reply = ResponsesReply(body: body, model: model, counter: core.nextCounter(), callTool: cue == .tools)
        if body["stream"]?.boolValue == true {
            startStream(reply, res, loop: request.loop, cutAfter: nil, slow: cue == .slowStream)
        } else {
            respondJSON(res, 200, reply.responseObject(done: true))
        }
    }

    // MARK: embeddings

    /// Embeddings: unit vectors derived from each input (`dimensions` of them, default 1536, at
    /// most `maxEmbeddingDimensions`), as floats or, with `encoding_format: base64`, as base64 of
    /// little-endian float32 (what the OpenAI SDKs ask for by default in several versions).
    func embeddings(_ request: HTTPRequest, _ res: HTTPResponder) {
        guard let (body, model) = jsonBodyWithModel(request, res) else { return }
        if answeredErrorCue(ModelCue.from(model: model), model: model, res) { return }
        var inputs: [String] = []
        switch body["input"] {
        case .string(let s)?: inputs = [s]
        case .array(let a)? where !a.isEmpty:
            for v in a {
                switch v {
                case .string(let s): inputs.append(s)
                case .number(let d): inputs.append(String(d))                  // token ids
                case .array(let t): inputs.append(t.map { "\($0)" }.joined(separator: ","))  // token arrays
                default: break
                }
            }
        default: break
        }
        guard !inputs.isEmpty, inputs.count <= 2048 else {
            sendError(res, 400, "'input' must be a non-empty string or an array of at most 2048 inputs", type: "invalid_request_error")
            return
        }
        let dims = body["dimensions"]?.numberValue.map { Int($0) } ?? 1536
        guard dims >= 1, dims <= SandboxHandler.maxEmbeddingDimensions else {
            sendError(res, 400, "'dimensions' must be between 1 and \(SandboxHandler.maxEmbeddingDimensions)", type: "invalid_request_error")
            return
        }
        let base64 = body["encoding_format"]?.stringValue == "base64"
        var tokens = 0
        let data: [JSONOut] = inputs.enumerated().map { i, text in
            tokens += max(1, text.utf8.count / 4)
            let v = Media.unitVector(seed: Digest.fnv64(Array("\(model)|\(text)".utf8), seed: 21), count: dims)
            let embedding: JSONOut = base64 ? .string(Media.base64(Media.float32LE(v))) : .array(v.map { .number(Media.jsonNumber($0)) })
            return .object([("object", .string("embedding")), ("index", .int(i)), ("embedding", embedding)])
        }
        respondJSON(res, 200, .object([
            ("object", .string("list")), ("data", .array(data)), ("model", .string(model)),
            ("usage", .object([("prompt_tokens", .int(tokens)), ("total_tokens", .int(tokens))])),
        ]))
    }

    static let maxEmbeddingDimensions = 3072

    // MARK: images

    /// Images: `n` (1…10) 64×64 PNGs whatever the `size` (small on purpose), coloured by the
    /// prompt. `gpt-image-*` models answer `b64_json` with token `usage` (as OpenAI does); other
    /// models a URL (`/files/images/<id>.png` on the stand-in, no key needed, like OpenAI's
    /// signed CDN links) unless `response_format: b64_json`.
    func images(_ request: HTTPRequest, _ res: HTTPResponder) {
        guard let (body, model) = jsonBodyWithModel(request, res) else { return }
        if answeredErrorCue(ModelCue.from(model: model), model: model, res) { return }
        guard let prompt = body["prompt"]?.stringValue, !prompt.isEmpty else {
            sendError(res, 400, "Missing required parameter: 'prompt'.", type: "invalid_request_error")
            return
        }
        let n = body["n"]?.numberValue.map { Int($0) } ?? 1
        guard (1...10).contains(n) else {
            sendError(res, 400, "'n' must be between 1 and 10", type: "invalid_request_error")
            return
        }
        let gptImage = model.hasPrefix("gpt-image")
        let b64 = gptImage || body["response_format"]?.stringValue == "b64_json"
        let base = core.withState { $0.baseURL }
        var data: [JSONOut] = []
        for i in 0..<n {
            let seed = Digest.fnv64(Array("\(prompt)|\(i)".utf8), seed: 31)
            if b64 {
                data.append(.object([("b64_json", .string(Media.base64(Media.png(seed: seed))))]))
            } else {
                data.append(.object([("url", .string("\(base)/files/images/\(Digest.hex(seed)).png")), ("revised_prompt", .string(prompt))]))
            }
        }
        var out: [(String, JSONOut)] = [("created", .int(Clock.unixSeconds())), ("data", .array(data))]
        if gptImage {
            let text = max(1, prompt.utf8.count / 4), image = 272 * n
            out += [("background", .string("opaque")), ("output_format", .string("png")), ("quality", .string("low")),
                    ("size", .string(body["size"]?.stringValue ?? "1024x1024")),
                    ("usage", .object([
                        ("input_tokens", .int(text)),
                        ("input_tokens_details", .object([("image_tokens", .int(0)), ("text_tokens", .int(text))])),
                        ("output_tokens", .int(image)), ("total_tokens", .int(text + image)),
                    ]))]
        }
        respondJSON(res, 200, .object(out))
    }

    /// `GET /files/images/<16 hex>.png`: the image a URL answer pointed to (no key, like a CDN link).
    func serveImage(_ res: HTTPResponder, name: String) {
        let hex = name.hasSuffix(".png") ? String(name.dropLast(4)) : ""
        guard hex.utf8.count == 16, let seed = UInt64(hex, radix: 16) else {
            storageError(res, 404, "BlobNotFound", "The specified blob does not exist.")
            return
        }
        var h = HTTPHeaders()
        h.add("content-type", "image/png")
        res.respond(status: 200, headers: h, body: Media.png(seed: seed))
    }

    // MARK: moderations

    static let moderationCategories = ["harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                                       "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent",
                                       "sexual", "sexual/minors", "violence", "violence/graphic"]

    /// Moderations: one result per input text; cues `nsfw` (→ `sexual`) and `violence` (→
    /// `violence`) flag it, as the video cue `nsfw` does. No `usage` (OpenAI's answer has none).
    func moderations(_ request: HTTPRequest, _ res: HTTPResponder) {
        guard let body = JSONValue.parse(request.body), case .object = body else {
            sendError(res, 400, "Invalid request: request body is not valid JSON", type: "invalid_request_error")
            return
        }
        let model = body["model"]?.stringValue ?? "omni-moderation-latest"
        if answeredErrorCue(ModelCue.from(model: model), model: model, res) { return }
        var texts: [String] = []
        switch body["input"] {
        case .string(let s)?: texts = [s]
        case .array(let a)?:
            // Strings, or multimodal parts ({type: text, text} / {type: image_url, …}) as one input.
            if a.allSatisfy({ $0.stringValue != nil }) { texts = a.compactMap(\.stringValue) } else {
                texts = [a.compactMap { $0["type"]?.stringValue == "text" ? $0["text"]?.stringValue : nil }.joined(separator: " ")]
            }
        default: break
        }
        guard !texts.isEmpty else {
            sendError(res, 400, "Missing required parameter: 'input'.", type: "invalid_request_error")
            return
        }
        let results: [JSONOut] = texts.map { text in
            let t = text.lowercased()
            let hits: Set<String> = Set((t.contains("nsfw") ? ["sexual"] : []) + (t.contains("violence") ? ["violence"] : []))
            let cats = SandboxHandler.moderationCategories
            return .object([
                ("flagged", .bool(!hits.isEmpty)),
                ("categories", .object(cats.map { ($0, .bool(hits.contains($0))) })),
                ("category_scores", .object(cats.map { ($0, .number(hits.contains($0) ? "0.9731" : "0.0001")) })),
                ("category_applied_input_types", .object(cats.map { ($0, .array([.string("text")])) })),
            ])
        }
        respondJSON(res, 200, .object([
            ("id", .string("modr-sandbox" + Digest.hex(Digest.fnv64(Array("modr/\(core.nextCounter())".utf8), seed: 41)))),
            ("model", .string(model)), ("results", .array(results)),
        ]))
    }

    // MARK: audio

    /// Speech: a binary audio body (no JSON, no `usage`, as OpenAI answers): `mp3` (default;
    /// silent frames), `wav` and `pcm` (a quiet 440 Hz tone, 24 kHz 16-bit mono), about 80 ms per
    /// character of `input` (0.5 s to 10 s). `opus`, `aac`, `flac` → 400 (not synthesised here).
    func speech(_ request: HTTPRequest, _ res: HTTPResponder) {
        guard let (body, model) = jsonBodyWithModel(request, res) else { return }
        if answeredErrorCue(ModelCue.from(model: model), model: model, res) { return }
        guard let input = body["input"]?.stringValue, !input.isEmpty else {
            sendError(res, 400, "Missing required parameter: 'input'.", type: "invalid_request_error")
            return
        }
        guard input.count <= 4096 else {
            sendError(res, 400, "'input' is longer than 4096 characters", type: "invalid_request_error")
            return
        }
        guard body["voice"] != nil else {
            sendError(res, 400, "Missing required parameter: 'voice'.", type: "invalid_request_error")
            return
        }
        let millis = min(10_000, max(500, input.count * 80))
        let format = body["response_format"]?.stringValue ?? "mp3"
        let audio: [UInt8], type: String
        switch format {
        case "mp3": audio = Media.mp3(millis: millis); type = "audio/mpeg"
        case "wav": audio = Media.wav(millis: millis); type = "audio/wav"
        case "pcm": audio = Media.pcm(millis: millis); type = "audio/pcm"
        default:
            sendError(res, 400, "response_format `\(format)`: the stand-in synthesises mp3, wav and pcm only", type: "invalid_request_error")
            return
        }
        var h = HTTPHeaders()
        h.add("content-type", type)
        res.respond(status: 200, headers: h, body: audio)
    }

    /// Transcriptions (multipart: `file`, `model`, optional `response_format`, `language`):
    /// "Sandbox transcription of <filename> (<n> bytes)". `json` (default) and `verbose_json`
    /// carry `usage` (`tokens` for gpt-4o models, `duration` for whisper, as OpenAI does);
    /// `text`, `srt`, `vtt` are plain text. `stream: true` → 400 (not played by the stand-in).
    func transcriptions(_ request: HTTPRequest, _ res: HTTPResponder, form: ParsedForm) {
        guard form.isForm, !form.broken, Forms.isMultipart(request.headers["content-type"]) else {
            sendError(res, 400, "Invalid request: expected multipart/form-data (request id: \(requestID()))", type: "invalid_request_error")
            return
        }
        guard let model = form.fields["model"], !model.isEmpty else {
            sendError(res, 400, "model is required (request id: \(requestID()))", type: "invalid_request_error")
            return
        }
        if answeredErrorCue(ModelCue.from(model: model), model: model, res) { return }
        guard let file = form.files["file"], file.byteCount > 0 else {
            sendError(res, 400, "Missing required parameter: 'file'.", type: "invalid_request_error")
            return
        }
        if form.fields["stream"] == "true" {
            sendError(res, 400, "stream: the stand-in does not stream transcriptions", type: "invalid_request_error")
            return
        }
        let text = "Sandbox transcription of \(file.filename ?? "audio") (\(file.byteCount) bytes)."
        let seconds = max(1, file.byteCount / 16_000)
        let words = text.split(separator: " ").count
        let usage: JSONOut = model.hasPrefix("whisper")
            ? .object([("type", .string("duration")), ("seconds", .int(seconds))])
            : .object([("type", .string("tokens")), ("input_tokens", .int(seconds * 10)),
                       ("input_token_details", .object([("text_tokens", .int(0)), ("audio_tokens", .int(seconds * 10))])),
                       ("output_tokens", .int(words)), ("total_tokens", .int(seconds * 10 + words))])
        let format = form.fields["response_format"] ?? "json"
        var h = HTTPHeaders()
        switch format {
        case "json":
            respondJSON(res, 200, .object([("text", .string(text)), ("usage", usage)]))
        case "verbose_json":
            respondJSON(res, 200, .object([
                ("task", .string("transcribe")), ("language", .string(form.fields["language"] ?? "english")),
                ("duration", .int(seconds)), ("text", .string(text)),
                ("segments", .array([.object([
                    ("id", .int(0)), ("seek", .int(0)), ("start", .number("0.0")), ("end", .int(seconds)), ("text", .string(text)),
                    ("tokens", .array([])), ("temperature", .number("0.0")), ("avg_logprob", .number("-0.2")),
                    ("compression_ratio", .number("1.0")), ("no_speech_prob", .number("0.01")),
                ])])),
                ("usage", usage),
            ]))
        case "text":
            h.add("content-type", "text/plain; charset=utf-8")
            res.respond(status: 200, headers: h, body: Array((text + "\n").utf8))
        case "srt":
            h.add("content-type", "text/plain; charset=utf-8")
            res.respond(status: 200, headers: h, body: Array("1\n00:00:00,000 --> 00:00:0\(min(seconds, 9)),000\n\(text)\n\n".utf8))
        case "vtt":
            h.add("content-type", "text/plain; charset=utf-8")
            res.respond(status: 200, headers: h, body: Array("WEBVTT\n\n00:00:00.000 --> 00:00:0\(min(seconds, 9)).000\n\(text)\n\n".utf8))
        default:
            sendError(res, 400, "response_format `\(format)` is not one of json, text, srt, verbose_json, vtt", type: "invalid_request_error")
        }
    }
}
