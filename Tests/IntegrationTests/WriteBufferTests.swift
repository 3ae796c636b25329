import Dispatch
import Glibc
@testable import HTTPServer
import HTTPWire
import Reactor
import Testing

/// Write buffers are borrowed from the loop while bytes are queued and given back once the
/// socket took them: an open stream holds none between its events (memory per stream), and
/// reusing them means no event allocates one.
@Suite struct WriteBufferTests {
    @Test func aStreamHoldsNoWriteBufferBetweenEvents() throws {
        let ls = try LoopServer(TwoEventStream(gapMillis: 400, body: Array(repeating: 0x61, count: 2_000)),
                                loopID: 34, name: "write-buffers")
        defer { ls.stop() }
        let server = ls.server
        let fd = try RawHTTPClient.connect(port: server.port, timeoutMillis: 3_000)
        defer { close(fd) }
        RawHTTPClient.sendAll(fd, Array("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        // Read until the first event is in: head and event 1 were sent, event 2 is 400 ms away.
        var got: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while !String(decoding: got, as: UTF8.self).contains("data: 1") {
            let n = recv(fd, &buf, buf.count, 0)
            guard n > 0 else { Issue.record("connection ended early"); return }
            got += buf[0..<n]
        }
        let (held, spares) = ls.onLoop { () -> (Int, Int) in
            let w = server.workers[0]
            return (w.connections.values.map { $0.writeBuf.capacity }.reduce(0, +), w.spareWriteBuffers.count)
        }
        #expect(held == 0, "an open stream kept a write buffer between events")
        #expect(spares == 1, "the buffer went back to the loop")
        // The rest of the stream and a whole answer after it, on the same connection and buffer.
        while !String(decoding: got, as: UTF8.self).hasSuffix("0\r\n\r\n") {
            let n = recv(fd, &buf, buf.count, 0)
            guard n > 0 else { Issue.record("stream cut"); return }
            got += buf[0..<n]
        }
        #expect(String(decoding: got, as: UTF8.self).contains("data: 2"))
        for _ in 0..<20 {
            RawHTTPClient.sendAll(fd, Array("GET /x HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            var reader = RawHTTPClient.Reader(fd: fd)
            let r = try reader.readResponse(isHead: false)
            #expect(r.status == 200 && r.body.count == 2_000)
        }
        let after = ls.onLoop { server.workers[0].spareWriteBuffers.count }
        #expect(after == 1, "sequential answers reuse one buffer")
    }
}
