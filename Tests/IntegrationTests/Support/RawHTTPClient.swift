import Glibc

/// A small blocking HTTP/1.1 client over a raw socket, for tests: one request per connection,
/// a receive timeout so nothing hangs, Content-Length / chunked / read-to-close bodies, and the
/// arrival time of every chunk (to check that streams really stream).
struct RawResponse {
    var status: Int
    var reason: String
    var headers: [(String, String)]
    var body: [UInt8]
    /// Chunked bodies: each chunk's bytes and the monotonic millisecond it was fully received.
    var chunks: [(bytes: [UInt8], atMillis: UInt64)]
    /// False when the connection ended before the body was complete.
    var complete: Bool

    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
    var text: String { String(decoding: body, as: UTF8.self) }
}

enum RawHTTPError: Error, Equatable {
    case connectFailed(Int32)
    case timedOut(receivedBytes: Int)
    case closedBeforeHead(receivedBytes: Int)
    case malformed(String)
}

enum RawHTTPClient {
    static func nowMillis() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    static func request(port: UInt16, method: String, path: String, headers: [(String, String)] = [],
                        body: [UInt8] = [], timeoutMillis: Int = 5_000, pauseBeforeReadMillis: Int = 0) throws -> RawResponse {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if !body.isEmpty || method == "POST" || method == "PUT" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        return try raw(port: port, bytes: Array(head.utf8) + body, isHead: method == "HEAD", timeoutMillis: timeoutMillis,
                       pauseBeforeReadMillis: pauseBeforeReadMillis)
    }

    /// Sends a request, reads until at least `bytes` bytes of response arrived, then hangs up.
    static func abandon(port: UInt16, request: String, afterBytes bytes: Int, timeoutMillis: Int = 5_000) throws {
        let fd = try connect(port: port, timeoutMillis: timeoutMillis)
        defer { close(fd) }
        let out = Array(request.utf8)
        RawHTTPClient.sendAll(fd, out)
        var reader = Reader(fd: fd)
        while reader.total < bytes {
            if try !reader.fill() { return }
        }
    }

    static func connect(port: UInt16, timeoutMillis: Int) throws -> Int32 {
        // Close-on-exec: tests run in parallel and spawn processes (Veil, nginx, PostgreSQL);
        // a child that inherits this socket keeps the connection open after the test closes
        // it (AttackTests' descriptor test saw Veil's slots never freed).
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RawHTTPError.connectFailed(errno) }
        var tv = timeval(tv_sec: timeoutMillis / 1000, tv_usec: (timeoutMillis % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { let e = errno; close(fd); throw RawHTTPError.connectFailed(e) }
        return fd
    }

    /// Writes all of `bytes` (stops early only if the socket fails or times out).
    /// Returns how many bytes went out (all of them unless the connection failed or timed out).
    @discardableResult
    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Int {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }
            sent += n
        }
        return sent
    }

    /// Sends `bytes` as is and reads one response.
    static func raw(port: UInt16, bytes: [UInt8], isHead: Bool = false, timeoutMillis: Int = 5_000, pauseBeforeReadMillis: Int = 0) throws -> RawResponse {
        let fd = try connect(port: port, timeoutMillis: timeoutMillis)
        defer { close(fd) }
        sendAll(fd, bytes)
        // A client that does not read for a while: the server's socket buffers fill up.
        if pauseBeforeReadMillis > 0 { usleep(UInt32(pauseBeforeReadMillis) * 1000) }
        var reader = Reader(fd: fd)
        return try reader.readResponse(isHead: isHead)
    }

    struct Reader {
        let fd: Int32
        var buf: [UInt8] = []
        var eof = false
        var total = 0

        /// Reads more bytes; false at EOF. Throws on timeout.
        mutating func fill() throws -> Bool {
            if eof { return false }
            var tmp = [UInt8](repeating: 0, count: 65536)
            let n = tmp.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { buf += tmp[0..<n]; total += n; return true }
            if n == 0 { eof = true; return false }
            let e = errno
            if e == EAGAIN || e == EWOULDBLOCK { throw RawHTTPError.timedOut(receivedBytes: total) }
            if e == EINTR { return true }
            eof = true  // ECONNRESET and friends: treat as the end
            return false
        }

        func find(_ needle: [UInt8]) -> Int? {
            guard buf.count >= needle.count else { return nil }
            for i in 0...(buf.count - needle.count) where buf[i] == needle[0] {
                if Array(buf[i..<(i + needle.count)]) == needle { return i }
            }
            return nil
        }

        mutating func readResponse(isHead: Bool) throws -> RawResponse {
            var headEnd: Int?
            while true {
                headEnd = find([13, 10, 13, 10])
                if headEnd != nil { break }
                if try !fill() { throw RawHTTPError.closedBeforeHead(receivedBytes: total) }
            }
            let headText = String(decoding: buf[0..<headEnd!], as: UTF8.self)
            buf.removeFirst(headEnd! + 4)
            var lines = headText.rawSplit("\r\n")
            let statusLine = lines.removeFirst()
            let sp = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
            guard sp.count >= 2, let status = Int(sp[1]) else { throw RawHTTPError.malformed(statusLine) }
            var headers: [(String, String)] = []
            for l in lines {
                guard let c = l.firstIndex(of: ":") else { continue }
                headers.append((String(l[..<c]), String(l[l.index(after: c)...]).rawTrimmed(" \t")))
            }
            var resp = RawResponse(status: status, reason: sp.count > 2 ? String(sp[2]) : "", headers: headers, body: [], chunks: [], complete: true)
            if isHead || status == 204 || status == 304 || (100...199).contains(status) { return resp }
            if resp.header("transfer-encoding")?.lowercased().contains("chunked") == true {
                while true {
                    var lineEnd = find([13, 10])
                    while lineEnd == nil {
                        if try !fill() { resp.complete = false; return resp }
                        lineEnd = find([13, 10])
                    }
                    let sizeText = String(decoding: buf[0..<lineEnd!], as: UTF8.self).split(separator: ";").first.map(String.init) ?? ""
                    guard let size = Int(sizeText.rawTrimmed(" "), radix: 16) else { throw RawHTTPError.malformed("chunk size \(sizeText)") }
                    buf.removeFirst(lineEnd! + 2)
                    if size == 0 {
                        // Trailers (none expected) end with an empty line.
                        while find([13, 10]) == nil { if try !fill() { break } }
                        if let e = find([13, 10]) { buf.removeFirst(e + 2) }
                        return resp
                    }
                    while buf.count < size + 2 {
                        if try !fill() { resp.body += buf; resp.complete = false; return resp }
                    }
                    let chunk = Array(buf[0..<size])
                    resp.body += chunk
                    resp.chunks.append((chunk, RawHTTPClient.nowMillis()))
                    buf.removeFirst(size + 2)
                }
            }
            if let cl = resp.header("content-length"), let n = Int(cl) {
                while buf.count < n {
                    if try !fill() { resp.body = buf; resp.complete = false; return resp }
                }
                resp.body = Array(buf[0..<n])
                buf.removeFirst(n)  // a pipelined response may follow
                return resp
            }
            while try fill() {}
            resp.body = buf
            return resp
        }
    }
}

extension String {
    func rawTrimmed(_ set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }

    func rawSplit(_ sep: String) -> [String] {
        var out: [String] = []
        var rest = Substring(self)
        while let r = rest.firstRange(of: sep) {
            out.append(String(rest[..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        out.append(String(rest))
        return out
    }
}

/// Builds a multipart/form-data body.
struct MultipartBuilder {
    let boundary = "----veiltest7MA4YWxkTrZu0gW"
    var body: [UInt8] = []

    var contentType: String { "multipart/form-data; boundary=\(boundary)" }

    mutating func field(_ name: String, _ value: String) {
        body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n".utf8)
    }

    mutating func file(_ name: String, filename: String, contentType: String, bytes: [UInt8]) {
        body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"; filename=\"\(filename)\"\r\nContent-Type: \(contentType)\r\n\r\n".utf8)
        body += bytes
        body += Array("\r\n".utf8)
    }

    func finished() -> [UInt8] { body + Array("--\(boundary)--\r\n".utf8) }
}
