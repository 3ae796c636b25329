import Dispatch
import Glibc
import Reactor
import Synchronization
import Testing
@testable import Upstream

private func ok(_ conn: ServerConn, _ body: String, extra: String = "") {
    conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\(extra)\r\n\(body)")
}
private let chunkedHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

@Suite(.serialized) struct UpstreamClientTests {

    @Test func getReturnsHeadAndBody() {
        let server = TestServer { conn, _ in ok(conn, "hello", extra: "X-Test: yes\r\n"); return true }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        h.start(UpstreamRequest(method: "GET", url: server.url + "/models"), rec)
        #expect(rec.waitFinished())
        let s = rec.snapshot
        #expect(s.finishes.count == 1)
        #expect(s.finishes.first! == nil)
        #expect(s.head?.status == 200)
        #expect(s.head?.httpVersion == 1)
        #expect(s.head?.header("x-test") == "yes")
        #expect(s.head?.header("content-length") == "5")
        #expect(rec.bodyText == "hello")
        #expect(server.lastRequest?.method == "GET")
        #expect(server.lastRequest?.path == "/models")
        // libcurl's default "Accept: */*" is suppressed when the caller gives none.
        #expect(server.lastRequest?.header("accept") == nil)
        #expect(h.onLoop { h.client.activeTransfers } == 0)
    }

    @Test func postBodyAndHeadersArriveIntact() {
        let server = TestServer { conn, req in
            conn.send("HTTP/1.1 201 Created\r\nContent-Length: \(req.body.count)\r\n\r\n")
            conn.send(req.body)
            return true
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        var body = [UInt8]()
        for i in 0..<200_000 { body.append(UInt8(truncatingIfNeeded: i &* 31 &+ i >> 8)) }   // includes zeros
        let rec = Recorder()
        var req = UpstreamRequest(method: "POST", url: server.url + "/v1/chat",
                                  headers: [("Authorization", "Bearer k"), ("X-Veil", "1"), ("Content-Type", "application/json"),
                                            ("X-Bad", "a\r\nInjected: yes")],
                                  body: body)
        req.timeoutMillis = 10_000
        h.start(req, rec)
        #expect(rec.waitFinished())
        #expect(rec.finishes.first! == nil)
        #expect(rec.snapshot.head?.status == 201)
        #expect(rec.snapshot.body == body)
        let got = server.lastRequest
        #expect(got?.method == "POST")
        #expect(got?.body == body)
        #expect(got?.header("authorization") == "Bearer k")
        #expect(got?.header("x-veil") == "1")
        #expect(got?.header("content-type") == "application/json")
        #expect(got?.header("expect") == nil)
        #expect(got?.header("injected") == nil)
        #expect(got?.header("accept") == nil)
    }

    @Test func otherMethodsAndNoSurpriseContentType() {
        let server = TestServer { conn, _ in ok(conn, "ok"); return true }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        h.start(UpstreamRequest(method: "POST", url: server.url + "/p", headers: [("Accept", "text/event-stream")], body: Array("x=1".utf8)), rec)
        #expect(rec.waitFinished())
        #expect(server.lastRequest?.header("content-type") == nil)   // not x-www-form-urlencoded
        #expect(server.lastRequest?.header("accept") == "text/event-stream")
        let rec2 = Recorder()
        h.start(UpstreamRequest(method: "DELETE", url: server.url + "/d"), rec2)
        #expect(rec2.waitFinished())
        #expect(rec2.finishes.first! == nil)
        #expect(server.lastRequest?.method == "DELETE")
        let rec3 = Recorder()
        h.start(UpstreamRequest(method: "PUT", url: server.url + "/u", body: Array("abc".utf8)), rec3)
        #expect(rec3.waitFinished())
        #expect(server.lastRequest?.method == "PUT")
        #expect(server.lastRequest?.body == Array("abc".utf8))
    }

    @Test func interimResponsesAreSkipped() {
        let server = TestServer { conn, _ in
            conn.send("HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
            ok(conn, "final", extra: "X-Final: 1\r\n")
            return true
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        h.start(UpstreamRequest(method: "GET", url: server.url), rec)
        #expect(rec.waitFinished())
        #expect(rec.snapshot.head?.status == 200)
        #expect(rec.snapshot.head?.header("link") == nil)
        #expect(rec.snapshot.head?.header("x-final") == "1")
        #expect(rec.bodyText == "final")
        #expect(rec.snapshot.headAfterData == false)
    }

    @Test func streamingDeliversFirstChunkBeforeSecondIsSent() {
        let gotFirst = DispatchSemaphore(value: 0)
        let secondSentAt = Shared<UInt64>(0)
        let waitedOK = Shared<Bool>(false)
        let server = TestServer { conn, _ in
            conn.send(chunkedHead)
            conn.chunk("data: one\n\n")
            waitedOK.value = gotFirst.wait(timeout: .now() + 3) == .success
            usleep(300_000)
            secondSentAt.value = nowMillis()
            conn.chunk("data: two\n\n")
            conn.endChunks()
            return true
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        rec.onData = { r, total in if total == "data: one\n\n".utf8.count { gotFirst.signal() } }
        h.start(UpstreamRequest(method: "GET", url: server.url + "/stream"), rec)
        #expect(rec.waitFinished())
        #expect(rec.finishes.first! == nil)
        #expect(waitedOK.value, "first chunk did not reach the delegate before the second was sent")
        let times = rec.snapshot.chunkTimes
        #expect(times.count >= 2)
        if let first = times.first { #expect(first.at < secondSentAt.value) }
        #expect(rec.bodyText == "data: one\n\ndata: two\n\n")
    }

    @Test func pauseInsideCallbackStopsDataUntilResume() {
        let allSent = DispatchSemaphore(value: 0)
        let server = TestServer { conn, _ in
            conn.send(chunkedHead)
            conn.chunk(String(repeating: "a", count: 100))
            usleep(150_000)
            for _ in 0..<20 { conn.chunk(String(repeating: "b", count: 1000)) }
            conn.endChunks()
            allSent.signal()
            return true
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        rec.onData = { r, total in if total == 100 { r.transfer?.pause() } }
        h.start(UpstreamRequest(method: "GET", url: server.url), rec)
        #expect(allSent.wait(timeout: .now() + 5) == .success)
        usleep(500_000)
        #expect(rec.snapshot.body.count == 100, "data arrived while paused")
        #expect(rec.finishes.isEmpty)
        h.onLoop { rec.transfer?.resume() }
        #expect(rec.waitFinished())
        #expect(rec.finishes.first! == nil)
        #expect(rec.snapshot.body.count == 100 + 20_000)
    }

    @Test func pauseFromOutsideThenResume() {
        let paused = DispatchSemaphore(value: 0)
        let server = TestServer { conn, _ in
            conn.send(chunkedHead)
            conn.chunk("first")
            _ = paused.wait(timeout: .now() + 3)
            for _ in 0..<10 { conn.chunk(String(repeating: "c", count: 5000)) }
            conn.endChunks()
            return true
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        let firstSeen = DispatchSemaphore(value: 0)
        rec.onData = { _, total in if total == 5 { firstSeen.signal() } }
        h.start(UpstreamRequest(method: "GET", url: server.url), rec)
        #expect(firstSeen.wait(timeout: .now() + 5) == .success)
        h.onLoop { rec.transfer?.pause() }
        paused.signal()
        usleep(500_000)
        #expect(rec.snapshot.body.count == 5, "data arrived while paused")
        // pause + resume + pause in one tick leaves it paused
        h.onLoop { rec.transfer?.resume(); rec.transfer?.pause() }
        usleep(200_000)
        #expect(rec.snapshot.body.count == 5)
        h.onLoop { rec.transfer?.resume() }
        #expect(rec.waitFinished())
        #expect(rec.finishes.first! == nil)
        #expect(rec.snapshot.body.count == 5 + 50_000)
    }

    @Test func cancelInsideCallbackMidStream() {
        let sawClose = Shared<Bool>(false)
        let serverDone = DispatchSemaphore(value: 0)
        let server = TestServer { conn, _ in
            conn.send(chunkedHead)
            conn.chunk("one")
            var closed = false
            for _ in 0..<60 where !closed {
                if conn.waitForClose(millis: 50) { closed = true; break }
                if !conn.chunk("more") { closed = true }
            }
            sawClose.value = closed
            serverDone.signal()
            return false
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        rec.onData = { r, _ in r.transfer?.cancel(); r.transfer?.cancel() }
        h.start(UpstreamRequest(method: "GET", url: server.url), rec)
        #expect(rec.waitFinished())
        #expect(serverDone.wait(timeout: .now() + 5) == .success)
        #expect(sawClose.value)
        usleep(100_000)
        let s = rec.snapshot
        #expect(s.finishes.count == 1)
        #expect(s.finishes.first! == .cancelled)
        #expect(s.eventsAfterFinish == 0)
        #expect(rec.bodyText == "one")
        #expect(h.onLoop { h.client.activeTransfers } == 0)
    }

    @Test func cancelFromOutsideIsImmediateAndOnce() {
        let sawClose = Shared<Bool>(false)
        let serverDone = DispatchSemaphore(value: 0)
        let server = TestServer { conn, _ in
            conn.send(chunkedHead)
            conn.chunk("one")
            sawClose.value = conn.waitForClose(millis: 3000)
            serverDone.signal()
            return false
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        let first = DispatchSemaphore(value: 0)
        rec.onData = { _, _ in first.signal() }
        h.start(UpstreamRequest(method: "GET", url: server.url), rec)
        #expect(first.wait(timeout: .now() + 5) == .success)
        let countRightAfter = h.onLoop { () -> Int in
            let t = rec.transfer
            t?.cancel()
            t?.cancel()
            t?.pause(); t?.resume()
            return rec.finishes.count
        }
        #expect(countRightAfter == 1)
        #expect(serverDone.wait(timeout: .now() + 5) == .success)
        #expect(sawClose.value)
        #expect(rec.finishes == [.cancelled])
        #expect(h.onLoop { h.client.activeTransfers } == 0)
    }

    @Test func cancelInHeadCallbackAndStartFromFinish() {
        let server = TestServer { conn, req in
            if req.path == "/slow" {
                conn.send(chunkedHead); conn.chunk("x")
                _ = conn.waitForClose(millis: 3000)
                return false
            }
            ok(conn, "second")
            return true
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        let rec2 = Recorder()
        rec.onHead = { r in r.transfer?.cancel() }
        rec.onFinish = { _ in
            // Starting a new transfer from inside a finish callback must work.
            rec2.transfer = h.client.start(UpstreamRequest(method: "GET", url: server.url + "/next"), delegate: rec2)
        }
        h.start(UpstreamRequest(method: "GET", url: server.url + "/slow"), rec)
        #expect(rec.waitFinished())
        #expect(rec.finishes == [.cancelled])
        #expect(rec.snapshot.body.isEmpty)
        #expect(rec2.waitFinished())
        #expect(rec2.finishes.first! == nil)
        #expect(rec2.bodyText == "second")
    }

    @Test func connectionRefusedIsConnectError() {
        // A bound but not listening socket: connecting to it is refused.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        let port = Socket.localPort(fd)
        defer { close(fd) }
        let h = LoopHarness()
        defer { h.shutdown() }
        let rec = Recorder()
        h.start(UpstreamRequest(method: "GET", url: "http://127.0.0.1:\(port)/"), rec)
        #expect(rec.waitFinished())
        guard case .connect(let why)? = rec.finishes.first! else {
            Issue.record("expected .connect, got \(String(describing: rec.finishes))"); return
        }
        // libcurl's own detail (its error buffer) follows its generic text.
        #expect(why.contains(": "), "\(why)")
        #expect(rec.snapshot.head == nil)
    }

    @Test func schemeNotAllowedIsRefusedAsynchronously() {
        let h = LoopHarness()
        defer { h.shutdown() }
        let rec = Recorder()
        var req = UpstreamRequest(method: "GET", url: "http://127.0.0.1:1/")
        req.allowedSchemes = ["https"]
        let frozen = req
        let immediate = h.onLoop { () -> Int in
            rec.transfer = h.client.start(frozen, delegate: rec)
            return rec.finishes.count
        }
        #expect(immediate == 0)
        #expect(rec.waitFinished())
        guard case .refused? = rec.finishes.first! else { Issue.record("expected .refused"); return }
        let rec2 = Recorder()
        h.start(UpstreamRequest(method: "GET", url: "ftp://127.0.0.1/x"), rec2)
        #expect(rec2.waitFinished())
        guard case .refused? = rec2.finishes.first! else { Issue.record("expected .refused for ftp"); return }
    }

    @Test func stallIsTimeout() {
        let server = TestServer { conn, _ in
            conn.send(chunkedHead)
            conn.chunk("start")
            _ = conn.waitForClose(millis: 5000)
            return false
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        var req = UpstreamRequest(method: "GET", url: server.url)
        req.stallTimeoutMillis = 1000
        let t0 = nowMillis()
        h.start(req, rec)
        #expect(rec.waitFinished())
        let elapsed = nowMillis() - t0
        guard case .timeout? = rec.finishes.first! else { Issue.record("expected .timeout, got \(String(describing: rec.finishes))"); return }
        #expect(elapsed >= 900 && elapsed < 3500, "elapsed \(elapsed) ms")
        #expect(rec.bodyText == "start")
    }

    @Test func sparseBytesAndPausesAreNotStalls() {
        let server = TestServer { conn, _ in
            conn.send(chunkedHead)
            for _ in 0..<4 { conn.chunk(":"); usleep(400_000) }   // a ping every 400 ms, < 1 byte/s on average
            conn.chunk("end")
            conn.endChunks()
            return true
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        var req = UpstreamRequest(method: "GET", url: server.url)
        req.stallTimeoutMillis = 1000
        h.start(req, rec)
        #expect(rec.waitFinished())
        #expect(rec.finishes.first! == nil)
        #expect(rec.bodyText == "::::end")

        // Paused by us for longer than the stall timeout: not the upstream's fault.
        let paused = Recorder()
        paused.onData = { r, total in if total == 1 { r.transfer?.pause() } }
        h.start(req, paused)
        usleep(2_000_000)
        #expect(paused.finishes.isEmpty)
        h.onLoop { paused.transfer?.resume() }
        #expect(paused.waitFinished())
        #expect(paused.finishes.first! == nil)
        #expect(paused.bodyText == "::::end")
    }

    @Test func totalTimeoutIsTimeout() {
        let server = TestServer { conn, _ in
            _ = conn.waitForClose(millis: 5000)   // never answers
            return false
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        var req = UpstreamRequest(method: "GET", url: server.url)
        req.timeoutMillis = 400
        let t0 = nowMillis()
        h.start(req, rec)
        #expect(rec.waitFinished())
        guard case .timeout? = rec.finishes.first! else { Issue.record("expected .timeout, got \(String(describing: rec.finishes))"); return }
        #expect(nowMillis() - t0 < 2000)
    }

    @Test func maxResponseBytesIsTooLarge() {
        let big = String(repeating: "z", count: 10_000)
        let server = TestServer { conn, req in
            if req.path == "/cl" { ok(conn, big); return true }
            conn.send(chunkedHead)
            for _ in 0..<10 { conn.chunk(String(repeating: "z", count: 1000)) }
            conn.endChunks()
            return true
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        for path in ["/cl", "/chunked"] {
            let rec = Recorder()
            var req = UpstreamRequest(method: "GET", url: server.url + path)
            req.maxResponseBytes = 2500
            h.start(req, rec)
            #expect(rec.waitFinished())
            #expect(rec.finishes == [.tooLarge], "\(path)")
            #expect(rec.snapshot.body.count <= 2500)
        }
        // At the limit exactly is fine.
        let rec = Recorder()
        var req = UpstreamRequest(method: "GET", url: server.url + "/chunked")
        req.maxResponseBytes = 10_000
        h.start(req, rec)
        #expect(rec.waitFinished())
        #expect(rec.finishes.first! == nil)
    }

    /// A stream holds its transfer for minutes: libcurl's error buffer goes once the head is in
    /// (checked on the loop while the stream waits for its second event). A cut after that is
    /// still `.broken`, named by libcurl's error text; a connect failure keeps its detail.
    @Test func errorBufferIsDroppedOnceTheHeadArrives() {
        let cut = DispatchSemaphore(value: 0)
        let server = TestServer { conn, _ in
            conn.send(chunkedHead)
            conn.chunk("data: one\n\n")
            _ = cut.wait(timeout: .now() + 3)
            conn.chunk("data: two\n\n")
            return false                                  // closed without the last chunk
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        let gotOne = DispatchSemaphore(value: 0)
        rec.onData = { _, total in if total == "data: one\n\n".utf8.count { gotOne.signal() } }
        h.start(UpstreamRequest(method: "GET", url: server.url + "/stream"), rec)
        #expect(gotOne.wait(timeout: .now() + 5) == .success)
        let held = h.onLoop { (rec.transfer as? CurlTransfer)?.holdsErrorBuffer }
        cut.signal()
        #expect(rec.waitFinished())
        #expect(held == false, "the error buffer outlived the head")
        guard case .broken(let why)? = rec.finishes.first! else {
            Issue.record("expected .broken, got \(String(describing: rec.finishes))"); return
        }
        #expect(!why.isEmpty)
        #expect(rec.bodyText == "data: one\n\ndata: two\n\n")
    }

    @Test func truncatedBodyIsBroken() {
        let server = TestServer { conn, _ in
            conn.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
            return false
        }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        h.start(UpstreamRequest(method: "GET", url: server.url), rec)
        #expect(rec.waitFinished())
        guard case .broken? = rec.finishes.first! else { Issue.record("expected .broken, got \(String(describing: rec.finishes))"); return }
        #expect(rec.bodyText == "only-part")
    }

    @Test func privateAddressesRefusedUnlessAllowListed() {
        let server = TestServer { conn, _ in ok(conn, "inside"); return true }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }

        var req = UpstreamRequest(method: "GET", url: server.url)
        req.refusePrivateAddresses = true
        let refused = Recorder()
        h.start(req, refused)
        #expect(refused.waitFinished())
        guard case .refused(let why)? = refused.finishes.first! else {
            Issue.record("expected .refused, got \(String(describing: refused.finishes))"); return
        }
        #expect(why.contains("127.0.0.1"))
        #expect(server.accepts.load(ordering: .relaxed) == 0)

        for allow in [["127.0.0.0/8"], ["127.0.0.1"], ["::ffff:127.0.0.1"]] {
            req.addressAllowList = allow
            let allowed = Recorder()
            h.start(req, allowed)
            #expect(allowed.waitFinished())
            #expect(allowed.finishes.first! == nil, "allow list \(allow)")
            #expect(allowed.bodyText == "inside")
        }

        var byName = UpstreamRequest(method: "GET", url: "http://localhost:\(server.port)/")
        byName.refusePrivateAddresses = true
        let r1 = Recorder()
        h.start(byName, r1)
        #expect(r1.waitFinished())
        guard case .refused? = r1.finishes.first! else { Issue.record("localhost not refused"); return }
        byName.addressAllowList = ["LOCALHOST"]
        let r2 = Recorder()
        h.start(byName, r2)
        #expect(r2.waitFinished())
        #expect(r2.finishes.first! == nil)
        #expect(r2.bodyText == "inside")
    }

    @Test func keepAliveReusesOneConnection() {
        let server = TestServer { conn, _ in ok(conn, "k"); return true }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        for _ in 0..<3 {
            let rec = Recorder()
            h.start(UpstreamRequest(method: "GET", url: server.url + "/again"), rec)
            #expect(rec.waitFinished())
            #expect(rec.finishes.first! == nil)
            #expect(rec.bodyText == "k")
        }
        #expect(server.accepts.load(ordering: .relaxed) == 1)
        #expect(server.requests.withLock { $0.count } == 3)
    }

    /// libcurl says REMOVE after each transfer and IN before the next on the same connection;
    /// the socket stays registered instead of costing two epoll_ctl per request.
    @Test func keptAliveSocketStaysRegisteredBetweenTransfers() {
        let server = TestServer { conn, _ in ok(conn, "k"); return true }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        func get() {
            let rec = Recorder()
            h.start(UpstreamRequest(method: "GET", url: server.url + "/again"), rec)
            #expect(rec.waitFinished())
            #expect(rec.finishes.first! == nil)
            #expect(rec.bodyText == "k")
        }
        get()
        #expect(h.onLoop { h.client.parkedSockets } == 1)
        let before = h.onLoop { h.loop.epollCtlCalls }
        for _ in 0..<20 { get() }
        let after = h.onLoop { h.loop.epollCtlCalls }
        #expect(after - before == 0, "epoll_ctl calls for 20 requests on one kept-alive connection")
        #expect(server.accepts.load(ordering: .relaxed) == 1)
    }

    /// An upstream closing an idle (parked) connection wakes the loop once, which unregisters
    /// it (level-triggered, it would otherwise spin); the next request connects afresh.
    @Test func upstreamClosingAParkedConnectionIsHandled() {
        let server = TestServer { conn, _ in ok(conn, "once"); return false }   // then closes
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        for round in 1...3 {
            let rec = Recorder()
            h.start(UpstreamRequest(method: "GET", url: server.url + "/r"), rec)
            #expect(rec.waitFinished())
            #expect(rec.finishes.first! == nil)
            #expect(rec.bodyText == "once")
            // The server's close arrives on the parked socket: it is unregistered, not spun on.
            var parked = -1
            for _ in 0..<200 {
                parked = h.onLoop { h.client.parkedSockets }
                if parked == 0 { break }
                usleep(5_000)
            }
            #expect(parked == 0, "round \(round): the closed connection is still parked")
            let ctl = h.onLoop { h.loop.epollCtlCalls }
            usleep(50_000)
            #expect(h.onLoop { h.loop.epollCtlCalls } == ctl, "no epoll churn while idle")
        }
        #expect(server.accepts.load(ordering: .relaxed) == 3)
    }

    /// Idle upstream connections are capped at `maxCachedConnections` without libcurl's own cap
    /// (which walks every connection, busy ones included, each time a transfer ends): transfers
    /// beyond the cap close their connection when done; the ones kept are reused.
    @Test func idleConnectionsAreCappedAndReused() {
        let server = TestServer { conn, req in usleep(100_000); ok(conn, req.path); return true }
        var settings = UpstreamClientSettings()
        settings.maxCachedConnections = 4
        let h = LoopHarness(settings: settings)
        defer { h.shutdown(); server.stop() }
        h.getConcurrently(12, server.url + "/b")
        #expect(server.accepts.load(ordering: .relaxed) == 12)
        #expect(h.onLoop { h.client.idleConnectionEstimate } == 4, "idle connections kept")
        for i in 0..<6 {
            let r = Recorder()
            h.start(UpstreamRequest(method: "GET", url: server.url + "/again\(i)"), r)
            #expect(r.waitFinished())
            #expect(r.bodyText == "/again\(i)")
        }
        #expect(server.accepts.load(ordering: .relaxed) == 12, "sequential requests reuse a kept connection")
        #expect(h.onLoop { h.client.idleConnectionEstimate } == 4)
    }

    @Test func manyConcurrentTransfers() {
        let server = TestServer { conn, req in usleep(20_000); ok(conn, req.path); return true }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        h.getConcurrently(30, server.url + "/r")
        #expect(h.onLoop { h.client.activeTransfers } == 0)
    }
}

@Suite struct AddressPolicyTests {
    @Test(arguments: [
        ("127.0.0.1", true), ("127.255.1.2", true), ("10.1.2.3", true), ("172.16.0.1", true),
        ("172.31.255.255", true), ("172.32.0.1", false), ("172.15.0.1", false), ("192.168.1.1", true),
        ("192.169.0.1", false), ("169.254.169.254", true), ("100.64.0.1", true), ("100.127.255.255", true),
        ("100.128.0.1", false), ("100.63.255.255", false), ("0.0.0.0", true), ("0.1.2.3", true),
        ("224.0.0.1", true), ("239.255.255.255", true), ("240.0.0.1", true), ("255.255.255.255", true),
        ("8.8.8.8", false), ("1.1.1.1", false), ("93.184.216.34", false), ("11.0.0.1", false),
        ("::1", true), ("::", true), ("fc00::1", true), ("fd12:3456::1", true), ("fe80::1", true),
        ("febf::1", true), ("fec0::1", true), ("ff02::1", true),
        ("::ffff:127.0.0.1", true), ("::ffff:10.0.0.1", true), ("::ffff:8.8.8.8", false),
        ("::127.0.0.1", true), ("64:ff9b::10.0.0.1", true), ("64:ff9b::8.8.8.8", false),
        ("2002:0a00:0001::", true), ("2002:0808:0808::", false),
        ("2001:4860:4860::8888", false), ("2606:4700::1111", false), ("[::1]", true), ("fe80::1%eth0", true),
    ])
    func classification(address: String, nonPublic: Bool) throws {
        let ip = try #require(AddressPolicy.parseIP(address))
        #expect((AddressPolicy.nonPublicReason(ip) != nil) == nonPublic, "\(address)")
    }

    @Test func parseRejectsNonAddresses() {
        #expect(AddressPolicy.parseIP("example.com") == nil)
        #expect(AddressPolicy.parseIP("256.1.1.1") == nil)
        #expect(AddressPolicy.parseIP("") == nil)
        #expect(AddressPolicy.parseIP("1.2.3.4")?.count == 4)
        #expect(AddressPolicy.parseIP("::1")?.count == 16)
    }

    @Test func allowList() throws {
        let lo = try #require(AddressPolicy.parseIP("127.0.0.1"))
        let mappedLo = try #require(AddressPolicy.parseIP("::ffff:127.0.0.1"))
        let ten = try #require(AddressPolicy.parseIP("10.9.8.7"))
        let v6lo = try #require(AddressPolicy.parseIP("::1"))
        let pub = try #require(AddressPolicy.parseIP("8.8.8.8"))
        #expect(AddressPolicy.refusal(address: pub, host: "dns.google", allowList: []) == nil)
        #expect(AddressPolicy.refusal(address: lo, host: "x", allowList: []) != nil)
        #expect(AddressPolicy.refusal(address: lo, host: "x", allowList: ["127.0.0.0/8"]) == nil)
        #expect(AddressPolicy.refusal(address: mappedLo, host: "x", allowList: ["127.0.0.0/8"]) == nil)
        #expect(AddressPolicy.refusal(address: lo, host: "x", allowList: ["::ffff:127.0.0.0/104"]) == nil)
        #expect(AddressPolicy.refusal(address: lo, host: "x", allowList: ["127.0.0.2"]) != nil)
        #expect(AddressPolicy.refusal(address: ten, host: "x", allowList: ["10.9.0.0/16"]) == nil)
        #expect(AddressPolicy.refusal(address: ten, host: "x", allowList: ["10.8.0.0/16"]) != nil)
        #expect(AddressPolicy.refusal(address: ten, host: "x", allowList: ["10.0.0.0/7"]) == nil)
        #expect(AddressPolicy.refusal(address: ten, host: "x", allowList: ["0.0.0.0/0"]) == nil)
        #expect(AddressPolicy.refusal(address: v6lo, host: "x", allowList: ["::1/128"]) == nil)
        #expect(AddressPolicy.refusal(address: v6lo, host: "x", allowList: ["127.0.0.0/8"]) != nil)
        #expect(AddressPolicy.refusal(address: ten, host: "Internal.Example.", allowList: ["internal.example"]) == nil)
        #expect(AddressPolicy.refusal(address: ten, host: "other.example", allowList: ["internal.example"]) != nil)
        #expect(AddressPolicy.refusal(address: ten, host: "x", allowList: ["10.0.0.0/99"]) != nil)  // bad CIDR = a host name
        #expect(AddressPolicy.refusal(address: lo, host: "x", allowList: [])?.contains("loopback") == true)
    }
}

/// The byte-level helpers of `CurlTransfer` (request header lines, response status lines, the
/// URL origin used as a cache key).
@Suite struct CurlTransferBytesTests {
    private func line(_ n: String, _ v: String) -> String? {
        var out: [UInt8] = []
        guard CurlHeaderList.headerLine(n, v, into: &out) else { return nil }
        #expect(out.last == 0)
        return String(decoding: out.dropLast(), as: UTF8.self)
    }

    @Test func headerLinesAreCleanedAndTrimmed() {
        #expect(line("X-A", "b") == "X-A: b")
        #expect(line(" X-A\t", "  b c \t") == "X-A: b c")
        #expect(line("X-A", "") == "X-A;")
        #expect(line("X-A", "   ") == "X-A;")
        // CR, LF and NUL can never start a new header line.
        #expect(line("X-A", "b\r\nInjected: yes") == "X-A: b  Injected: yes")
        #expect(line("X-A", "b\0c") == "X-A: b c")
        #expect(line("X-\nA", "b") == "X- A: b")
        #expect(line("", "b") == nil)
        #expect(line("  ", "b") == nil)
        #expect(line("Bad:Name", "b") == nil)
        #expect(line("Ünï", "välue") == "Ünï: välue")
    }

    @Test func requestHeadersReachTheServerCleaned() {
        let server = TestServer { conn, _ in ok(conn, "x"); return true }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        h.start(UpstreamRequest(method: "GET", url: server.url + "/h",
                                headers: [("X-Evil", "a\r\nX-Injected: 1"), ("X-Empty", ""), (" X-Pad ", " v ")]), rec)
        #expect(rec.waitFinished())
        let req = server.lastRequest
        #expect(req?.header("x-evil") == "a  X-Injected: 1")
        #expect(req?.header("x-injected") == nil)
        #expect(req?.header("x-empty") == "")
        #expect(req?.header("x-pad") == "v")
    }

    /// The shared block is linked behind each request's own lines, never copied or freed by a
    /// transfer: its lines survive every transfer that used it, and libcurl's own Accept, Expect
    /// and form Content-Type stay suppressed (a caller's own Accept is still sent).
    @Test func sharedHeaderBlockFollowsOwnLinesAndOutlivesTransfers() {
        let server = TestServer { conn, _ in ok(conn, "x"); return true }
        let h = LoopHarness()
        defer { h.shutdown(); server.stop() }
        let block = UpstreamHeaderBlock([("Authorization", "Bearer shared"), ("Accept-Encoding", "identity"), ("X-Bad", "a\r\nInjected: 1")])
        let before = CurlHeaderList.lines(block.list)
        #expect(before == ["Authorization: Bearer shared", "Accept-Encoding: identity", "X-Bad: a  Injected: 1",
                           "Accept:", "Expect:", "Content-Type:"])
        for i in 0..<3 {
            var r = UpstreamRequest(method: "POST", url: server.url + "/s", headers: [("X-Request-Id", "r\(i)")], body: Array(#"{"a":1}"#.utf8))
            if i == 2 { r.headers.append(("Accept", "text/event-stream")) }
            r.sharedHeaders = block
            let rec = Recorder()
            h.start(r, rec)
            #expect(rec.waitFinished())
            #expect(rec.finishes.first! == nil)
            let got = server.lastRequest
            #expect(got?.header("x-request-id") == "r\(i)")
            #expect(got?.header("authorization") == "Bearer shared")
            #expect(got?.header("accept-encoding") == "identity")
            #expect(got?.header("injected") == nil)
            #expect(got?.header("expect") == nil)
            #expect(got?.header("content-type") == nil)
            #expect(got?.header("accept") == (i == 2 ? "text/event-stream" : nil))
        }
        #expect(CurlHeaderList.lines(block.list) == before)
    }

    @Test func headerListOrderAndFree() {
        let block = UpstreamHeaderBlock([("A", "1")])
        var list = CurlHeaderList([("B", "2"), ("Bad:Name", "x"), ("C", "")], shared: block)
        #expect(CurlHeaderList.lines(list.list) == ["B: 2", "C;", "A: 1", "Accept:", "Expect:", "Content-Type:"])
        list.free()
        #expect(list.list == nil)
        #expect(CurlHeaderList.lines(block.list) == ["A: 1", "Accept:", "Expect:", "Content-Type:"])
        // No own lines: the shared list itself; no block: the suppressors alone.
        let bare = CurlHeaderList([], shared: block)
        #expect(bare.list == block.list)
        var none = CurlHeaderList([("D", "4")], shared: nil)
        #expect(CurlHeaderList.lines(none.list) == ["D: 4", "Accept:", "Expect:", "Content-Type:"])
        none.free()
        // A block's deinit frees its own lines only: the process-wide suppressors stay.
        do { _ = UpstreamHeaderBlock([("E", "5")]) }
        #expect(CurlHeaderList.lines(CurlHeaderList.suppressors) == ["Accept:", "Expect:", "Content-Type:"])
    }

    @Test func statusLines() {
        func status(_ s: String) -> Int? {
            Array(s.utf8).withUnsafeBufferPointer { CurlTransfer.statusLine($0) }
        }
        #expect(status("HTTP/1.1 200 OK") == 200)
        #expect(status("HTTP/2 404") == 404)
        #expect(status("HTTP/1.1  503 Service Unavailable") == 503)
        #expect(status("HTTP/1.1 20") == 0)
        #expect(status("HTTP/1.1 2000 x") == 0)
        #expect(status("HTTP/1.1 abc") == 0)
        #expect(status("Content-Type: x") == nil)
        #expect(status("HTTP") == nil)
    }

    @Test func origins() {
        #expect(CurlTransfer.origin(of: "http://127.0.0.1:8080/v1/chat") == "http://127.0.0.1:8080")
        #expect(CurlTransfer.origin(of: "https://h.example?q=1") == "https://h.example")
        #expect(CurlTransfer.origin(of: "https://user@h.example#x") == "https://user@h.example")
        #expect(CurlTransfer.origin(of: "http://[::1]:9/x") == "http://[::1]:9")
        #expect(CurlTransfer.origin(of: "/relative") == nil)
        #expect(CurlTransfer.origin(of: "http:/one-slash") == nil)
        #expect(CurlTransfer.origin(of: "no-scheme") == nil)
    }
}

/// The loop's registration bookkeeping against the kernel's.
@Suite struct EventLoopRegistrationTests {
    final class Flag: IOHandler, @unchecked Sendable {
        let fired = Atomic<Int>(0)
        func ioReady(_ events: IOEvents) { fired.add(1, ordering: .relaxed) }
    }

    final class TimerProbe: TimerTarget, @unchecked Sendable {
        let fired = Atomic<Int>(0)
        var lastWasOwn = false
        /// Its own timer, cancelled in deinit: the contract for targets.
        var timer: LoopTimer?
        let onDeinit: (@Sendable () -> Void)?
        init(onDeinit: (@Sendable () -> Void)? = nil) { self.onDeinit = onDeinit }
        func timerFired(_ t: LoopTimer) { lastWasOwn = t === timer; fired.add(1, ordering: .relaxed) }
        deinit { timer?.cancel(); onDeinit?() }
    }

    /// Target timers fire once, with the timer that fired; a cancelled one never fires; and the
    /// timer does not keep its target alive (no retain, no weak side table): a target freed
    /// before the deadline is gone at once, and its deinit's cancel keeps the loop out of it.
    @Test func targetTimersFireOnceAndCancelledOnesNever() {
        let h = LoopHarness()
        defer { h.shutdown() }
        let a = TimerProbe(), b = TimerProbe()
        h.onLoop {
            a.timer = h.loop.schedule(afterMillis: 5, target: a)
            b.timer = h.loop.schedule(afterMillis: 5, target: b)
            b.timer!.cancel()
        }
        #expect(h.onLoop { b.timer!.isPending } == false)
        var waited = 0
        while a.fired.load(ordering: .relaxed) == 0 && waited < 200 { usleep(5_000); waited += 1 }
        usleep(30_000)
        #expect(a.fired.load(ordering: .relaxed) == 1)
        #expect(h.onLoop { a.lastWasOwn && !a.timer!.isPending })
        #expect(b.fired.load(ordering: .relaxed) == 0)

        let gone = Atomic<Int>(0)
        let goneAtOnce = h.onLoop { () -> Bool in
            var c: TimerProbe? = TimerProbe(onDeinit: { gone.add(1, ordering: .relaxed) })
            c!.timer = h.loop.schedule(afterMillis: 5, target: c!)
            c = nil
            return gone.load(ordering: .relaxed) == 1
        }
        #expect(goneAtOnce, "the timer kept its target alive")
        usleep(40_000)                               // past the deadline: the loop skipped it
        #expect(gone.load(ordering: .relaxed) == 1)
    }

    /// An fd closed without `unwatch` leaves the kernel's epoll set but not the loop's table; when
    /// the number is reused, `watch` finds MOD refused (ENOENT) and must ADD, or the new socket
    /// would never be heard. (Parked upstream sockets rely on this if libcurl closes one itself.)
    @Test func anFdReusedBehindTheLoopsBackIsRegisteredAgain() {
        let h = LoopHarness()
        defer { h.shutdown() }
        var first: [Int32] = [0, 0], second: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &first) == 0)
        let old = first[0]
        let a = Flag(), b = Flag()
        h.onLoop { h.loop.watch(old, [.readable], a) }
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &second) == 0)
        close(old)                                   // behind the loop's back: no unwatch
        close(first[1])
        #expect(dup2(second[0], old) == old)         // a new socket under the old number
        close(second[0])
        defer { close(old); close(second[1]) }
        h.onLoop { h.loop.watch(old, [.readable], b) }
        var one: UInt8 = 1
        #expect(send(second[1], &one, 1, Int32(MSG_NOSIGNAL)) == 1)
        var waited = 0
        while b.fired.load(ordering: .relaxed) == 0 && waited < 200 { usleep(5_000); waited += 1 }
        #expect(b.fired.load(ordering: .relaxed) > 0, "the reused fd was never registered with the kernel")
        #expect(a.fired.load(ordering: .relaxed) == 0)
        h.onLoop { h.loop.unwatch(old) }
    }
}
