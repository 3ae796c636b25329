import Foundation
import Glibc
import Testing

private let jpeg: [UInt8] = [0xFF, 0xD8, 0xFF, 0xE0] + Array(repeating: 7, count: 1500)

private func multipart(_ fields: [(String, String)], file: [UInt8]? = jpeg) -> (body: [UInt8], contentType: String) {
    var m = MultipartBuilder()
    for (k, v) in fields { m.field(k, v) }
    if let file { m.file("input_reference", filename: "start.jpg", contentType: "image/jpeg", bytes: file) }
    return (m.finished(), m.contentType)
}

private func createMultipart(_ h: VeilHarness, prompt: String, team: String = "web", extra: [(String, String)] = [("model", "sora-2"), ("size", "720x1280"), ("seconds", "4")]) throws -> RawResponse {
    let m = multipart([("prompt", prompt)] + extra)
    return try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/videos",
                                     headers: h.auth(team) + [("Content-Type", m.contentType)], body: m.body)
}

/// Polls through Veil until the video is no longer queued/in progress.
private func pollUntilDone(_ h: VeilHarness, _ id: String, team: String = "web") throws -> [String: Any] {
    for _ in 0..<40 {
        let r = try h.get("/v1/videos/\(id)", team: team)
        let o = jsonObject(r)
        if let s = o["status"] as? String, s == "completed" || s == "failed" { return o }
        usleep(1_100_000 / 2)
    }
    Issue.record("video \(id) did not finish")
    return [:]
}

/// Issue 3: the OpenAI Videos API over the quirky upstream.
@Suite struct VideoGatewayTests {
    @Test func multipartCreatePutsTheKeyInSizeAtTheUpstreamAndNowhereElse() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let r = try createMultipart(h, prompt: "镜头运动：45° 俯视角\r\n右拳动作闭环")
        #expect(r.status == 200)
        let o = jsonObject(r)
        #expect(o["id"] as? String == "video_4000")
        #expect(o["object"] as? String == "video")
        #expect(o["status"] as? String == "queued")
        #expect(o["size"] as? String == "720x1280")
        #expect(o["model"] as? String == "sora-2")
        #expect(o["prompt"] as? String == "镜头运动：45° 俯视角\r\n右拳动作闭环")
        #expect(!allBytes(r).contains(h.upstreamKey))
        let sent = h.sandbox.requests(matching: "/v1/videos")
        #expect(sent.count == 1)
        #expect(sent.first?.form["size"] == h.upstreamKey)
        #expect(sent.first?.form["model"] == "sora-2")
        #expect(sent.first?.form["prompt"] == "镜头运动：45° 俯视角\r\n右拳动作闭环")
        #expect(sent.first?.files["input_reference"]?.byteCount == jpeg.count)
        #expect(sent.first?.header("authorization") == "Bearer \(h.upstreamKey)")
    }

    @Test func jsonCreateWithDataURLAndWithoutImage() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3, 4]
        let dataURL = "data:image/png;base64," + Data(png).base64EncodedString()
        let r = try h.post("/v1/videos", json: #"{"prompt":"a red kite","model":"sora-2","size":"1280x720","seconds":"8","input_reference":{"image_url":"\#(dataURL)"}}"#)
        #expect(r.status == 200)
        #expect(jsonObject(r)["size"] as? String == "1280x720")
        #expect(jsonObject(r)["seconds"] as? String == "8")
        #expect(h.sandbox.requests(matching: "/v1/videos").last?.files["input_reference"]?.byteCount == png.count)
        let t2v = try h.post("/v1/videos", json: #"{"prompt":"text only"}"#)
        #expect(t2v.status == 200)
        #expect(h.sandbox.requests(matching: "/v1/videos").last?.files["input_reference"] == nil)
    }

    @Test func imageURLIsFetchedWhenAllowListedAndRefusedOtherwise() throws {
        let images = ImageServer()
        let ip = try images.start()
        defer { images.stop() }
        let h = try VeilHarness()
        defer { h.stop() }
        let ok = try h.post("/v1/videos", json: #"{"prompt":"from a url","input_reference":{"image_url":"http://127.0.0.1:\#(ip)/cat.png"}}"#)
        #expect(ok.status == 200)
        #expect(h.sandbox.requests(matching: "/v1/videos").last?.files["input_reference"]?.byteCount == ImageServer.png.count)
        // 127.0.0.2 is loopback but not allow-listed: refused before anything goes upstream.
        let before = h.sandbox.count("POST", "/v1/videos")
        let refused = try h.post("/v1/videos", json: #"{"prompt":"x","input_reference":{"image_url":"http://127.0.0.2:\#(ip)/cat.png"}}"#)
        #expect(refused.status == 400)
        #expect((jsonObject(refused)["error"] as? [String: Any])?["param"] as? String == "input_reference")
        let notImage = try h.post("/v1/videos", json: #"{"prompt":"x","input_reference":{"image_url":"http://127.0.0.1:\#(ip)/a.txt"}}"#)
        #expect(notImage.status == 400)
        let ftp = try h.post("/v1/videos", json: #"{"prompt":"x","input_reference":{"image_url":"ftp://127.0.0.1/a.png"}}"#)
        #expect(ftp.status == 400)
        #expect(h.sandbox.count("POST", "/v1/videos") == before)
    }

    /// An upstream that answers a create with the id of a video already recorded (another team's
    /// here): 502, nothing recorded, and the first team's video stays its own.
    @Test func aReusedUpstreamVideoIDIsRefusedNotHandedOver() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let first = try h.post("/v1/videos", team: "web", json: #"{"prompt":"mine","model":"sora-2","seconds":"4","size":"720x1280"}"#)
        let id = try #require(jsonObject(first)["id"] as? String)
        let up = String(id.dropFirst("video_".count))
        h.sandbox.inject(.status(200, body: #"{"id":"\#(up)","object":"video","model":"sora-2","status":"queued","progress":0,"created_at":1762415032,"seconds":"4","size":"720x1280"}"#),
                         method: "POST", pathPrefix: "/v1/videos", times: 1)
        let second = try h.post("/v1/videos", team: "mobile", json: #"{"prompt":"theirs","model":"sora-2","seconds":"4","size":"720x1280"}"#)
        #expect(second.status == 502, "\(second.status) \(second.text)")
        let e = jsonObject(second)["error"] as? [String: Any]
        #expect(e?["code"] as? String == "upstream_invalid_response" && (e?["message"] as? String)?.contains("already exists") == true, "\(second.text)")
        #expect(try h.get("/v1/videos/\(id)", team: "mobile").status == 404)
        #expect(jsonObject(try h.get("/v1/videos/\(id)", team: "web"))["prompt"] as? String == "mine")
    }

    @Test func validationRefusesBeforeSpendingMoney() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let cases: [(String, String)] = [
            (#"{"model":"sora-2"}"#, "prompt"),
            (#"{"prompt":"x","model":"dall-e"}"#, "model"),
            (#"{"prompt":"x","size":"999x999"}"#, "size"),
            (#"{"prompt":"x","seconds":"7"}"#, "seconds"),
            (#"{"prompt":"x","input_reference":"data:image/png;base64,aGVsbG8="}"#, "input_reference"),
            ("{\"prompt\":\"" + String(repeating: "a", count: 9000) + "\"}", "prompt"),
        ]
        for (body, param) in cases {
            let r = try h.post("/v1/videos", json: body)
            #expect(r.status == 400, "\(param)")
            #expect((jsonObject(r)["error"] as? [String: Any])?["param"] as? String == param)
        }
        let notJSON = try h.post("/v1/videos", json: "{nope")
        #expect(notJSON.status == 400)
        #expect(h.sandbox.count("POST", "/v1/videos") == 0)
    }

    @Test func pollingReachesCompletedWithTheURLsInTheRightFields() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        _ = try createMultipart(h, prompt: "a quiet lake")
        let first = try h.get("/v1/videos/video_4000")
        #expect(first.header("openai-poll-after-ms") != nil)
        let done = try pollUntilDone(h, "video_4000")
        #expect(done["status"] as? String == "completed")
        #expect(done["progress"] as? Int == 100)
        #expect((done["video_url"] as? String)?.contains("/clean.mp4") == true)
        #expect((done["watermarked_video_url"] as? String)?.contains("/wm.mp4") == true)
        #expect(done["size"] as? String == "720x1280")
        #expect(done["model"] as? String == "sora-2")
        #expect(done["completed_at"] as? Int != nil)
        #expect(done["expires_at"] as? Int != nil)
        // Finished: answered from the store, the upstream is not asked again.
        let calls = h.sandbox.count("GET", "/v1/videos/4000")
        let again = try h.get("/v1/videos/video_4000")
        #expect(jsonObject(again)["status"] as? String == "completed")
        #expect(again.header("openai-poll-after-ms") == nil)
        #expect(h.sandbox.count("GET", "/v1/videos/4000") == calls)
    }

    @Test func moderationUpstreamErrorAndMissingURLBecomeFailed() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        _ = try createMultipart(h, prompt: "nsfw scene")
        _ = try createMultipart(h, prompt: "this will fail")
        _ = try createMultipart(h, prompt: "nourl please")
        let blocked = try pollUntilDone(h, "video_4000")
        #expect(blocked["status"] as? String == "failed")
        let e = blocked["error"] as? [String: Any]
        #expect(e?["code"] as? String == "moderation_blocked")
        #expect((e?["message"] as? String)?.contains("此内容可能违反") == true)
        #expect(blocked["video_url"] is NSNull)
        #expect(blocked["size"] as? String == "720x1280")
        let failed = try pollUntilDone(h, "video_4001")
        #expect((failed["error"] as? [String: Any])?["code"] as? String == "generation_failed")
        let nourl = try pollUntilDone(h, "video_4002")
        #expect(nourl["status"] as? String == "failed")
        #expect((nourl["error"] as? [String: Any])?["code"] as? String == "no_video")
    }

    @Test func contentIsStreamedByteIdenticalWithRanges() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        _ = try createMultipart(h, prompt: "waves")
        let early = try h.get("/v1/videos/video_4000/content")
        #expect(early.status == 400)
        _ = try pollUntilDone(h, "video_4000")
        let full = try h.get("/v1/videos/video_4000/content")
        #expect(full.status == 200)
        #expect(full.header("content-type") == "video/mp4")
        #expect(full.header("content-length") == "300000")
        #expect(full.header("accept-ranges") == "bytes")
        #expect(full.body == h.sandbox.expectedFileBytes(videoID: "4000", variant: "clean"))
        let wm = try h.get("/v1/videos/video_4000/content?variant=watermarked")
        #expect(wm.body == h.sandbox.expectedFileBytes(videoID: "4000", variant: "wm"))
        let part = try h.get("/v1/videos/video_4000/content", headers: [("Range", "bytes=1000-1999")])
        #expect(part.status == 206)
        #expect(part.header("content-range") == "bytes 1000-1999/300000")
        #expect(part.body == h.sandbox.expectedFileBytes(videoID: "4000", variant: "clean", range: 1000..<2000))
        let beyond = try h.get("/v1/videos/video_4000/content", headers: [("Range", "bytes=400000-")])
        #expect(beyond.status == 416)
        #expect(beyond.header("content-range") == "bytes */300000")
        let thumb = try h.get("/v1/videos/video_4000/content?variant=thumbnail")
        #expect(thumb.status == 404)
        // The file host is never sent the upstream key.
        for req in h.sandbox.requests(matching: "/files/") { #expect(req.header("authorization") == nil) }
    }

    @Test func listPaginationDeleteAndTeamIsolation() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        for i in 0..<3 { _ = try createMultipart(h, prompt: "web video \(i)") }
        _ = try createMultipart(h, prompt: "mobile video", team: "mobile")
        let page1 = jsonObject(try h.get("/v1/videos?limit=2&order=asc"))
        let ids1 = (page1["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
        #expect(ids1 == ["video_4000", "video_4001"])
        #expect(page1["has_more"] as? Bool == true)
        #expect(page1["object"] as? String == "list")
        let page2 = jsonObject(try h.get("/v1/videos?limit=2&order=asc&after=\(page1["last_id"] as? String ?? "")"))
        #expect((page2["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == ["video_4002"])
        #expect(page2["has_more"] as? Bool == false)
        let desc = jsonObject(try h.get("/v1/videos"))
        #expect((desc["data"] as? [[String: Any]])?.first?["id"] as? String == "video_4002")
        // Another team's video: 404 everywhere, the same answer as an unknown id.
        for path in ["/v1/videos/video_4003", "/v1/videos/video_4003/content", "/v1/videos/video_9999"] {
            #expect(try h.get(path).status == 404)
        }
        #expect(try h.delete("/v1/videos/video_4003").status == 404)
        #expect(try h.get("/v1/videos/video_4003", team: "mobile").status == 200)
        let del = try h.delete("/v1/videos/video_4001")
        #expect(del.status == 200)
        #expect(jsonObject(del)["object"] as? String == "video.deleted")
        #expect(jsonObject(del)["deleted"] as? Bool == true)
        #expect(try h.get("/v1/videos/video_4001").status == 404)
        #expect(try h.get("/v1/videos?limit=1&after=..%2f..").status == 400)
        #expect(try h.get("/v1/videos?limit=0").status == 400)
        let remix = try h.post("/v1/videos/video_4000/remix", json: #"{"prompt":"again"}"#)
        #expect(remix.status == 400)
    }

    @Test func ownershipSurvivesARestart() throws {
        let store = "/tmp/veil-restart-\(UUID().uuidString).sqlite3"
        do {
            let h = try VeilHarness(storePath: store)
            _ = try createMultipart(h, prompt: "persist me")
            _ = try pollUntilDone(h, "video_4000")
            h.stop()
        }
        let h2 = try VeilHarness(storePath: store)
        defer { h2.stop() }
        let r = try h2.get("/v1/videos/video_4000")
        #expect(r.status == 200)
        #expect(jsonObject(r)["status"] as? String == "completed")
        #expect(try h2.get("/v1/videos/video_4000", team: "mobile").status == 404)
        #expect(h2.sandbox.count("GET", "/v1/videos/") == 0)
    }

    @Test func concurrentPollsShareOneUpstreamCall() throws {
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 1000 })
        defer { h.stop() }
        _ = try createMultipart(h, prompt: "popular job")
        let before = h.sandbox.count("GET", "/v1/videos/4000")
        let n = 24
        let statuses = StatusBox()
        DispatchQueue.concurrentPerform(iterations: n) { _ in
            let r = try? h.get("/v1/videos/video_4000")
            statuses.add(r?.status ?? 0)
        }
        #expect(statuses.all.allSatisfy { $0 == 200 })
        #expect(statuses.all.count == n)
        let calls = h.sandbox.count("GET", "/v1/videos/4000") - before
        #expect(calls >= 1 && calls <= 2, "\(calls) upstream calls for \(n) polls")
    }
}

final class StatusBox: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Int] = []
    func add(_ v: Int) { lock.lock(); values.append(v); lock.unlock() }
    var all: [Int] { lock.lock(); defer { lock.unlock() }; return values }
}
