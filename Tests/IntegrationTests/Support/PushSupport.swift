import Foundation
import Glibc
import HTTPServer
import HTTPWire
import Reactor
import Synchronization
import Gateway

/// An SSE stream read over a raw socket (`GET …/events`): the head, then the chunked body decoded
/// and split into events and comments as it arrives. Reads are bounded by the socket's receive
/// timeout, so nothing hangs.
final class SSEClient {
    struct Event: Equatable { var name: String; var data: String }

    let fd: Int32
    private var raw: [UInt8] = []
    private(set) var closedByPeer = false

    init(port: UInt16, path: String, headers: [(String, String)], timeoutMillis: Int = 10_000) throws {
        fd = try RawHTTPClient.connect(port: port, timeoutMillis: timeoutMillis)
        var head = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nAccept: text/event-stream\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        head += "\r\n"
        RawHTTPClient.sendAll(fd, Array(head.utf8))
        _ = read { $0.headEnd != nil }
    }

    deinit { close() }

    private var isClosed = false
    func close() {
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(fd)
    }

    private var headEnd: Int? {
        guard raw.count >= 4 else { return nil }
        for i in 0...(raw.count - 4) where raw[i] == 13 && raw[i + 1] == 10 && raw[i + 2] == 13 && raw[i + 3] == 10 { return i + 4 }
        return nil
    }

    var headText: String { headEnd.map { String(decoding: raw[0..<$0], as: UTF8.self) } ?? "" }
    var status: Int? {
        let t = headText
        guard t.hasPrefix("HTTP/1.1 ") else { return nil }
        return Int(t.dropFirst(9).prefix(3))
    }
    func header(_ name: String) -> String? {
        for line in headText.components(separatedBy: "\r\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == name.lowercased() { return parts[1].trimmingCharacters(in: .whitespaces) }
        }
        return nil
    }

    /// The body so far, de-chunked (only whole chunks), and whether the last chunk arrived.
    var body: (bytes: [UInt8], ended: Bool) {
        guard let start = headEnd else { return ([], false) }
        if header("transfer-encoding")?.lowercased() != "chunked" { return (Array(raw[start...]), closedByPeer) }
        var out: [UInt8] = []
        var i = start
        while true {
            guard let lineEnd = (i..<raw.count).first(where: { $0 + 1 < raw.count && raw[$0] == 13 && raw[$0 + 1] == 10 }) else { return (out, false) }
            guard let size = Int(String(decoding: raw[i..<lineEnd], as: UTF8.self), radix: 16) else { return (out, false) }
            if size == 0 { return (out, true) }
            let dataStart = lineEnd + 2
            guard dataStart + size + 2 <= raw.count else { return (out, false) }
            out += raw[dataStart..<(dataStart + size)]
            i = dataStart + size + 2
        }
    }

    /// Whole events (`event:` + `data:` lines ended by a blank line) and comment lines, in order.
    var frames: (events: [Event], comments: [String]) {
        let text = String(decoding: body.bytes, as: UTF8.self)
        var events: [Event] = []
        var comments: [String] = []
        var blocks = text.components(separatedBy: "\n\n")
        blocks.removeLast()              // the part after the last blank line is not whole yet
        for block in blocks {
            var name = "message", data: [String] = []
            for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix(":") { comments.append(line.dropFirst().trimmingCharacters(in: .whitespaces)) }
                else if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
                else if line.hasPrefix("data: ") { data.append(String(line.dropFirst(6))) }
            }
            if !data.isEmpty { events.append(Event(name: name, data: data.joined(separator: "\n"))) }
        }
        return (events, comments)
    }
    var events: [Event] { frames.events }
    var ended: Bool { body.ended }

    /// Reads until `done(self)` holds, the peer closes, or a read times out. True when it holds.
    @discardableResult
    func read(until done: (SSEClient) -> Bool) -> Bool {
        while !done(self) {
            var buf = [UInt8](repeating: 0, count: 16_384)
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 { raw += buf[0..<n]; continue }
            if n == 0 { closedByPeer = true }
            return done(self)
        }
        return true
    }

    /// Reads to the end of the stream (the last chunk, or the peer closing).
    @discardableResult
    func readToEnd() -> Bool { read { $0.ended || $0.closedByPeer } }
}

func jsonOf(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
}

/// A webhook receiver on loopback: records every POST (headers and body) and answers the next
/// status of its script (then `afterScript`), so a test sees exactly what Veil sent, attempt by
/// attempt.
final class WebhookReceiver: HTTPHandler, @unchecked Sendable {
    struct Received {
        var headers: [String: String]
        var body: [UInt8]
        var path: String
        var atMillis: UInt64
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    private let state = Mutex<(script: [Int], after: Int, received: [Received])>(([], 200, []))
    private var server: LoopServer?
    var port: UInt16 { server?.port ?? 0 }
    var url: String { "http://127.0.0.1:\(port)/hooks/veil" }

    init(script: [Int] = [], afterScript: Int = 200) {
        state.withLock { $0 = (script, afterScript, []) }
    }

    func start() throws { server = try LoopServer(self, loopID: 70, name: "webhook-receiver") }
    func stop() { server?.stop() }

    /// From now on every request gets `status`.
    func answer(_ status: Int) { state.withLock { $0.script = []; $0.after = status } }

    var received: [Received] { state.withLock { $0.received } }

    func handle(_ request: HTTPRequest, _ response: HTTPResponder) {
        var h: [String: String] = [:]
        for f in request.headers { h[f.name.lowercased()] = f.value }
        let status: Int = state.withLock { s in
            s.received.append(Received(headers: h, body: request.body, path: String(request.path), atMillis: RawHTTPClient.nowMillis()))
            return s.script.isEmpty ? s.after : s.script.removeFirst()
        }
        response.respond(status: status, headers: ["content-type": "text/plain"], body: Array("status \(status)".utf8))
    }
}

/// A `teams:` block: web (with a webhook to `hookURL` when given), mobile, and `limited` with
/// one concurrent stream.
func pushTeamsYAML(hookURL: String?, secret: String = pushSecret) -> String {
    """
    teams:
      - name: web
        tokens_sha256: ["\(sha256Hex(VeilHarness.teamTokens["web"]!))"]
    \(hookURL.map { "    webhook:\n      url: \"\($0)\"\n      secret: \"\(secret)\"" } ?? "")
      - name: mobile
        tokens_sha256: ["\(sha256Hex(VeilHarness.teamTokens["mobile"]!))"]
      - name: limited
        tokens_sha256: ["\(sha256Hex(VeilHarness.teamTokens["limited"]!))"]
        max_concurrent_streams: 1
    """
}

let pushSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

/// `webhooks:` for tests: loopback allowed, fast retries.
func pushWebhooksYAML(backoffInitialMillis: Int = 100, allowPrivate: Bool = true, extra: [String] = []) -> String {
    (["webhooks:", "  allow_http: true", "  backoff_initial_ms: \(backoffInitialMillis)", "  backoff_max_ms: \(max(400, backoffInitialMillis))",
      "  poll_ms: 100", "  timeout_ms: 3000"]
     + (allowPrivate ? ["  allow_private: [\"127.0.0.1\"]"] : []) + extra.map { "  " + $0 }).joined(separator: "\n")
}

/// An endpoint that accepts connections and never answers (a receiver hung or dead behind a
/// load balancer): every attempt to it runs into `webhooks.timeout_ms`.
final class SilentEndpoint: @unchecked Sendable {
    private let fd: Int32
    let port: UInt16
    private let state = Mutex<(accepted: [Int32], stopped: Bool)>(([], false))
    private var thread: Thread?

    init() throws {
        let sock = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(sock, 64) == 0 else { throw RawHTTPError.connectFailed(errno) }
        var out = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &out) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(sock, $0, &len) } }
        port = UInt16(bigEndian: out.sin_port)
        fd = sock
    }

    func start() {
        let t = Thread { [self] in
            while true {
                let c = accept(fd, nil, nil)
                if c >= 0 { _ = fcntl(c, F_SETFD, FD_CLOEXEC) }   // not inherited by spawned processes
                if c < 0 { return }
                let stop = state.withLock { s -> Bool in
                    if !s.stopped { s.accepted.append(c) }
                    return s.stopped
                }
                if stop { Glibc.close(c); return }
            }
        }
        thread = t
        t.start()
    }

    var url: String { "http://127.0.0.1:\(port)/hooks" }
    var accepted: Int { state.withLock { $0.accepted.count } }

    func stop() {
        let fds = state.withLock { s -> [Int32] in s.stopped = true; return s.accepted }
        for c in fds { Glibc.close(c) }
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }
}
