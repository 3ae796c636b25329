import HTTPWire
import Store
import Testing
import Translation
import Upstream
@testable import Gateway

/// Each endpoint's upstream hooks, driven by hand with plain values: no socket, no loop, no
/// upstream. What they decide is what the engine does.
let hookKey = "sk-hookTEST-0123456789abcdefKEY"

func hookSnapshot(_ tweak: (inout GatewayConfig) -> Void = { _ in }) -> ConfigSnapshot {
    var c = GatewayConfig()
    c.upstream.baseURL = "http://upstream.test"
    c.upstream.apiKey = hookKey
    tweak(&c)
    return ConfigSnapshot(config: c, generation: 1)
}

func head(_ status: Int, _ fields: [(String, String)] = []) -> UpstreamResponseHead {
    UpstreamResponseHead(status: status, headers: HTTPHeaders(fields.map { HTTPField(name: $0.0, value: $0.1) }), httpVersion: 1)
}

func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Runs a stream through hooks the way the engine does: filter every chunk, then the ending.
func stream<H: UpstreamHooks>(_ hooks: inout H, _ chunks: [String], error: UpstreamError? = nil) -> (out: String, ending: StreamEnding) {
    var out: [UInt8] = []
    for c in chunks { _ = bytes(c).withUnsafeBytes { hooks.filter($0) { out.append(contentsOf: $0) } } }
    hooks.flush { out.append(contentsOf: $0) }
    let ending = hooks.streamEnded(error)
    return (String(decoding: out, as: UTF8.self), ending)
}

extension Outcome {
    var failure: APIError? { if case .fail(let e, _) = self { return e }; return nil }
    var valueOrNil: Value? { if case .value(let v) = self { return v }; return nil }
    var json: (status: Int, body: String)? {
        if case .json(let s, let b, _) = self { return (s, String(decoding: b, as: UTF8.self)) }
        return nil
    }
}

@Suite struct ChatHookTests {
    let snap = hookSnapshot { $0.videos.models = ["sora-2"] }

    func make(_ body: String, team: GatewayConfig.Team? = nil) -> Result<ChatHooks, APIError> {
        ChatHooks.make(body: bytes(body), callerHeaders: ["Content-Type": "text/plain", "Authorization": "Bearer team"],
                       requestID: "req_1", team: team, snapshot: snap)
    }

    @Test func theCallersBodyIsCheckedBeforeAnythingIsSent() {
        let cases: [(String, String)] = [
            ("not json", "invalid_json"),
            ("[1]", "invalid_json"),
            (#"{"messages":[]}"#, "missing_model"),
            (#"{"model":"","messages":[]}"#, "missing_model"),
            (#"{"model":"sora-2","messages":[]}"#, "video_model_on_chat"),
        ]
        for (body, code) in cases {
            guard case .failure(let e) = make(body) else { Issue.record("\(body) passed"); continue }
            #expect(e.code == code, "\(body)")
            #expect(e.status == 400)
        }
        let team = GatewayConfig.Team(name: "t", tokens: [], models: ["gpt-4o-mini"])
        guard case .failure(let e) = make(#"{"model":"gpt-4o","messages":[]}"#, team: team) else { Issue.record("allow-list ignored"); return }
        #expect(e.status == 403 && e.code == "model_not_allowed" && e.param == "model")
    }

    @Test func theUpstreamRequestCarriesTheBodyAsIsAndTheKeyOnlyInTheSharedBlock() throws {
        let plain = #"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#
        #expect(try make(plain).get().makeRequest().get().body == bytes(plain))
        // A stream always asks the upstream for usage (Veil needs the counts): only that member changes.
        let body = #"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
        let h = try make(body).get()
        let r = try h.makeRequest().get()
        #expect(r.url == "http://upstream.test/v1/chat/completions")
        #expect(r.body == bytes(#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}"#))
        #expect(!r.headers.contains { $0.name.lowercased() == "authorization" })
        #expect(r.sharedHeaders?.fields.first { $0.name == "authorization" }?.value == "Bearer \(hookKey)")
        #expect(h.stream && h.model == "gpt-4o-mini")
        #expect(r.receiveBufferBytes == ChatHooks.streamReceiveBufferBytes)
    }

    @Test func anEventStreamIsStreamedAndItsUsageRead() throws {
        var h = try make(#"{"model":"m","stream":true,"messages":[]}"#).get()
        guard case .stream(let status, let headers) = h.onHead(head(200, [("Content-Type", "text/event-stream"), ("X-Internal", "no")])) else {
            Issue.record("not streamed"); return
        }
        #expect(status == 200)
        #expect(headers["cache-control"] == "no-cache" && headers["x-accel-buffering"] == "no")
        #expect(headers["x-internal"] == nil)
        let events = ["data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
                      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n", "data: [DONE]\n\n"]
        let (out, ending) = stream(&h, events)
        // The caller did not ask for the usage chunk: it is read, then removed; every other byte as sent.
        #expect(out == events[0] + events[2])
        guard case .end = ending else { Issue.record("\(ending)"); return }
        #expect(h.usage == Usage(promptTokens: 3, completionTokens: 2, totalTokens: 5))
        // One who asked gets it.
        var asked = try make(#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#).get()
        _ = asked.onHead(head(200, [("content-type", "text/event-stream")]))
        #expect(stream(&asked, events).out == events.joined())
    }

    @Test func ambiguousMembersAreRefusedNamingThem() {
        for (body, param) in [(#"{"model":"a","MODEL":"b","messages":[]}"#, "MODEL"), (#"{"model":"a","Model":"b","messages":[]}"#, "Model"),
                              (#"{"model":"a","model":"b","messages":[]}"#, "model"), (#"{"model":"a","Stream":true,"messages":[]}"#, "Stream"),
                              (#"{"model":"a","stream":true,"stream_options":{"include_usage":false,"INCLUDE_USAGE":true},"messages":[]}"#, "stream_options.INCLUDE_USAGE")] {
            guard case .failure(let e) = make(body) else { Issue.record("\(body) passed"); continue }
            #expect(e.status == 400 && e.type == "invalid_request_error" && e.code == "ambiguous_member", "\(body)")
            #expect(e.param == param, "\(body): \(e.param ?? "nil")")
        }
    }

    @Test func aKeyEscapedInsideAnEventNeverReachesTheCaller() throws {
        var h = try make(#"{"model":"m","stream":true,"messages":[]}"#).get()
        _ = h.onHead(head(200, [("content-type", "text/event-stream")]))
        #expect(h.redactsStream)
        let escaped = hookKey.unicodeScalars.map { String(format: "\\u%04x", $0.value) }.joined()
        let (out, _) = stream(&h, ["data: {\"choices\":[{\"delta\":{\"content\":\"\(escaped)\"}}]}\n\n", "data: [DONE]\n\n"])
        #expect(!out.contains(hookKey) && !out.contains(escaped))
        #expect(out.contains("[redacted]"))
    }

    @Test func aStreamCutOrWithoutDoneEndsWithAnErrorEvent() throws {
        var h = try make(#"{"model":"m","stream":true,"messages":[]}"#).get()
        _ = h.onHead(head(200, [("content-type", "text/event-stream")]))
        guard case .endWith(let event, let code) = stream(&h, ["data: {}\n\n"]).ending else { Issue.record("no error event"); return }
        #expect(code == "upstream_stream_incomplete")
        #expect(String(decoding: event, as: UTF8.self).hasPrefix("data: {\"error\":"))
        var cut = try make(#"{"model":"m","stream":true,"messages":[]}"#).get()
        _ = cut.onHead(head(200, [("content-type", "text/event-stream")]))
        guard case .endWith(_, let c2) = stream(&cut, ["data: {}\n\n"], error: .broken("reset")).ending else { Issue.record("no error event"); return }
        #expect(c2 == "upstream_broken")
        var gone = try make(#"{"model":"m","stream":true,"messages":[]}"#).get()
        _ = gone.onHead(head(200, [("content-type", "text/event-stream")]))
        guard case .abort = stream(&gone, [], error: .cancelled).ending else { Issue.record("a client that left gets no event"); return }
    }

    @Test func bufferedAnswersAreCheckedNeverRelayedRaw() throws {
        func finish(_ status: Int, _ body: String) throws -> Outcome<Never> {
            var h = try make(#"{"model":"m","messages":[]}"#).get()
            guard case .buffer = h.onHead(head(status, [("content-type", "application/json")])) else { throw APIError(0, "not buffered") }
            return h.finish(UpstreamAnswer(head: head(status), body: bytes(body)))
        }
        let ok = try finish(200, #"{"id":"c","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#)
        #expect(ok.json?.status == 200)
        #expect(try finish(200, "<html>oops</html>").failure?.status == 502)
        #expect(try finish(200, #"{"x":"sk-hook\u0054EST-0123456789abcdefKEY"}"#).failure?.code == "upstream_invalid_response")
        let limited = try finish(429, #"{"error":{"message":"slow down"}}"#).failure
        #expect(limited?.status == 429 && limited?.message.contains("slow down") == true)
        let keyRefused = try finish(401, #"{"error":{"message":"无效的令牌 \#(hookKey)"}}"#).failure
        #expect(keyRefused?.status == 502 && keyRefused?.code == "upstream_auth_failed")
        #expect(keyRefused?.message.contains(hookKey) == false)
        #expect(try finish(403, #"{"error":{"message":"该令牌额度已用尽"}}"#).failure?.code == "upstream_auth_failed")
        #expect(try finish(403, #"{"error":{"message":"content policy"}}"#).failure?.status == 403)
        #expect(try finish(503, "down").failure?.status == 503)
    }
}

@Suite struct VideoHookTests {
    let snap = hookSnapshot()
    let spec = VideoSpec(prompt: "a cat", model: "sora-2", size: "720x1280", seconds: "4", image: nil)

    @Test func creationPutsTheKeyInTheSizeFieldAndReadsTheTask() throws {
        var h = VideoCreateHooks(snap, requestID: "req_1", spec: spec, now: 1_000)
        let r = try h.makeRequest().get()
        let text = String(decoding: r.body, as: UTF8.self)
        #expect(text.contains("name=\"size\"\r\n\r\n\(hookKey)\r\n"))
        #expect(r.url == "http://upstream.test/v1/videos")
        _ = h.onHead(head(200))
        let created = h.finish(UpstreamAnswer(head: head(200), body: bytes(#"{"id":"4078","status":"queued","progress":0,"created_at":900}"#))).valueOrNil
        #expect(created?.upstreamID == "4078")
        #expect(created?.object.id == "video_4078" && created?.object.status == .queued && created?.object.size == "720x1280")
        var bad = VideoCreateHooks(snap, requestID: "r", spec: spec, now: 1)
        _ = bad.onHead(head(200))
        #expect(bad.finish(UpstreamAnswer(head: head(200), body: bytes(#"{"status":"queued"}"#))).failure?.status == 502)
        var refused = VideoCreateHooks(snap, requestID: "r", spec: spec, now: 1)
        _ = refused.onHead(head(400))
        #expect(refused.finish(UpstreamAnswer(head: head(400), body: bytes(#"{"error":{"message":"bad prompt"}}"#))).failure?.status == 400)
    }

    @Test func pollTranslatesTheSwappedFieldsAndModeration() {
        let record = VideoRecord(id: "video_4118", upstreamID: "4118", team: "t", model: "sora-2", prompt: "p", size: "720x1280", seconds: "4", createdAt: 1)
        var h = VideoPollHooks(snap, requestID: "r", record: record, now: 2)
        #expect(h.request.url == "http://upstream.test/v1/videos/4118")
        #expect(!h.cancelWhenClientLeaves)                  // shared by every poller
        _ = h.onHead(head(200))
        let done = h.finish(UpstreamAnswer(head: head(200), body: bytes(#"{"id":"4118","url":"https://clean/x.mp4","size":"https://wm/x.mp4","model":"sora-2-yijia","status":"completed","quality":"standard","progress":100}"#))).valueOrNil
        #expect(done?.videoURL == "https://clean/x.mp4" && done?.watermarkedVideoURL == "https://wm/x.mp4" && done?.model == "sora-2")
        var m = VideoPollHooks(snap, requestID: "r", record: record, now: 2)
        _ = m.onHead(head(200))
        let blocked = m.finish(UpstreamAnswer(head: head(200), body: bytes(#"{"id":"4118","url":"","size":"1024x1808","status":"completed","quality":"此内容可能违反","progress":100}"#))).valueOrNil
        #expect(blocked?.status == .failed && blocked?.error?.code == "moderation_blocked")
        var e = VideoPollHooks(snap, requestID: "r", record: record, now: 2)
        _ = e.onHead(head(500))
        #expect(e.finish(UpstreamAnswer(head: head(500), body: [])).failure?.status == 502)
    }

    @Test func contentStreamsAllowedHeadersAndMapsTheHostsRefusals() {
        var h = VideoContentHooks(url: "https://files/x.mp4", range: "bytes=0-9")
        #expect(h.request.headers.contains { $0.name == "range" && $0.value == "bytes=0-9" })
        #expect(h.request.sharedHeaders == nil)              // never the key to the file host
        guard case .stream(let s, let fields) = h.onHead(head(206, [("Content-Range", "bytes 0-9/100"), ("Set-Cookie", "x"), ("ETag", "\"e\"")])) else {
            Issue.record("not streamed"); return
        }
        #expect(s == 206 && fields["content-range"] == "bytes 0-9/100" && fields["etag"] == "\"e\"" && fields["set-cookie"] == nil)
        #expect(fields["accept-ranges"] == "bytes")
        for (status, code) in [(403, 502), (404, 502), (410, 502), (500, 502), (416, 416)] {
            var x = VideoContentHooks(url: "u", range: nil)
            guard case .fail(let e, _) = x.onHead(head(status)) else { Issue.record("\(status) streamed"); continue }
            #expect(e.status == code, "\(status)")
        }
        var cut = VideoContentHooks(url: "u", range: nil)
        guard case .abort = cut.streamEnded(.broken("reset")) else { Issue.record("a cut file looked complete"); return }
        #expect(VideoContentHooks.isByteRange("bytes=0-") && VideoContentHooks.isByteRange("bytes=-5") && VideoContentHooks.isByteRange("bytes=1-2"))
        #expect(!VideoContentHooks.isByteRange("bytes=2-1") && !VideoContentHooks.isByteRange("bytes=0-1,3-4") && !VideoContentHooks.isByteRange("items=0-1"))
    }

    @Test func imageFetchIsStrictAndSpeaksOfTheCallersURL() {
        var settings = GatewayConfig.VideoSettings()
        settings.maxImageBytes = 2_000
        var h = ImageFetchHooks(url: "https://images.test/a.png", settings: settings)
        #expect(h.request.refusePrivateAddresses && h.request.allowedSchemes == ["https"] && h.request.maxResponseBytes == 2_000)
        #expect(h.request.sharedHeaders == nil)
        guard case .buffer(let limit) = h.onHead(head(200)) else { Issue.record("not buffered"); return }
        #expect(limit == 2_000)
        let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0]
        #expect(h.finish(UpstreamAnswer(head: head(200), body: png)).valueOrNil == png)
        #expect(h.finish(UpstreamAnswer(head: head(200), body: bytes("<html>"))).failure?.code == "invalid_image_type")
        var notFound = ImageFetchHooks(url: "https://images.test/a.png", settings: settings)
        _ = notFound.onHead(head(404))
        #expect(notFound.finish(UpstreamAnswer(head: head(404), body: [])).failure?.code == "image_url_unreachable")
        #expect(h.failure(.refused("10.0.0.1 is private")).code == "image_url_refused")
        #expect(h.failure(.tooLarge).code == "image_too_large")
        #expect(h.failure(.timeout("slow")).status == 400)
    }
}

@Suite struct CharacterHookTests {
    let snap = hookSnapshot()

    @Test func creationReadsOnlyTheIdAndStatus() throws {
        let input = try CharacterCreateInput.parse(body: bytes(#"{"video_id":"video_4","name":"alice","description":"d","timestamps":"0-3"}"#), contentType: "application/json").get()
        var h = CharacterCreateHooks(snap, requestID: "r", input: input)
        #expect(!h.cancelWhenClientLeaves)
        _ = h.onHead(head(200))
        let c = h.finish(UpstreamAnswer(head: head(200), body: bytes(#"{"success":true,"data":{"id":"58","api_key":"\#(hookKey)","uuid":"alice","status":0}}"#))).valueOrNil
        #expect(c?.id == "58")
        var no = CharacterCreateHooks(snap, requestID: "r", input: input)
        _ = no.onHead(head(200))
        let refused = no.finish(UpstreamAnswer(head: head(200), body: bytes(#"{"success":false,"message":"bad \#(hookKey)"}"#))).failure
        #expect(refused?.status == 400 && refused?.message.contains(hookKey) == false)
    }

    @Test func theListRefreshesOnlyProcessingCharacters() {
        let records = [
            CharacterRecord(id: "char_1", upstreamID: "1", team: "t", name: "a1", description: "", videoID: "video_1", start: 0, end: 1, status: "processing", createdAt: 5),
            CharacterRecord(id: "char_2", upstreamID: "2", team: "t", name: "a2", description: "", videoID: "video_1", start: 0, end: 1, status: "ready", createdAt: 5),
        ]
        let listed = [UpstreamCharacter(id: "1", status: 999, createTime: "2025-11-06 16:27:24"),
                      UpstreamCharacter(id: "2", status: -1), UpstreamCharacter(id: "3", status: 999)]
        let merged = CharacterListHooks.merge(records, with: listed, zoneOffset: 8 * 3600)
        #expect(merged.records.map(\.status) == ["ready", "ready"])
        #expect(merged.updates == [CharacterUpdate(id: "char_1", status: "ready", createdAt: 1_762_417_644)])
    }
}
