import ArgumentParser
import Glibc

/// `veil healthcheck`: GET /healthz on a running Veil and exit 0 on 200 — the image's HEALTHCHECK,
/// so the runtime image needs no curl (and no libcurl) for it.
struct Healthcheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a running Veil for /healthz (exit 0 when it answers 200): the container's health check.")
    @Option(name: .long, help: "Port of the Veil to ask (on 127.0.0.1).") var port: UInt16 = 8080
    @Option(name: .long, help: "How long to wait, in milliseconds.") var timeoutMs: Int = 2_000

    func run() throws {
        guard let status = Healthcheck.status(port: port, timeoutMillis: timeoutMs) else {
            StandardError.write("veil healthcheck: no answer from 127.0.0.1:\(port)\n")
            throw ExitCode(1)
        }
        guard status == 200 else {
            StandardError.write("veil healthcheck: /healthz answered \(status)\n")
            throw ExitCode(1)
        }
    }

    /// The status of `GET /healthz` on 127.0.0.1:`port`, or nil when nothing answered in time.
    static func status(port: UInt16, timeoutMillis: Int) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeoutMillis / 1000, tv_usec: (timeoutMillis % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { return nil }
        let request = Array("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return nil }
        var head = [UInt8](repeating: 0, count: 32)
        var got = 0
        while got < 12 {
            let n = head.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, $0.count - got, 0) }
            if n <= 0 { return nil }
            got += n
        }
        // "HTTP/1.1 200 ..."
        let line = String(decoding: head[0..<got], as: UTF8.self)
        guard line.hasPrefix("HTTP/1."), let code = Int(line.dropFirst(9).prefix(3)) else { return nil }
        return code
    }
}
