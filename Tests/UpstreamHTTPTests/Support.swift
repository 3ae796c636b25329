import Dispatch
import Glibc
import Reactor
import Synchronization
import Testing
@testable import Upstream
@testable import UpstreamHTTP

// Test plumbing shared by both clients (a port of Tests/UpstreamTests/Support.swift, which stays
// with the libcurl suite): a blocking POSIX HTTP/1.1 server on background threads, an event loop
// on its own thread with either client, and a recording delegate.

func nowMillis() -> UInt64 { EventLoop.monotonicMillis() }

/// The implementations of `UpstreamClientProtocol` every contract test runs against (libcurl's ran
/// them too until it was removed).
enum ClientKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case native
    var testDescription: String { rawValue }
}

struct ServerRequest: Sendable {
    var method: String
    var path: String
    var headers: [(name: String, value: String)]
    var body: [UInt8]
    var rawHead: String
    func header(_ name: String) -> String? { headers.first { $0.name.lowercased() == name.lowercased() }?.value }
}

/// One accepted connection (blocking, 5 s receive timeout).
final class ServerConn: @unchecked Sendable {
    let fd: Int32
    /// Requests read on this connection so far.
    var served = 0
    private var buffer: [UInt8] = []
    init(fd: Int32) { self.fd = fd }

    func readRequest() -> ServerRequest? {
        while true {
            if let end = find(Array("\r\n\r\n".utf8)) {
                let head = String(decoding: buffer[..<end], as: UTF8.self)
                var lines = head.components("\r\n")
                let requestLine = lines.removeFirst().split(separator: " ")
                var headers: [(name: String, value: String)] = []
                for l in lines {
                    guard let c = l.firstIndex(of: ":") else { continue }
                    headers.append((String(l[..<c]), String(l[l.index(after: c)...]).trimmed))
                }
                let length = Int(headers.first { $0.name.lowercased() == "content-length" }?.value ?? "0") ?? 0
                while buffer.count < end + 4 + length {
                    if !fill() { return nil }
                }
                let body = Array(buffer[(end + 4)..<(end + 4 + length)])
                buffer.removeFirst(end + 4 + length)
                return ServerRequest(method: requestLine.count > 0 ? String(requestLine[0]) : "",
                                     path: requestLine.count > 1 ? String(requestLine[1]) : "",
                                     headers: headers, body: body, rawHead: head)
            }
            if !fill() { return nil }
        }
    }

    private func find(_ needle: [UInt8]) -> Int? {
        guard buffer.count >= needle.count else { return nil }
        for i in 0...(buffer.count - needle.count) where buffer[i] == needle[0] {
            if Array(buffer[i..<(i + needle.count)]) == needle { return i }
        }
        return nil
    }

    private func fill() -> Bool {
        var tmp = [UInt8](repeating: 0, count: 65536)
        let n = read(fd, &tmp, tmp.count)
        if n <= 0 { return false }
        buffer += tmp[0..<n]
        return true
    }

    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
    }
    @discardableResult func send(_ s: String) -> Bool { send(Array(s.utf8)) }
    @discardableResult func chunk(_ s: String) -> Bool { send(String(s.utf8.count, radix: 16) + "\r\n" + s + "\r\n") }
    @discardableResult func endChunks() -> Bool { send("0\r\n\r\n") }

    /// True when the peer closes (or resets) within `millis`.
    func waitForClose(millis: Int) -> Bool {
        let deadline = nowMillis() + UInt64(millis)
        while nowMillis() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, Int32(max(1, Int(deadline - nowMillis()))))
            if r > 0 {
                var tmp = [UInt8](repeating: 0, count: 4096)
                let n = recv(fd, &tmp, tmp.count, Int32(MSG_DONTWAIT))
                if n == 0 { return true }
                if n < 0 && errno != EAGAIN && errno != EINTR { return true }
            }
        }
        return false
    }
}

/// A blocking HTTP/1.1 server on 127.0.0.1:<ephemeral>. `handler` answers one request and returns
/// true to keep the connection for the next one.
final class TestServer: @unchecked Sendable {
    let listenFD: Int32
    let port: UInt16
    let accepts = Atomic<Int>(0)
    let requests = Mutex<[ServerRequest]>([])
    private let handler: @Sendable (ServerConn, ServerRequest) -> Bool

    init(_ handler: @escaping @Sendable (ServerConn, ServerRequest) -> Bool) {
        self.handler = handler
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        precondition(fd >= 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        precondition(rc == 0)
        precondition(listen(fd, 128) == 0)
        listenFD = fd
        port = Socket.localPort(fd)
        startThread(name: "test-accept") { [self] in self.acceptLoop() }
    }

    var url: String { "http://127.0.0.1:\(port)" }
    var lastRequest: ServerRequest? { requests.withLock { $0.last } }
    var requestCount: Int { requests.withLock { $0.count } }
    var acceptCount: Int { accepts.load(ordering: .relaxed) }

    private func acceptLoop() {
        while true {
            let c = accept(listenFD, nil, nil)
            if c >= 0 { _ = fcntl(c, F_SETFD, FD_CLOEXEC) }   // not inherited by spawned processes
            if c < 0 {
                if errno == EINTR { continue }
                return
            }
            accepts.add(1, ordering: .relaxed)
            var tv = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let conn = ServerConn(fd: c)
            startThread(name: "test-conn") { [self] in self.serve(conn) }
        }
    }

    private func serve(_ conn: ServerConn) {
        while let req = conn.readRequest() {
            requests.withLock { $0.append(req) }
            conn.served += 1
            if !handler(conn, req) { break }
        }
        close(conn.fd)
    }

    func stop() {
        shutdown(listenFD, Int32(SHUT_RDWR))
        close(listenFD)
    }
}

final class Box<T>: @unchecked Sendable {
    var value: T
    init(_ v: T) { value = v }
}

/// An event loop on its own thread with one client of the given kind.
final class LoopHarness: @unchecked Sendable {
    let loop = EventLoop()
    let kind: ClientKind
    /// Loop-thread only.
    var client: UpstreamClientProtocol!
    var native: HTTPUpstreamClient { client as! HTTPUpstreamClient }

    init(_ kind: ClientKind, native: HTTPUpstreamSettings = HTTPUpstreamSettings()) {
        self.kind = kind
        let loop = self.loop
        startThread(name: "test-loop") { loop.run() }
        onLoop { self.client = HTTPUpstreamClient(loop: loop, settings: native) }
    }

    /// A client with this idle-connection cap.
    convenience init(_ kind: ClientKind, idleCap: Int) {
        var n = HTTPUpstreamSettings()
        n.maxIdleConnections = idleCap
        self.init(kind, native: n)
    }

    /// Runs `body` on the loop thread and waits (5 s at most) for its result.
    @discardableResult
    func onLoop<T>(_ body: @escaping @Sendable () -> T) -> T {
        let sem = DispatchSemaphore(value: 0)
        let box = Box<T?>(nil)
        loop.execute { box.value = body(); sem.signal() }
        precondition(sem.wait(timeout: .now() + 5) == .success, "loop did not answer")
        return box.value!
    }

    /// Starts a transfer on the loop; the recorder keeps the transfer.
    func start(_ req: UpstreamRequest, _ rec: Recorder) {
        onLoop { rec.transfer = self.client.start(req, delegate: rec) }
    }

    /// Runs one request to completion and returns its recorder.
    @discardableResult
    func run(_ req: UpstreamRequest) -> Recorder {
        let rec = Recorder()
        start(req, rec)
        _ = rec.waitFinished()
        return rec
    }

    /// Starts `count` GETs of `prefix0`, `prefix1`, … at once on the loop (a server that echoes
    /// the path) and checks that each finished cleanly with its own path as the body.
    func getConcurrently(_ count: Int, _ prefix: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let recs = (0..<count).map { _ in Recorder() }
        onLoop {
            for (i, r) in recs.enumerated() {
                r.transfer = self.client.start(UpstreamRequest(method: "GET", url: prefix + "\(i)"), delegate: r)
            }
            return ()
        }
        let path = prefix.drop { $0 != "/" }.dropFirst(2).drop { $0 != "/" }
        for (i, r) in recs.enumerated() {
            #expect(r.waitFinished(), sourceLocation: sourceLocation)
            #expect(r.finishes.first! == nil, sourceLocation: sourceLocation)
            #expect(r.bodyText == "\(path)\(i)", sourceLocation: sourceLocation)
        }
    }

    /// Idle connections kept by the client.
    var idleConnections: Int { onLoop { self.native.idleConnections } }

    func shutdown() {
        onLoop { self.client = nil }
        loop.stop()
    }
}

/// Records every delegate event (with arrival times); optional hooks run on the loop thread.
final class Recorder: UpstreamDelegate, @unchecked Sendable {
    struct State {
        var head: UpstreamResponseHead?
        var body: [UInt8] = []
        var chunkTimes: [(at: UInt64, count: Int)] = []
        var finishes: [UpstreamError?] = []
        var eventsAfterFinish = 0
        var headAfterData = false
        var dataBeforeHead = false
    }
    let state = Mutex(State())
    let finished = DispatchSemaphore(value: 0)
    /// Loop-thread only.
    var transfer: UpstreamTransfer?
    var onHead: ((Recorder) -> Void)?
    var onData: ((Recorder, Int) -> Void)?
    var onFinish: ((Recorder) -> Void)?

    func upstreamDidReceiveHead(_ head: UpstreamResponseHead) {
        state.withLock {
            if !$0.finishes.isEmpty { $0.eventsAfterFinish += 1 }
            if !$0.body.isEmpty || $0.head != nil { $0.headAfterData = true }
            $0.head = head
        }
        onHead?(self)
    }

    func upstreamDidReceive(_ bytes: UnsafeRawBufferPointer) {
        let total = state.withLock { s -> Int in
            if !s.finishes.isEmpty { s.eventsAfterFinish += 1 }
            if s.head == nil { s.dataBeforeHead = true }
            s.body += bytes
            s.chunkTimes.append((nowMillis(), bytes.count))
            return s.body.count
        }
        onData?(self, total)
    }

    func upstreamDidFinish(_ error: UpstreamError?) {
        state.withLock { $0.finishes.append(error) }
        onFinish?(self)
        transfer = nil
        finished.signal()
    }

    func waitFinished(seconds: Int = 10) -> Bool {
        finished.wait(timeout: .now() + .seconds(seconds)) == .success
    }

    var snapshot: State { state.withLock { $0 } }
    var bodyText: String { String(decoding: snapshot.body, as: UTF8.self) }
    var finishes: [UpstreamError?] { snapshot.finishes }
    /// Finished exactly once, without error.
    var succeeded: Bool { let f = finishes; return f.count == 1 && f[0] == nil }
}

extension String {
    func components(_ sep: String) -> [String] {
        var out: [String] = []
        var rest = Substring(self)
        while let r = rest.firstRange(of: sep) {
            out.append(String(rest[..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        out.append(String(rest))
        return out
    }
    var trimmed: String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}

/// A value shared between test threads.
final class Shared<T: Sendable>: Sendable {
    private let m: Mutex<T>
    init(_ v: T) { m = Mutex(v) }
    var value: T {
        get { m.withLock { $0 } }
        set { m.withLock { $0 = newValue } }
    }
}

/// Polls `cond` (on the test thread) for up to `millis`.
func eventually(millis: Int = 2000, _ cond: () -> Bool) -> Bool {
    let deadline = nowMillis() + UInt64(millis)
    while nowMillis() < deadline {
        if cond() { return true }
        usleep(5_000)
    }
    return cond()
}
