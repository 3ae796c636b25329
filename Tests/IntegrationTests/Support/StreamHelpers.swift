import Foundation
import Glibc

/// A chat stream held open on a raw socket: the request is sent and the head read; the rest is
/// read by `finish` (bounded by the socket's receive timeout).
struct OpenStream {
    let fd: Int32
    var received: [UInt8]

    static let body = #"{"model":"gpt-3.5-turbo","stream":true,"messages":[{"role":"user","content":"a long story please"}]}"#

    /// Opens a stream with `token`; returns once the response head (and maybe the first event) arrived.
    static func open(port: UInt16, token: String, timeoutMillis: Int = 5_000) throws -> OpenStream {
        let fd = try RawHTTPClient.connect(port: port, timeoutMillis: timeoutMillis)
        let req = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
        RawHTTPClient.sendAll(fd, Array(req.utf8))
        var s = OpenStream(fd: fd, received: [])
        while !s.text.contains("\r\n\r\n") {
            guard s.readSome() else { break }
        }
        return s
    }

    var text: String { String(decoding: received, as: UTF8.self) }
    var status: Int? {
        guard text.hasPrefix("HTTP/1.1 ") else { return nil }
        return Int(text.dropFirst(9).prefix(3))
    }

    /// One recv; false at EOF, error or timeout.
    mutating func readSome() -> Bool {
        var buf = [UInt8](repeating: 0, count: 16_384)
        let n = recv(fd, &buf, buf.count, 0)
        if n > 0 { received += buf[0..<n]; return true }
        return false
    }

    /// Reads until the chunked body's end (or EOF / timeout), then closes. True when `[DONE]` and the last chunk arrived.
    mutating func finish() -> Bool {
        while !text.contains("0\r\n\r\n") {
            guard readSome() else { break }
        }
        close(fd)
        return text.contains("data: [DONE]") && text.contains("0\r\n\r\n")
    }
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass.
func waitUntil(_ seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        usleep(20_000)
    }
    return try condition()
}
