import Foundation
import Glibc
import Testing

/// Request smuggling and confusion over raw sockets against a running Veil (issue: hardening).
/// Every hostile request is refused with a 4xx/5xx and the connection closed, and nothing that
/// follows it on the connection — neither a request hidden in its body nor one pipelined behind
/// it — is processed: the stand-in sees no request and the access log has no line for it.
@Suite struct SmugglingTests {
    static let token = VeilHarness.teamTokens["web"]!
    /// A request that would reach the stand-in (GET /v1/models) if Veil ever processed it.
    static let follower = "GET /v1/models HTTP/1.1\r\nHost: veil\r\nAuthorization: Bearer \(token)\r\n\r\n"
    static let auth = "Authorization: Bearer \(token)\r\n"

    /// (name, bytes before the follower, acceptable statuses)
    static let vectors: [(String, String, Set<Int>)] = {
        let a = auth
        let f = follower
        let smuggledBody = "0\r\n\r\n" + f   // a chunked terminator, then a whole request
        return [
            // CL.TE and TE.CL
            ("CL.TE", "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n\(a)Content-Length: \(smuggledBody.utf8.count)\r\nTransfer-Encoding: chunked\r\n\r\n\(smuggledBody)", [400]),
            ("TE.CL", "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n\(a)Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8c\r\n\(f)\r\n0\r\n\r\n", [400]),
            // TE.TE: obfuscated Transfer-Encoding
            ("TE case + CL", "POST / HTTP/1.1\r\nHost: veil\r\nTransfer-Encoding: ChUnKeD\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", [400]),
            ("TE space before colon", "POST / HTTP/1.1\r\nHost: veil\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", [400]),
            ("TE tab value + CL", "POST / HTTP/1.1\r\nHost: veil\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", [400]),
            ("TE chunked, identity", "POST / HTTP/1.1\r\nHost: veil\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", [400]),
            ("TE identity, chunked", "POST / HTTP/1.1\r\nHost: veil\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", [400, 501]),
            ("TE duplicated chunked", "POST / HTTP/1.1\r\nHost: veil\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", [400]),
            ("TE chunked then identity", "POST / HTTP/1.1\r\nHost: veil\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", [400]),
            ("TE xchunked", "POST / HTTP/1.1\r\nHost: veil\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", [400]),
            ("TE quoted", "POST / HTTP/1.1\r\nHost: veil\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n", [400]),
            ("TE obs-fold", "POST / HTTP/1.1\r\nHost: veil\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", [400]),
            ("TE vertical tab", "POST / HTTP/1.1\r\nHost: veil\r\nTransfer-Encoding:\u{0B}chunked\r\n\r\n0\r\n\r\n", [400]),
            ("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", [400]),
            ("TE gzip, chunked", "POST / HTTP/1.1\r\nHost: veil\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", [501]),
            // Content-Length
            ("CL plus sign", "POST / HTTP/1.1\r\nHost: veil\r\nContent-Length: +5\r\n\r\nhello", [400]),
            ("CL minus sign", "POST / HTTP/1.1\r\nHost: veil\r\nContent-Length: -5\r\n\r\n", [400]),
            ("CL inner space", "POST / HTTP/1.1\r\nHost: veil\r\nContent-Length: 1 0\r\n\r\n0123456789", [400]),
            ("CL hex", "POST / HTTP/1.1\r\nHost: veil\r\nContent-Length: 0x5\r\n\r\nhello", [400]),
            ("CL overflow", "POST / HTTP/1.1\r\nHost: veil\r\nContent-Length: 18446744073709551621\r\n\r\nhello", [400]),
            ("CL huge but 18 digits", "POST / HTTP/1.1\r\nHost: veil\r\nContent-Length: 999999999999999999\r\n\r\nhello", [413]),
            ("CL list differs", "POST / HTTP/1.1\r\nHost: veil\r\nContent-Length: 5, 6\r\n\r\nhello!", [400]),
            ("CL empty list member", "POST / HTTP/1.1\r\nHost: veil\r\nContent-Length: 5,,5\r\n\r\nhello", [400]),
            ("CL duplicated differs", "POST / HTTP/1.1\r\nHost: veil\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello", [400]),
            ("CL empty", "POST / HTTP/1.1\r\nHost: veil\r\nContent-Length: \r\n\r\n", [400]),
            ("CL decimal point", "POST / HTTP/1.1\r\nHost: veil\r\nContent-Length: 5.0\r\n\r\nhello", [400]),
            // line endings, NUL
            ("bare LF request line", "GET /v1/models HTTP/1.1\nHost: veil\r\n\r\n", [400]),
            ("bare LF header", "GET /v1/models HTTP/1.1\r\nHost: veil\nX: y\r\n\r\n", [400]),
            ("bare LF everywhere", "GET /v1/models HTTP/1.1\nHost: veil\n\n", [400]),
            ("bare CR request line", "GET /v1/models HTTP/1.1\rHost: veil\r\n\r\n", [400]),
            ("bare CR header", "GET /v1/models HTTP/1.1\r\nHost: veil\rX: y\r\n\r\n", [400]),
            ("NUL in target", "GET /v1/mo\u{0}dels HTTP/1.1\r\nHost: veil\r\n\r\n", [400]),
            ("NUL in header value", "GET /v1/models HTTP/1.1\r\nHost: veil\r\nX: a\u{0}b\r\n\r\n", [400]),
            ("NUL in header name", "GET /v1/models HTTP/1.1\r\nHost: veil\r\nX\u{0}Y: a\r\n\r\n", [400]),
            ("NUL before request", "\u{0}GET /v1/models HTTP/1.1\r\nHost: veil\r\n\r\n", [400]),
            // chunked framing (to an admitted route: a request refused at admission never has
            // its body parsed, see the last vector)
            ("chunk size 17 hex digits", "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n\(a)Transfer-Encoding: chunked\r\n\r\n00000000000000001\r\na\r\n0\r\n\r\n", [400]),
            ("chunk size overflow", "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n\(a)Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", [400]),
            ("chunk size over body limit", "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n\(a)Transfer-Encoding: chunked\r\n\r\nfffffffffff\r\n", [413]),
            ("chunk size negative", "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n\(a)Transfer-Encoding: chunked\r\n\r\n-1\r\na\r\n0\r\n\r\n", [400]),
            ("chunk size with 0x", "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n\(a)Transfer-Encoding: chunked\r\n\r\n0x1\r\na\r\n0\r\n\r\n", [400]),
            ("chunk extension without bound", "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n\(a)Transfer-Encoding: chunked\r\n\r\n1;" + String(repeating: "a=b;", count: 600) + "c\r\na\r\n0\r\n\r\n", [400]),
            ("chunk extension bare LF", "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n\(a)Transfer-Encoding: chunked\r\n\r\n1;a\nb\r\na\r\n0\r\n\r\n", [400]),
            ("chunk data longer than size", "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n\(a)Transfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n", [400]),
            ("chunk LF-only terminator", "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n\(a)Transfer-Encoding: chunked\r\n\r\n1\r\na\n0\r\n\r\n", [400]),
            ("trailer bare LF", "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n\(a)Transfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n", [400]),
            ("bad chunking behind a refusal at admission", "POST / HTTP/1.1\r\nHost: veil\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\na\r\n0\r\n\r\n", [404]),
            // Host and targets (RFC 9112 §3.2)
            ("Host missing", "GET /v1/models HTTP/1.1\r\n\(a)\r\n", [400]),
            ("Host duplicated", "GET /v1/models HTTP/1.1\r\nHost: veil\r\nHost: evil\r\n\(a)\r\n", [400]),
            ("Host with path", "GET /v1/models HTTP/1.1\r\nHost: veil/x\r\n\(a)\r\n", [400]),
            ("authority-form GET", "GET veil:443 HTTP/1.1\r\nHost: veil\r\n\r\n", [400]),
            ("authority-form CONNECT", "CONNECT veil:443 HTTP/1.1\r\nHost: veil:443\r\n\r\n", [405, 501]),
            ("absolute-form with userinfo", "GET http://user@veil/v1/models HTTP/1.1\r\nHost: veil\r\n\(a)\r\n", [400]),
            ("absolute-form other scheme", "GET ftp://veil/v1/models HTTP/1.1\r\nHost: veil\r\n\(a)\r\n", [400]),
            ("unicode in target", "GET /v1/vid\u{e9}os HTTP/1.1\r\nHost: veil\r\n\r\n", [400]),
            ("space in target", "GET /v1/models x HTTP/1.1\r\nHost: veil\r\n\r\n", [400]),
            ("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", [400, 505]),
            ("bad version", "GET /v1/models HTTP/1.10\r\nHost: veil\r\n\r\n", [400, 505]),
            ("obs-fold", "GET /v1/models HTTP/1.1\r\nHost: veil\r\nX: a\r\n b\r\n\r\n", [400]),
            ("too many empty lines first", String(repeating: "\r\n", count: 10) + "GET / HTTP/1.1\r\nHost: veil\r\n\r\n", [400]),
            ("header line too large", "GET / HTTP/1.1\r\nHost: veil\r\nX: " + String(repeating: "a", count: 40_000) + "\r\n\r\n", [431]),
            ("request line too long", "GET /" + String(repeating: "a", count: 9_000) + " HTTP/1.1\r\nHost: veil\r\n\r\n", [414]),
        ]
    }()

    @Test func everyVectorIsRefusedAndNothingAfterItIsProcessed() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        var failures: [String] = []
        for (name, bytes, expected) in Self.vectors {
            let x = try RawHTTPClient.exchange(port: h.port, bytes: Array((bytes + Self.follower).utf8))
            if x.responses.count != 1 || !expected.contains(x.statuses.first ?? 0) {
                failures.append("\(name): statuses \(x.statuses), expected one of \(expected.sorted())")
            }
            if !x.closedByServer { failures.append("\(name): connection left open after the refusal") }
            if let r = x.responses.first, r.header("connection")?.lowercased() != "close" {
                failures.append("\(name): refusal without Connection: close")
            }
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        // Proof that nothing behind a refused request ran: the stand-in saw nothing, no access line.
        #expect(h.sandbox.requests().isEmpty, "stand-in saw \(h.sandbox.requests().map { "\($0.method) \($0.target)" })")
        #expect(!h.accessLog.contains { $0.contains("/v1/models") }, "\(h.accessLog)")
    }

    @Test func bodiesArriveByteByByteWithTheSameFraming() throws {
        // The same CL.TE vector, trickled one byte at a time: still one refusal, nothing behind it.
        let h = try VeilHarness()
        defer { h.stop() }
        let (_, bytes, _) = Self.vectors[0]
        let fd = try RawHTTPClient.connect(port: h.port, timeoutMillis: 3_000)
        defer { close(fd) }
        for b in Array((bytes + Self.follower).utf8) {
            var c = b
            if send(fd, &c, 1, Int32(MSG_NOSIGNAL)) != 1 { break }
        }
        var reader = RawHTTPClient.Reader(fd: fd)
        let r = try reader.readResponse(isHead: false)
        #expect(r.status == 400)
        #expect(throws: RawHTTPError.self) { _ = try reader.readResponse(isHead: false) }
        #expect(h.sandbox.requests().isEmpty)
    }

    @Test func validPipelinedRequestsAreEachAnsweredInOrder() throws {
        // The control: the same follower behind a *valid* chunked request is served (so the
        // refusals above are about the vectors, not about pipelining).
        let h = try VeilHarness()
        defer { h.stop() }
        let body = #"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}]}"#
        let chunked = "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\n\(Self.auth)Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + String(body.utf8.count, radix: 16) + ";ext=\"v\"\r\n" + body + "\r\n0\r\n\r\n"
        let x = try RawHTTPClient.exchange(port: h.port, bytes: Array((chunked + Self.follower + "GET /healthz HTTP/1.1\r\nHost: veil\r\nConnection: close\r\n\r\n").utf8))
        #expect(x.statuses == [200, 200, 200])
        #expect(x.closedByServer)
        #expect(h.sandbox.requests().map(\.path) == ["/v1/chat/completions", "/v1/models"])
        #expect(h.sandbox.requests().first?.bodyText == body)
    }

    @Test func absoluteFormIsReducedToOriginFormAndItsAuthorityWins() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let req = "GET http://veil.example:8080/v1/models?x=1 HTTP/1.1\r\nHost: evil.example\r\n\(Self.auth)Connection: close\r\n\r\n"
        let x = try RawHTTPClient.exchange(port: h.port, bytes: Array(req.utf8))
        #expect(x.statuses == [200])
        // Veil's upstream URL is its own: neither the absolute-form authority nor Host reach it.
        let seen = h.sandbox.requests()
        #expect(seen.map(\.path) == ["/v1/models"])
        // The configured upstream's authority (localhost:… behind the TLS front), never the caller's.
        let upstreamHost = h.tlsFront.map { "localhost:\($0.port)" } ?? "127.0.0.1:\(h.sandboxPort)"
        #expect(seen.first?.header("host") == upstreamHost)
    }

    // MARK: paths and ids

    @Test func hostileVideoIdsNeverReachAnotherUpstreamPath() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        // One real video, so the traversal attempts have something to aim past.
        let created = try h.post("/v1/videos", json: #"{"prompt":"a cat","model":"sora-2","seconds":"4","size":"720x1280"}"#)
        #expect(created.status == 200)
        let vid = jsonObject(created)["id"] as? String ?? "video_4000"
        let hostile = [
            "\(vid)/..", "\(vid)/../../models", "..%2f..%2fmodels", "%2e%2e", "%2e%2e%2fv1%2fmodels", "\(vid)%2f..%2f..%2fmodels",
            "video_4000%2F..%2F4001", "video_..", "video_.", "video_4000;x=1", "video_4000%3Bx", "video_4000%3Fa=b",
            "video_4000%23frag", "video_4000#frag", "video_4000%0d%0aX-Injected:%201", "video_4000%0aHost:evil",
            "video_%E2%80%AE4000", "video_4000%00", "video_" + String(repeating: "9", count: 65), String(repeating: "a", count: 5000),
            "video_4000/content/../../../v1/models", "video_4000/remix/..", "video_", "video_4000%20", "VIDEO_4000", "video_-..-",
            "video_4000/content%2f..%2f..", "./video_4000", "video_4000/.", "%76ideo_4000",
        ]
        var bad: [String] = []
        for id in hostile {
            for (method, suffix) in [("GET", ""), ("DELETE", ""), ("GET", "/content")] {
                let r = try RawHTTPClient.request(port: h.port, method: method, path: "/v1/videos/\(id)\(suffix)", headers: h.auth())
                if ![400, 404, 405].contains(r.status) { bad.append("\(method) \(id)\(suffix) → \(r.status)") }
            }
        }
        // Raw CR/LF, unicode and spaces cannot even be sent in a target: the parser refuses them.
        for raw in ["/v1/videos/video_4000\r\nX-Injected: 1", "/v1/videos/vid\u{e9}o_1", "/v1/videos/video_4000 x"] {
            let x = try RawHTTPClient.exchange(port: h.port, bytes: Array("GET \(raw) HTTP/1.1\r\nHost: veil\r\n\(Self.auth)\r\n".utf8))
            if x.statuses.first.map({ $0 < 400 }) ?? true { bad.append("raw \(raw.debugDescription) → \(x.statuses)") }
        }
        // Query parameters that end up in store lookups are validated too.
        for q in ["after=..%2f..", "after=video_4000%27%20OR%201=1", "limit=-1", "limit=1e9", "order=desc%0d%0a"] {
            let r = try h.get("/v1/videos?\(q)")
            if r.status != 400 { bad.append("list ?\(q) → \(r.status)") }
        }
        #expect(bad.isEmpty, "\(bad.joined(separator: "\n"))")
        // The stand-in saw only the create (and nothing but well-formed video paths).
        let paths = h.sandbox.requests().map(\.target)
        #expect(paths.allSatisfy { $0 == "/v1/videos" || $0.range(of: #"^/v1/videos/[0-9]+$"#, options: .regularExpression) != nil }, "\(paths)")
        for r in h.sandbox.requests() {
            #expect(r.header("x-injected") == nil)
        }
    }

    /// Character ids: the same hostile forms on every route that takes one. Character ids never
    /// reach an upstream path (the upstream is asked only for its whole list), so the stand-in
    /// must see nothing but the list, and nothing injected.
    @Test func hostileCharacterIdsAreRefusedAndReachNoUpstreamPath() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let hostile = [
            "char_1/..", "char_1/../../models", "..%2f..%2fmodels", "%2e%2e", "char_1%2f..%2f..%2fv1%2fmodels",
            "char_..", "char_.", "char_1;x=1", "char_1%3Bx", "char_1%3Fa=b", "char_1%23frag", "char_1#frag",
            "char_1%0d%0aX-Injected:%201", "char_1%0aHost:evil", "char_%E2%80%AE1", "char_1%00",
            "char_" + String(repeating: "9", count: 65), String(repeating: "a", count: 5000), "char_", "char_1%20",
            "CHAR_1", "char_-..-", "./char_1", "char_1/.", "%63har_1", "video_4000",
        ]
        var bad: [String] = []
        for id in hostile {
            for (method, path) in [("GET", "/v1/characters/\(id)"), ("DELETE", "/v1/characters/\(id)"), ("GET", "/v1/videos/characters/\(id)")] {
                let r = try RawHTTPClient.request(port: h.port, method: method, path: path, headers: h.auth())
                if ![400, 404, 405].contains(r.status) { bad.append("\(method) \(path) → \(r.status)") }
            }
        }
        for q in ["after=..%2f..", "after=char_1%27%20OR%201=1", "limit=-1", "limit=1e9", "order=desc%0d%0a"] {
            let r = try h.get("/v1/characters?\(q)")
            if r.status != 400 { bad.append("list ?\(q) → \(r.status)") }
        }
        #expect(bad.isEmpty, "\(bad.joined(separator: "\n"))")
        let paths = h.sandbox.requests().map(\.target)
        #expect(paths.allSatisfy { $0 == "/v1/characters" }, "\(paths)")
        for r in h.sandbox.requests() { #expect(r.header("x-injected") == nil) }
    }
}
