import Dispatch
import Glibc
import Reactor
import Synchronization
import Testing
@testable import Upstream
@testable import UpstreamHTTP

// The upstream client's contract tests (they ran against libcurl's client too, until it was
// removed): each runs against every `ClientKind`.

private func ok(_ conn: ServerConn, _ body: String, extra: String = "") {
    conn.send("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\(extra)\r\n\(body)")
}
private let chunkedHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

@Suite(.serialized) struct ContractTests {

    @Test(arguments: ClientKind.allCases) func getReturnsHeadAndBody(_ kind: ClientKind) {
        let server = TestServer { conn, _ in ok(conn, "hello", extra: "X-Test: yes\r\n"); return true }
        let h = LoopHarness(kind)
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
        // No default "Accept: */*" of the client's own when the caller gives none.
        #expect(server.lastRequest?.header("accept") == nil)
        #expect(h.onLoop { h.client.activeTransfers } == 0)
    }

    @Test(arguments: ClientKind.allCases) func postBodyAndHeadersArriveIntact(_ kind: ClientKind) {
        let server = TestServer { conn, req in
            conn.send("HTTP/1.1 201 Created\r\nContent-Length: \(req.body.count)\r\n\r\n")
            conn.send(req.body)
            return true
        }
        let h = LoopHarness(kind)
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

    @Test(arguments: ClientKind.allCases) func otherMethodsAndNoSurpriseContentType(_ kind: ClientKind) {
        let server = TestServer { conn, _ in ok(conn, "ok"); return true }
        let h = LoopHarness(kind)
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

    @Test(arguments: ClientKind.allCases) func interimResponsesAreSkipped(_ kind: ClientKind) {
        let server = TestServer { conn, _ in
            conn.send("HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
            ok(conn, "final", extra: "X-Final: 1\r\n")
            return true
        }
        let h = LoopHarness(kind)
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

    @Test(arguments: ClientKind.allCases) func streamingDeliversFirstChunkBeforeSecondIsSent(_ kind: ClientKind) {
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
        let h = LoopHarness(kind)
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

    @Test(arguments: ClientKind.allCases) func pauseInsideCallbackStopsDataUntilResume(_ kind: ClientKind) {
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
        let h = LoopHarness(kind)
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

    /// A pause taken on a sized body's last bytes: the end needs no further byte, so resume must
    /// still deliver it (the bug: the finish never came and the caller's connection hung).
    @Test(arguments: ClientKind.allCases) func pauseOnLastBodyBytesStillFinishesOnResume(_ kind: ClientKind) {
        let server = TestServer { conn, _ in
            conn.send("HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + String(repeating: "z", count: 300))
            return true
        }
        let h = LoopHarness(kind)
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        rec.onData = { r, total in if total == 300 { r.transfer?.pause() } }
        h.start(UpstreamRequest(method: "GET", url: server.url), rec)
        usleep(300_000)
        #expect(rec.snapshot.body.count == 300)
        #expect(rec.finishes.isEmpty, "finished while paused")
        h.onLoop { rec.transfer?.resume() }
        // Well before the server's 5 s read timeout closes the connection (which would end it too).
        #expect(rec.waitFinished(seconds: 2))
        #expect(rec.finishes.first ?? .cancelled == nil)
    }

    @Test(arguments: ClientKind.allCases) func pauseFromOutsideThenResume(_ kind: ClientKind) {
        let paused = DispatchSemaphore(value: 0)
        let server = TestServer { conn, _ in
            conn.send(chunkedHead)
            conn.chunk("first")
            _ = paused.wait(timeout: .now() + 3)
            for _ in 0..<10 { conn.chunk(String(repeating: "c", count: 5000)) }
            conn.endChunks()
            return true
        }
        let h = LoopHarness(kind)
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

    @Test(arguments: ClientKind.allCases) func cancelInsideCallbackMidStream(_ kind: ClientKind) {
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
        let h = LoopHarness(kind)
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

    @Test(arguments: ClientKind.allCases) func cancelFromOutsideIsImmediateAndOnce(_ kind: ClientKind) {
        let sawClose = Shared<Bool>(false)
        let serverDone = DispatchSemaphore(value: 0)
        let server = TestServer { conn, _ in
            conn.send(chunkedHead)
            conn.chunk("one")
            sawClose.value = conn.waitForClose(millis: 3000)
            serverDone.signal()
            return false
        }
        let h = LoopHarness(kind)
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

    @Test(arguments: ClientKind.allCases) func cancelInHeadCallbackAndStartFromFinish(_ kind: ClientKind) {
        let server = TestServer { conn, req in
            if req.path == "/slow" {
                conn.send(chunkedHead); conn.chunk("x")
                _ = conn.waitForClose(millis: 3000)
                return false
            }
            ok(conn, "second")
            return true
        }
        let h = LoopHarness(kind)
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

    @Test(arguments: ClientKind.allCases) func connectionRefusedIsConnectError(_ kind: ClientKind) {
        // A bound but not listening socket: connecting to it is refused.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        let port = Socket.localPort(fd)
        defer { close(fd) }
        let h = LoopHarness(kind)
        defer { h.shutdown() }
        let rec = Recorder()
        h.start(UpstreamRequest(method: "GET", url: "http://127.0.0.1:\(port)/"), rec)
        #expect(rec.waitFinished())
        guard case .connect(let why)? = rec.finishes.first! else {
            Issue.record("expected .connect, got \(String(describing: rec.finishes))"); return
        }
        // The detail (for the log) follows the generic text.
        #expect(why.contains(": "), "\(why)")
        #expect(rec.snapshot.head == nil)
    }

    @Test(arguments: ClientKind.allCases) func schemeNotAllowedIsRefusedAsynchronously(_ kind: ClientKind) {
        let h = LoopHarness(kind)
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

    @Test(arguments: ClientKind.allCases) func stallIsTimeout(_ kind: ClientKind) {
        let server = TestServer { conn, _ in
            conn.send(chunkedHead)
            conn.chunk("start")
            _ = conn.waitForClose(millis: 5000)
            return false
        }
        let h = LoopHarness(kind)
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

    @Test(arguments: ClientKind.allCases) func sparseBytesAndPausesAreNotStalls(_ kind: ClientKind) {
        let server = TestServer { conn, _ in
            conn.send(chunkedHead)
            for _ in 0..<4 { conn.chunk(":"); usleep(400_000) }   // a ping every 400 ms, < 1 byte/s on average
            conn.chunk("end")
            conn.endChunks()
            return true
        }
        let h = LoopHarness(kind)
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

    @Test(arguments: ClientKind.allCases) func totalTimeoutIsTimeout(_ kind: ClientKind) {
        let server = TestServer { conn, _ in
            _ = conn.waitForClose(millis: 5000)   // never answers
            return false
        }
        let h = LoopHarness(kind)
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

    @Test(arguments: ClientKind.allCases) func maxResponseBytesIsTooLarge(_ kind: ClientKind) {
        let big = String(repeating: "z", count: 10_000)
        let server = TestServer { conn, req in
            if req.path == "/cl" { ok(conn, big); return true }
            conn.send(chunkedHead)
            for _ in 0..<10 { conn.chunk(String(repeating: "z", count: 1000)) }
            conn.endChunks()
            return true
        }
        let h = LoopHarness(kind)
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

    /// A stream cut after its head is `.broken` with a reason; a connect failure keeps its detail.
    @Test(arguments: ClientKind.allCases) func aCutAfterTheHeadIsBrokenAndAConnectFailureDetailed(_ kind: ClientKind) {
        let cut = DispatchSemaphore(value: 0)
        let server = TestServer { conn, _ in
            conn.send(chunkedHead)
            conn.chunk("data: one\n\n")
            _ = cut.wait(timeout: .now() + 3)
            conn.chunk("data: two\n\n")
            return false                                  // closed without the last chunk
        }
        let h = LoopHarness(kind)
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        let gotOne = DispatchSemaphore(value: 0)
        rec.onData = { _, total in if total == "data: one\n\n".utf8.count { gotOne.signal() } }
        h.start(UpstreamRequest(method: "GET", url: server.url + "/stream"), rec)
        #expect(gotOne.wait(timeout: .now() + 5) == .success)
        cut.signal()
        #expect(rec.waitFinished())
        guard case .broken(let why)? = rec.finishes.first! else {
            Issue.record("expected .broken, got \(String(describing: rec.finishes))"); return
        }
        #expect(!why.isEmpty)
        #expect(rec.bodyText == "data: one\n\ndata: two\n\n")
    }

    @Test(arguments: ClientKind.allCases) func truncatedBodyIsBroken(_ kind: ClientKind) {
        let server = TestServer { conn, _ in
            conn.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
            return false
        }
        let h = LoopHarness(kind)
        defer { h.shutdown(); server.stop() }
        let rec = Recorder()
        h.start(UpstreamRequest(method: "GET", url: server.url), rec)
        #expect(rec.waitFinished())
        guard case .broken? = rec.finishes.first! else { Issue.record("expected .broken, got \(String(describing: rec.finishes))"); return }
        #expect(rec.bodyText == "only-part")
    }

    @Test(arguments: ClientKind.allCases) func privateAddressesRefusedUnlessAllowListed(_ kind: ClientKind) {
        let server = TestServer { conn, _ in ok(conn, "inside"); return true }
        let h = LoopHarness(kind)
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

    @Test(arguments: ClientKind.allCases) func keepAliveReusesOneConnection(_ kind: ClientKind) {
        let server = TestServer { conn, _ in ok(conn, "k"); return true }
        let h = LoopHarness(kind)
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

    /// A kept-alive socket stays registered between transfers: no epoll_ctl per request.
    @Test(arguments: ClientKind.allCases) func keptAliveSocketStaysRegisteredBetweenTransfers(_ kind: ClientKind) {
        let server = TestServer { conn, _ in ok(conn, "k"); return true }
        let h = LoopHarness(kind)
        defer { h.shutdown(); server.stop() }
        func get() {
            let rec = Recorder()
            h.start(UpstreamRequest(method: "GET", url: server.url + "/again"), rec)
            #expect(rec.waitFinished())
            #expect(rec.finishes.first! == nil)
            #expect(rec.bodyText == "k")
        }
        get()
        #expect(h.idleConnections == 1)
        let before = h.onLoop { h.loop.epollCtlCalls }
        for _ in 0..<20 { get() }
        let after = h.onLoop { h.loop.epollCtlCalls }
        #expect(after - before == 0, "epoll_ctl calls for 20 requests on one kept-alive connection")
        #expect(server.accepts.load(ordering: .relaxed) == 1)
    }

    /// An upstream closing an idle (parked) connection wakes the loop once, which unregisters
    /// it (level-triggered, it would otherwise spin); the next request connects afresh.
    @Test(arguments: ClientKind.allCases) func upstreamClosingAParkedConnectionIsHandled(_ kind: ClientKind) {
        let server = TestServer { conn, _ in ok(conn, "once"); return false }   // then closes
        let h = LoopHarness(kind)
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
                parked = h.idleConnections
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

    /// Idle upstream connections are capped (`maxIdleConnections`, nginx's `keepalive N`):
    /// transfers beyond the cap close their connection when done; the ones kept are reused.
    @Test(arguments: ClientKind.allCases) func idleConnectionsAreCappedAndReused(_ kind: ClientKind) {
        let server = TestServer { conn, req in usleep(100_000); ok(conn, req.path); return true }
        let h = LoopHarness(kind, idleCap: 4)
        defer { h.shutdown(); server.stop() }
        h.getConcurrently(12, server.url + "/b")
        #expect(server.accepts.load(ordering: .relaxed) == 12)
        #expect(h.idleConnections == 4, "idle connections kept")
        for i in 0..<6 {
            let r = Recorder()
            h.start(UpstreamRequest(method: "GET", url: server.url + "/again\(i)"), r)
            #expect(r.waitFinished())
            #expect(r.bodyText == "/again\(i)")
        }
        #expect(server.accepts.load(ordering: .relaxed) == 12, "sequential requests reuse a kept connection")
        #expect(h.idleConnections == 4)
    }

    @Test(arguments: ClientKind.allCases) func manyConcurrentTransfers(_ kind: ClientKind) {
        let server = TestServer { conn, req in usleep(20_000); ok(conn, req.path); return true }
        let h = LoopHarness(kind)
        defer { h.shutdown(); server.stop() }
        h.getConcurrently(30, server.url + "/r")
        #expect(h.onLoop { h.client.activeTransfers } == 0)
    }

    @Test(arguments: ClientKind.allCases) func requestHeadersReachTheServerCleaned(_ kind: ClientKind) {
        let server = TestServer { conn, _ in ok(conn, "x"); return true }
        let h = LoopHarness(kind)
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

    /// The shared block is sent behind each request's own lines and survives every transfer that
    /// used it; no Accept, Expect or form Content-Type of the client's own (a caller's own Accept
    /// is sent); a value with CR/LF cannot inject a field.
    @Test(arguments: ClientKind.allCases) func sharedHeaderBlockFollowsOwnLinesAndOutlivesTransfers(_ kind: ClientKind) {
        let server = TestServer { conn, _ in ok(conn, "x"); return true }
        let h = LoopHarness(kind)
        defer { h.shutdown(); server.stop() }
        let block = UpstreamHeaderBlock([("Authorization", "Bearer shared"), ("Accept-Encoding", "identity"), ("X-Bad", "a\r\nInjected: 1")])
        for i in 0..<3 {
            var r = UpstreamRequest(method: "POST", url: server.url + "/s", headers: [("X-Request-Id", "r\(i)")], body: Array(#"{"a":1}"#.utf8))
            if i == 2 { r.headers.add("Accept", "text/event-stream") }
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
    }
}
