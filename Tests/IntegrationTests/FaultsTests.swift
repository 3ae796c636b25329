import Foundation
import Glibc
import Reactor
import Testing

/// The stand-in misbehaving on cue (issue: hardening). Each fault maps to the right OpenAI error
/// (502 unreachable/broken/invalid, 504 too slow), the client's connection is left clean (the
/// next request on it is served), nothing crashes and no upstream transfer is left behind.
@Suite struct FaultsTests {
    static let chat = #"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}]}"#
    static let chatStream = #"{"model":"gpt-3.5-turbo","stream":true,"messages":[{"role":"user","content":"tell me a story"}]}"#
    static let videoJSON = #"{"prompt":"a cat","model":"sora-2","seconds":"4","size":"720x1280"}"#

    /// Sends `method path` (keep-alive) then `GET /healthz` on the same connection: returns both
    /// answers, proving the first left the connection usable.
    static func thenHealthz(_ h: VeilHarness, _ method: String, _ path: String, body: String? = nil, timeoutMillis: Int = 8_000) throws -> (RawResponse, RawResponse?) {
        var req = "\(method) \(path) HTTP/1.1\r\nHost: veil\r\nAuthorization: Bearer \(VeilHarness.teamTokens["web"]!)\r\n"
        if let body { req += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)" } else { req += "\r\n" }
        req += "GET /healthz HTTP/1.1\r\nHost: veil\r\nConnection: close\r\n\r\n"
        let x = try RawHTTPClient.exchange(port: h.port, bytes: Array(req.utf8), quietMillis: timeoutMillis)
        return (x.responses.first ?? RawResponse(status: 0, reason: "", headers: [], body: [], chunks: [], complete: false),
                x.responses.count > 1 ? x.responses[1] : nil)
    }

    static func errorCode(_ r: RawResponse) -> String? { (jsonObject(r)["error"] as? [String: Any])?["code"] as? String }

    static func expectClean(_ h: VeilHarness, _ r: (RawResponse, RawResponse?), status: Int, code: String? = nil,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.0.status == status, "body: \(r.0.text)", sourceLocation: sourceLocation)
        if let code { #expect(errorCode(r.0) == code, "body: \(r.0.text)", sourceLocation: sourceLocation) }
        #expect(r.0.complete, sourceLocation: sourceLocation)
        #expect(r.1?.status == 200, "the connection was not left usable", sourceLocation: sourceLocation)
        #expect(!allBytes(r.0).contains(h.upstreamKey), sourceLocation: sourceLocation)
    }

    static func waitUntil(_ seconds: Double, _ cond: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !cond() && Date() < deadline { usleep(20_000) }
        return cond()
    }

    /// A loopback port nobody listens on.
    static func closedPort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        close(fd)
        return UInt16(bigEndian: addr.sin_port)
    }

    @Test func connectionRefusedIs502Unreachable() throws {
        let port = try Self.closedPort()
        let h = try VeilHarness(upstreamBaseURL: "http://127.0.0.1:\(port)")
        defer { h.stop() }
        Self.expectClean(h, try Self.thenHealthz(h, "POST", "/v1/chat/completions", body: Self.chat), status: 502, code: "upstream_unreachable")
        Self.expectClean(h, try Self.thenHealthz(h, "POST", "/v1/chat/completions", body: Self.chatStream), status: 502, code: "upstream_unreachable")
        Self.expectClean(h, try Self.thenHealthz(h, "GET", "/v1/models"), status: 502, code: "upstream_unreachable")
        Self.expectClean(h, try Self.thenHealthz(h, "POST", "/v1/videos", body: Self.videoJSON), status: 502, code: "upstream_unreachable")
        #expect(h.activeTransfers == 0)
    }

    @Test func resetBeforeTheHeadIs502() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        for (method, path, body) in [("POST", "/v1/chat/completions", Self.chat), ("POST", "/v1/chat/completions", Self.chatStream),
                                     ("GET", "/v1/models", nil), ("POST", "/v1/videos", Self.videoJSON)] as [(String, String, String?)] {
            h.sandbox.inject(.reset, pathPrefix: path)
            let r = try Self.thenHealthz(h, method, path, body: body)
            Self.expectClean(h, r, status: 502)
            #expect(["upstream_unreachable", "upstream_broken"].contains(Self.errorCode(r.0) ?? ""), "\(path): \(r.0.text)")
        }
        #expect(Self.waitUntil(2) { h.activeTransfers == 0 })
    }

    @Test func resetMidBodyIs502Broken() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        for (method, path, body) in [("POST", "/v1/chat/completions", Self.chat), ("GET", "/v1/models", nil),
                                     ("POST", "/v1/videos", Self.videoJSON)] as [(String, String, String?)] {
            h.sandbox.inject(.resetMidBody, pathPrefix: path)
            Self.expectClean(h, try Self.thenHealthz(h, method, path, body: body), status: 502, code: "upstream_broken")
        }
    }

    @Test func stallPastTheTimeoutIs504() throws {
        let h = try VeilHarness(stallTimeoutMillis: 400)
        defer { h.stop() }
        for (method, path, body) in [("POST", "/v1/chat/completions", Self.chat), ("POST", "/v1/chat/completions", Self.chatStream),
                                     ("GET", "/v1/models", nil), ("POST", "/v1/videos", Self.videoJSON)] as [(String, String, String?)] {
            h.sandbox.inject(.stall, pathPrefix: path)
            let t0 = Date()
            Self.expectClean(h, try Self.thenHealthz(h, method, path, body: body), status: 504, code: "upstream_timeout")
            #expect(Date().timeIntervalSince(t0) < 3)
        }
        // Veil hung up on the stalled upstream responses.
        #expect(Self.waitUntil(3) { h.sandbox.openResponses == 0 })
        #expect(h.activeTransfers == 0)
    }

    @Test func invalidJSONIs502() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        h.sandbox.inject(.invalidJSON, pathPrefix: "/v1/chat/completions")
        Self.expectClean(h, try Self.thenHealthz(h, "POST", "/v1/chat/completions", body: Self.chat), status: 502, code: "upstream_invalid_response")
        h.sandbox.inject(.invalidJSON, pathPrefix: "/v1/videos")
        Self.expectClean(h, try Self.thenHealthz(h, "POST", "/v1/videos", body: Self.videoJSON), status: 502, code: "upstream_invalid_response")
        // A poll answered with half a document: 502, and the video is still there afterwards.
        let created = try h.post("/v1/videos", json: Self.videoJSON)
        let id = jsonObject(created)["id"] as? String ?? "?"
        h.sandbox.inject(.invalidJSON, method: "GET", pathPrefix: "/v1/videos/")
        Self.expectClean(h, try Self.thenHealthz(h, "GET", "/v1/videos/\(id)"), status: 502, code: "upstream_invalid_response")
    }

    @Test func hugeBodyIsCappedAt502() throws {
        let h = try VeilHarness(upstreamExtraYAML: ["max_response_bytes: 65536"])
        defer { h.stop() }
        for (method, path, body) in [("POST", "/v1/chat/completions", Self.chat), ("GET", "/v1/models", nil),
                                     ("POST", "/v1/videos", Self.videoJSON)] as [(String, String, String?)] {
            h.sandbox.inject(.hugeBody(5_000_000), pathPrefix: path)
            Self.expectClean(h, try Self.thenHealthz(h, method, path, body: body), status: 502, code: "upstream_response_too_large")
        }
        #expect(Self.waitUntil(3) { h.sandbox.openResponses == 0 })
        #expect(h.activeTransfers == 0)
    }

    @Test func streamCutWithoutDoneEndsWithAnErrorEventAndAProperChunkedEnd() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        h.sandbox.inject(.cutStream, pathPrefix: "/v1/chat/completions")
        let (r, next) = try Self.thenHealthz(h, "POST", "/v1/chat/completions", body: Self.chatStream)
        #expect(r.status == 200)
        #expect(r.complete, "the chunked body must end with its last chunk")
        #expect(!r.text.contains("[DONE]"))
        // The last event is an OpenAI error object (what the SDKs raise as APIError).
        let events = r.text.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        let last = events.last ?? ""
        #expect(last.hasPrefix("data: {\"error\":"), "\(r.text)")
        let payload = (try? JSONSerialization.jsonObject(with: Data(last.dropFirst(6).utf8))) as? [String: Any]
        #expect((payload?["error"] as? [String: Any])?["message"] is String)
        #expect(next?.status == 200, "after a cut stream the connection must still be usable")
        #expect(Self.waitUntil(2) { h.accessLog.contains { $0.contains("\"status\":200") && $0.contains("upstream_") } }, "\(h.accessLog)")
    }

    /// Chat and models relay the upstream's status (issue 2: "upstream errors keep their status");
    /// videos, which Veil translates, answer 502. Either way in the OpenAI envelope, redacted.
    @Test func upstream5xxIsAnOpenAIError() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        for code in [500, 502, 503] {
            for (method, path, body) in [("POST", "/v1/chat/completions", Self.chat), ("POST", "/v1/chat/completions", Self.chatStream),
                                         ("POST", "/v1/videos", Self.videoJSON)] as [(String, String, String?)] {
                h.sandbox.inject(.status(code, body: #"{"error":{"message":"upstream exploded","type":"new_api_error"}}"#), pathPrefix: path)
                let r = try Self.thenHealthz(h, method, path, body: body)
                Self.expectClean(h, r, status: path == "/v1/videos" ? 502 : code)
                #expect(r.0.text.contains("upstream exploded"))
                #expect((jsonObject(r.0)["error"] as? [String: Any])?["type"] as? String == "api_error")
            }
            // Not JSON at all (a proxy's HTML page).
            h.sandbox.inject(.status(code, body: "<html>Bad Gateway</html>"), pathPrefix: "/v1/chat/completions")
            Self.expectClean(h, try Self.thenHealthz(h, "POST", "/v1/chat/completions", body: Self.chat), status: code, code: "upstream_error")
        }
        // 4xx keep their status (the caller's mistake), with the upstream's message.
        h.sandbox.inject(.status(429, body: #"{"error":{"message":"slow down","type":"new_api_error"}}"#), pathPrefix: "/v1/chat/completions")
        let r = try Self.thenHealthz(h, "POST", "/v1/chat/completions", body: Self.chat)
        #expect(r.0.status == 429)
        #expect(r.1?.status == 200)
    }

    // MARK: slow and vanishing clients

    @Test func slowlorisHeadersGet408AfterTheHeaderTimeout() throws {
        let h = try VeilHarness(limitsYAML: ["header_timeout_ms: 300", "body_timeout_ms: 300"])
        defer { h.stop() }
        let fd = try RawHTTPClient.connect(port: h.port, timeoutMillis: 3_000)
        defer { close(fd) }
        let t0 = Date()
        // One header byte every 100 ms: never a complete head.
        let trickle = Array("GET /v1/models HTTP/1.1\r\nHost: veil\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa".utf8)
        var gotAnswer = false
        for b in trickle {
            var c = b
            if send(fd, &c, 1, Int32(MSG_NOSIGNAL)) != 1 { gotAnswer = true; break }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 100) > 0 { gotAnswer = true; break }
        }
        #expect(gotAnswer)
        var reader = RawHTTPClient.Reader(fd: fd)
        let r = try reader.readResponse(isHead: false)
        #expect(r.status == 408)
        #expect(r.header("connection")?.lowercased() == "close")
        #expect(Date().timeIntervalSince(t0) < 1.5)
        #expect(throws: RawHTTPError.self) { _ = try reader.readResponse(isHead: false) }
        #expect(h.sandbox.requests().isEmpty)
    }

    @Test func slowBodyGets408AndNeverReachesTheUpstream() throws {
        let h = try VeilHarness(limitsYAML: ["header_timeout_ms: 2000", "body_timeout_ms: 300"])
        defer { h.stop() }
        let fd = try RawHTTPClient.connect(port: h.port, timeoutMillis: 3_000)
        defer { close(fd) }
        let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\nAuthorization: Bearer \(VeilHarness.teamTokens["web"]!)\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"model\":"
        RawHTTPClient.sendAll(fd, Array(head.utf8))
        var reader = RawHTTPClient.Reader(fd: fd)
        let r = try reader.readResponse(isHead: false)
        #expect(r.status == 408)
        #expect(throws: RawHTTPError.self) { _ = try reader.readResponse(isHead: false) }
        #expect(h.sandbox.requests().isEmpty)
    }

    @Test func maxConnectionsRefusesPolitelyPastTheLimit() throws {
        // 2 loops, max_connections 2: one connection per loop.
        let h = try VeilHarness(limitsYAML: ["max_connections: 2"])
        defer { h.stop() }
        var held: [Int32] = []
        defer { for fd in held { close(fd) } }
        var refused = 0
        for _ in 0..<8 {
            let fd = try RawHTTPClient.connect(port: h.port, timeoutMillis: 400)
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 300) > 0 {
                var reader = RawHTTPClient.Reader(fd: fd)
                let r = try reader.readResponse(isHead: false)
                #expect(r.status == 503)
                #expect(r.header("connection")?.lowercased() == "close")
                #expect(r.header("retry-after") != nil)
                #expect((jsonObject(r)["error"] as? [String: Any])?["message"] != nil)
                #expect(throws: RawHTTPError.self) { _ = try reader.readResponse(isHead: false) }
                close(fd)
                refused += 1
            } else {
                held.append(fd)
            }
        }
        #expect(held.count <= 2)
        #expect(refused >= 6)
        // Capacity comes back once the held connections go.
        for fd in held { close(fd) }
        held = []
        #expect(Self.waitUntil(2) { h.runtime.server.openConnections.current == 0 })
        #expect(try h.get("/healthz").status == 200)
    }

    /// Regression: a producer that outlived its client connection (here a video poll answered
    /// after the client left) touched the freed connection through `HTTPResponder`'s unowned
    /// reference and killed the process ("read an unowned reference but object was destroyed").
    @Test func aClientLeavingDuringAnUpstreamCallDoesNotCrashVeil() throws {
        let h = try VeilHarness(stallTimeoutMillis: 300)
        defer { h.stop() }
        let created = try h.post("/v1/videos", json: Self.videoJSON)
        let id = jsonObject(created)["id"] as? String ?? "?"
        let token = VeilHarness.teamTokens["web"]!
        for (method, path, body, prefix) in [("GET", "/v1/videos/\(id)", "", "/v1/videos/"), ("GET", "/v1/models", "", "/v1/models"),
                                             ("POST", "/v1/videos", Self.videoJSON, "/v1/videos"),
                                             ("POST", "/v1/chat/completions", Self.chat, "/v1/chat/completions")] {
            h.sandbox.inject(.stall, pathPrefix: prefix)
            let before = h.sandbox.requests().count
            let fd = try RawHTTPClient.connect(port: h.port, timeoutMillis: 2_000)
            let req = "\(method) \(path) HTTP/1.1\r\nHost: veil\r\nAuthorization: Bearer \(token)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            RawHTTPClient.sendAll(fd, Array(req.utf8))
            #expect(Self.waitUntil(2) { h.sandbox.requests().count > before }, "\(method) \(path) never reached the stand-in")
            close(fd)
        }
        // The stalled upstream calls now time out (or were cancelled) with nobody left to answer.
        usleep(800_000)
        #expect(try h.get("/healthz").status == 200)
        #expect(Self.waitUntil(3) { h.activeTransfers == 0 })
    }

    static func openFDs() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }

    /// This process's TCP sockets with an end on one of `ports` (Veil's and the stand-in's): a
    /// precise count even while other tests open sockets of their own in parallel.
    static func socketFDs(ports: Set<UInt16>) -> Int {
        var inodes = Set<String>()
        for fd in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            if let dest = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)"), dest.hasPrefix("socket:[") {
                inodes.insert(String(dest.dropFirst(8).dropLast()))
            }
        }
        var n = 0
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let cols = line.split(separator: " ")
                guard cols.count > 9, inodes.contains(String(cols[9])) else { continue }
                let port = { (a: Substring) -> UInt16 in UInt16(a.split(separator: ":").last ?? "", radix: 16) ?? 0 }
                if ports.contains(port(cols[1])) || ports.contains(port(cols[2])) { n += 1 }
            }
        }
        return n
    }
    static func rssBytes() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let parts = s.split(separator: " ")
        return parts.count > 1 ? (Int(parts[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
    }

    /// Opens `n` streams at once, waits for the first bytes of each, then hangs up on all of them.
    static func abandonStreams(_ h: VeilHarness, _ n: Int) throws {
        let body = chatStream
        let req = Array("POST /v1/chat/completions HTTP/1.1\r\nHost: veil\r\nAuthorization: Bearer \(VeilHarness.teamTokens["web"]!)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        for _ in 0..<n {
            let fd = try RawHTTPClient.connect(port: h.port, timeoutMillis: 5_000)
            fds.append(fd)
            RawHTTPClient.sendAll(fd, req)
        }
        var buf = [UInt8](repeating: 0, count: 4096)
        for fd in fds { _ = recv(fd, &buf, buf.count, 0) }
    }

    @Test func manyClientsVanishingMidStreamLeaveNothingBehind() throws {
        let n = Int(ProcessInfo.processInfo.environment["VEIL_VANISHING_CLIENTS"] ?? "") ?? 200
        let h = try VeilHarness(sandboxTweak: { $0.sseChunkDelayMillis = 200; $0.maxRecordedRequests = 100 })
        defer { h.stop() }
        // Warm up (allocator arenas, curl connection cache), then measure the baseline.
        try Self.abandonStreams(h, 20)
        #expect(Self.waitUntil(5) { h.activeTransfers == 0 && h.sandbox.openResponses == 0 && h.runtime.server.openConnections.current == 0 })
        usleep(300_000)
        let ports: Set<UInt16> = [h.port, h.sandboxPort]
        let fd0 = Self.openFDs(), sock0 = Self.socketFDs(ports: ports), rss0 = Self.rssBytes()
        let t0 = Date()
        try Self.abandonStreams(h, n)
        // Every upstream transfer is cancelled, every client connection closed, the stand-in sees them go.
        #expect(Self.waitUntil(10) { h.activeTransfers == 0 }, "transfers left: \(h.activeTransfers)")
        #expect(Self.waitUntil(10) { h.sandbox.openResponses == 0 }, "stand-in responses left: \(h.sandbox.openResponses)")
        #expect(Self.waitUntil(5) { h.runtime.server.openConnections.current == 0 })
        #expect(Date().timeIntervalSince(t0) < 20)
        // Veil's and the stand-in's sockets back to the baseline (curl may keep a few idle upstream
        // connections).
        #expect(Self.waitUntil(10) { Self.socketFDs(ports: ports) <= sock0 + 4 }, "sockets \(sock0) → \(Self.socketFDs(ports: ports))")
        // Process-wide descriptors and memory only when this test runs alone (`scripts/vanishing-clients`
        // sets VEIL_VANISHING_CLIENTS): in the full suite other tests open and free their own in this
        // process at the same time, which made these checks flaky.
        if ProcessInfo.processInfo.environment["VEIL_VANISHING_CLIENTS"] != nil {
            #expect(Self.waitUntil(10) { Self.openFDs() <= fd0 + 8 }, "fds \(fd0) → \(Self.openFDs())")
            let grown = Self.rssBytes() - rss0
            #expect(grown < 48 << 20, "rss grew by \(grown >> 20) MiB")
        }
        print("vanishing clients: n=\(n) veil/stand-in sockets \(sock0)→\(Self.socketFDs(ports: ports)) fds \(fd0)→\(Self.openFDs()) rss \(rss0 >> 20)→\(Self.rssBytes() >> 20) MiB in \(Int(Date().timeIntervalSince(t0) * 1000)) ms")
        #expect(h.accessLog.filter { $0.contains("client_closed") }.count >= n)
        #expect(h.sandbox.clientDisconnects >= n)
    }
}
