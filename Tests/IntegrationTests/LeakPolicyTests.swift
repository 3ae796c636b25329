import Foundation
import Inflate
import Sandbox
import Testing

/// The leak and policy holes an attacker found (a hostile upstream, a clever team), each through
/// the running gateway against a stand-in told to misbehave exactly so.
@Suite struct LeakPolicyTests {
    static func errorOf(_ r: RawResponse) -> [String: Any] { jsonObject(r)["error"] as? [String: Any] ?? [:] }

    /// `{"model":"A","MODEL":"B"}`: the upstream's Go decoder folds case and keeps the last, so it
    /// would run and bill B while Veil checked A. Every body Veil decides on refuses it, naming it.
    @Test func ambiguousMembersAreRefusedBeforeAnythingIsSent() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let cases: [(String, String, String)] = [
            ("/v1/chat/completions", #"{"model":"gpt-4o-mini","MODEL":"gpt-4o","messages":[]}"#, "MODEL"),
            ("/v1/chat/completions", #"{"model":"gpt-4o-mini","Model":"gpt-4o","messages":[]}"#, "Model"),
            ("/v1/chat/completions", #"{"model":"gpt-4o-mini","model":"gpt-4o","messages":[]}"#, "model"),
            ("/v1/chat/completions", #"{"model":"gpt-4o-mini","Stream":true,"messages":[]}"#, "Stream"),
            ("/v1/responses", #"{"model":"gpt-4o-mini","mOdel":"gpt-4o","input":"x"}"#, "mOdel"),
            ("/v1/embeddings", #"{"model":"text-embedding-3-small","model":"x","input":"x"}"#, "model"),
            ("/v1/videos", #"{"prompt":"a cat","PROMPT":"@someone","model":"sora-2"}"#, "PROMPT"),
            ("/v1/characters", #"{"video_id":"video_1","name":"a1","Name":"b2","description":"d","timestamps":"0-3"}"#, "Name"),
        ]
        for (path, body, param) in cases {
            let r = try h.post(path, team: "limited", json: body)
            #expect(r.status == 400, "\(path) \(body): \(r.text)")
            let e = Self.errorOf(r)
            #expect(e["type"] as? String == "invalid_request_error" && e["param"] as? String == param, "\(path) \(body): \(r.text)")
        }
        #expect(h.sandbox.requests(matching: "/v1/").isEmpty, "\(h.sandbox.requests().map(\.path))")
    }

    @Test func aKeyEscapedInsideAStreamEventOrCutInsideItNeverReachesTheCaller() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let escaped = h.upstreamKey.unicodeScalars.map { String(format: "\\u%04x", $0.value) }.joined()
        let mixed = String(h.upstreamKey.prefix(5)) + "\\u" + String(format: "%04x", h.upstreamKey.unicodeScalars.dropFirst(5).first!.value) + String(h.upstreamKey.dropFirst(6))
        for content in [escaped, mixed, h.upstreamKey.replacingOccurrences(of: "-", with: "\\u002d")] {
            let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"\(content)\"}}]}\n\ndata: [DONE]\n\n"
            h.sandbox.inject(.raw(status: 200, headers: ["content-type": "text/event-stream"], body: Array(sse.utf8)), pathPrefix: "/v1/chat/completions")
            let r = try h.post("/v1/chat/completions", json: #"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#)
            #expect(r.status == 200)
            #expect(!allBytes(r).contains(h.upstreamKey) && !r.text.contains(content), "\(r.text)")
            // What a JSON client decodes from the events does not hold the key either.
            for line in r.text.split(separator: "\n") where line.hasPrefix("data: {") {
                let decoded = (try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8))).map { "\($0)" } ?? ""
                #expect(!decoded.contains(h.upstreamKey))
            }
        }
        // A stream cut in the middle of the key: the held-back part is not released.
        let cutAt = 40 + h.upstreamKey.utf8.count - 2
        let body = Array("data: {\"choices\":[{\"delta\":{\"content\":\"\(h.upstreamKey)\"}}]}\n\n".utf8)
        h.sandbox.inject(.raw(status: 200, headers: ["content-type": "text/event-stream"], body: body, cutAfter: cutAt), pathPrefix: "/v1/chat/completions")
        let cut = try h.post("/v1/chat/completions", json: #"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#)
        #expect(!cut.text.contains(String(h.upstreamKey.prefix(10))), "\(cut.text)")
    }

    @Test func compressedAnswersAreDecodedBeforeRedactionOrRefused() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let json = Array(#"{"id":"c","object":"chat.completion","choices":[{"message":{"content":"\#(h.upstreamKey)"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#.utf8)
        for (coding, format) in [("gzip", Deflate.Format.gzip), ("deflate", .zlib)] {
            h.sandbox.inject(.raw(status: 200, headers: ["content-type": "application/json", "content-encoding": coding],
                                  body: Deflate.compress(json, format: format)), pathPrefix: "/v1/chat/completions")
            let r = try h.post("/v1/chat/completions", json: #"{"model":"gpt-4o-mini","messages":[]}"#)
            #expect(r.status == 200, "\(coding): \(r.text)")
            #expect(r.text.contains("[redacted]") && !allBytes(r).contains(h.upstreamKey), "\(coding): \(r.text)")
            #expect(r.header("content-encoding") == nil)
        }
        let sse = Array("data: {\"choices\":[{\"delta\":{\"content\":\"\(h.upstreamKey)\"}}]}\n\ndata: [DONE]\n\n".utf8)
        h.sandbox.inject(.raw(status: 200, headers: ["content-type": "text/event-stream", "content-encoding": "gzip"],
                              body: Deflate.compress(sse, format: .gzip)), pathPrefix: "/v1/chat/completions")
        let s = try h.post("/v1/chat/completions", json: #"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#)
        #expect(s.status == 200 && s.text.contains("[DONE]") && !allBytes(s).contains(h.upstreamKey), "\(s.text)")
        // A coding Veil cannot decode, or a body that is not what it claims: 502, never relayed.
        h.sandbox.inject(.raw(status: 200, headers: ["content-type": "application/json", "content-encoding": "br"], body: Array("xyz".utf8)), pathPrefix: "/v1/chat/completions")
        let br = try h.post("/v1/chat/completions", json: #"{"model":"gpt-4o-mini","messages":[]}"#)
        #expect(br.status == 502 && Self.errorOf(br)["code"] as? String == "upstream_unsupported_encoding")
        var corrupt = Deflate.compress(json, format: .gzip)
        corrupt[corrupt.count / 2] ^= 0xFF
        h.sandbox.inject(.raw(status: 200, headers: ["content-type": "application/json", "content-encoding": "gzip"], body: corrupt), pathPrefix: "/v1/chat/completions")
        let bad = try h.post("/v1/chat/completions", json: #"{"model":"gpt-4o-mini","messages":[]}"#)
        #expect(bad.status == 502, "\(bad.text)")
        #expect(!allBytes(bad).contains(h.upstreamKey))
    }

    /// The file host is not trusted with the key either: its headers and body pass the redactor.
    @Test func videoDownloadsAreRedactedLikeEveryOtherAnswer() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let r = try h.post("/v1/videos", json: #"{"model":"sora-2","prompt":"a cat"}"#)
        let id = try #require(jsonObject(r)["id"] as? String)
        var done = false
        for _ in 0..<50 where !done {
            done = jsonObject(try h.get("/v1/videos/\(id)"))["status"] as? String == "completed"
            if !done { usleep(200_000) }
        }
        #expect(done)
        let file = Array("MP4....\(h.upstreamKey)....".utf8)
        h.sandbox.inject(.raw(status: 200, headers: ["content-type": "video/mp4", "etag": "\"\(h.upstreamKey)\"", "last-modified": h.upstreamKey],
                              body: file), pathPrefix: "/files/")
        let c = try h.get("/v1/videos/\(id)/content")
        #expect(c.status == 200)
        #expect(!allBytes(c).contains(h.upstreamKey), "\(allBytes(c))")
        #expect(c.text.contains("[redacted]"))
    }

    /// Transport failures say nothing about the upstream's address to the caller; the log has the
    /// detail with the request id.
    @Test func upstreamFailuresAreGenericForCallersAndDetailedInTheLog() throws {
        let port = try FaultsTests.closedPort()
        let h = try VeilHarness(upstreamBaseURL: "http://127.0.0.1:\(port)")
        defer { h.stop() }
        let r = try h.post("/v1/chat/completions", json: #"{"model":"gpt-4o-mini","messages":[]}"#)
        #expect(r.status == 502)
        let message = Self.errorOf(r)["message"] as? String ?? ""
        #expect(message == "The upstream could not be reached.")
        #expect(!allBytes(r).contains("\(port)") && !allBytes(r).contains("127.0.0.1"))
    }

    @Test func videoModelsAreRefusedOnChat() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let r = try h.post("/v1/chat/completions", json: #"{"model":"sora-2","messages":[{"role":"user","content":"@someone"}]}"#)
        #expect(r.status == 400)
        #expect(Self.errorOf(r)["code"] as? String == "video_model_on_chat" && (Self.errorOf(r)["message"] as? String ?? "").contains("/v1/videos"))
        #expect(h.sandbox.count("POST", "/v1/chat/completions") == 0)
    }
}
