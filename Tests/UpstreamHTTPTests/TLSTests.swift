import Dispatch
import Glibc
import Reactor
import Synchronization
import Testing
import Upstream
@testable import UpstreamHTTP

private func ok(_ conn: ServerConn, _ body: String, extra: String = "") {
    conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\(extra)\r\n\(body)")
}
private let chunkedHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

/// The backend nginx proxies to: echoes the path (GET), the body's length and bytes (POST),
/// streams SSE events (`/stream/N`).
private func backend() -> TestServer {
    TestServer { conn, req in
        if req.method == "POST" {
            conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(req.body.count)\r\n\r\n")
            conn.send(req.body)
        } else if req.path.hasPrefix("/stream/") {
            let n = Int(req.path.dropFirst(8)) ?? 1
            conn.send(chunkedHead)
            for i in 0..<n { conn.chunk("data: \(i) " + String(repeating: "x", count: 1000) + "\n\n") }
            conn.endChunks()
        } else {
            ok(conn, req.path)
        }
        return true
    }
}

private func settings(_ fixture: NginxFixture?, idleCap: Int = 256) -> HTTPUpstreamSettings {
    var s = HTTPUpstreamSettings()
    s.tls.caFile = fixture?.caFile
    s.maxIdleConnections = idleCap
    return s
}

/// TLS against a local nginx with a CA made by the test (see `NginxFixture`).
@Suite(.serialized) struct TLSTests {

    @Test func verifiedGetPostAndKeepAlive() throws {
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port) else { return }
        defer { f.stop() }
        let h = LoopHarness(.native, native: settings(f))
        defer { h.shutdown() }
        let hello = h.run(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/hello")))
        #expect(hello.succeeded, "\(hello.finishes) \(f.errorLog)")
        #expect(hello.bodyText == "hello over tls\n")
        #expect(hello.snapshot.head?.status == 200)
        var body = [UInt8](repeating: 0, count: 300_000)
        for i in body.indices { body[i] = UInt8(truncatingIfNeeded: i &* 13 &+ 7) }
        let post = h.run(UpstreamRequest(method: "POST", url: f.url(f.goodPort, "/v1/chat"), headers: [("Content-Type", "application/json")], body: body))
        #expect(post.succeeded, "\(post.finishes)")
        #expect(post.snapshot.body == body)
        let small = h.run(UpstreamRequest(method: "POST", url: f.url(f.goodPort, "/v1/chat"), body: Array(#"{"m":1}"#.utf8)))
        #expect(small.bodyText == #"{"m":1}"#)
        // One handshake: the connection was kept and reused.
        #expect(h.onLoop { h.native.tlsHandshakes } == 1)
        #expect(h.onLoop { h.native.connectionsOpened } == 1)
        // By address: the certificate names 127.0.0.1 too (no SNI, IP checked).
        let byIP = h.run(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/hello", host: "127.0.0.1")))
        #expect(byIP.succeeded, "\(byIP.finishes)")
    }

    private func expectRefused(_ rec: Recorder, _ needle: String, sourceLocation: SourceLocation = #_sourceLocation) {
        guard case .connect(let why)? = rec.finishes.first! else {
            Issue.record("expected .connect, got \(rec.finishes)", sourceLocation: sourceLocation); return
        }
        #expect(why.contains(needle), "\(why)", sourceLocation: sourceLocation)
        #expect(rec.snapshot.head == nil, sourceLocation: sourceLocation)
    }

    @Test func unknownCAIsRefused() {
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port) else { return }
        defer { f.stop() }
        let h = LoopHarness(.native, native: settings(f))
        defer { h.shutdown() }
        expectRefused(h.run(UpstreamRequest(method: "GET", url: f.url(f.unknownCAPort, "/"))), "certificate verify failed")
        // The system store alone does not trust the test CA either.
        let h2 = LoopHarness(.native, native: settings(nil))
        defer { h2.shutdown() }
        expectRefused(h2.run(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/hello"))), "certificate verify failed")
    }

    @Test func wrongHostNameIsRefused() {
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port) else { return }
        defer { f.stop() }
        let h = LoopHarness(.native, native: settings(f))
        defer { h.shutdown() }
        expectRefused(h.run(UpstreamRequest(method: "GET", url: f.url(f.wrongHostPort, "/"))), "hostname mismatch")
        // An address the certificate does not name.
        expectRefused(h.run(UpstreamRequest(method: "GET", url: f.url(f.wrongHostPort, "/", host: "127.0.0.1"))), "IP address mismatch")
    }

    @Test func expiredCertificateIsRefused() {
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port) else { return }
        defer { f.stop() }
        let h = LoopHarness(.native, native: settings(f))
        defer { h.shutdown() }
        expectRefused(h.run(UpstreamRequest(method: "GET", url: f.url(f.expiredPort, "/"))), "expired")
    }

    /// Verification off (the named switch): the unknown CA is accepted. Never the default.
    @Test func verificationOffIsExplicit() {
        #expect(HTTPUpstreamSettings().tls.verifyPeer == true)
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port) else { return }
        defer { f.stop() }
        var s = settings(nil)
        s.tls.verifyPeer = false
        let h = LoopHarness(.native, native: s)
        defer { h.shutdown() }
        let rec = h.run(UpstreamRequest(method: "GET", url: f.url(f.unknownCAPort, "/")))
        #expect(rec.succeeded, "\(rec.finishes)")
        #expect(rec.bodyText == "should not be reached\n")
    }

    /// A new connection to an origin resumes the session of the last one (SSL_session_reused).
    @Test func sessionResumptionAcrossConnections() {
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port) else { return }
        defer { f.stop() }
        let h = LoopHarness(.native, native: settings(f, idleCap: 0))     // every request on a new connection
        defer { h.shutdown() }
        for i in 0..<4 {
            let rec = h.run(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/r\(i)")))
            #expect(rec.succeeded, "\(rec.finishes)")
            #expect(rec.bodyText == "/r\(i)")
        }
        #expect(h.onLoop { h.native.tlsHandshakes } == 4)
        #expect(h.onLoop { h.native.tlsResumptions } == 3, "only the first handshake should be a full one")
    }

    /// A missing CA file is an error at start (`validate`) and for every https request.
    @Test func missingCAFile() {
        var s = HTTPUpstreamSettings()
        s.tls.caFile = "/nonexistent/veil-ca.pem"
        #expect(HTTPUpstreamClient.validate(s)?.contains("/nonexistent/veil-ca.pem") == true)
        #expect(HTTPUpstreamClient.validate(HTTPUpstreamSettings()) == nil)
        let h = LoopHarness(.native, native: s)
        defer { h.shutdown() }
        let rec = h.run(UpstreamRequest(method: "GET", url: "https://127.0.0.1:1/"))
        // The port is closed: either way the request fails, and never silently.
        #expect(rec.finishes.count == 1 && rec.finishes[0] != nil)
    }

    /// Streaming over TLS with pauses in the middle of a read: bytes already decrypted inside
    /// OpenSSL (epoll can't see them) are delivered on resume, and nothing arrives while paused.
    @Test func streamingPauseResumeOverTLS() {
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port) else { return }
        defer { f.stop() }
        let h = LoopHarness(.native, native: settings(f))
        defer { h.shutdown() }
        let rec = Recorder()
        let pausedAt = Shared<Int>(0)
        rec.onData = { r, total in
            if pausedAt.value == 0 && total >= 5_000 {
                pausedAt.value = total
                r.transfer?.pause()
            }
        }
        var req = UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/stream/200"))
        req.receiveBufferBytes = 4096
        h.start(req, rec)
        #expect(eventually { pausedAt.value > 0 })
        usleep(300_000)
        let during = rec.snapshot.body.count
        #expect(during == pausedAt.value, "data arrived while paused")
        h.onLoop { rec.transfer?.resume() }
        #expect(rec.waitFinished())
        #expect(rec.succeeded, "\(rec.finishes)")
        let expected = (0..<200).map { "data: \($0) " + String(repeating: "x", count: 1000) + "\n\n" }.joined()
        #expect(rec.bodyText == expected)
    }

    /// Many concurrent TLS transfers to one origin.
    @Test func concurrentTLSTransfers() {
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port) else { return }
        defer { f.stop() }
        let h = LoopHarness(.native, native: settings(f))
        defer { h.shutdown() }
        h.getConcurrently(40, f.url(f.goodPort, "/c"))
        #expect(h.onLoop { h.native.activeTransfers } == 0)
        // Connections opened together: the first handshake's session may not exist yet for the
        // others, but every connection made a handshake.
        #expect(h.onLoop { h.native.tlsHandshakes } == h.onLoop { h.native.connectionsOpened })
    }
}
