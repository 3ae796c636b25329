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

/// The native client's connection pool, stale-connection rules and framing corner cases
/// (libcurl keeps its own rules; these are Veil's).
@Suite(.serialized) struct PoolTests {

    /// The upstream reads a request on a kept-alive connection and closes without answering: a
    /// GET is sent again on a fresh connection (RFC 9110 §9.2.2), once.
    @Test func staleConnectionGetIsRetriedOnAFreshConnection() {
        let server = TestServer { conn, req in
            if conn.served == 2 { return false }            // second request on this connection: read, then hang up
            ok(conn, req.path)
            return true
        }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        #expect(h.run(UpstreamRequest(method: "GET", url: server.url + "/warm")).succeeded)
        let rec = h.run(UpstreamRequest(method: "GET", url: server.url + "/again"))
        #expect(rec.succeeded, "\(rec.finishes)")
        #expect(rec.bodyText == "/again")
        #expect(server.acceptCount == 2)
        #expect(server.requests.withLock { $0.map(\.path) } == ["/warm", "/again", "/again"])
        #expect(h.onLoop { h.native.retries } == 1)
    }

    /// The same with a POST: it reached the upstream and may have been processed, so it is not
    /// replayed; the caller gets `.connect` naming why.
    @Test func stalePostIsNeverReplayed() {
        let server = TestServer { conn, req in
            if conn.served == 2 { return false }
            ok(conn, req.path)
            return true
        }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        #expect(h.run(UpstreamRequest(method: "GET", url: server.url + "/warm")).succeeded)
        let rec = h.run(UpstreamRequest(method: "POST", url: server.url + "/v1/chat/completions", body: Array(#"{"model":"m"}"#.utf8)))
        guard case .connect(let why)? = rec.finishes.first! else {
            Issue.record("expected .connect, got \(rec.finishes)"); return
        }
        #expect(why.contains("not retried"), "\(why)")
        usleep(100_000)
        #expect(server.requests.withLock { $0.filter { $0.method == "POST" }.count } == 1, "the POST was replayed")
        #expect(server.acceptCount == 1)
        #expect(h.onLoop { h.native.retries } == 0)
    }

    /// A fresh connection that the upstream closes before answering is an error, not a retry.
    @Test func freshConnectionClosedBeforeAnswerIsConnectError() {
        let server = TestServer { _, _ in false }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        let rec = h.run(UpstreamRequest(method: "GET", url: server.url + "/x"))
        guard case .connect? = rec.finishes.first! else { Issue.record("expected .connect, got \(rec.finishes)"); return }
        #expect(server.requestCount == 1)
        #expect(h.onLoop { h.native.retries } == 0)
    }

    /// An upstream closing an idle connection is noticed while idle (the socket stays
    /// registered): the pool drops it before any request could pick it.
    @Test func idleConnectionClosedByUpstreamLeavesThePool() {
        let closeNow = DispatchSemaphore(value: 0)
        let server = TestServer { conn, _ in
            ok(conn, "x")
            _ = closeNow.wait(timeout: .now() + 5)
            return false
        }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        #expect(h.run(UpstreamRequest(method: "GET", url: server.url + "/a")).succeeded)
        #expect(h.idleConnections == 1)
        closeNow.signal()
        #expect(eventually { h.idleConnections == 0 })
        #expect(h.onLoop { h.native.openConnections } == 0)
        #expect(h.run(UpstreamRequest(method: "GET", url: server.url + "/b")).succeeded)
        #expect(server.acceptCount == 2)
        #expect(h.onLoop { h.native.retries } == 0)
    }

    /// Idle connections are closed after `idleTimeoutMillis`.
    @Test func idleConnectionsExpire() {
        let server = TestServer { conn, _ in ok(conn, "x"); return true }
        var s = HTTPUpstreamSettings()
        s.idleTimeoutMillis = 300
        let h = LoopHarness(.native, native: s)
        defer { h.shutdown(); server.stop() }
        #expect(h.run(UpstreamRequest(method: "GET", url: server.url + "/a")).succeeded)
        #expect(h.idleConnections == 1)
        usleep(150_000)
        #expect(h.idleConnections == 1)
        #expect(eventually(millis: 1500) { h.idleConnections == 0 })
        #expect(h.onLoop { h.native.openConnections } == 0)
    }

    /// Connections opened under `refusePrivateAddresses` are never pooled nor taken from the pool.
    @Test func addressCheckedConnectionsAreNeverPooled() {
        let server = TestServer { conn, _ in ok(conn, "inside"); return true }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        #expect(h.run(UpstreamRequest(method: "GET", url: server.url + "/warm")).succeeded)
        #expect(h.idleConnections == 1)
        var req = UpstreamRequest(method: "GET", url: server.url + "/img")
        req.refusePrivateAddresses = true
        req.addressAllowList = ["127.0.0.1"]
        for _ in 0..<2 { #expect(h.run(req).succeeded) }
        #expect(server.acceptCount == 3, "a checked request used a pooled connection, or pooled its own")
        #expect(h.idleConnections == 1)
    }

    /// Leftover bytes after a response (framing the upstream got wrong) mean the connection is
    /// closed, not reused.
    @Test func bytesAfterTheResponseCloseTheConnection() {
        let server = TestServer { conn, _ in conn.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE"); return true }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        let rec = h.run(UpstreamRequest(method: "GET", url: server.url + "/a"))
        #expect(rec.succeeded)
        #expect(rec.bodyText == "ok")
        #expect(h.idleConnections == 0)
    }

    /// HEAD, 204 and 304 have no body whatever they declare; the connection stays usable.
    @Test func responsesWithoutBody() {
        let server = TestServer { conn, req in
            switch req.path {
            case "/head": conn.send("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            case "/204": conn.send("HTTP/1.1 204 No Content\r\n\r\n")
            default: conn.send("HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n")
            }
            return true
        }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        let a = h.run(UpstreamRequest(method: "HEAD", url: server.url + "/head"))
        #expect(a.succeeded)
        #expect(a.snapshot.head?.header("content-length") == "1000")
        #expect(a.snapshot.body.isEmpty)
        let b = h.run(UpstreamRequest(method: "GET", url: server.url + "/204"))
        #expect(b.succeeded && b.snapshot.head?.status == 204)
        let c = h.run(UpstreamRequest(method: "GET", url: server.url + "/304"))
        #expect(c.succeeded && c.snapshot.head?.status == 304)
        #expect(server.acceptCount == 1)
    }

    /// A body delimited by the upstream closing: delivered whole, the connection not kept.
    @Test func closeDelimitedBody() {
        let server = TestServer { conn, _ in conn.send("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"); return false }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        let rec = h.run(UpstreamRequest(method: "GET", url: server.url + "/"))
        #expect(rec.succeeded)
        #expect(rec.bodyText == "all of it")
        #expect(h.idleConnections == 0)
    }

    /// A malformed response is `.broken` and never reaches the delegate as a head.
    @Test func malformedResponsesAreBroken() {
        let server = TestServer { conn, req in
            switch req.path {
            case "/smuggle": conn.send("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            case "/fold": conn.send("HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n")
            default: conn.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            }
            return false
        }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        for path in ["/smuggle", "/fold"] {
            let rec = h.run(UpstreamRequest(method: "GET", url: server.url + path))
            guard case .broken? = rec.finishes.first! else { Issue.record("\(path): expected .broken, got \(rec.finishes)"); continue }
            #expect(rec.snapshot.head == nil, "\(path)")
        }
        let rec = h.run(UpstreamRequest(method: "GET", url: server.url + "/badchunk"))
        guard case .broken? = rec.finishes.first! else { Issue.record("expected .broken, got \(rec.finishes)"); return }
        #expect(rec.snapshot.head?.status == 200)
    }

    /// A declared length over `maxResponseBytes` fails before the head reaches the delegate.
    @Test func declaredLengthOverTheCapFailsAtOnce() {
        let server = TestServer { conn, _ in conn.send("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"); _ = conn.waitForClose(millis: 2000); return false }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        var req = UpstreamRequest(method: "GET", url: server.url + "/big")
        req.maxResponseBytes = 100
        let rec = h.run(req)
        #expect(rec.finishes == [.tooLarge])
        #expect(rec.snapshot.head == nil)
    }

    /// A host name goes through the resolver threads; the answer is cached for the origin.
    @Test func hostNamesResolveOffTheLoopAndAreCached() {
        let server = TestServer { conn, _ in ok(conn, "named"); return false }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        let url = "http://localhost:\(server.port)/n"
        #expect(h.run(UpstreamRequest(method: "GET", url: url)).succeeded)
        let cached = h.onLoop { () -> Int in
            guard let (pool, _) = h.native.origin(for: url) else { return -1 }

            return pool.addresses.count
        }
        #expect(cached >= 1)
        #expect(h.run(UpstreamRequest(method: "GET", url: url)).bodyText == "named")
    }

    /// Lookups run on resolver threads: a slow one holds up only the transfers that wait for
    /// it; a failed one is `.connect` naming the host. (A stand-in resolver: no DNS traffic.)
    @Test func slowAndFailedLookupsStayOffTheLoop() {
        let server = TestServer { conn, req in ok(conn, req.path); return true }
        let port = server.port
        let lookups = Atomic<Int>(0)
        let resolver = Resolver(threads: 2) { host, p in
            lookups.add(1, ordering: .relaxed)
            if host == "slow.test" { usleep(600_000); return .success([SocketAddress(ip: "127.0.0.1", port: p)!]) }
            return .failure(Resolver.ResolveFailure(message: "could not resolve host \(host): stand-in failure"))
        }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        h.onLoop { h.native.resolver = resolver }
        let slow = (0..<3).map { _ in Recorder() }
        let t0 = nowMillis()
        h.onLoop {
            for r in slow { r.transfer = h.client.start(UpstreamRequest(method: "GET", url: "http://slow.test:\(port)/s"), delegate: r) }
            return ()
        }
        let fast = h.run(UpstreamRequest(method: "GET", url: server.url + "/fast"))
        #expect(fast.succeeded)
        #expect(nowMillis() - t0 < 400, "a literal-address request waited for someone else's lookup")
        for r in slow { #expect(r.waitFinished()); #expect(r.bodyText == "/s") }
        #expect(lookups.load(ordering: .relaxed) == 1, "concurrent lookups of one host are coalesced")
        let failed = h.run(UpstreamRequest(method: "GET", url: "http://fail.test/x"))
        guard case .connect(let why)? = failed.finishes.first! else { Issue.record("expected .connect, got \(failed.finishes)"); return }
        #expect(why.contains("fail.test"), "\(why)")
    }

    /// Connecting is bounded by `connectTimeoutMillis` (a listener whose backlog is full never
    /// completes the handshake).
    @Test func connectTimeout() {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(fd, 0)
        let port = Socket.localPort(fd)
        // Fill the accept queue so that later handshakes are not completed.
        var fillers: [Int32] = []
        for _ in 0..<8 {
            let c = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var a = addr
            a.sin_port = port.bigEndian
            _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(c, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            fillers.append(c)
        }
        defer { close(fd); fillers.forEach { close($0) } }
        usleep(50_000)
        let h = LoopHarness(.native)
        defer { h.shutdown() }
        var req = UpstreamRequest(method: "GET", url: "http://127.0.0.1:\(port)/")
        req.connectTimeoutMillis = 300
        let t0 = nowMillis()
        let rec = h.run(req)
        let elapsed = nowMillis() - t0
        guard case .timeout? = rec.finishes.first! else { Issue.record("expected .timeout, got \(rec.finishes)"); return }
        #expect(elapsed >= 250 && elapsed < 2000, "elapsed \(elapsed) ms")
    }

    /// A request body larger than the socket buffer is written across several writable events,
    /// and the server gets it intact; the head and a small body go out in one sendmsg.
    @Test func largeBodyIsStreamedOut() {
        let server = TestServer { conn, req in ok(conn, String(req.body.count)); return true }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        var body = [UInt8](repeating: 0, count: 8 << 20)
        for i in body.indices { body[i] = UInt8(truncatingIfNeeded: i &* 7) }
        var req = UpstreamRequest(method: "POST", url: server.url + "/up", body: body)
        req.timeoutMillis = 20_000
        let rec = h.run(req)
        #expect(rec.succeeded)
        #expect(rec.bodyText == String(body.count))
        #expect(server.lastRequest?.body == body)
    }

    /// Many transfers to one origin at once: one connection each, all kept afterwards (cap
    /// allowing), and the next wave reuses them without connecting.
    @Test func waveReusesTheConnectionsOfTheLastOne() {
        let server = TestServer { conn, req in usleep(20_000); ok(conn, req.path); return true }
        let h = LoopHarness(.native)
        defer { h.shutdown(); server.stop() }
        h.getConcurrently(16, server.url + "/w")
        #expect(server.acceptCount == 16)
        #expect(h.idleConnections == 16)
        h.getConcurrently(16, server.url + "/v")
        #expect(server.acceptCount == 16)
        #expect(h.onLoop { h.native.openConnections } == 16)
    }
}
