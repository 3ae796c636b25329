import Glibc
import Reactor
import Testing

/// A local nginx (Debian's nginx-light) serving TLS on loopback with certificates made by the
/// test itself with the `openssl` CLI, in a temp dir of its own:
/// - `good`: a localhost certificate (DNS:localhost, IP:127.0.0.1) signed by the test CA;
/// - `unknownCA`: the same names, signed by another CA nobody trusts;
/// - `wrongHost`: signed by the test CA, for `wrong.example` only;
/// - `expired`: signed by the test CA, valid in January 2020 only.
/// On `good`, `/hello` is answered by nginx itself and everything else is proxied (unbuffered,
/// HTTP/1.1 keep-alive) to `backend`, so the contract tests' servers can be reached over TLS.
/// `http2`: the good server also speaks HTTP/2 (ALPN h2).
/// When nginx or openssl is missing the fixture fails the test with what to install; it never
/// passes silently.
final class NginxFixture: @unchecked Sendable {
    let dir: String
    let goodPort: UInt16
    let unknownCAPort: UInt16
    let wrongHostPort: UInt16
    let expiredPort: UInt16
    var caFile: String { dir + "/ca.pem" }
    private var pid: pid_t = 0

    static func tool(_ name: String) -> String? {
        for d in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin", "/bin"] {
            let p = "\(d)/\(name)"
            if access(p, X_OK) == 0 { return p }
        }
        return nil
    }

    /// nil (and a recorded issue) when the tools are missing or nginx does not start.
    /// `keepaliveRequests`: requests per connection on the good server before nginx closes it
    /// (HTTP/2: sends GOAWAY).
    static func start(backendPort: UInt16, http2: Bool = false, keepaliveRequests: Int? = nil, extraGoodConfig: String = "",
                      sourceLocation: SourceLocation = #_sourceLocation) -> NginxFixture? {
        guard let nginx = tool("nginx") else {
            Issue.record("nginx not found: TLS tests need Debian's nginx-light (scripts/deps installs it)", sourceLocation: sourceLocation)
            return nil
        }
        guard let openssl = tool("openssl") else {
            Issue.record("openssl CLI not found: TLS tests need Debian's openssl (scripts/deps installs it)", sourceLocation: sourceLocation)
            return nil
        }
        var template = Array("/tmp/veil-tls-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { Issue.record("mkdtemp failed"); return nil }
        let dir = String(cString: made)
        let f = NginxFixture(dir: dir)
        guard f.makeCertificates(openssl) else {
            Issue.record("openssl could not make the test certificates (see \(dir)/openssl.log)", sourceLocation: sourceLocation)
            return nil
        }
        f.writeConfig(backendPort: backendPort, http2: http2,
                      extraGood: extraGoodConfig + (keepaliveRequests.map { "            keepalive_requests \($0);\n" } ?? ""))
        guard shell("\(nginx) -p \(dir) -c \(dir)/nginx.conf -e \(dir)/error.log > \(dir)/nginx.out 2>&1") == 0 else {
            Issue.record("nginx did not start: \(read(dir + "/nginx.out")) \(read(dir + "/error.log"))", sourceLocation: sourceLocation)
            return nil
        }
        f.pid = pid_t(read(dir + "/nginx.pid").trimmingCharacters()) ?? 0
        for port in [f.goodPort, f.unknownCAPort, f.wrongHostPort, f.expiredPort] where !waitListening(port) {
            Issue.record("nginx is not listening on \(port): \(read(dir + "/error.log"))", sourceLocation: sourceLocation)
            f.stop()
            return nil
        }
        return f
    }

    private init(dir: String) {
        self.dir = dir
        goodPort = freePort()
        unknownCAPort = freePort()
        wrongHostPort = freePort()
        expiredPort = freePort()
    }

    func url(_ port: UInt16, _ path: String, host: String = "localhost") -> String { "https://\(host):\(port)\(path)" }

    func stop() {
        if pid > 0 {
            kill(pid, SIGTERM)
            // Gone, or a zombie (the daemon's parent is init, which may reap it late).
            for _ in 0..<200 where kill(pid, 0) == 0 && !Self.read("/proc/\(pid)/stat").contains(") Z ") { usleep(10_000) }
            pid = 0
        }
        _ = Self.shell("rm -rf \(dir)")
    }

    /// The error log (for failure messages).
    var errorLog: String { Self.read(dir + "/error.log") }

    // MARK: certificates

    private func makeCertificates(_ openssl: String) -> Bool {
        let d = dir
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        let caExt = "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        Self.write(d + "/localhost.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        Self.write(d + "/wrong.ext", "subjectAltName=DNS:wrong.example\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        Self.write(d + "/ca.cnf", """
            [ ca ]
            default_ca = testca
            [ testca ]
            database = \(d)/index.txt
            new_certs_dir = \(d)
            certificate = \(d)/ca.pem
            private_key = \(d)/ca.key
            serial = \(d)/serial
            default_md = sha256
            policy = anything
            [ anything ]
            commonName = supplied

            """)
        Self.write(d + "/index.txt", "")
        Self.write(d + "/serial", "1000\n")
        let steps = [
            "\(openssl) req -x509 \(ec) -keyout \(d)/ca.key -out \(d)/ca.pem -days 30 -subj '/CN=Veil Test CA' \(caExt)",
            "\(openssl) req -x509 \(ec) -keyout \(d)/other-ca.key -out \(d)/other-ca.pem -days 30 -subj '/CN=Untrusted CA' \(caExt)",
            "\(openssl) req \(ec) -keyout \(d)/server.key -out \(d)/server.csr -subj '/CN=localhost'",
            "\(openssl) x509 -req -in \(d)/server.csr -CA \(d)/ca.pem -CAkey \(d)/ca.key -set_serial 1 -days 30 -extfile \(d)/localhost.ext -out \(d)/good.pem",
            "\(openssl) x509 -req -in \(d)/server.csr -CA \(d)/other-ca.pem -CAkey \(d)/other-ca.key -set_serial 2 -days 30 -extfile \(d)/localhost.ext -out \(d)/unknown.pem",
            "\(openssl) req \(ec) -keyout \(d)/wrong.key -out \(d)/wrong.csr -subj '/CN=wrong.example'",
            "\(openssl) x509 -req -in \(d)/wrong.csr -CA \(d)/ca.pem -CAkey \(d)/ca.key -set_serial 3 -days 30 -extfile \(d)/wrong.ext -out \(d)/wrong.pem",
            "\(openssl) ca -batch -config \(d)/ca.cnf -startdate 20200101000000Z -enddate 20200201000000Z -extfile \(d)/localhost.ext -in \(d)/server.csr -out \(d)/expired.pem",
        ]
        for s in steps where Self.shell("\(s) >> \(d)/openssl.log 2>&1") != 0 { return false }
        return true
    }

    // MARK: nginx

    private func writeConfig(backendPort: UInt16, http2: Bool, extraGood: String) {
        let d = dir
        let user = geteuid() == 0 ? "user root;" : ""
        func server(_ port: UInt16, _ cert: String, _ key: String, _ body: String, h2: Bool = false) -> String {
            """
                server {
                    listen 127.0.0.1:\(port) ssl\(h2 ? " http2" : "");
                    ssl_certificate \(d)/\(cert);
                    ssl_certificate_key \(d)/\(key);
                    ssl_protocols TLSv1.2 TLSv1.3;
            \(body)
                }

            """
        }
        let proxied = """
                    location = /hello { return 200 "hello over tls\\n"; }
                    location /c/ { return 200 "$uri"; }
                    location / {
                        proxy_pass http://127.0.0.1:\(backendPort);
                        proxy_http_version 1.1;
                        proxy_set_header Connection "";
                        proxy_buffering off;
                        proxy_request_buffering off;
                        proxy_read_timeout 30s;
                    }
            \(extraGood)
            """
        let plain = "            location / { return 200 \"should not be reached\\n\"; }"
        Self.write(d + "/nginx.conf", """
            \(user)
            worker_processes 1;
            pid \(d)/nginx.pid;
            error_log \(d)/error.log warn;
            events { worker_connections 4096; }
            http {
                access_log off;
                client_body_temp_path \(d)/body;
                proxy_temp_path \(d)/proxy;
                fastcgi_temp_path \(d)/fastcgi;
                uwsgi_temp_path \(d)/uwsgi;
                scgi_temp_path \(d)/scgi;
                keepalive_requests 100000;
                http2_max_concurrent_streams 1000;
                keepalive_timeout 60s;
            \(server(goodPort, "good.pem", "server.key", proxied, h2: http2))\
            \(server(unknownCAPort, "unknown.pem", "server.key", plain))\
            \(server(wrongHostPort, "wrong.pem", "wrong.key", plain))\
            \(server(expiredPort, "expired.pem", "server.key", plain))\
            }

            """)
    }

    // MARK: helpers

    @discardableResult
    static func shell(_ command: String) -> Int32 {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sh"), strdup("-c"), strdup(command), nil]
        defer { argv.forEach { free($0) } }
        guard posix_spawn(&pid, "/bin/sh", nil, nil, argv, environ) == 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
    }

    static func write(_ path: String, _ text: String) {
        guard let f = fopen(path, "w") else { return }
        fputs(text, f)
        fclose(f)
    }

    static func read(_ path: String) -> String {
        guard let f = fopen(path, "r") else { return "" }
        defer { fclose(f) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func waitListening(_ port: UInt16) -> Bool {
        for _ in 0..<300 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = port.bigEndian
            inet_pton(AF_INET, "127.0.0.1", &a.sin_addr)
            let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            close(fd)
            if rc == 0 { return true }
            usleep(10_000)
        }
        return false
    }
}

/// A loopback port nobody listens on right now (bound, read, released).
func freePort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr)
    _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    let port = Socket.localPort(fd)
    close(fd)
    return port
}

extension String {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s = s.dropFirst() }
        while let c = s.last, c.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}
