import HTTPServer
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
}
