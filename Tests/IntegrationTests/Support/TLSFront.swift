import COpenSSL
import Foundation
import Glibc
import Synchronization
import Testing

/// A TLS front for a plain test upstream: it accepts TLS on 127.0.0.1 (a certificate for
/// `localhost` from a CA made here with the `openssl` CLI), opens a TCP connection to the target
/// for each client and pumps bytes both ways. It works at the byte level, so everything the
/// upstream does reaches Veil unchanged, only encrypted: its quirks, a cut (TLS close after a
/// partial body), a reset (the client socket reset, no close_notify), back-pressure (a thread
/// blocked writing to Veil stops reading the upstream).
///
/// `VEIL_TEST_UPSTREAM_TLS=1` puts one in front of every `VeilHarness`'s upstream, so the same
/// integration suites run over TLS (scripts/test runs them both ways).
final class TLSFront: @unchecked Sendable {
    static var enabled: Bool { ProcessInfo.processInfo.environment["VEIL_TEST_UPSTREAM_TLS"] == "1" }

    /// The CA and the `localhost` certificate, made once per test process.
    static let certificates: (ca: String, cert: String, key: String)? = makeCertificates()

    let port: UInt16
    private let listenFD: Int32
    private let ctx: OpaquePointer
    private let targetPort: UInt16
    private let open = Mutex<Set<Int32>>([])
    /// TLS handshakes completed (a test can see the upstream really was reached through TLS).
    let handshakes = Atomic<Int>(0)
    private let stopped = Atomic<Bool>(false)

    /// The `https://` base URL to give Veil, and the CA file it must trust.
    var baseURL: String { "https://localhost:\(port)" }
    var caFile: String { Self.certificates?.ca ?? "" }

    init(targetPort: UInt16) throws {
        guard let certs = Self.certificates else {
            throw TLSFrontError("the openssl CLI could not make the test certificates (Debian's openssl: scripts/deps installs it)")
        }
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw TLSFrontError("SSL_CTX_new failed") }
        guard SSL_CTX_use_certificate_chain_file(ctx, certs.cert) == 1,
              SSL_CTX_use_PrivateKey_file(ctx, certs.key, SSL_FILETYPE_PEM) == 1 else {
            SSL_CTX_free(ctx)
            throw TLSFrontError("cannot load the test certificate")
        }
        self.ctx = ctx
        self.targetPort = targetPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard fd >= 0, rc == 0, listen(fd, 256) == 0 else { throw TLSFrontError("cannot listen on 127.0.0.1") }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = UInt16(bigEndian: bound.sin_port)
        listenFD = fd
        let t = Thread { [self] in acceptLoop() }
        t.name = "tls-front"
        t.start()
    }

    func stop() {
        guard !stopped.exchange(true, ordering: .relaxed) else { return }
        shutdown(listenFD, Int32(SHUT_RDWR))
        close(listenFD)
        // Live connections end as their peers do; their threads free their own state.
        for fd in open.withLock({ $0 }) { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private func acceptLoop() {
        while !stopped.load(ordering: .relaxed) {
            let c = accept(listenFD, nil, nil)
            if c >= 0 { _ = fcntl(c, F_SETFD, FD_CLOEXEC) }   // not inherited by spawned processes
            if c < 0 {
                if errno == EINTR { continue }
                return
            }
            var one: Int32 = 1
            setsockopt(c, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let t = Thread { [self] in serve(c) }
            t.name = "tls-front-conn"
            t.start()
        }
    }

    /// One client: handshake, connect to the target, pump until either side ends.
    private func serve(_ client: Int32) {
        open.withLock { _ = $0.insert(client) }
        guard let ssl = SSL_new(ctx) else { close(client); return }
        var target: Int32 = -1
        defer {
            SSL_free(ssl)
            open.withLock { $0.remove(client); if target >= 0 { $0.remove(target) } }
            close(client)
            if target >= 0 { close(target) }
        }
        SSL_set_fd(ssl, client)
        guard SSL_accept(ssl) == 1 else { return }
        handshakes.add(1, ordering: .relaxed)
        target = connectToTarget()
        guard target >= 0 else { return }
        open.withLock { _ = $0.insert(target) }
        _ = fcntl(client, F_SETFL, fcntl(client, F_GETFL) | O_NONBLOCK)
        var buf = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            // Bytes OpenSSL already holds are read before waiting for the socket.
            if SSL_pending(ssl) == 0 {
                var fds = [pollfd(fd: client, events: Int16(POLLIN), revents: 0), pollfd(fd: target, events: Int16(POLLIN), revents: 0)]
                if poll(&fds, 2, 1000) < 0 && errno != EINTR { return }
                if stopped.load(ordering: .relaxed) && fds[0].revents == 0 && fds[1].revents == 0 { return }
                if fds[1].revents != 0 {
                    // The upstream's bytes to Veil, or its end: FIN → close_notify, reset → reset.
                    let n = recv(target, &buf, buf.count, 0)
                    if n > 0 {
                        guard sslWriteAll(ssl, client, buf, n) else { return }
                        continue
                    }
                    if n == 0 {
                        _ = SSL_shutdown(ssl)
                    } else {
                        var lingerOff = linger(l_onoff: 1, l_linger: 0)
                        setsockopt(client, SOL_SOCKET, SO_LINGER, &lingerOff, socklen_t(MemoryLayout<linger>.size))
                    }
                    return
                }
                if fds[0].revents == 0 { continue }
            }
            // Veil's bytes to the upstream.
            let n = buf.withUnsafeMutableBytes { SSL_read(ssl, $0.baseAddress, Int32($0.count)) }
            if n > 0 {
                guard sendAll(target, buf, Int(n)) else { return }
                continue
            }
            let err = SSL_get_error(ssl, n)
            if err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE { continue }
            // Veil closed (close_notify or EOF) or failed: the upstream sees the end too.
            shutdown(target, Int32(SHUT_WR))
            return
        }
    }

    private func connectToTarget() -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = targetPort.bigEndian
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { close(fd); return -1 }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    /// Writes all of `buf[0..<n]` through TLS on a non-blocking socket, waiting as Veil reads.
    private func sslWriteAll(_ ssl: OpaquePointer, _ fd: Int32, _ buf: [UInt8], _ n: Int) -> Bool {
        while true {
            let w = buf.withUnsafeBytes { SSL_write(ssl, $0.baseAddress, Int32(n)) }
            if w > 0 { return true }
            let err = SSL_get_error(ssl, w)
            guard err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ, !stopped.load(ordering: .relaxed) else { return false }
            var p = pollfd(fd: fd, events: Int16(err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), revents: 0)
            _ = poll(&p, 1, 1000)
        }
    }

    private func sendAll(_ fd: Int32, _ buf: [UInt8], _ n: Int) -> Bool {
        var off = 0
        while off < n {
            let w = buf.withUnsafeBytes { send(fd, $0.baseAddress! + off, n - off, Int32(MSG_NOSIGNAL)) }
            if w < 0 && errno == EINTR { continue }
            if w <= 0 { return false }
            off += w
        }
        return true
    }

    private static func makeCertificates() -> (ca: String, cert: String, key: String)? {
        let dir = NSTemporaryDirectory() + "veil-tls-front-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        let caExt = "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        FileManager.default.createFile(atPath: dir + "/localhost.ext",
                                       contents: Data("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n".utf8))
        let steps = [
            "openssl req -x509 \(ec) -keyout \(dir)/ca.key -out \(dir)/ca.pem -days 30 -subj '/CN=Veil Integration Test CA' \(caExt)",
            "openssl req \(ec) -keyout \(dir)/server.key -out \(dir)/server.csr -subj '/CN=localhost'",
            "openssl x509 -req -in \(dir)/server.csr -CA \(dir)/ca.pem -CAkey \(dir)/ca.key -set_serial 1 -days 30 -extfile \(dir)/localhost.ext -out \(dir)/server.pem",
        ]
        for s in steps {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", s + " >> \(dir)/openssl.log 2>&1"]
            guard (try? p.run()) != nil else { return nil }
            p.waitUntilExit()
            if p.terminationStatus != 0 { return nil }
        }
        return (dir + "/ca.pem", dir + "/server.pem", dir + "/server.key")
    }
}

struct TLSFrontError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
