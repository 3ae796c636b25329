import Foundation
import Glibc
import Reactor
import Testing

/// Issue 2: chat through Veil to the stand-in, the key injected, tokens checked, errors redacted.
@Suite struct ChatGatewayTests {
    @Test func nonStreamingChatReturnsTheJSONBodyAndInjectsTheKey() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let r = try h.post("/v1/chat/completions", json: #"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}]}"#,
                           headers: [("Cookie", "session=abc"), ("X-Custom", "secret-internal")])
        #expect(r.status == 200)
        #expect(jsonObject(r)["object"] as? String == "chat.completion")
        #expect(r.header("x-request-id") != nil)
        let seen = h.sandbox.requests(matching: "/v1/chat/completions")
        #expect(seen.count == 1)
        #expect(seen.first?.header("authorization") == "Bearer \(h.upstreamKey)")
        // From the configuration's shared header block: JSON body, identity encoding, once each.
        #expect(seen.first?.header("content-type") == "application/json")
        #expect(seen.first?.header("accept-encoding") == "identity")
        #expect(seen.first?.headers.values("content-type").count == 1)
        // The caller's token, cookies and unknown headers stay on the caller's side.
        #expect(seen.first?.header("cookie") == nil)
        #expect(seen.first?.header("x-custom") == nil)
        #expect(!(seen.first.map { String(describing: $0.headers) } ?? "").contains(VeilHarness.teamTokens["web"]!))
        #expect(!allBytes(r).contains(h.upstreamKey))
    }

    @Test func streamingChunksArriveBeforeTheUpstreamFinishes() throws {
        let h = try VeilHarness(sandboxTweak: { $0.sseChunkDelayMillis = 150 })
        defer { h.stop() }
        let body = #"{"model":"gpt-3.5-turbo","stream":true,"messages":[{"role":"user","content":"tell me a story"}]}"#
        let r = try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/chat/completions",
                                          headers: h.auth() + [("Content-Type", "application/json")], body: Array(body.utf8), timeoutMillis: 10_000)
        #expect(r.status == 200)
        #expect(r.header("content-type")?.hasPrefix("text/event-stream") == true)
        #expect(r.header("transfer-encoding")?.lowercased() == "chunked")
        #expect(r.text.hasSuffix("data: [DONE]\n\n"))
        // Several chunks, spread over time: the first reached us long before the last was sent.
        #expect(r.chunks.count >= 5)
        if let first = r.chunks.first, let last = r.chunks.last {
            #expect(last.atMillis - first.atMillis >= 500)
        }
        // Byte for byte what the stand-in sent (events are passed through, not re-encoded).
        #expect(r.text.contains("\"sent_at_us\":"))
        #expect(r.text.components(separatedBy: "data: ").count >= 7)
    }

    /// Streams read the upstream through a 1 KiB buffer (memory per open stream): an event several
    /// times larger arrives whole and unchanged, over as many reads as it takes.
    @Test func eventsLargerThanTheStreamBufferPassIntact() throws {
        let h = try VeilHarness(sandboxTweak: { $0.sseChunkDelayMillis = 5 })
        defer { h.stop() }
        let word = String((0..<5_000).map { i in Character(Unicode.Scalar(UInt8(97 + i % 26))) })
        let body = #"{"model":"gpt-3.5-turbo","stream":true,"messages":[{"role":"user","content":"short \#(word) end"}]}"#
        let r = try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/chat/completions",
                                          headers: h.auth() + [("Content-Type", "application/json")], body: Array(body.utf8), timeoutMillis: 10_000)
        #expect(r.status == 200)
        #expect(r.text.contains(#""content":" \#(word)""#))
        #expect(r.text.contains(#""content":" end""#))
        #expect(r.text.hasSuffix("data: [DONE]\n\n"))
    }

    /// A stream lets go of its request's body and headers once it is under way; the access log
    /// and the usage record still carry the body's size and the route.
    @Test func streamsKeepBytesInAfterLettingTheRequestGo() throws {
        let h = try VeilHarness(sandboxTweak: { $0.sseChunkDelayMillis = 5 })
        defer { h.stop() }
        let body = #"{"model":"gpt-3.5-turbo","stream":true,"messages":[{"role":"user","content":"count the bytes"}]}"#
        let r = try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/chat/completions",
                                          headers: h.auth() + [("Content-Type", "application/json")], body: Array(body.utf8), timeoutMillis: 10_000)
        #expect(r.status == 200)
        #expect(r.text.hasSuffix("data: [DONE]\n\n"))
        var line: String?
        for _ in 0..<100 where line == nil {
            line = h.accessLog.first { $0.contains("/v1/chat/completions") }
            if line == nil { usleep(10_000) }
        }
        #expect(line?.contains("\"bytes_in\":\(body.utf8.count)") == true, "\(line ?? "no access line")")
        #expect(line?.contains("\"method\":\"POST\"") == true)
    }

    @Test func wrongOrMissingTokenIs401() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let missing = try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/models")
        #expect(missing.status == 401)
        let wrong = try RawHTTPClient.request(port: h.port, method: "GET", path: "/v1/models", headers: [("Authorization", "Bearer nope")])
        #expect(wrong.status == 401)
        let err = jsonObject(wrong)["error"] as? [String: Any]
        #expect(err?["type"] as? String == "authentication_error")
        #expect(h.sandbox.count("GET", "/v1/models") == 0)
    }

    /// The upstream refusing Veil's own key (its 401 echoes the key) is the gateway's fault, not
    /// the team's token: 502 `upstream_auth_failed` (an SDK would raise AuthenticationError for a
    /// 401 and the team would blame its token), counted in /metrics, the key in nothing.
    @Test func upstreamRefusingTheGatewaysKeyIs502AndNeverLeaksIt() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let r = try h.post("/v1/chat/completions", json: #"{"model":"sandbox-echo-key","messages":[{"role":"user","content":"x"}]}"#)
        #expect(r.status == 502)
        let err = jsonObject(r)["error"] as? [String: Any]
        #expect(err?["code"] as? String == "upstream_auth_failed")
        #expect(err?["type"] as? String == "api_error")
        #expect(!allBytes(r).contains(h.upstreamKey))
        let metrics = try RawHTTPClient.request(port: h.port, method: "GET", path: "/metrics")
        #expect(metrics.text.contains("veil_upstream_auth_failures_total 1"))
        h.sandbox.inject(.echoKey, pathPrefix: "/v1/chat/completions")
        let s = try h.post("/v1/chat/completions", json: #"{"model":"gpt-3.5-turbo","stream":true,"messages":[{"role":"user","content":"x"}]}"#)
        #expect(!allBytes(s).contains(h.upstreamKey))
        for line in h.accessLog { #expect(!line.contains(h.upstreamKey)) }
    }

    @Test func upstreamErrorsKeepTheirStatusInTheOpenAIEnvelope() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        h.sandbox.inject(.status(500, body: "<html>upstream exploded, key=\(h.upstreamKey)</html>"), pathPrefix: "/v1/chat/completions")
        let html = try h.post("/v1/chat/completions", json: #"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"x"}]}"#)
        #expect(html.status == 500)
        let e = jsonObject(html)["error"] as? [String: Any]
        #expect(e?["type"] as? String == "api_error")
        #expect(!allBytes(html).contains(h.upstreamKey))
        h.sandbox.inject(.status(429, body: #"{"error":{"message":"slow down","type":"rate_limit_error"}}"#), pathPrefix: "/v1/chat/completions")
        let limited = try h.post("/v1/chat/completions", json: #"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"x"}]}"#)
        #expect(limited.status == 429)
        #expect(((jsonObject(limited)["error"] as? [String: Any])?["message"] as? String)?.contains("slow down") == true)
    }

    @Test func modelsAreForwardedAndUnknownRoutesAre404() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let m = try h.get("/v1/models")
        #expect(m.status == 200)
        #expect(m.text.contains("gpt-3.5-turbo"))
        let nf = try h.get("/v1/engines")
        #expect(nf.status == 404)
        #expect((jsonObject(nf)["error"] as? [String: Any])?["type"] as? String == "invalid_request_error")
        let wrongMethod = try h.delete("/v1/chat/completions")
        #expect(wrongMethod.status == 405)
    }

    @Test func clientThatDisconnectsMidStreamCancelsTheUpstreamTransfer() throws {
        let h = try VeilHarness(sandboxTweak: { $0.sseChunkDelayMillis = 200 })
        defer { h.stop() }
        let fd = try RawHTTPClient.connect(port: h.port, timeoutMillis: 5_000)
        let body = #"{"model":"gpt-3.5-turbo","stream":true,"messages":[{"role":"user","content":"a long story please"}]}"#
        let req = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(VeilHarness.teamTokens["web"]!)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        RawHTTPClient.sendAll(fd, Array(req.utf8))
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buf, buf.count, 0) // the head and first event
        #expect(n > 0)
        #expect(h.activeTransfers == 1)
        close(fd)
        let deadline = Date().addingTimeInterval(3)
        while h.activeTransfers > 0 && Date() < deadline { usleep(20_000) }
        #expect(h.activeTransfers == 0)
        #expect(h.accessLog.contains { $0.contains("client_closed") })
    }

    /// With `VEIL_TEST_UPSTREAM_TLS=1` (scripts/test's second pass) these suites must really reach
    /// the upstream through TLS, verified against the test CA; without it, over plain HTTP.
    @Test func theUpstreamIsReachedOverTheTransportAskedFor() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let r = try h.post("/v1/chat/completions", json: #"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
        #expect(r.status == 200)
        if TLSFront.enabled {
            let front = try #require(h.tlsFront, "VEIL_TEST_UPSTREAM_TLS=1 but no TLS front")
            #expect(h.runtime.config.upstream.baseURL.hasPrefix("https://localhost:"))
            #expect(front.handshakes.load(ordering: .relaxed) >= 1)
        } else {
            #expect(h.tlsFront == nil)
            #expect(h.runtime.config.upstream.baseURL.hasPrefix("http://127.0.0.1:"))
        }
    }
}
