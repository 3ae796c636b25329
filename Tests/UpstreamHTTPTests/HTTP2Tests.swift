import Dispatch
import Glibc
import Reactor
import Synchronization
import Testing
import Upstream
@testable import UpstreamHTTP

private let chunkedHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

/// The backend behind nginx's HTTP/2 server: `/big/N` streams N bytes (a pattern) in 16 KB
/// chunks, `/cut` sends one chunk then drops the connection, POST echoes its body, anything
/// else echoes the path.
private func backend() -> TestServer {
    TestServer { conn, req in
        if req.method == "POST" {
            conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(req.body.count)\r\n\r\n")
            conn.send(req.body)
            return true
        }
        if req.path.hasPrefix("/big/") {
            let n = Int(req.path.dropFirst(5)) ?? 0
            conn.send(chunkedHead)
            var sent = 0
            while sent < n {
                let k = min(16_384, n - sent)
                var piece = [UInt8](repeating: 0, count: k)
                for i in 0..<k { piece[i] = UInt8(truncatingIfNeeded: (sent + i) &* 31) }
                if !conn.send(Array(String(k, radix: 16).utf8) + [13, 10] + piece + [13, 10]) { return false }
                sent += k
            }
            conn.endChunks()
            return true
        }
        if req.path == "/cut" {
            conn.send(chunkedHead)
            conn.chunk("first part")
            usleep(100_000)
            return false                                   // closed mid-body
        }
        conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(req.path.utf8.count)\r\n\r\n\(req.path)")
        return true
    }
}

private func pattern(_ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31) } }

private func h2Settings(_ f: NginxFixture) -> HTTPUpstreamSettings {
    var s = HTTPUpstreamSettings()
    s.tls.caFile = f.caFile
    return s
}

/// HTTP/2 (nghttp2 over the TLS connection) against nginx with `listen … ssl http2`.
@Suite(.serialized) struct HTTP2Tests {

    @Test func negotiatedByALPNAndUsedForGetAndPost() {
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port, http2: true) else { return }
        defer { f.stop() }
        let h = LoopHarness(.native, native: h2Settings(f))
        defer { h.shutdown() }
        let hello = h.run(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/hello")))
        #expect(hello.succeeded, "\(hello.finishes) \(f.errorLog)")
        #expect(hello.snapshot.head?.httpVersion == 2)
        #expect(hello.snapshot.head?.status == 200)
        #expect(hello.bodyText == "hello over tls\n")
        let body = pattern(200_000)
        let post = h.run(UpstreamRequest(method: "POST", url: f.url(f.goodPort, "/echo"), headers: [("Content-Type", "application/octet-stream")], body: body))
        #expect(post.succeeded, "\(post.finishes)")
        #expect(post.snapshot.body == body)
        #expect(h.onLoop { h.native.http2Connections } == 1)
        #expect(h.onLoop { h.native.connectionsOpened } == 1)
        // http2: off speaks HTTP/1.1 to the same server.
        var s = h2Settings(f)
        s.http2 = .off
        let h1 = LoopHarness(.native, native: s)
        defer { h1.shutdown() }
        let r = h1.run(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/hello")))
        #expect(r.succeeded && r.snapshot.head?.httpVersion == 1)
    }

    /// 1,000 transfers at once from a cold pool: they wait for the first connection to learn
    /// it speaks HTTP/2, then go as streams over a handful of connections.
    @Test func thousandConcurrentStreamsOverAFewConnections() {
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port, http2: true) else { return }
        defer { f.stop() }
        let h = LoopHarness(.native, native: h2Settings(f))
        defer { h.shutdown() }
        let n = 1_000
        let recs = (0..<n).map { _ in Recorder() }
        let t0 = nowMillis()
        h.onLoop {
            for (i, r) in recs.enumerated() {
                r.transfer = h.client.start(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/c/\(i)")), delegate: r)
            }
            return ()
        }
        var failures = 0
        for (i, r) in recs.enumerated() {
            #expect(r.waitFinished(seconds: 30))
            if !(r.succeeded && r.bodyText == "/c/\(i)" && r.snapshot.head?.httpVersion == 2) { failures += 1 }
        }
        #expect(failures == 0, "\(failures) of \(n) streams failed; first: \(recs.first { !$0.succeeded }?.finishes ?? [])")
        let opened = h.onLoop { h.native.connectionsOpened }
        #expect(opened >= 1 && opened <= 4, "\(opened) connections for \(n) streams")
        #expect(h.onLoop { h.native.activeTransfers } == 0)
        print("1000 HTTP/2 streams: \(nowMillis() - t0) ms over \(opened) connection(s)")
    }

    /// The upstream behind nginx drops the connection mid-body: nginx resets that stream. The
    /// transfer is `.broken`; the connection and its other streams go on.
    @Test func streamResetMidAnswer() {
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port, http2: true) else { return }
        defer { f.stop() }
        let h = LoopHarness(.native, native: h2Settings(f))
        defer { h.shutdown() }
        #expect(h.run(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/hello"))).succeeded)
        let cut = Recorder()
        let other = Recorder()
        h.onLoop {
            cut.transfer = h.client.start(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/cut")), delegate: cut)
            other.transfer = h.client.start(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/big/300000")), delegate: other)
            return ()
        }
        #expect(cut.waitFinished())
        guard case .broken(let why)? = cut.finishes.first! else {
            Issue.record("expected .broken, got \(cut.finishes)"); return
        }
        #expect(why.contains("reset"), "\(why)")
        #expect(cut.bodyText == "first part")
        #expect(other.waitFinished())
        #expect(other.succeeded)
        #expect(other.snapshot.body == pattern(300_000))
        let after = h.run(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/hello")))
        #expect(after.succeeded)
        #expect(h.onLoop { h.native.connectionsOpened } == 1, "the reset stream took its connection with it")
    }

    /// nginx sends GOAWAY after `keepalive_requests` streams on a connection; streams above its
    /// last stream id were not processed and are sent again on a new connection — POSTs too.
    @Test func goawayRefusedStreamsAreRetriedElsewhere() {
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port, http2: true, keepaliveRequests: 5) else { return }
        defer { f.stop() }
        let h = LoopHarness(.native, native: h2Settings(f))
        defer { h.shutdown() }
        // Sequential: each connection carries 5, then the next is opened.
        for i in 0..<12 {
            let r = h.run(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/c/s\(i)")))
            #expect(r.succeeded && r.bodyText == "/c/s\(i)", "\(i): \(r.finishes)")
        }
        #expect(h.onLoop { h.native.connectionsOpened } >= 3)
        // Concurrent, POSTs included: the refused ones come back on other connections.
        let recs = (0..<12).map { _ in Recorder() }
        h.onLoop {
            for (i, r) in recs.enumerated() {
                let req = i % 2 == 0 ? UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/c/p\(i)"))
                                     : UpstreamRequest(method: "POST", url: f.url(f.goodPort, "/p\(i)"), body: Array("post \(i)".utf8))
                r.transfer = h.client.start(req, delegate: r)
            }
            return ()
        }
        for (i, r) in recs.enumerated() {
            #expect(r.waitFinished(seconds: 20))
            #expect(r.succeeded, "\(i): \(r.finishes)")
            #expect(r.bodyText == (i % 2 == 0 ? "/c/p\(i)" : "post \(i)"))
        }
        // Each POST reached the backend exactly once.
        let posts = b.requests.withLock { $0.filter { $0.method == "POST" }.map(\.path) }
        #expect(posts.sorted() == (0..<12).filter { $0 % 2 == 1 }.map { "/p\($0)" }.sorted())
        #expect(h.onLoop { h.native.retries } > 0, "nginx's GOAWAY should have refused some streams")
    }

    /// Per-stream flow control follows pause(): a paused stream stops (its window closes) while
    /// another stream on the same connection completes; on resume everything arrives intact.
    @Test func pausedStreamDoesNotBlockTheConnection() {
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port, http2: true) else { return }
        defer { f.stop() }
        var s = h2Settings(f)
        s.http2StreamWindowBytes = 64 * 1024
        let h = LoopHarness(.native, native: s)
        defer { h.shutdown() }
        #expect(h.run(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/hello"))).succeeded)
        let total = 2_000_000
        let big = Recorder()
        let pausedAt = Shared<Int>(0)
        big.onData = { r, got in
            if pausedAt.value == 0 && got >= 100_000 { pausedAt.value = got; r.transfer?.pause() }
        }
        h.start(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/big/\(total)")), big)
        #expect(eventually(millis: 5000) { pausedAt.value > 0 })
        usleep(400_000)
        let held = big.snapshot.body.count
        #expect(held == pausedAt.value, "data delivered while paused")
        let small = h.run(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/hello")))
        #expect(small.succeeded, "a paused stream blocked its connection")
        #expect(h.onLoop { h.native.connectionsOpened } == 1)
        h.onLoop { big.transfer?.resume() }
        #expect(big.waitFinished(seconds: 20))
        #expect(big.succeeded, "\(big.finishes)")
        #expect(big.snapshot.body == pattern(total))
    }

    /// Cancelling a stream (RST_STREAM) leaves the connection usable.
    @Test func cancelledStreamLeavesTheConnection() {
        let b = backend()
        defer { b.stop() }
        guard let f = NginxFixture.start(backendPort: b.port, http2: true) else { return }
        defer { f.stop() }
        let h = LoopHarness(.native, native: h2Settings(f))
        defer { h.shutdown() }
        let victim = Recorder()
        victim.onData = { r, _ in r.transfer?.cancel() }
        h.start(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/big/1000000")), victim)
        #expect(victim.waitFinished())
        #expect(victim.finishes == [.cancelled])
        #expect(victim.snapshot.eventsAfterFinish == 0)
        for i in 0..<3 {
            let r = h.run(UpstreamRequest(method: "GET", url: f.url(f.goodPort, "/c/after\(i)")))
            #expect(r.succeeded && r.bodyText == "/c/after\(i)")
        }
        #expect(h.onLoop { h.native.connectionsOpened } == 1)
    }
}
