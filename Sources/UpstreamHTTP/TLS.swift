import COpenSSL
import CSystem
import Glibc
import Synchronization

/// What every TLS connection of a client is configured with.
public struct TLSConfiguration: Sendable, Hashable {
    /// Check the upstream's certificate chain (system store plus `caFile`) and its name.
    /// Turning it off is for tests against self-signed upstreams only: the gateway must say so
    /// loudly at every start.
    public var verifyPeer: Bool = true
    /// A PEM file of extra trusted CAs, added to the system store (`upstream.ca_file`).
    public var caFile: String? = nil
    /// Protocols offered by ALPN, most preferred first.
    public var alpn: [String] = ["http/1.1"]
    /// Free OpenSSL's ~34 KB of record buffers while a connection waits (OpenSSL's
    /// SSL_MODE_RELEASE_BUFFERS): memory per open stream or idle connection, at the cost of a
    /// buffer allocation per read burst.
    public var releaseBuffers: Bool = true
    public init() {}
}

/// One `SSL_CTX`, shared by every loop (OpenSSL contexts are thread-safe for `SSL_new`; the
/// CA store is parsed once per process). Built from a `TLSConfiguration`; cached by it.
/// Sessions are not cached here: each origin pool keeps its own (see `TLSStream`).
final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer
    let configuration: TLSConfiguration

    private static let cache = Mutex<[TLSConfiguration: TLSContext]>([:])

    /// The context for `config`, made on first use; an error message when it can't be (an
    /// unreadable CA file, say).
    static func shared(_ config: TLSConfiguration) -> Result<TLSContext, TLSSetupError> {
        if let hit = cache.withLock({ $0[config] }) { return .success(hit) }
        let made = make(config)
        if case .success(let c) = made {
            return .success(cache.withLock { d in
                if let other = d[config] { return other }
                d[config] = c
                return c
            })
        }
        return made
    }

    struct TLSSetupError: Error, Sendable { let message: String }

    private init(ctx: OpaquePointer, configuration: TLSConfiguration) {
        self.ctx = ctx
        self.configuration = configuration
    }

    deinit { SSL_CTX_free(ctx) }

    private static func make(_ config: TLSConfiguration) -> Result<TLSContext, TLSSetupError> {
        guard let ctx = SSL_CTX_new(TLS_client_method()) else { return .failure(TLSSetupError(message: "SSL_CTX_new failed")) }
        func fail(_ what: String) -> Result<TLSContext, TLSSetupError> {
            let detail = TLSStream.drainErrors()
            SSL_CTX_free(ctx)
            return .failure(TLSSetupError(message: detail.isEmpty ? what : "\(what): \(detail)"))
        }
        guard veil_ssl_ctx_set_min_tls12(ctx) == 1 else { return fail("cannot require TLS 1.2") }
        veil_ssl_ctx_set_modes(ctx, config.releaseBuffers ? 1 : 0)
        veil_ssl_ctx_set_read_ahead(ctx)
        if config.verifyPeer {
            SSL_CTX_set_verify(ctx, veil_ssl_verify_peer(), nil)
            guard SSL_CTX_set_default_verify_paths(ctx) == 1 else { return fail("cannot load the system CA store") }
            if let ca = config.caFile {
                guard SSL_CTX_load_verify_locations(ctx, ca, nil) == 1 else { return fail("cannot load CA file \(ca)") }
            }
        } else {
            SSL_CTX_set_verify(ctx, veil_ssl_verify_none(), nil)
        }
        if !config.alpn.isEmpty {
            var wire: [UInt8] = []
            for p in config.alpn where !p.isEmpty && p.utf8.count < 256 {
                wire.append(UInt8(p.utf8.count))
                wire.append(contentsOf: p.utf8)
            }
            guard SSL_CTX_set_alpn_protos(ctx, wire, UInt32(wire.count)) == 0 else { return fail("cannot set ALPN") }
        }
        veil_ssl_ctx_set_client_cache(ctx)
        SSL_CTX_sess_set_new_cb(ctx) { ssl, session in
            // A session (TLS 1.2 at the handshake, TLS 1.3 in tickets after it) for this
            // connection's origin: kept for the next connection there. 1 = we own it now.
            guard let ssl, let session, let p = veil_ssl_get_app_data(ssl) else { return 0 }
            Unmanaged<TLSStream>.fromOpaque(p).takeUnretainedValue().sessionArrived(session)
            return 1
        }
        return .success(TLSContext(ctx: ctx, configuration: config))
    }
}

/// Where a connection's TLS sessions are kept (its origin's pool): the newest one is offered
/// by the next connection there (resumption: an abbreviated handshake, one round trip less).
final class TLSSessionStore {
    private(set) var session: OpaquePointer?

    func store(_ s: OpaquePointer) {
        if let old = session { SSL_SESSION_free(old) }
        session = s
    }

    /// A session rejected by the server is not offered again.
    func forget() {
        if let old = session { SSL_SESSION_free(old) }
        session = nil
    }

    deinit { if let s = session { SSL_SESSION_free(s) } }
}

/// TLS over a connection's socket, driven by the reactor: OpenSSL reads and writes the
/// non-blocking descriptor itself (`SSL_set_fd`) and says when it would block; the connection
/// turns that into epoll interest. Chosen over memory BIOs: nginx's way, no extra copy of every
/// record through a BIO, and read-ahead gives one `read(2)` per burst. (HTTP/2's framing runs
/// over the plaintext either way.)
///
/// OpenSSL's error queue is per thread: it is emptied after every failure, so one connection's
/// error never turns another's `SSL_ERROR_WANT_READ` into a failure.
final class TLSStream {
    let ssl: OpaquePointer
    let sessions: TLSSessionStore
    /// Total (plain + TLS) scratch for coalescing a head and a small body into one record.
    private let scratch: UnsafeMutableRawBufferPointer
    private var offeredSession = false
    private(set) var handshakeDone = false

    /// nil when OpenSSL can't make the connection object (reported as a connect failure).
    /// `http1Only`: offer only `http/1.1` by ALPN on this connection (one that is never shared).
    init?(context: TLSContext, fd: Int32, host: String, hostIsIP: Bool, sessions: TLSSessionStore,
          scratch: UnsafeMutableRawBufferPointer, http1Only: Bool = false) {
        guard let ssl = SSL_new(context.ctx) else { return nil }
        self.ssl = ssl
        self.sessions = sessions
        self.scratch = scratch
        guard SSL_set_fd(ssl, fd) == 1 else { SSL_free(ssl); return nil }
        if hostIsIP {
            // No SNI for an address; the certificate must name the address (IP SAN).
            if context.configuration.verifyPeer {
                _ = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host)
            }
        } else {
            _ = veil_ssl_set_sni(ssl, host)
            if context.configuration.verifyPeer { _ = SSL_set1_host(ssl, host) }
        }
        if http1Only && context.configuration.alpn.contains("h2") {
            let wire: [UInt8] = [8] + Array("http/1.1".utf8)
            _ = SSL_set_alpn_protos(ssl, wire, UInt32(wire.count))
        }
        if let s = sessions.session {
            _ = SSL_set_session(ssl, s)
            offeredSession = true
        }
        _ = veil_ssl_set_app_data(ssl, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit { SSL_free(ssl) }

    func sessionArrived(_ s: OpaquePointer) { sessions.store(s) }

    enum HandshakeResult { case done, wantRead, wantWrite, failed(String) }

    func handshake() -> HandshakeResult {
        let rc = SSL_connect(ssl)
        if rc == 1 {
            handshakeDone = true
            if offeredSession && SSL_session_reused(ssl) == 0 { /* the server chose a full handshake */ }
            return .done
        }
        let err = SSL_get_error(ssl, rc)
        if err == veil_ssl_error_want_read() { return .wantRead }
        if err == veil_ssl_error_want_write() { return .wantWrite }
        let verify = SSL_get_verify_result(ssl)
        var message: String
        if verify != X509_V_OK {
            message = "certificate verify failed: \(String(cString: X509_verify_cert_error_string(verify)))"
            _ = Self.drainErrors()
        } else if err == veil_ssl_error_syscall() {
            let e = veil_errno()
            let detail = Self.drainErrors()
            message = !detail.isEmpty ? detail : e != 0 ? String(cString: strerror(e)) : "connection closed during the handshake"
        } else {
            message = Self.drainErrors()
            if message.isEmpty { message = "handshake failed (SSL error \(err))" }
        }
        if offeredSession { sessions.forget() }
        return .failed(message)
    }

    /// Keep the record buffers from now on (an HTTP/2 connection, shared by many streams).
    func keepBuffers() { veil_ssl_keep_buffers(ssl) }

    /// The session was resumed (an abbreviated handshake).
    var resumed: Bool { SSL_session_reused(ssl) == 1 }

    /// The protocol the server chose by ALPN (nil: none).
    var negotiatedProtocol: String? {
        var p: UnsafePointer<UInt8>?
        var len: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &p, &len)
        guard let p, len > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: p, count: Int(len)), as: UTF8.self)
    }

    func read(into buf: UnsafeMutableRawBufferPointer) -> UpstreamConnection.ReadResult {
        var n = 0
        if SSL_read_ex(ssl, buf.baseAddress, buf.count, &n) == 1 { return .data(n) }
        let err = SSL_get_error(ssl, 0)
        if err == veil_ssl_error_want_read() { return .wouldBlock(wantsWrite: false) }
        if err == veil_ssl_error_want_write() { return .wouldBlock(wantsWrite: true) }
        if err == veil_ssl_error_zero_return() { return .eof }       // close_notify
        return .failed(describeFailure(err), reset: true)
    }

    /// Writes `a` then `b`: both in one record when they fit the scratch (a request head and a
    /// small body: one `write(2)`), else `a` first. Returns what was taken (partial writes on).
    func write(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> UpstreamConnection.WriteResult {
        var n = 0
        let rc: Int32
        if a.count > 0 && b.count > 0 && a.count + b.count <= scratch.count {
            scratch.copyMemory(from: a)
            UnsafeMutableRawBufferPointer(rebasing: scratch[a.count...]).copyMemory(from: b)
            rc = SSL_write_ex(ssl, scratch.baseAddress, a.count + b.count, &n)
        } else if a.count > 0 {
            rc = SSL_write_ex(ssl, a.baseAddress, a.count, &n)
        } else if b.count > 0 {
            rc = SSL_write_ex(ssl, b.baseAddress, b.count, &n)
        } else {
            return .wrote(0)
        }
        if rc == 1 { return .wrote(n) }
        let err = SSL_get_error(ssl, rc)
        if err == veil_ssl_error_want_write() { return .wouldBlock(wantsRead: false) }
        if err == veil_ssl_error_want_read() { return .wouldBlock(wantsRead: true) }
        return .failed(describeFailure(err), reset: true)
    }

    /// Records already read from the socket and not yet returned by `read` (epoll won't say).
    var hasBufferedInput: Bool { SSL_has_pending(ssl) == 1 }

    /// Closes without waiting for the peer: close_notify is sent when the socket takes it.
    func shutdownQuietly() {
        if handshakeDone { _ = SSL_shutdown(ssl) }
        _ = Self.drainErrors()
    }

    private func describeFailure(_ err: Int32) -> String {
        if err == veil_ssl_error_syscall() {
            let e = veil_errno()
            let detail = Self.drainErrors()
            if !detail.isEmpty { return "TLS: \(detail)" }
            return e != 0 ? String(cString: strerror(e)) : "TLS: connection closed without close_notify"
        }
        let detail = Self.drainErrors()
        return "TLS: " + (detail.isEmpty ? "error \(err)" : detail)
    }

    /// Empties this thread's OpenSSL error queue and returns its last entry as text.
    static func drainErrors() -> String {
        var last: UInt = 0
        while true {
            let e = ERR_get_error()
            if e == 0 { break }
            last = e
        }
        guard last != 0 else { return "" }
        var buf = [UInt8](repeating: 0, count: 256)
        buf.withUnsafeMutableBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { ERR_error_string_n(last, $0, b.count) }
        }
        return String(decoding: buf.prefix { $0 != 0 }, as: UTF8.self)
    }
}
