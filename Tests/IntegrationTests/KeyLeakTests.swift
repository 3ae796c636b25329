import Foundation
import Glibc
import Sandbox
import Testing

/// Key-leak sweep (issue: hardening): a distinctive upstream key, every endpoint and every error
/// path — including upstream answers that echo the key in bodies and headers, in clear and
/// JSON-escaped — and the key must appear in no response byte and no access-log line.
@Suite struct KeyLeakTests {
    static let key = "sk-LEAKCANARY-7f3e9a1c5b2d4e6f8a0b1c2d3e4f5a6b"
    /// The key as a JSON string would carry it with one escaped letter: decodes to the key.
    static var escapedKey: String { "sk-\\u004cEAKCANARY-7f3e9a1c5b2d4e6f8a0b1c2d3e4f5a6b" }
    static let chat = #"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}]}"#
    static let chatStream = #"{"model":"gpt-3.5-turbo","stream":true,"messages":[{"role":"user","content":"hi there"}]}"#
    static let video = #"{"prompt":"a cat","model":"sora-2","seconds":"4","size":"720x1280"}"#

    /// Every way the key could be written in what a client decodes: bytes, JSON-decoded strings.
    static func leaks(_ r: RawResponse, _ key: String) -> Bool {
        let all = allBytes(r)
        if all.contains(key) { return true }
        // Decode each JSON document (whole body, or each SSE data line) and search the strings.
        var docs = [r.body]
        for line in r.text.components(separatedBy: "\n") where line.hasPrefix("data: ") { docs.append(Array(line.dropFirst(6).utf8)) }
        for d in docs {
            if let v = try? JSONSerialization.jsonObject(with: Data(d), options: [.fragmentsAllowed]), decodedStrings(v).contains(where: { $0.contains(key) }) {
                return true
            }
        }
        return false
    }

    static func decodedStrings(_ v: Any) -> [String] {
        switch v {
        case let s as String: return [s]
        case let a as [Any]: return a.flatMap(decodedStrings)
        case let o as [String: Any]: return o.keys.map { $0 } + o.values.flatMap(decodedStrings)
        default: return []
        }
    }

    @Test func theKeyAppearsInNoResponseByteAndNoLogLine() throws {
        let h = try VeilHarness(upstreamKey: Self.key, stallTimeoutMillis: 500, upstreamExtraYAML: ["max_response_bytes: 65536"])
        defer { h.stop() }
        var responses: [(String, RawResponse)] = []
        func drive(_ what: String, _ r: () throws -> RawResponse) {
            do { responses.append((what, try r())) } catch { responses.append((what, RawResponse(status: -1, reason: "\(error)", headers: [], body: [], chunks: [], complete: false))) }
        }
        let echoBodies = [
            #"{"error":{"message":"无效的令牌 KEY","type":"new_api_error"}}"#.replacingOccurrences(of: "KEY", with: Self.key),
            #"{"error":{"message":"bad key ESC","type":"new_api_error"}}"#.replacingOccurrences(of: "ESC", with: Self.escapedKey),
            #"{"error":"ESC"}"#.replacingOccurrences(of: "ESC", with: Self.escapedKey),
            #"{"success":false,"message":"ESC"}"#.replacingOccurrences(of: "ESC", with: Self.escapedKey),
            "plain text Bearer \(Self.key)",
        ]

        // The happy paths.
        drive("models") { try h.get("/v1/models") }
        drive("chat") { try h.post("/v1/chat/completions", json: Self.chat) }
        drive("chat stream") { try h.post("/v1/chat/completions", json: Self.chatStream) }
        drive("video create") { try h.post("/v1/videos", json: Self.video) }
        let vid = jsonObject(responses.last!.1)["id"] as? String ?? "video_x"
        drive("video poll 1") { try h.get("/v1/videos/\(vid)") }
        usleep(1_100_000)
        drive("video poll 2") { try h.get("/v1/videos/\(vid)") }
        usleep(1_100_000)
        drive("video poll 3") { try h.get("/v1/videos/\(vid)") }
        drive("video list") { try h.get("/v1/videos?limit=100") }
        drive("video content") { try h.get("/v1/videos/\(vid)/content") }
        drive("video content wm") { try h.get("/v1/videos/\(vid)/content?variant=watermarked") }
        // Moderated and failed videos carry upstream text.
        drive("video nsfw") { try h.post("/v1/videos", json: #"{"prompt":"nsfw cat","model":"sora-2"}"#) }
        drive("video fail") { try h.post("/v1/videos", json: #"{"prompt":"fail please","model":"sora-2"}"#) }
        // The echo-key model and the echoKey fault on every upstream path.
        drive("chat echo model") { try h.post("/v1/chat/completions", json: #"{"model":"sandbox-echo-key","messages":[{"role":"user","content":"x"}]}"#) }
        drive("chat echo model stream") { try h.post("/v1/chat/completions", json: #"{"model":"sandbox-echo-key","stream":true,"messages":[{"role":"user","content":"x"}]}"#) }
        for (what, prefix, call) in [("chat", "/v1/chat/completions", { try h.post("/v1/chat/completions", json: Self.chat) }),
                                     ("chat stream", "/v1/chat/completions", { try h.post("/v1/chat/completions", json: Self.chatStream) }),
                                     ("models", "/v1/models", { try h.get("/v1/models") }),
                                     ("video create", "/v1/videos", { try h.post("/v1/videos", json: Self.video) })] as [(String, String, () throws -> RawResponse)] {
            h.sandbox.inject(.echoKey, pathPrefix: prefix)
            drive("\(what) echoKey", call)
            for status in [400, 401, 403, 429, 500, 502, 503] {
                for b in echoBodies {
                    h.sandbox.inject(.status(status, body: b), pathPrefix: prefix)
                    drive("\(what) \(status) \(b.prefix(24))", call)
                }
            }
            for fault in [SandboxFaultCase.reset, .resetMidBody, .stall, .invalidJSON, .hugeBody, .cutStream] {
                h.sandbox.inject(fault.fault, pathPrefix: prefix)
                drive("\(what) \(fault)", call)
            }
        }
        // Polls of a video whose upstream answer echoes the key.
        drive("video create 2") { try h.post("/v1/videos", json: Self.video) }
        let vid2 = jsonObject(responses.last!.1)["id"] as? String ?? "video_x"
        for b in echoBodies {
            for status in [200, 401, 500] {
                h.sandbox.inject(.status(status, body: b), method: "GET", pathPrefix: "/v1/videos/")
                usleep(1_050_000)  // past the poll cache
                drive("video poll \(status) \(b.prefix(24))") { try h.get("/v1/videos/\(vid2)") }
            }
        }
        h.sandbox.inject(.echoKey, method: "GET", pathPrefix: "/v1/videos/")
        usleep(1_050_000)
        drive("video poll echoKey") { try h.get("/v1/videos/\(vid2)") }
        // A status answer with the key in every field the translator reads.
        let keyed = #"{"id":"4001","status":"completed","progress":100,"url":"https://x/KEY.mp4","size":"KEY","quality":"KEY","model":"KEY","seconds":"KEY","error":{"message":"KEY"}}"#
            .replacingOccurrences(of: "KEY", with: Self.key)
        h.sandbox.inject(.status(200, body: keyed), method: "GET", pathPrefix: "/v1/videos/")
        usleep(1_050_000)
        drive("video poll keyed fields") { try h.get("/v1/videos/\(vid2)") }
        drive("video list after") { try h.get("/v1/videos?limit=100") }
        drive("video get after") { try h.get("/v1/videos/\(vid2)") }
        // Requests refused by Veil itself.
        drive("no token") { try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/models") }
        drive("key as token") { try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/models", headers: [("Authorization", "Bearer \(Self.key)")]) }
        drive("unknown route") { try h.get("/v1/\(Self.key)") }
        drive("bad id") { try h.get("/v1/videos/video_\(Self.key)") }

        var leaked: [String] = []
        for (what, r) in responses where Self.leaks(r, Self.key) { leaked.append("\(what) → \(r.status): \(r.text.prefix(300))") }
        #expect(leaked.isEmpty, "\(leaked.joined(separator: "\n"))")
        // Every exchange was answered (no -1 = client error/timeout), the stand-in really got the key.
        #expect(responses.filter { $0.1.status == -1 }.map(\.0).isEmpty)
        #expect(h.sandbox.requests().contains { $0.header("authorization") == "Bearer \(Self.key)" })
        let logLeaks = h.accessLog.filter { $0.contains(Self.key) }
        #expect(logLeaks.isEmpty, "\(logLeaks)")
        #expect(h.accessLog.count >= responses.count - 4)
    }

    /// The characters endpoints: the upstream puts its key in every character it returns.
    @Test func characterAnswersNeverCarryTheKey() throws {
        let h = try VeilHarness(upstreamKey: Self.key)
        defer { h.stop() }
        var responses: [(String, RawResponse)] = []
        func drive(_ what: String, _ r: () throws -> RawResponse) {
            do { responses.append((what, try r())) } catch { responses.append((what, RawResponse(status: -1, reason: "\(error)", headers: [], body: [], chunks: [], complete: false))) }
        }
        let created = try h.post("/v1/videos", json: Self.video)
        let vid = jsonObject(created)["id"] as? String ?? "video_x"
        for _ in 0..<10 where jsonObject(try h.get("/v1/videos/\(vid)"))["status"] as? String != "completed" { usleep(1_050_000) }
        let body = #"{"video_id":"VID","name":"NAME","description":"a cat","timestamps":"0-3"}"#.replacingOccurrences(of: "VID", with: vid)
        drive("character create") { try h.post("/v1/characters", json: body.replacingOccurrences(of: "NAME", with: "leaky_cat")) }
        let cid = jsonObject(responses.last!.1)["id"] as? String ?? "char_x"
        drive("character list") { try h.get("/v1/characters") }
        drive("character list 2") { try h.get("/v1/characters") }
        drive("character get") { try h.get("/v1/characters/\(cid)") }
        drive("character sdk get") { try h.get("/v1/videos/characters/\(cid)") }
        drive("character sdk upload") { try h.post("/v1/videos/characters", json: "{}") }
        let echoBodies = [
            #"{"success":false,"message":"KEY"}"#.replacingOccurrences(of: "KEY", with: Self.key),
            #"{"success":false,"message":"ESC"}"#.replacingOccurrences(of: "ESC", with: Self.escapedKey),
            #"{"success":true,"data":{"id":"77","api_key":"KEY","uuid":"KEY","instruction_value":"KEY","status":0}}"#.replacingOccurrences(of: "KEY", with: Self.key),
        ]
        for (i, b) in echoBodies.enumerated() {
            for status in [200, 400, 401, 500] {
                h.sandbox.inject(.status(status, body: b), method: "POST", pathPrefix: "/v1/characters")
                drive("character create \(status) \(i)") { try h.post("/v1/characters", json: body.replacingOccurrences(of: "NAME", with: "cat_\(status)_\(i)")) }
            }
        }
        // A second character still processing, then list answers that echo the key.
        drive("character create late") { try h.post("/v1/characters", json: body.replacingOccurrences(of: "NAME", with: "late_cat")) }
        let keyedList = #"{"success":true,"data":[{"id":"ID","uuid":"KEY","instruction_value":"KEY","api_key":"KEY","status":999,"create_time":"KEY"}]}"#
            .replacingOccurrences(of: "KEY", with: Self.key)
            .replacingOccurrences(of: "ID", with: (jsonObject(responses.last!.1)["id"] as? String ?? "char_0").replacingOccurrences(of: "char_", with: ""))
        for b in echoBodies + [keyedList] {
            h.sandbox.inject(.status(200, body: b), method: "GET", pathPrefix: "/v1/characters")
            drive("character list echo \(b.prefix(20))") { try h.get("/v1/characters") }
        }
        h.sandbox.inject(.echoKey, pathPrefix: "/v1/characters")
        drive("character list echoKey") { try h.get("/v1/characters") }
        drive("character delete") { try h.delete("/v1/characters/\(cid)") }
        drive("character bad id") { try h.get("/v1/characters/char_\(Self.key)") }

        var leaked: [String] = []
        for (what, r) in responses where Self.leaks(r, Self.key) { leaked.append("\(what) → \(r.status): \(r.text.prefix(300))") }
        #expect(leaked.isEmpty, "\(leaked.joined(separator: "\n"))")
        #expect(responses.filter { $0.1.status == -1 }.map(\.0).isEmpty)
        #expect(responses.first?.1.status == 200)
        #expect(h.sandbox.count("POST", "/v1/characters") >= 10)
        #expect(h.accessLog.filter { $0.contains(Self.key) }.isEmpty)
    }
}

enum SandboxFaultCase: CustomStringConvertible {
    case reset, resetMidBody, stall, invalidJSON, hugeBody, cutStream
    var fault: SandboxFault {
        switch self {
        case .reset: return .reset
        case .resetMidBody: return .resetMidBody
        case .stall: return .stall
        case .invalidJSON: return .invalidJSON
        case .hugeBody: return .hugeBody(200_000)
        case .cutStream: return .cutStream
        }
    }
    var description: String { "\(fault)" }
}
