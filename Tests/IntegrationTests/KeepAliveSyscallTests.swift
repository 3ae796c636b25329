import Dispatch
import Foundation
import Glibc
import HTTPServer
import HTTPWire
import Reactor
import Testing

/// Regression (found profiling the chat benchmark): a response queued for the deferred flush made
/// the connection ask for writability, and the flush then withdrew it: two `epoll_ctl` per
/// request on every kept-alive connection. Only a socket that is really full needs EPOLLOUT.
@Suite struct KeepAliveSyscallTests {
    final class Answer: HTTPHandler, @unchecked Sendable {
        func handle(_ request: HTTPRequest, _ response: HTTPResponder) {
            response.respond(status: 200, headers: ["content-type": "text/plain"], body: Array("ok".utf8))
        }
    }

    @Test func keptAliveRequestsCostNoEpollCtl() throws {
        let loop = EventLoop(id: 32)
        let handler = Answer()
        var config = ServerConfig()
        config.host = "127.0.0.1"
        config.port = 0
        let server = try HTTPServer(config: config, handler: handler, loops: [loop])
        startThread(name: "keepalive-syscalls") { loop.run(); withExtendedLifetime((server, handler)) {} }
        server.start()
        defer { loop.stop() }
        func ctlCalls() -> Int {
            let sem = DispatchSemaphore(value: 0)
            nonisolated(unsafe) var n = 0
            loop.execute { n = loop.epollCtlCalls; sem.signal() }
            _ = sem.wait(timeout: .now() + 5)
            return n
        }

        let fd = try RawHTTPClient.connect(port: server.port, timeoutMillis: 2_000)
        defer { close(fd) }
        var reader = RawHTTPClient.Reader(fd: fd)
        func roundTrip() throws {
            let req = Array("GET /x HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
            _ = req.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            let r = try reader.readResponse(isHead: false)
            #expect(r.status == 200)
            #expect(String(decoding: r.body, as: UTF8.self) == "ok")
        }
        try roundTrip()                       // the connection is registered once
        let before = ctlCalls()
        for _ in 0..<20 { try roundTrip() }
        #expect(ctlCalls() - before == 0, "epoll_ctl calls for 20 kept-alive requests")
    }
}
