import Foundation
import Glibc
import Sandbox
import Testing

/// The stand-in's pass-through OpenAI endpoints and its model cues, spoken to directly (Veil is
/// not in between): shapes, streams, binary bodies, errors.
private let key = "sk-sandboxOPENAIkey0123456789abcdefXYZ"

private func makeSandbox(_ tweak: (inout SandboxConfig) -> Void = { _ in }) throws -> (Sandbox, UInt16) {
    var c = SandboxConfig(apiKey: key)
    c.sseChunkDelayMillis = 5
    tweak(&c)
    let s = Sandbox(config: c)
    return (s, try s.start())
}

private let authJSON = [("Authorization", "Bearer \(key)"), ("Content-Type", "application/json")]

private func post(_ port: UInt16, _ path: String, _ body: String, headers: [(String, String)] = authJSON) throws -> RawResponse {
    try RawHTTPClient.request(port: port, method: "POST", path: path, headers: headers, body: Array(body.utf8))
}

private func object(_ bytes: [UInt8]) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] ?? [:]
}

private func object(_ text: String) -> [String: Any] { object(Array(text.utf8)) }

/// (event name or nil, data) of every SSE event.
private func events(_ body: [UInt8]) -> [(event: String?, data: String)] {
    var out: [(String?, String)] = []
    for block in String(decoding: body, as: UTF8.self).components(separatedBy: "\n\n") where !block.isEmpty {
        var name: String?, data = ""
        for line in block.split(separator: "\n") {
            if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
            if line.hasPrefix("data: ") { data = String(line.dropFirst(6)) }
        }
        out.append((name, data))
    }
    return out
}

private func multipart(model: String, file: [UInt8]?, format: String? = nil) -> ([UInt8], String) {
    var m = MultipartBuilder()
    m.field("model", model)
    if let format { m.field("response_format", format) }
    if let file { m.file("file", filename: "hello.wav", contentType: "audio/wav", bytes: file) }
    return (m.finished(), m.contentType)
}

@Suite struct SandboxOpenAITests {
    @Test func everyNewEndpointNeedsTheKey() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        for path in ["/v1/responses", "/v1/embeddings", "/v1/images/generations", "/v1/moderations", "/v1/audio/speech", "/v1/audio/transcriptions"] {
            let r = try post(port, path, #"{"model":"gpt-4o-mini","input":"hi"}"#, headers: [("Authorization", "Bearer sk-wrong"), ("Content-Type", "application/json")])
            #expect(r.status == 401, "\(path)")
            #expect((object(r.body)["error"] as? [String: Any])?["type"] as? String == "new_api_error")
        }
    }

    @Test func responsesNonStreamed() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let r = try post(port, "/v1/responses", #"{"model":"gpt-4o-mini","input":[{"role":"user","content":[{"type":"input_text","text":"tell me a joke"}]}],"instructions":"be brief"}"#)
        #expect(r.status == 200)
        let o = object(r.body)
        #expect(o["object"] as? String == "response" && o["status"] as? String == "completed" && o["model"] as? String == "gpt-4o-mini")
        #expect((o["id"] as? String)?.hasPrefix("resp_") == true)
        #expect(o["instructions"] as? String == "be brief")
        for k in ["created_at", "output", "parallel_tool_calls", "tool_choice", "tools", "usage", "error", "incomplete_details"] {
            #expect(o.keys.contains(k), "missing \(k)")
        }
        let item = (o["output"] as? [[String: Any]])?.first
        #expect(item?["type"] as? String == "message" && item?["role"] as? String == "assistant")
        let part = (item?["content"] as? [[String: Any]])?.first
        #expect(part?["type"] as? String == "output_text")
        #expect(part?["text"] as? String == "Sandbox reply to: tell me a joke")
        let u = o["usage"] as? [String: Any]
        let input = u?["input_tokens"] as? Int ?? -1, output = u?["output_tokens"] as? Int ?? -1
        #expect(input > 0 && output == 7 && u?["total_tokens"] as? Int == input + output)
        #expect((u?["input_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int == 0)
        #expect((u?["output_tokens_details"] as? [String: Any])?["reasoning_tokens"] as? Int == 0)
        // A missing input is the caller's error.
        #expect(try post(port, "/v1/responses", #"{"model":"gpt-4o-mini"}"#).status == 400)
    }

    @Test func responsesStreamPlaysTypedEvents() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let r = try post(port, "/v1/responses", #"{"model":"gpt-4o-mini","input":"hello there","stream":true}"#)
        #expect(r.status == 200 && r.header("content-type") == "text/event-stream")
        let ev = events(r.body)
        let types = ev.map { object($0.data)["type"] as? String ?? "?" }
        #expect(ev.allSatisfy { $0.event != nil } && ev.map(\.event!) == types, "event: line = data.type")
        #expect(types.first == "response.created" && types.last == "response.completed")
        #expect(Array(types.prefix(4)) == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"])
        #expect(Array(types.suffix(4)) == ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"])
        #expect(ev.enumerated().allSatisfy { object($1.data)["sequence_number"] as? Int == $0 })
        #expect(!r.text.contains("[DONE]"))
        let deltas = ev.map { object($0.data) }.filter { $0["type"] as? String == "response.output_text.delta" }
        #expect(deltas.count == 5)
        let text = deltas.compactMap { $0["delta"] as? String }.joined()
        #expect(text == "Sandbox reply to: hello there")
        #expect(deltas.allSatisfy { $0["output_index"] as? Int == 0 && $0["content_index"] as? Int == 0 && ($0["item_id"] as? String)?.hasPrefix("msg_") == true })
        let done = ev.map { object($0.data) }.first { $0["type"] as? String == "response.output_text.done" }
        #expect(done?["text"] as? String == text)
        let created = object(ev[0].data)["response"] as? [String: Any]
        #expect(created?["status"] as? String == "in_progress" && (created?["output"] as? [Any])?.isEmpty == true)
        #expect(created?["usage"] is NSNull)
        let completed = object(ev.last!.data)["response"] as? [String: Any]
        #expect(completed?["status"] as? String == "completed")
        #expect((completed?["usage"] as? [String: Any])?["output_tokens"] as? Int == 5)
        let item = (completed?["output"] as? [[String: Any]])?.first
        #expect(((item?["content"] as? [[String: Any]])?.first?["text"] as? String) == text)
    }

    @Test func responsesToolCue() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let body = #"{"model":"sandbox-tools","input":"Oslo","stream":true,"tools":[{"type":"function","name":"weather","parameters":{"type":"object","properties":{"unit":{"type":"string"},"city":{"type":"string"}},"required":["city"]}}]}"#
        let ev = events(try post(port, "/v1/responses", body).body).map { object($0.data) }
        let types = ev.map { $0["type"] as? String ?? "?" }
        #expect(Array(types.prefix(3)) == ["response.created", "response.in_progress", "response.output_item.added"])
        #expect(Array(types.suffix(3)) == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"])
        let args = ev.filter { $0["type"] as? String == "response.function_call_arguments.delta" }.compactMap { $0["delta"] as? String }.joined()
        #expect(args.count > 6 && args == ev[types.count - 3]["arguments"] as? String)
        #expect(object(args)["city"] as? String == "Oslo")
        let item = ((ev.last?["response"] as? [String: Any])?["output"] as? [[String: Any]])?.first
        #expect(item?["type"] as? String == "function_call" && item?["name"] as? String == "weather")
        #expect((item?["call_id"] as? String)?.hasPrefix("call_") == true)
        let tools = (ev.last?["response"] as? [String: Any])?["tools"] as? [[String: Any]]
        #expect(tools?.first?["name"] as? String == "weather" && (tools?.first?["parameters"] as? [String: Any])?["type"] as? String == "object")
    }

    @Test func chatToolCueStreamsFunctionCallDeltas() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let tools = #"[{"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{"zone":{"type":"string"}}}}}]"#
        let body = #"{"model":"sandbox-tools","stream":true,"messages":[{"role":"user","content":"Asia/Tokyo"}],"tools":"# + tools + "}"
        let r = try post(port, "/v1/chat/completions", body)
        let ev = events(r.body)
        #expect(ev.last?.data == "[DONE]")
        let chunks = ev.dropLast().map { object($0.data) }
        let first = ((chunks[0]["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])
        #expect(first?["role"] as? String == "assistant" && first?["content"] is NSNull)
        let call0 = (first?["tool_calls"] as? [[String: Any]])?.first
        #expect(call0?["index"] as? Int == 0 && call0?["type"] as? String == "function" && (call0?["id"] as? String)?.hasPrefix("call_") == true)
        #expect((call0?["function"] as? [String: Any])?["name"] as? String == "get_time")
        #expect((call0?["function"] as? [String: Any])?["arguments"] as? String == "")
        var args = ""
        var finish: String?
        for c in chunks.dropFirst() {
            guard let choice = (c["choices"] as? [[String: Any]])?.first else { continue }
            if let f = choice["finish_reason"] as? String { finish = f }
            let calls = (choice["delta"] as? [String: Any])?["tool_calls"] as? [[String: Any]]
            if let call = calls?.first {
                #expect(call["index"] as? Int == 0 && call["id"] == nil)
                args += (call["function"] as? [String: Any])?["arguments"] as? String ?? ""
            }
        }
        #expect(finish == "tool_calls")
        #expect(object(args)["zone"] as? String == "Asia/Tokyo")
        // The usage chunk closes the stream, as always.
        #expect((chunks.last?["choices"] as? [Any])?.isEmpty == true && chunks.last?["usage"] != nil)

        let plain = object(try post(port, "/v1/chat/completions", #"{"model":"sandbox-tools","messages":[{"role":"user","content":"x"}]}"#).body)
        let choice = (plain["choices"] as? [[String: Any]])?.first
        let msg = choice?["message"] as? [String: Any]
        #expect(choice?["finish_reason"] as? String == "tool_calls" && msg?["content"] is NSNull)
        let fn = ((msg?["tool_calls"] as? [[String: Any]])?.first?["function"] as? [String: Any])
        #expect(fn?["name"] as? String == "get_weather" && object(fn?["arguments"] as? String ?? "")["location"] as? String == "x")
    }

    @Test func usageChunkComesEvenWhenNotAsked() throws {
        // The real upstream's quirk, kept on purpose: Veil asks for usage and drops the chunk.
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        for opts in ["", #","stream_options":{"include_usage":false}"#] {
            let ev = events(try post(port, "/v1/chat/completions", #"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]"# + opts + "}").body)
            let usageChunk = object(ev[ev.count - 2].data)
            #expect((usageChunk["choices"] as? [Any])?.isEmpty == true && usageChunk["usage"] is [String: Any])
        }
    }

    @Test(arguments: [
        ("sandbox-rate-limited", 429, "new_api_error"),
        ("sandbox-upstream-error", 500, "upstream_error"),
        ("sandbox-missing-model", 404, "invalid_request_error"),
    ])
    func errorCuesOnEveryEndpoint(_ model: String, _ status: Int, _ type: String) throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        var answers: [(String, RawResponse)] = []
        for (path, body) in [("/v1/chat/completions", #"{"model":"M","messages":[{"role":"user","content":"x"}],"stream":true}"#),
                             ("/v1/responses", #"{"model":"M","input":"x"}"#), ("/v1/embeddings", #"{"model":"M","input":"x"}"#),
                             ("/v1/images/generations", #"{"model":"M","prompt":"x"}"#), ("/v1/moderations", #"{"model":"M","input":"x"}"#),
                             ("/v1/audio/speech", #"{"model":"M","input":"x","voice":"alloy"}"#)] {
            answers.append((path, try post(port, path, body.replacingOccurrences(of: "\"M\"", with: "\"\(model)\""))))
        }
        let (form, ct) = multipart(model: model, file: [1, 2, 3])
        answers.append(("/v1/audio/transcriptions", try RawHTTPClient.request(port: port, method: "POST", path: "/v1/audio/transcriptions",
                                                                              headers: [("Authorization", "Bearer \(key)"), ("Content-Type", ct)], body: form)))
        for (path, r) in answers {
            #expect(r.status == status, "\(path)")
            #expect(r.header("content-type")?.hasPrefix("application/json") == true)
            let e = object(r.body)["error"] as? [String: Any]
            #expect(e?["type"] as? String == type, "\(path)")
            let message = e?["message"] as? String ?? ""
            switch status {
            case 429: #expect(message.hasPrefix("您已达到请求数限制") && message.contains("(request id: ") && e?["code"] as? String == "")
            case 500: #expect(e?["code"] as? String == "bad_response_status_code")
            default:
                #expect(e?["code"] as? String == "model_not_found" && e?["param"] is NSNull)
                #expect(message == "The model `sandbox-missing-model` does not exist or you do not have access to it.")
            }
        }
    }

    @Test func slowStreamCueSpacesEvents() throws {
        let (s, port) = try makeSandbox { $0.slowStreamGapMillis = 250 }
        defer { s.stop() }
        let r = try post(port, "/v1/chat/completions", #"{"model":"sandbox-slow-stream","stream":true,"messages":[{"role":"user","content":"a b"}]}"#)
        let times = r.chunks.filter { !$0.bytes.isEmpty }.map(\.atMillis)
        #expect(times.count >= 6)
        let gaps = zip(times.dropFirst(), times).map { $0 - $1 }
        #expect(gaps.allSatisfy { $0 >= 200 }, "gaps \(gaps)")
        let rr = try post(port, "/v1/responses", #"{"model":"sandbox-slow-stream","input":"a","stream":true}"#)
        let t2 = rr.chunks.filter { !$0.bytes.isEmpty }.map(\.atMillis)
        #expect(t2.count >= 8 && (t2.last! - t2.first!) >= UInt64(200 * (t2.count - 1)))
    }

    @Test func embeddingsFloatsAndBase64Agree() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let f = object(try post(port, "/v1/embeddings", #"{"model":"text-embedding-3-small","input":["alpha","beta gamma"],"dimensions":64}"#).body)
        #expect(f["object"] as? String == "list" && f["model"] as? String == "text-embedding-3-small")
        let data = f["data"] as? [[String: Any]] ?? []
        #expect(data.count == 2 && data.map { $0["index"] as? Int } == [0, 1] && data.allSatisfy { $0["object"] as? String == "embedding" })
        let v0 = (data.first?["embedding"] as? [Double]) ?? []
        #expect(v0.count == 64)
        #expect(abs(v0.reduce(0) { $0 + $1 * $1 } - 1) < 1e-3, "unit length")
        let u = f["usage"] as? [String: Any]
        #expect((u?["prompt_tokens"] as? Int ?? 0) > 0 && u?["prompt_tokens"] as? Int == u?["total_tokens"] as? Int)
        let b = object(try post(port, "/v1/embeddings", #"{"model":"text-embedding-3-small","input":"alpha","dimensions":64,"encoding_format":"base64"}"#).body)
        let b64 = ((b["data"] as? [[String: Any]])?.first?["embedding"] as? String) ?? ""
        let raw = [UInt8](Data(base64Encoded: b64) ?? Data())
        #expect(raw.count == 64 * 4)
        let floats = stride(from: 0, to: raw.count, by: 4).map { i in
            Double(Float(bitPattern: UInt32(raw[i]) | UInt32(raw[i + 1]) << 8 | UInt32(raw[i + 2]) << 16 | UInt32(raw[i + 3]) << 24))
        }
        #expect(zip(floats, v0).allSatisfy { abs($0 - $1) < 1e-6 }, "same vector both ways")
        #expect(try post(port, "/v1/embeddings", #"{"model":"m","input":[]}"#).status == 400)
        #expect(try post(port, "/v1/embeddings", #"{"model":"m","input":"x","dimensions":99999}"#).status == 400)
    }

    @Test func imagesAsURLOrBase64() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let u = object(try post(port, "/v1/images/generations", #"{"model":"dall-e-3","prompt":"a red fox","n":2}"#).body)
        let data = u["data"] as? [[String: Any]] ?? []
        #expect(data.count == 2 && u["usage"] == nil && (u["created"] as? Int ?? 0) > 0)
        let url = data.first?["url"] as? String ?? ""
        let path = url.replacingOccurrences(of: "http://127.0.0.1:\(port)", with: "")
        #expect(path.hasPrefix("/files/images/"))
        let png = try RawHTTPClient.request(port: port, method: "GET", path: path)  // no key, like a CDN link
        #expect(png.status == 200 && png.header("content-type") == "image/png")
        #expect(Array(png.body.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        #expect(try RawHTTPClient.request(port: port, method: "GET", path: "/files/images/nothex.png").status == 404)

        let g = object(try post(port, "/v1/images/generations", #"{"model":"gpt-image-1","prompt":"a red fox"}"#).body)
        let b64 = ((g["data"] as? [[String: Any]])?.first?["b64_json"] as? String) ?? ""
        // Same prompt, same picture: the b64_json is the very PNG the URL served.
        #expect([UInt8](Data(base64Encoded: b64) ?? Data()) == png.body)
        let usage = g["usage"] as? [String: Any]
        #expect((usage?["input_tokens"] as? Int ?? 0) > 0 && usage?["input_tokens_details"] is [String: Any])
        #expect(usage?["total_tokens"] as? Int == (usage?["input_tokens"] as? Int ?? 0) + (usage?["output_tokens"] as? Int ?? 0))
        #expect(try post(port, "/v1/images/generations", #"{"model":"dall-e-3","prompt":"x","n":11}"#).status == 400)
        #expect(try post(port, "/v1/images/generations", #"{"model":"dall-e-3"}"#).status == 400)
    }

    @Test func moderationsFlagCues() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let o = object(try post(port, "/v1/moderations", #"{"input":["a nsfw picture","a calm lake"]}"#).body)
        #expect((o["id"] as? String)?.hasPrefix("modr-") == true && o["model"] as? String == "omni-moderation-latest")
        let results = o["results"] as? [[String: Any]] ?? []
        #expect(results.count == 2)
        #expect(results.map { $0["flagged"] as? Bool } == [true, false])
        let cats = results.first?["categories"] as? [String: Bool] ?? [:]
        #expect(cats.count == 13 && cats["sexual"] == true && cats["violence"] == false && cats["self-harm/intent"] == false)
        #expect((results.first?["category_scores"] as? [String: Double])?["sexual"] ?? 0 > 0.5)
        #expect((results.first?["category_applied_input_types"] as? [String: [String]])?.count == 13)
        #expect(o["usage"] == nil)
    }

    @Test func speechIsBinaryAudio() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let mp3 = try post(port, "/v1/audio/speech", #"{"model":"tts-1","input":"hello world","voice":"alloy"}"#)
        #expect(mp3.status == 200 && mp3.header("content-type") == "audio/mpeg")
        #expect(Array(mp3.body.prefix(4)) == [0xFF, 0xFB, 0x10, 0xC0] && mp3.body.count % 104 == 0 && mp3.body.count >= 104 * 30)
        let wav = try post(port, "/v1/audio/speech", #"{"model":"tts-1","input":"hello world","voice":"alloy","response_format":"wav"}"#)
        #expect(wav.header("content-type") == "audio/wav")
        #expect(String(decoding: wav.body.prefix(4), as: UTF8.self) == "RIFF" && String(decoding: wav.body[8..<12], as: UTF8.self) == "WAVE")
        let dataLen = Int(wav.body[40]) | Int(wav.body[41]) << 8 | Int(wav.body[42]) << 16 | Int(wav.body[43]) << 24
        #expect(dataLen == wav.body.count - 44 && dataLen == 2 * 24_000 * 880 / 1000)
        let pcm = try post(port, "/v1/audio/speech", #"{"model":"tts-1","input":"hello world","voice":"alloy","response_format":"pcm"}"#)
        #expect(pcm.body.count == dataLen && Array(pcm.body) == Array(wav.body[44...]))
        #expect(try post(port, "/v1/audio/speech", #"{"model":"tts-1","input":"x","voice":"alloy","response_format":"opus"}"#).status == 400)
        #expect(try post(port, "/v1/audio/speech", #"{"model":"tts-1","input":"x"}"#).status == 400)
    }

    @Test func transcriptionsFromMultipart() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        func send(_ model: String, _ file: [UInt8]?, _ format: String? = nil) throws -> RawResponse {
            let (body, ct) = multipart(model: model, file: file, format: format)
            return try RawHTTPClient.request(port: port, method: "POST", path: "/v1/audio/transcriptions",
                                             headers: [("Authorization", "Bearer \(key)"), ("Content-Type", ct)], body: body)
        }
        let audio = [UInt8](repeating: 9, count: 48_000)
        let j = object(try send("gpt-4o-transcribe", audio).body)
        #expect(j["text"] as? String == "Sandbox transcription of hello.wav (48000 bytes).")
        let u = j["usage"] as? [String: Any]
        #expect(u?["type"] as? String == "tokens" && u?["total_tokens"] as? Int == (u?["input_tokens"] as? Int ?? 0) + (u?["output_tokens"] as? Int ?? 0))
        let w = object(try send("whisper-1", audio).body)["usage"] as? [String: Any]
        #expect(w?["type"] as? String == "duration" && w?["seconds"] as? Int == 3)
        let t = try send("whisper-1", audio, "text")
        #expect(t.header("content-type")?.hasPrefix("text/plain") == true && t.text == "Sandbox transcription of hello.wav (48000 bytes).\n")
        let v = object(try send("whisper-1", audio, "verbose_json").body)
        #expect(v["task"] as? String == "transcribe" && (v["segments"] as? [Any])?.count == 1)
        #expect(try send("whisper-1", nil).status == 400)
        #expect(try send("whisper-1", audio, "xml").status == 400)
        #expect(try post(port, "/v1/audio/transcriptions", #"{"model":"whisper-1"}"#).status == 400)
    }
}
