import Testing
import FoundationEssentials
@testable import Translation

@Suite struct VideoTests {
    static let facts = VideoFacts(veilID: "video_4118", model: "sora-2", size: "720x1280", seconds: "4",
                                  prompt: "a cat", createdAt: 1_762_418_800)
    static let doneJSON = #"{"id":"4118","url":"https://videos1.ss2.life/az/files/x%2Fraw?se=2025-11-08T00%3A00%3A00Z&sp=r&sig=abc","size":"https://sora2api.oss-cn-wuhan-lr.aliyuncs.com/videos/4ac5ea98.mp4","model":"sora-2-yijia","object":"video","status":"completed","quality":"standard","seconds":"2","progress":100,"created_at":1762418837}"#
    static let moderatedJSON = #"{"id":"4207","url":"","size":"1024x1808","model":"sora-2-yijia","object":"video","status":"completed","quality":"此内容可能违反关于裸露、性内容或色情内容的相关规定。","seconds":"2","progress":100,"created_at":1762427331}"#

    func task(_ s: String) throws -> UpstreamVideoTask { try UpstreamVideoTask(json: Array(s.utf8)) }

    @Test func completedSwapsURLs() throws {
        let v = translateVideo(try task(Self.doneJSON), facts: Self.facts, now: 1_762_419_000)
        #expect(v.status == .completed)
        #expect(v.videoURL?.hasPrefix("https://videos1.ss2.life/") == true)
        #expect(v.watermarkedVideoURL == "https://sora2api.oss-cn-wuhan-lr.aliyuncs.com/videos/4ac5ea98.mp4")
        #expect(v.size == "720x1280")
        #expect(v.model == "sora-2")
        #expect(v.id == "video_4118")
        #expect(v.completedAt == 1_762_419_000)
        #expect(v.expiresAt == 1_762_560_000)  // 2025-11-08T00:00:00Z
        #expect(v.progress == 100)
        #expect(v.error == nil)
    }

    @Test func moderationBecomesFailed() throws {
        var f = Self.facts
        f.size = nil
        let v = translateVideo(try task(Self.moderatedJSON), facts: f, now: 5)
        #expect(v.status == .failed)
        #expect(v.error == VideoError(code: "moderation_blocked", message: "此内容可能违反关于裸露、性内容或色情内容的相关规定。"))
        #expect(v.videoURL == nil && v.watermarkedVideoURL == nil && v.completedAt == nil && v.expiresAt == nil)
        #expect(v.size == "1024x1808")  // upstream resolution kept only because facts had none
    }

    @Test func completedWithoutURLIsNoVideo() {
        let t = UpstreamVideoTask(id: "1", status: "success", progress: 100, url: "", size: "720x720", quality: "standard")
        let v = translateVideo(t, facts: Self.facts, now: 9)
        #expect(v.status == .failed)
        #expect(v.error?.code == "no_video")
        #expect(v.size == "720x1280")
    }

    @Test func onlyWatermarkedStillCompletes() {
        let t = UpstreamVideoTask(status: "completed", url: "", size: "https://x.example/v.mp4", completedAt: 77)
        let v = translateVideo(t, facts: Self.facts, now: 9)
        #expect(v.status == .completed && v.videoURL == nil && v.watermarkedVideoURL == "https://x.example/v.mp4")
        #expect(v.completedAt == 77 && v.expiresAt == nil)
    }

    @Test func upstreamErrorMessages() throws {
        let a = translateVideo(try task(#"{"id":1,"status":"error","fail_reason":"official side problem"}"#), facts: Self.facts, now: 0)
        #expect(a.error == VideoError(code: "generation_failed", message: "official side problem"))
        let b = translateVideo(try task(#"{"task_id":"9","status":"FAILED","error":{"message":"boom"}}"#), facts: Self.facts, now: 0)
        #expect(b.error?.message == "boom")
        let c = translateVideo(try task(#"{"id":"9","status":"failure"}"#), facts: Self.facts, now: 0)
        #expect(c.error == VideoError(code: "generation_failed", message: "The video generation failed upstream."))
        let d = translateVideo(try task(#"{"error":"not found"}"#), facts: Self.facts, now: 0)
        #expect(d.status == .failed && d.error?.message == "not found")
    }

    @Test func tolerantFieldTypes() throws {
        let t = try task(#"{"task_id":4078,"status":"processing","progress":"45.7","seconds":4,"created_at":"1762415032","finished_at":1762415099}"#)
        #expect(t.id == "4078" && t.progress == 45 && t.seconds == "4" && t.createdAt == 1_762_415_032 && t.completedAt == 1_762_415_099)
        let w = try task(#"{"data":{"id":"5","status":"queued","progress":12.9}}"#)
        #expect(w.id == "5" && w.progress == 12)
        let odd = try task(#"{"id":"5","status":7,"progress":[1],"url":5,"size":{"a":1}}"#)
        #expect(odd.status == nil && odd.progress == nil && odd.url == nil && odd.size == nil)
    }

    @Test(arguments: ["", "null", "[]", "\"x\"", "{}", "{\"model\":\"x\"}", "{\"id\":", "\u{0}"])
    func garbageThrows(_ s: String) {
        #expect(throws: TranslationError.self) { try UpstreamVideoTask(json: Array(s.utf8)) }
    }

    @Test func progressClamped() {
        #expect(translateVideo(UpstreamVideoTask(status: "running", progress: 250), facts: Self.facts, now: 0).progress == 100)
        #expect(translateVideo(UpstreamVideoTask(status: "running", progress: -5), facts: Self.facts, now: 0).progress == 0)
        #expect(translateVideo(UpstreamVideoTask(status: "running", progress: Int.min), facts: Self.facts, now: 0).progress == 0)
    }

    @Test(arguments: [
        ("queued", VideoStatus.queued), ("pending", .queued), ("submitted", .queued), ("NOT_START", .queued),
        ("processing", .inProgress), ("in_progress", .inProgress), ("running", .inProgress),
        ("completed", .completed), ("success", .completed), ("succeeded", .completed),
        ("error", .failed), ("failed", .failed), ("failure", .failed), ("cancelled", .failed),
        ("weird", .inProgress), ("", .inProgress),
    ])
    func statusMapping(_ raw: String, _ want: VideoStatus) {
        #expect(VideoStatus(upstream: raw) == want)
    }

    @Test func sizeNeverAURL() {
        var f = Self.facts
        f.size = nil
        let v = translateVideo(UpstreamVideoTask(status: "processing", size: "https://evil/x"), facts: f, now: 0)
        #expect(v.size == nil)
        let w = translateVideo(UpstreamVideoTask(status: "processing", size: "sk-secretkey"), facts: f, now: 0)
        #expect(w.size == nil)
    }

    @Test func encodingOrderAndNulls() throws {
        let v = VideoObject(id: "video_4078", model: "sora-2", status: .queued, progress: 0, createdAt: 1_762_415_032,
                            size: "720x1280", seconds: "4", prompt: "雪\n\"quoted\"")
        let s = String(decoding: v.jsonBytes, as: UTF8.self)
        #expect(s == #"{"id":"video_4078","object":"video","model":"sora-2","status":"queued","progress":0,"created_at":1762415032,"completed_at":null,"expires_at":null,"size":"720x1280","seconds":"4","prompt":"雪\n\"quoted\"","remixed_from_video_id":null,"error":null,"video_url":null,"watermarked_video_url":null}"#)
        // Codable agrees and keeps explicit nulls.
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let data = try enc.encode(v)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"completed_at\":null") && text.contains("\"error\":null"))
        #expect(try JSONDecoder().decode(VideoObject.self, from: data) == v)
        let failed = translateVideo(UpstreamVideoTask(status: "error"), facts: Self.facts, now: 0)
        #expect(try JSONDecoder().decode(VideoObject.self, from: Data(failed.jsonBytes)) == failed)
    }

    @Test(arguments: [("720x1280", true), ("1024x1808", true), ("12x12345", true), ("1x10", false), ("720X1280", false),
                      ("720x", false), ("x720", false), ("720x1280 ", false), ("123456x10", false), ("７２０x１２８０", false), ("", false)])
    func resolution(_ s: String, _ want: Bool) { #expect(isResolution(s) == want) }

    @Test(arguments: [("https://a.b/c", true), ("HTTP://a", true), ("ftp://a", false), ("https://", false),
                      ("https:///x", false), ("https://a b", false), ("720x720", false), ("", false), ("javascript:x", false)])
    func url(_ s: String, _ want: Bool) { #expect(looksLikeURL(s) == want) }

    @Test(arguments: [
        ("https://x/y?sv=1&se=2025-11-08T00%3A00%3A00Z&sig=a", 1_762_560_000 as Int?),
        ("https://x/y?se=2025-11-08T00:00:00Z", 1_762_560_000),
        ("https://x/y?se=2025-11-08T08:00:00%2B08:00", 1_762_560_000),
        ("https://x/y?Expires=1762560000&OSSAccessKeyId=k", 1_762_560_000),
        ("https://x/y?se=garbage", nil), ("https://x/y?se=%zz", nil), ("https://x/y", nil),
        ("https://x/y?sse=2025-11-08T00:00:00Z", nil), ("https://x/y?se=2025-13-08T00:00:00Z", nil),
    ])
    func expiry(_ u: String, _ want: Int?) { #expect(signedURLExpiry(u) == want) }
}
