import Dispatch
import Glibc
import Reactor
import Synchronization
import Testing
import Upstream
@testable import UpstreamHTTP

private let chunkedHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

/// How the test server is reached: through nginx over TLS, as HTTP/1.1 or HTTP/2.
enum Transport: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case tls, http2
    var testDescription: String { rawValue }
}

/// A contract test's server behind nginx (TLS, unbuffered proxy) and a native client for it.
private final class Setup: @unchecked Sendable {
    let server: TestServer
    let fixture: NginxFixture
    let h: LoopHarness
    let version: Int

    init?(_ transport: Transport, _ handler: @escaping @Sendable (ServerConn, ServerRequest) -> Bool) {
        server = TestServer(handler)
        guard let f = NginxFixture.start(backendPort: server.port, http2: transport == .http2) else { server.stop(); return nil }
        fixture = f
        var s = HTTPUpstreamSettings()
        s.tls.caFile = f.caFile
        h = LoopHarness(.native, native: s)
        version = transport == .http2 ? 2 : 1
    }

    func url(_ path: String) -> String { fixture.url(fixture.goodPort, path) }

    func stop() {
        h.shutdown()
        fixture.stop()
        server.stop()
    }
}

/// The contract's delivery rules (streaming, back-pressure, cancellation, deadlines, limits,
/// cut bodies) over TLS and HTTP/2, whose delivery paths differ from plain HTTP/1.1's.
@Suite(.serialized) struct TransportContractTests {

    @Test(arguments: Transport.allCases)
    func streamingDeliversFirstChunkBeforeSecondIsSent(_ transport: Transport) {
        let gotFirst = DispatchSemaphore(value: 0)
        let secondSentAt = Shared<UInt64>(0)
        guard let x = Setup(transport, { conn, _ in
            conn.send(chunkedHead)
            conn.chunk("data: one\n\n")
            _ = gotFirst.wait(timeout: .now() + 3)
            usleep(200_000)
            secondSentAt.value = nowMillis()
            conn.chunk("data: two\n\n")
            conn.endChunks()
            return true
        }) else { return }
        defer { x.stop() }
        let rec = Recorder()
        rec.onData = { _, total in if total == "data: one\n\n".utf8.count { gotFirst.signal() } }
        x.h.start(UpstreamRequest(method: "GET", url: x.url("/stream")), rec)
        #expect(rec.waitFinished())
        #expect(rec.succeeded, "\(rec.finishes)")
        #expect(rec.snapshot.head?.httpVersion == x.version)
        let first = rec.snapshot.chunkTimes.first?.at ?? .max
        #expect(first < secondSentAt.value)
        #expect(rec.bodyText == "data: one\n\ndata: two\n\n")
    }

    @Test(arguments: Transport.allCases)
    func pauseInsideCallbackStopsDataUntilResume(_ transport: Transport) {
        let allSent = DispatchSemaphore(value: 0)
        guard let x = Setup(transport, { conn, _ in
            conn.send(chunkedHead)
            conn.chunk(String(repeating: "a", count: 100))
            usleep(150_000)
            for _ in 0..<20 { conn.chunk(String(repeating: "b", count: 1000)) }
            conn.endChunks()
            allSent.signal()
            return true
        }) else { return }
        defer { x.stop() }
        let rec = Recorder()
        rec.onData = { r, total in if total == 100 { r.transfer?.pause() } }
        x.h.start(UpstreamRequest(method: "GET", url: x.url("/p")), rec)
        #expect(allSent.wait(timeout: .now() + 5) == .success)
        usleep(400_000)
        #expect(rec.snapshot.body.count == 100, "data arrived while paused")
        #expect(rec.finishes.isEmpty)
        x.h.onLoop { rec.transfer?.resume() }
        #expect(rec.waitFinished())
        #expect(rec.succeeded, "\(rec.finishes)")
        #expect(rec.snapshot.body.count == 100 + 20_000)
    }

    @Test(arguments: Transport.allCases)
    func cancelInsideCallbackReachesTheServer(_ transport: Transport) {
        let sawClose = Shared<Bool>(false)
        let serverDone = DispatchSemaphore(value: 0)
        guard let x = Setup(transport, { conn, _ in
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
        }) else { return }
        defer { x.stop() }
        let rec = Recorder()
        rec.onData = { r, _ in r.transfer?.cancel() }
        x.h.start(UpstreamRequest(method: "GET", url: x.url("/c")), rec)
        #expect(rec.waitFinished())
        #expect(serverDone.wait(timeout: .now() + 5) == .success)
        #expect(sawClose.value, "the server never saw the cancellation")
        #expect(rec.finishes == [.cancelled])
        #expect(rec.snapshot.eventsAfterFinish == 0)
        #expect(x.h.onLoop { x.h.client.activeTransfers } == 0)
    }

    @Test(arguments: Transport.allCases)
    func stallIsTimeout(_ transport: Transport) {
        guard let x = Setup(transport, { conn, _ in
            conn.send(chunkedHead)
            conn.chunk("start")
            _ = conn.waitForClose(millis: 5000)
            return false
        }) else { return }
        defer { x.stop() }
        var req = UpstreamRequest(method: "GET", url: x.url("/s"))
        req.stallTimeoutMillis = 800
        let t0 = nowMillis()
        let rec = x.h.run(req)
        let elapsed = nowMillis() - t0
        guard case .timeout? = rec.finishes.first! else { Issue.record("expected .timeout, got \(rec.finishes)"); return }
        #expect(elapsed >= 700 && elapsed < 3000, "elapsed \(elapsed) ms")
        #expect(rec.bodyText == "start")
    }

    @Test(arguments: Transport.allCases)
    func truncatedBodyIsBroken(_ transport: Transport) {
        guard let x = Setup(transport, { conn, _ in
            conn.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
            return false
        }) else { return }
        defer { x.stop() }
        let rec = x.h.run(UpstreamRequest(method: "GET", url: x.url("/t")))
        guard case .broken? = rec.finishes.first! else { Issue.record("expected .broken, got \(rec.finishes)"); return }
        #expect(rec.bodyText == "only-part")
    }

    @Test(arguments: Transport.allCases)
    func maxResponseBytesIsTooLarge(_ transport: Transport) {
        guard let x = Setup(transport, { conn, _ in
            conn.send(chunkedHead)
            for _ in 0..<10 { conn.chunk(String(repeating: "z", count: 1000)) }
            conn.endChunks()
            return true
        }) else { return }
        defer { x.stop() }
        var req = UpstreamRequest(method: "GET", url: x.url("/m"))
        req.maxResponseBytes = 2500
        let rec = x.h.run(req)
        #expect(rec.finishes == [.tooLarge])
        #expect(rec.snapshot.body.count <= 2500)
        req.maxResponseBytes = 10_000
        #expect(x.h.run(req).succeeded)
    }

    @Test(arguments: Transport.allCases)
    func postBodiesArriveIntact(_ transport: Transport) {
        guard let x = Setup(transport, { conn, req in
            conn.send("HTTP/1.1 201 Created\r\nContent-Length: \(req.body.count)\r\n\r\n")
            conn.send(req.body)
            return true
        }) else { return }
        defer { x.stop() }
        var body = [UInt8]()
        for i in 0..<150_000 { body.append(UInt8(truncatingIfNeeded: i &* 31 &+ i >> 8)) }
        let rec = x.h.run(UpstreamRequest(method: "POST", url: x.url("/v1/chat"), headers: [("X-Veil", "1")], body: body))
        #expect(rec.succeeded, "\(rec.finishes)")
        #expect(rec.snapshot.head?.status == 201)
        #expect(rec.snapshot.body == body)
        #expect(x.server.lastRequest?.body == body)
        #expect(x.server.lastRequest?.header("x-veil") == "1")
    }
}
