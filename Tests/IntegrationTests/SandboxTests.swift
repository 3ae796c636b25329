import Foundation
import Glibc
import Sandbox
import Testing

private let key = "sk-sandboxTESTkey0123456789abcdefXYZ"

private func makeSandbox(_ tweak: (inout SandboxConfig) -> Void = { _ in }) throws -> (Sandbox, UInt16) {
    var c = SandboxConfig(apiKey: key)
    c.videoPollsToComplete = 2
    c.sseChunkDelayMillis = 20
    c.videoFileBytes = 300_000
    tweak(&c)
    let s = Sandbox(config: c)
    let port = try s.start()
    return (s, port)
}

private func auth(_ k: String = key) -> [(String, String)] { [("Authorization", "Bearer \(k)")] }

private func json(_ r: RawResponse) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(r.body))) as? [String: Any] ?? [:]
}

private func createVideo(_ port: UInt16, prompt: String, size: String = key, model: String = "sora-2") throws -> RawResponse {
    var m = MultipartBuilder()
    m.field("prompt", prompt)
    m.field("model", model)
    m.field("size", size)
    m.file("input_reference", filename: "start.jpg", contentType: "image/jpeg", bytes: [0xFF, 0xD8, 0xFF, 0xE0] + Array(repeating: 7, count: 1000))
    return try RawHTTPClient.request(port: port, method: "POST", path: "/v1/videos",
                                     headers: auth() + [("Content-Type", m.contentType)], body: m.finished())
}

private func poll(_ port: UInt16, _ id: String) throws -> [String: Any] {
    let r = try RawHTTPClient.request(port: port, method: "GET", path: "/v1/videos/\(id)", headers: auth())
    #expect(r.status == 200)
    return json(r)
}

/// Polls until the video leaves `processing`.
private func finalState(_ port: UInt16, _ id: String) throws -> [String: Any] {
    for _ in 0..<10 {
        let v = try poll(port, id)
        if v["status"] as? String != "processing" { return v }
    }
    Issue.record("video \(id) never completed")
    return [:]
}

private func pathOf(_ url: String, port: UInt16) -> String {
    let base = "http://127.0.0.1:\(port)"
    return url.hasPrefix(base) ? String(url.dropFirst(base.count)) : url
}

private func chatBody(model: String, stream: Bool, text: String = "hello there sandbox friend") -> [UInt8] {
    Array("{\"model\":\"\(model)\",\"messages\":[{\"role\":\"user\",\"content\":\"\(text)\"}],\"stream\":\(stream)}".utf8)
}

/// `data:` payloads of an SSE body.
private func sseData(_ body: [UInt8]) -> [String] {
    String(decoding: body, as: UTF8.self).split(separator: "\n").filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
}

@Suite struct SandboxTests {
    @Test func refusesWrongOrMissingKey() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let wrong = try RawHTTPClient.request(port: port, method: "GET", path: "/v1/models", headers: auth("sk-wrong"))
        #expect(wrong.status == 401)
        let err = json(wrong)["error"] as? [String: Any]
        #expect((err?["message"] as? String)?.hasPrefix("无效的令牌") == true)
        #expect(err?["type"] as? String == "new_api_error")
        #expect(!wrong.text.contains("sk-wrong"))
        let none = try RawHTTPClient.request(port: port, method: "GET", path: "/v1/models")
        #expect(none.status == 401)
        let ok = try RawHTTPClient.request(port: port, method: "GET", path: "/v1/models", headers: auth())
        #expect(ok.status == 200)
        let ids = (json(ok)["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String } ?? []
        #expect(ids.contains("gpt-3.5-turbo") && ids.contains("gpt-4o-mini") && ids.contains("sora-2-yijia"))
        let unknown = try RawHTTPClient.request(port: port, method: "GET", path: "/v1/nothing", headers: auth())
        #expect(unknown.status == 404)
        #expect(s.count("GET", "/v1/models") == 3)
        #expect(s.requests(matching: "/v1/models").first?.header("authorization") == "Bearer sk-wrong")
    }

    @Test func videoCreateDemandsKeyInSize() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let r = try createVideo(port, prompt: "a cat on a skateboard\r\n第二行")
        #expect(r.status == 200)
        let v = json(r)
        #expect(v["id"] as? String == "4000")
        #expect(v["status"] as? String == "queued")
        #expect(v["object"] as? String == "video")
        #expect(v["size"] as? String == "720x720")
        #expect(v["progress"] as? Int == 0)
        let rec = s.requests(matching: "/v1/videos").last
        #expect(rec?.form["size"] == key)
        #expect(rec?.form["prompt"] == "a cat on a skateboard\r\n第二行")
        #expect(rec?.files["input_reference"]?.byteCount == 1004)
        #expect(rec?.files["input_reference"]?.filename == "start.jpg")

        let noKey = try createVideo(port, prompt: "a cat", size: "720x720")
        #expect(noKey.status == 401)
        #expect(noKey.text.contains("size"))
        var m = MultipartBuilder()
        m.field("model", "sora-2")
        m.field("size", key)
        let noPrompt = try RawHTTPClient.request(port: port, method: "POST", path: "/v1/videos",
                                                 headers: auth() + [("Content-Type", m.contentType)], body: m.finished())
        #expect(noPrompt.status == 400)
        let asJSON = try RawHTTPClient.request(port: port, method: "POST", path: "/v1/videos",
                                               headers: auth() + [("Content-Type", "application/json")], body: Array("{\"prompt\":\"x\"}".utf8))
        #expect(asJSON.status == 400)
        let second = try createVideo(port, prompt: "another")
        #expect(json(second)["id"] as? String == "4001")
    }

    @Test func pollingCompletesWithSwappedURLs() throws {
        let (s, port) = try makeSandbox { $0.videoPollsToComplete = 3 }
        defer { s.stop() }
        let id = json(try createVideo(port, prompt: "a lighthouse at dawn"))["id"] as! String
        let p1 = try poll(port, id)
        #expect(p1["status"] as? String == "processing")
        let p2 = try poll(port, id)
        #expect(p2["status"] as? String == "processing")
        #expect((p2["progress"] as? Int ?? 0) > (p1["progress"] as? Int ?? 0))
        // The doc lists Content-Type and a body as required on this GET: accepted too.
        let withBody = try RawHTTPClient.request(port: port, method: "GET", path: "/v1/videos/\(id)",
                                                 headers: auth() + [("Content-Type", "application/json")], body: Array("string".utf8))
        #expect(withBody.status == 200)
        let done = json(withBody)
        #expect(done["status"] as? String == "completed")
        #expect(done["progress"] as? Int == 100)
        #expect(done["model"] as? String == "sora-2-yijia")
        #expect(done["quality"] as? String == "standard")
        #expect(done["seconds"] as? String == "2")
        let url = done["url"] as? String ?? ""
        let size = done["size"] as? String ?? ""
        #expect(url.contains("/files/\(id)/clean.mp4?se="))
        #expect(size.contains("/files/\(id)/wm.mp4?se="))
        #expect(url.contains("sig="))
        // Stable once completed.
        #expect(try poll(port, id)["url"] as? String == url)
        let missing = try RawHTTPClient.request(port: port, method: "GET", path: "/v1/videos/99999", headers: auth())
        #expect(missing.status == 404)
    }

    @Test func promptCuesDecideOutcome() throws {
        let (s, port) = try makeSandbox { $0.videoPollsToComplete = 1 }
        defer { s.stop() }
        let nsfw = try finalState(port, json(try createVideo(port, prompt: "something NSFW here"))["id"] as! String)
        #expect(nsfw["status"] as? String == "completed")
        #expect(nsfw["url"] as? String == "")
        #expect(nsfw["size"] as? String == "1024x1808")
        #expect(nsfw["quality"] as? String == "此内容可能违反关于裸露、性内容或色情内容的相关规定。")
        let fail = try finalState(port, json(try createVideo(port, prompt: "please fail"))["id"] as! String)
        #expect(fail["status"] as? String == "error")
        let nourl = try finalState(port, json(try createVideo(port, prompt: "nourl case"))["id"] as! String)
        #expect(nourl["status"] as? String == "completed")
        #expect(nourl["url"] as? String == "")
        #expect(nourl["quality"] as? String == "standard")
        #expect((nourl["size"] as? String)?.contains("x") == true)
        #expect((nourl["size"] as? String)?.hasPrefix("http") == false)
    }

    @Test func fileDownloadsAndRanges() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let id = json(try createVideo(port, prompt: "waves"))["id"] as! String
        let done = try finalState(port, id)
        let clean = pathOf(done["url"] as! String, port: port)
        let wm = pathOf(done["size"] as! String, port: port)
        let total = 300_000

        let full = try RawHTTPClient.request(port: port, method: "GET", path: clean)
        #expect(full.status == 200)
        #expect(full.header("content-type") == "video/mp4")
        #expect(full.header("accept-ranges") == "bytes")
        #expect(full.header("content-length") == String(total))
        #expect(full.body.count == total)
        #expect(full.body == s.expectedFileBytes(videoID: id, variant: "clean"))
        #expect(Array(full.body[4..<8]) == Array("ftyp".utf8))
        let wmFull = try RawHTTPClient.request(port: port, method: "GET", path: wm)
        #expect(wmFull.status == 200)
        #expect(wmFull.body.count == total)
        #expect(wmFull.body != full.body)

        let mid = try RawHTTPClient.request(port: port, method: "GET", path: clean, headers: [("Range", "bytes=100-199")])
        #expect(mid.status == 206)
        #expect(mid.header("content-range") == "bytes 100-199/\(total)")
        #expect(mid.body == Array(full.body[100..<200]))
        let open = try RawHTTPClient.request(port: port, method: "GET", path: clean, headers: [("Range", "bytes=299000-")])
        #expect(open.status == 206)
        #expect(open.header("content-range") == "bytes 299000-299999/\(total)")
        #expect(open.body == Array(full.body[299_000...]))
        let suffix = try RawHTTPClient.request(port: port, method: "GET", path: clean, headers: [("Range", "bytes=-500")])
        #expect(suffix.status == 206)
        #expect(suffix.body == Array(full.body[(total - 500)...]))
        let bad = try RawHTTPClient.request(port: port, method: "GET", path: clean, headers: [("Range", "bytes=300000-")])
        #expect(bad.status == 416)
        #expect(bad.header("content-range") == "bytes */\(total)")
    }

    @Test func unsignedOrExpiredFilesAreForbidden() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let unsigned = try RawHTTPClient.request(port: port, method: "GET", path: "/files/4000/clean.mp4")
        #expect(unsigned.status == 403)
        let valid = pathOf(s.signedFileURL(videoID: "4000", variant: "clean", expiresAt: Int64(Date().timeIntervalSince1970) + 600), port: port)
        #expect(try RawHTTPClient.request(port: port, method: "GET", path: valid, headers: [("Range", "bytes=0-9")]).status == 206)
        let tampered = valid.replacingOccurrences(of: "clean.mp4", with: "wm.mp4")
        #expect(try RawHTTPClient.request(port: port, method: "GET", path: tampered).status == 403)
        let expired = pathOf(s.signedFileURL(videoID: "4000", variant: "clean", expiresAt: Int64(Date().timeIntervalSince1970) - 5), port: port)
        let r = try RawHTTPClient.request(port: port, method: "GET", path: expired)
        #expect(r.status == 403)
        #expect(r.text.contains("AuthenticationFailed"))
    }

    @Test func chatStreamsInTimedChunks() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let r = try RawHTTPClient.request(port: port, method: "POST", path: "/v1/chat/completions",
                                          headers: auth() + [("Content-Type", "application/json")],
                                          body: chatBody(model: "gpt-3.5-turbo", stream: true))
        #expect(r.status == 200)
        #expect(r.header("content-type")?.hasPrefix("text/event-stream") == true)
        #expect(r.complete)
        let events = sseData(r.body)
        #expect(events.last == "[DONE]")
        #expect(events.count >= 8)
        #expect(r.chunks.count >= 6)
        if let first = r.chunks.first?.atMillis, let last = r.chunks.last?.atMillis {
            #expect(last - first >= UInt64((r.chunks.count - 2) * 15))
        }
        let objs = events.dropLast().map { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] ?? [:] }
        let stamps = objs.compactMap { ($0["sent_at_us"] as? NSNumber)?.int64Value }
        #expect(stamps.count == objs.count)
        #expect(zip(stamps, stamps.dropFirst()).allSatisfy { $1 - $0 >= 10_000 })
        let firstDelta = (objs.first?["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any]
        #expect(firstDelta?["role"] as? String == "assistant")
        let text = objs.compactMap { (($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])?["content"] as? String }.joined()
        #expect(text == "Sandbox reply to: hello there sandbox friend")
        let finish = objs.compactMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }
        #expect(finish == ["stop"])
        let usage = objs.last?["usage"] as? [String: Any]
        #expect(usage?["completion_tokens"] as? Int != nil)
        #expect((objs.last?["choices"] as? [Any])?.isEmpty == true)
    }

    @Test func chatNonStreamingAndErrors() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        let r = try RawHTTPClient.request(port: port, method: "POST", path: "/v1/chat/completions",
                                          headers: auth() + [("Content-Type", "application/json")], body: chatBody(model: "gpt-4o-mini", stream: false))
        #expect(r.status == 200)
        let c = json(r)
        #expect(c["object"] as? String == "chat.completion")
        #expect(((c["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String == "Sandbox reply to: hello there sandbox friend")
        #expect((c["usage"] as? [String: Any])?["total_tokens"] as? Int != nil)
        let noModel = try RawHTTPClient.request(port: port, method: "POST", path: "/v1/chat/completions",
                                                headers: auth(), body: Array("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}".utf8))
        #expect(noModel.status == 400)
        let echo = try RawHTTPClient.request(port: port, method: "POST", path: "/v1/chat/completions",
                                             headers: auth(), body: chatBody(model: "sandbox-echo-key", stream: false))
        #expect(echo.status == 401)
        #expect(echo.text.contains(key))
        #expect(echo.header("x-debug-authorization")?.contains(key) == true)
    }

    @Test func slowModelDelaysAnswer() throws {
        let (s, port) = try makeSandbox { $0.slowModelDelayMillis = 300 }
        defer { s.stop() }
        let t0 = RawHTTPClient.nowMillis()
        let r = try RawHTTPClient.request(port: port, method: "POST", path: "/v1/chat/completions",
                                          headers: auth(), body: chatBody(model: "gpt-4o-mini-slow", stream: false))
        #expect(r.status == 200)
        #expect(RawHTTPClient.nowMillis() - t0 >= 280)
    }

    @Test func charactersLeakKeyAndBecomeReady() throws {
        let (s, port) = try makeSandbox { $0.videoPollsToComplete = 1; $0.characterListsToReady = 1 }
        defer { s.stop() }
        func post(_ body: String) throws -> RawResponse {
            try RawHTTPClient.request(port: port, method: "POST", path: "/v1/characters",
                                      headers: auth() + [("Content-Type", "application/json")], body: Array(body.utf8))
        }
        func list() throws -> [[String: Any]] {
            let r = try RawHTTPClient.request(port: port, method: "GET", path: "/v1/characters", headers: auth())
            #expect(r.status == 200)
            return json(r)["data"] as? [[String: Any]] ?? []
        }
        let id = json(try createVideo(port, prompt: "a dancer"))["id"] as! String
        // Not completed yet.
        let early = try post("{\"instruction_value\":\"dancer\",\"timestamps\":\"0-3\",\"video_id\":\"\(id)\",\"uuid\":\"dancer1\"}")
        #expect(early.status == 400)
        #expect(json(early)["success"] as? Bool == false)
        _ = try finalState(port, id)
        let tooLong = try post("{\"instruction_value\":\"dancer\",\"timestamps\":\"0-5\",\"video_id\":\"\(id)\",\"uuid\":\"dancer1\"}")
        #expect(json(tooLong)["success"] as? Bool == false)
        let unknown = try post("{\"instruction_value\":\"dancer\",\"timestamps\":\"0-3\",\"video_id\":\"123\",\"uuid\":\"dancer1\"}")
        #expect(json(unknown)["success"] as? Bool == false)
        let ok = try post("{\"instruction_value\":\"dancer\",\"timestamps\":\"1-3\",\"video_id\":\"\(id)\",\"uuid\":\"dancer1\"}")
        #expect(ok.status == 200)
        let data = json(ok)["data"] as? [String: Any]
        #expect(json(ok)["success"] as? Bool == true)
        #expect(data?["api_key"] as? String == key)
        #expect(data?["status"] as? Int == 0)
        #expect((data?["gen_id"] as? String)?.hasPrefix("gen_") == true)
        let failing = try post("{\"instruction_value\":\"make it fail\",\"timestamps\":\"0-3\",\"video_id\":\"\(id)\",\"uuid\":\"bad1\"}")
        #expect(json(failing)["success"] as? Bool == true)

        let first = try list()
        #expect(first.contains { $0["id"] as? String == "58" && $0["uuid"] as? String == "123AMO2M" && $0["status"] as? Int == 999 })
        #expect(first.allSatisfy { $0["api_key"] as? String == key })
        let mine = first.first { $0["uuid"] as? String == "dancer1" }
        #expect(mine?["status"] as? Int == 0)
        #expect(mine?["token_id"] as? Int == 17)
        #expect(mine?["username"] as? String != nil)
        let ct = mine?["create_time"] as? String ?? ""
        #expect(ct.count == 19 && ct.dropFirst(10).first == " ")
        // UTC+8: the hour is 8 ahead of UTC.
        let utcHour = Calendar(identifier: .gregorian).dateComponents(in: TimeZone(identifier: "UTC")!, from: Date()).hour!
        let shown = Int(ct.dropFirst(11).prefix(2)) ?? -1
        #expect(shown == (utcHour + 8) % 24 || shown == (utcHour + 9) % 24)
        let second = try list()
        #expect(second.first { $0["uuid"] as? String == "dancer1" }?["status"] as? Int == 999)
        #expect(second.first { $0["uuid"] as? String == "bad1" }?["status"] as? Int == -1)
    }

    @Test func faultsMisbehaveOnce() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        func models() throws -> RawResponse {
            try RawHTTPClient.request(port: port, method: "GET", path: "/v1/models", headers: auth(), timeoutMillis: 2_000)
        }
        s.fault = .status(503, body: "{\"error\":{\"message\":\"upstream overloaded\",\"type\":\"new_api_error\"}}")
        #expect(try models().status == 503)
        #expect(try models().status == 200)

        s.fault = .reset
        #expect(throws: RawHTTPError.self) { try models() }

        s.fault = .resetMidBody
        let mid = try models()
        #expect(mid.status == 200 && !mid.complete)

        s.fault = .invalidJSON
        let inv = try models()
        #expect(inv.status == 200 && inv.complete)
        #expect((try? JSONSerialization.jsonObject(with: Data(inv.body))) == nil)

        s.fault = .hugeBody(2_000_000)
        let huge = try models()
        #expect(huge.body.count == 2_000_000 && huge.complete)

        s.fault = .echoKey
        let echo = try models()
        #expect(echo.status == 401 && echo.text.contains(key) && echo.header("x-debug-authorization") == "Bearer \(key)")

        s.inject(.cutStream, pathPrefix: "/v1/chat")
        #expect(try models().status == 200)  // the rule only matches chat
        let cut = try RawHTTPClient.request(port: port, method: "POST", path: "/v1/chat/completions",
                                            headers: auth(), body: chatBody(model: "gpt-3.5-turbo", stream: true))
        #expect(cut.status == 200)
        #expect(!cut.complete)
        #expect(!sseData(cut.body).contains("[DONE]"))
        #expect(sseData(cut.body).count == 2)

        s.fault = .stall
        let t0 = RawHTTPClient.nowMillis()
        #expect(throws: RawHTTPError.self) {
            try RawHTTPClient.request(port: port, method: "GET", path: "/v1/models", headers: auth(), timeoutMillis: 300)
        }
        #expect(RawHTTPClient.nowMillis() - t0 >= 250)
        #expect(s.fault == nil)
        #expect(try models().status == 200)
    }

    @Test func resetForgetsState() throws {
        let (s, port) = try makeSandbox()
        defer { s.stop() }
        _ = try createVideo(port, prompt: "x")
        #expect(s.count("POST", "/v1/videos") == 1)
        s.reset()
        #expect(s.count("POST", "/v1/videos") == 0)
        #expect(json(try createVideo(port, prompt: "y"))["id"] as? String == "4000")
    }

    @Test func bigFileWithSlowReaderHonoursBackPressure() throws {
        let total = 8 * 1024 * 1024
        let (s, port) = try makeSandbox { $0.videoFileBytes = total }
        defer { s.stop() }
        let url = pathOf(s.signedFileURL(videoID: "4242", variant: "wm", expiresAt: Int64(Date().timeIntervalSince1970) + 60), port: port)
        let r = try RawHTTPClient.request(port: port, method: "GET", path: url, pauseBeforeReadMillis: 300)
        #expect(r.status == 200 && r.complete)
        #expect(r.body.count == total)
        #expect(r.body == s.expectedFileBytes(videoID: "4242", variant: "wm"))
        #expect(s.openResponses == 0)
    }

    @Test func streamStopsWhenClientLeaves() throws {
        let (s, port) = try makeSandbox { $0.sseChunkDelayMillis = 30 }
        defer { s.stop() }
        let body = String(decoding: chatBody(model: "gpt-3.5-turbo", stream: true, text: "one two three four five six seven eight"), as: UTF8.self)
        let req = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(key)\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        try RawHTTPClient.abandon(port: port, request: req, afterBytes: 200)
        var waited = 0
        while s.clientDisconnects == 0 && waited < 2_000 { usleep(10_000); waited += 10 }
        #expect(s.clientDisconnects == 1)
        #expect(s.openResponses == 0)
        // The sandbox is still fine.
        #expect(try RawHTTPClient.request(port: port, method: "GET", path: "/v1/models", headers: auth()).status == 200)
    }

    @Test func timeModeCompletesAfterDelay() throws {
        let (s, port) = try makeSandbox { $0.videoMillisToComplete = 200; $0.videoPollsToComplete = 100 }
        defer { s.stop() }
        let id = json(try createVideo(port, prompt: "clock"))["id"] as! String
        #expect(try poll(port, id)["status"] as? String == "processing")
        usleep(250_000)
        #expect(try poll(port, id)["status"] as? String == "completed")
    }

    @Test func stopFreesThePortAndEndsStalls() throws {
        let (s, port) = try makeSandbox()
        s.fault = .stall
        let fd = try RawHTTPClient.connect(port: port, timeoutMillis: 2_000)
        defer { close(fd) }
        let req = Array("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        RawHTTPClient.sendAll(fd, req)
        var waited = 0
        while s.openResponses == 0 && waited < 2_000 { usleep(5_000); waited += 5 }
        #expect(s.openResponses == 1)
        s.stop()
        // The stalled connection was closed by stop(): the client sees EOF, not a timeout.
        var reader = RawHTTPClient.Reader(fd: fd)
        #expect(try reader.fill() == false)
        #expect(throws: RawHTTPError.self) { try RawHTTPClient.request(port: port, method: "GET", path: "/v1/models", timeoutMillis: 500) }
    }
}
