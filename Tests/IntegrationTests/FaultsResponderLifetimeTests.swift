import Foundation
import Glibc
import HTTPServer
import HTTPWire
import Reactor
import Synchronization
import Testing

/// Regression (found by scripts/vanishing-clients at 1,000 clients): a producer that still held an
/// `HTTPResponder` after its client connection was closed and freed — e.g. ChatProxy asking
/// `isWritable` right after a write inside a libcurl callback failed with ECONNRESET and closed the
/// connection — read the freed connection through an unowned reference and aborted the process.
/// Every responder call must be safe once the connection is gone.
@Suite struct FaultsResponderLifetimeTests {
    final class Holder: HTTPHandler, @unchecked Sendable {
        // Touched on the loop thread only; `got` tells the test thread.
        var held: HTTPResponder?
        let got = Atomic<Bool>(false)
        func handle(_ request: HTTPRequest, _ response: HTTPResponder) {
            // Answer nothing yet: a producer that will come back later.
            held = response
            got.store(true, ordering: .releasing)
        }
    }

    @Test func aResponderOutlivingItsConnectionIsHarmless() throws {
        let holder = Holder()
        let ls = try LoopServer(holder, loopID: 31, name: "responder-lifetime")
        defer { ls.stop() }
        let loop = ls.loop, server = ls.server

        let fd = try RawHTTPClient.connect(port: server.port, timeoutMillis: 2_000)
        let req = Array("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        RawHTTPClient.sendAll(fd, req)
        let deadline = Date().addingTimeInterval(2)
        while !holder.got.load(ordering: .acquiring) && Date() < deadline { usleep(5_000) }
        let gotIt = holder.got.load(ordering: .acquiring)
        #expect(gotIt)
        close(fd)
        while server.openConnections.current > 0 && Date() < deadline { usleep(5_000) }
        #expect(server.openConnections.current == 0)

        // The connection is closed and released; the producer comes back on the loop.
        let done = Atomic<Int>(0)
        loop.execute {
            guard let r = holder.held else { return }
            _ = r.isWritable
            _ = r.bufferedBytes
            _ = r.isOpen
            r.closeConnectionAfterResponse()
            r.sendHead(HTTPResponseHead(status: 200))
            r.write(Array("late".utf8))
            r.end()
            r.abort()
            done.store(1, ordering: .releasing)
        }
        while done.load(ordering: .acquiring) == 0 && Date() < deadline.addingTimeInterval(1) { usleep(5_000) }
        let finished = done.load(ordering: .acquiring)
        #expect(finished == 1)
    }
    /// The same, when the client resets the connection just as a stream ends: `end()` queues the
    /// last chunk, the send fails (ECONNRESET), the connection closes and is freed inside `end()`,
    /// which then must not touch it again.
    @Test func aClientResettingAsTheStreamEndsIsHarmless() throws {
        let loop = EventLoop(id: 32)
        let holder = Holder()
        var config = ServerConfig()
        config.host = "127.0.0.1"
        config.port = 0
        let server = try HTTPServer(config: config, handler: holder, loops: [loop])
        startThread(name: "responder-reset") { loop.run(); withExtendedLifetime((server, holder)) {} }
        server.start()
        defer { loop.stop() }

        let fd = try RawHTTPClient.connect(port: server.port, timeoutMillis: 2_000)
        let req = Array("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        RawHTTPClient.sendAll(fd, req)
        let deadline = Date().addingTimeInterval(3)
        while !holder.got.load(ordering: .acquiring) && Date() < deadline { usleep(5_000) }
        let reset = Atomic<Bool>(false)
        let done = Atomic<Int>(0)
        loop.execute {
            guard let r = holder.held else { return }
            r.sendHead(HTTPResponseHead(status: 200))          // a stream: chunked
            r.write(Array("data: 1\n\n".utf8))
            // Hold the loop while the client resets, so the reset is met by the next send.
            while !reset.load(ordering: .acquiring) { usleep(1_000) }
            usleep(100_000)
            r.end()
            r.abort()
            done.store(1, ordering: .releasing)
        }
        usleep(100_000)
        var lg = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, socklen_t(MemoryLayout<linger>.size))
        close(fd)  // RST
        reset.store(true, ordering: .releasing)
        while done.load(ordering: .acquiring) == 0 && Date() < deadline { usleep(5_000) }
        let finished = done.load(ordering: .acquiring)
        #expect(finished == 1)
        while server.openConnections.current > 0 && Date() < deadline { usleep(5_000) }
        #expect(server.openConnections.current == 0)
    }
}
