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
    @Test func keptAliveRequestsCostNoEpollCtl() throws {
        let ls = try LoopServer(TwoEventStream(gapMillis: 20, body: Array("ok".utf8)), loopID: 32, name: "keepalive-syscalls")
        defer { ls.stop() }
        let loop = ls.loop, server = ls.server
        func ctlCalls() -> Int { ls.onLoop { loop.epollCtlCalls } }

        let fd = try RawHTTPClient.connect(port: server.port, timeoutMillis: 2_000)
        defer { close(fd) }
        var reader = RawHTTPClient.Reader(fd: fd)
        func roundTrip() throws {
            let req = Array("GET /x HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
            RawHTTPClient.sendAll(fd, req)
            let r = try reader.readResponse(isHead: false)
            #expect(r.status == 200)
            #expect(String(decoding: r.body, as: UTF8.self) == "ok")
        }
        try roundTrip()                       // the connection is registered once
        let before = ctlCalls()
        for _ in 0..<20 { try roundTrip() }
        #expect(ctlCalls() - before == 0, "epoll_ctl calls for 20 kept-alive requests")
    }

    /// A stream releases the connection's read buffer while it runs; the connection then reads
    /// and answers the next request (and one pipelined behind the stream) as before.
    @Test func requestsAfterAStreamOnTheSameConnection() throws {
        let ls = try LoopServer(TwoEventStream(gapMillis: 20, body: Array("ok".utf8)), loopID: 33, name: "stream-then-request")
        defer { ls.stop() }
        let server = ls.server
        let fd = try RawHTTPClient.connect(port: server.port, timeoutMillis: 2_000)
        defer { close(fd) }
        var reader = RawHTTPClient.Reader(fd: fd)
        // The stream, with a second request pipelined behind it, then a third after both.
        let two = Array("GET /stream HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        RawHTTPClient.sendAll(fd, two)
        let stream = try reader.readResponse(isHead: false)
        #expect(stream.status == 200)
        #expect(String(decoding: stream.body, as: UTF8.self) == "data: 1\n\ndata: 2\n\n")
        let pipelined = try reader.readResponse(isHead: false)
        #expect(String(decoding: pipelined.body, as: UTF8.self) == "ok")
        let third = Array("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        RawHTTPClient.sendAll(fd, third)
        #expect(String(decoding: try reader.readResponse(isHead: false).body, as: UTF8.self) == "data: 1\n\ndata: 2\n\n")
    }
}
