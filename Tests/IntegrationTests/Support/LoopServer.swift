import Dispatch
import HTTPServer
import HTTPWire
import Reactor

/// An `HTTPServer` on 127.0.0.1 (ephemeral port) with one event loop on its own thread, for tests
/// that drive the server layer directly. Call `stop()` when done.
struct LoopServer {
    let loop: EventLoop
    let server: HTTPServer
    var port: UInt16 { server.port }

    init(_ handler: some HTTPHandler & Sendable, loopID: Int, name: String) throws {
        let loop = EventLoop(id: loopID)
        var config = ServerConfig()
        config.host = "127.0.0.1"
        config.port = 0
        let server = try HTTPServer(config: config, handler: handler, loops: [loop])
        startThread(name: name) { loop.run(); withExtendedLifetime((server, handler)) {} }
        server.start()
        self.loop = loop
        self.server = server
    }

    func stop() { loop.stop() }

    /// Runs `body` on the server's loop and returns its result.
    func onLoop<T>(_ body: @escaping @Sendable () -> T) -> T {
        let sem = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var out: T?
        loop.execute { out = body(); sem.signal() }
        precondition(sem.wait(timeout: .now() + 5) == .success, "loop did not answer")
        return out!
    }
}

/// `/stream`: a chunked `text/event-stream` answer, `data: 1` at once, `data: 2` and the end
/// `gapMillis` later. Any other path: `text/plain` with `body`.
final class TwoEventStream: HTTPHandler, @unchecked Sendable {
    let gapMillis: Int
    let body: [UInt8]
    init(gapMillis: Int, body: [UInt8]) { self.gapMillis = gapMillis; self.body = body }

    func handle(_ request: HTTPRequest, _ response: HTTPResponder) {
        guard request.path == "/stream" else {
            return response.respond(status: 200, headers: ["content-type": "text/plain"], body: body)
        }
        // An open-ended (chunked) body: the connection drops its read buffer meanwhile.
        response.sendHead(HTTPResponseHead(status: 200, headers: ["content-type": "text/event-stream"]))
        response.write(Array("data: 1\n\n".utf8))
        request.loop.schedule(afterMillis: gapMillis) {
            response.write(Array("data: 2\n\n".utf8))
            response.end()
        }
    }
}
