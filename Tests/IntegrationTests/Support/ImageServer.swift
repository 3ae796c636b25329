import HTTPServer
import HTTPWire
import Reactor

/// A tiny image host on loopback for `input_reference: {"image_url": ...}` tests: serves a PNG
/// at any path and counts its requests.
final class ImageServer: HTTPHandler, @unchecked Sendable {
    static let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + Array(repeating: 0x42, count: 2048)
    let loop = EventLoop(id: 0)
    var server: HTTPServer!
    let hits = Counter()

    func start() throws -> UInt16 {
        var c = ServerConfig()
        c.host = "127.0.0.1"
        c.port = 0
        server = try HTTPServer(config: c, handler: self, loops: [loop])
        let l = loop
        startThread(name: "image-server") { l.run() }
        server.start()
        return server.port
    }

    func stop() { loop.stop() }

    func handle(_ request: HTTPRequest, _ response: HTTPResponder) {
        hits.add(1)
        if request.path.hasSuffix(".txt") {
            return response.respond(status: 200, headers: ["content-type": "text/plain"], body: Array("not an image".utf8))
        }
        response.respond(status: 200, headers: ["content-type": "image/png"], body: ImageServer.png)
    }
}
