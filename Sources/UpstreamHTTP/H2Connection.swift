import CNGHTTP2
import Glibc
import HTTPWire
import Reactor
import Upstream

/// Whether to speak HTTP/2 to `https://` upstreams (negotiated by ALPN).
public enum HTTP2Mode: String, Sendable {
    /// Offer `h2` and `http/1.1`; the upstream chooses.
    case auto
    /// Offer `http/1.1` only.
    case off
}

/// One HTTP/2 connection to an origin, carrying many transfers as streams: nghttp2's session
/// (sans-I/O: `nghttp2_session_mem_recv` / `mem_send`) over the connection's TLS.
///
/// Flow control is manual (`no_auto_window_update`): a stream's received bytes are handed back
/// to nghttp2 (`nghttp2_session_consume`, which sends WINDOW_UPDATE) only once its delegate has
/// taken them. A paused transfer keeps what arrives (at most its stream window,
/// `http2StreamWindowBytes`) and consumes nothing, so the upstream stops sending on that stream
/// alone; the connection window (`http2ConnectionWindowBytes`) is large enough that other
/// streams go on.
///
/// Failures map onto the HTTP/1.1 ones: a stream refused (RST_STREAM REFUSED_STREAM, or above a
/// GOAWAY's last stream id) was not processed and is sent again on another connection, whatever
/// its method; any other reset is `.connect` before the head and `.broken` after it; a dead
/// connection fails its streams like a dead HTTP/1.1 connection (`RetryPolicy`).
///
/// Delegates are called from inside nghttp2's callbacks (inside `mem_recv`); what they may do
/// there (cancel, pause, start another transfer) only submits frames, and the bytes go out once
/// `mem_recv` has returned (`mem_send` is never called from a callback).
final class H2Connection {
    let conn: UpstreamConnection
    unowned(unsafe) let client: HTTPUpstreamClient
    let origin: OriginPool
    private var session: OpaquePointer?
    private(set) var streams: [Int32: HTTPUpstreamTransfer] = [:]
    /// GOAWAY received (or the connection is failing): no new streams.
    private(set) var draining = false
    private var pendingOut: [UInt8] = []
    private var inRecv = false
    private var flushWanted = false
    private(set) var closed = false
    /// When the last stream ended (idle timeout).
    var idleSince: UInt64 = 0
    /// Streams submitted over this connection's life (tests).
    private(set) var streamsOpened = 0

    init?(conn: UpstreamConnection, client: HTTPUpstreamClient, origin: OriginPool) {
        self.conn = conn
        self.client = client
        self.origin = origin
        var option: OpaquePointer?
        guard nghttp2_option_new(&option) == 0 else { return nil }
        defer { nghttp2_option_del(option) }
        nghttp2_option_set_no_auto_window_update(option, 1)
        var s: OpaquePointer?
        let me = Unmanaged.passUnretained(self).toOpaque()
        guard nghttp2_session_client_new2(&s, H2Connection.callbacks, me, option) == 0, let s else { return nil }
        session = s
        let window = UInt32(clamping: max(65_535, client.settings.http2StreamWindowBytes))
        var iv = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: window),
        ]
        _ = nghttp2_submit_settings(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), &iv, iv.count)
        _ = nghttp2_session_set_local_window_size(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0,
                                                  Int32(clamping: max(65_535, client.settings.http2ConnectionWindowBytes)))
        idleSince = client.loop.now
    }

    deinit {
        if let s = session { nghttp2_session_del(s) }
    }

    /// Streams the upstream allows at once (its SETTINGS; unlimited until they come, capped here:
    /// streams past the real limit wait inside nghttp2 for a free slot).
    var maxConcurrentStreams: Int {
        guard let s = session else { return 0 }
        let v = Int(nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS))
        return min(v, 100_000)
    }

    var hasCapacity: Bool { !closed && !draining && streams.count < maxConcurrentStreams }

    // MARK: streams

    /// Opens a stream for `t` (HEADERS, then its body as DATA). nil when the session refuses.
    func submit(_ t: HTTPUpstreamTransfer, headers: inout H2HeaderBlock) -> Int32? {
        guard let s = session, !closed, !draining else { return nil }
        let me = Unmanaged.passUnretained(t).toOpaque()
        let id: Int32 = headers.withNV { nva, count in
            if t.request.body.isEmpty {
                return nghttp2_submit_request(s, nil, nva, count, nil, me)
            }
            var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: me), read_callback: { _, _, buf, length, flags, source, _ in
                guard let source, let p = source.pointee.ptr, let buf, let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
                return Unmanaged<HTTPUpstreamTransfer>.fromOpaque(p).takeUnretainedValue().h2ReadBody(buf, length, flags)
            })
            return nghttp2_submit_request(s, nil, nva, count, &provider, me)
        }
        guard id > 0 else { return nil }
        streams[id] = t
        streamsOpened += 1
        flush()
        return id
    }

    /// Cancels a stream (RST_STREAM CANCEL); its transfer is already finished.
    func reset(_ id: Int32) {
        guard let s = session, streams.removeValue(forKey: id) != nil else { return }
        nghttp2_session_set_stream_user_data(s, id, nil)
        _ = nghttp2_submit_rst_stream(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, NGHTTP2_CANCEL.rawValue)
        streamEnded()
        flush()
    }

    /// `n` bytes of stream `id` were taken by its delegate: the windows open again.
    func consume(_ id: Int32, _ n: Int) {
        guard let s = session, n > 0 else { return }
        _ = nghttp2_session_consume(s, id, n)
        flush()
    }

    private func streamEnded() {
        if streams.isEmpty {
            idleSince = client.loop.now
            if draining && !inRecv { close(nil) }     // inside mem_recv: closed when it returns
        }
    }

    // MARK: I/O

    func ioReady(_ events: IOEvents) {
        if closed { return }
        if events.contains(.writable) || conn.readWantsWrite {
            conn.readWantsWrite = false
            flush()
            if closed { return }
        }
        if events.contains(.readable) || events.rawValue & IOEvents.hangup.rawValue != 0 {
            readAvailable()
        }
    }

    /// Reads and feeds nghttp2 until the socket (and TLS) is drained.
    func readAvailable() {
        let buffer = client.readBuffer
        var rounds = 0
        reading: while !closed && rounds < 64 {
            rounds += 1
            switch conn.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<min(buffer.count, 64 * 1024)])) {
            case .data(let n):
                guard let s = session else { return }
                let drained = n < min(buffer.count, 64 * 1024) && !conn.hasBufferedInput
                inRecv = true
                let rc = buffer.baseAddress!.withMemoryRebound(to: UInt8.self, capacity: n) { nghttp2_session_mem_recv(s, $0, n) }
                inRecv = false
                if rc < 0 {
                    return close("HTTP/2: \(String(cString: nghttp2_strerror(Int32(rc))))")
                }
                if flushWanted || nghttp2_session_want_write(s) != 0 { flush() }
                if draining && streams.isEmpty { return close(nil) }
                if drained { break reading }
            case .wouldBlock(let wantsWrite):
                if wantsWrite { conn.readWantsWrite = true }
                updateInterest()
                return
            case .eof:
                return close("upstream closed the HTTP/2 connection")
            case .failed(let why, _):
                return close(why)
            }
        }
        if !closed && conn.hasBufferedInput { client.enqueueH2Read(self) }
        if !closed, let s = session, nghttp2_session_want_read(s) == 0 && nghttp2_session_want_write(s) == 0 {
            close(nil)
        }
    }

    /// Sends what nghttp2 has queued; what the socket does not take waits in `pendingOut`.
    func flush() {
        if inRecv { flushWanted = true; return }
        flushWanted = false
        guard let s = session, !closed else { return }
        while true {
            if !pendingOut.isEmpty {
                let r = pendingOut.withUnsafeBytes { conn.write($0, UnsafeRawBufferPointer(start: nil, count: 0)) }
                switch r {
                case .wrote(let n):
                    pendingOut.removeFirst(n)
                    if !pendingOut.isEmpty { continue }
                case .wouldBlock:
                    updateInterest()
                    return
                case .failed(let why, _):
                    return close(why)
                }
            }
            var data: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(s, &data)
            if n < 0 { return close("HTTP/2: \(String(cString: nghttp2_strerror(Int32(n))))") }
            if n == 0 { break }
            let chunk = UnsafeRawBufferPointer(start: data, count: n)
            switch conn.write(chunk, UnsafeRawBufferPointer(start: nil, count: 0)) {
            case .wrote(let w):
                if w < n { pendingOut.append(contentsOf: chunk[w...]) }
            case .wouldBlock:
                pendingOut.append(contentsOf: chunk)
            case .failed(let why, _):
                return close(why)
            }
        }
        updateInterest()
    }

    private func updateInterest() {
        guard !closed else { return }
        var ev: IOEvents = [.readable]
        if !pendingOut.isEmpty || conn.readWantsWrite { ev.insert(.writable) }
        conn.setInterest(ev)
    }

    /// Closes the connection; every stream still open fails with `why` (nil: nothing was open).
    func close(_ why: String?) {
        guard !closed else { return }
        closed = true
        draining = true
        if let s = session {
            // Best effort: tell the upstream (GOAWAY NO_ERROR) if the socket takes it now.
            if why == nil {
                _ = nghttp2_session_terminate_session(s, NGHTTP2_NO_ERROR.rawValue)
                var data: UnsafePointer<UInt8>?
                let n = nghttp2_session_mem_send(s, &data)
                if n > 0 { _ = conn.write(UnsafeRawBufferPointer(start: data, count: n), UnsafeRawBufferPointer(start: nil, count: 0)) }
            }
        }
        let open = streams
        streams.removeAll()
        client.h2Closed(self)
        conn.h2 = nil
        conn.closeNow()
        for (_, t) in open.sorted(by: { $0.key < $1.key }) {
            t.h2ConnectionFailed(why ?? "HTTP/2 connection closed")
        }
    }

    // MARK: nghttp2 callbacks

    fileprivate func transfer(_ id: Int32) -> HTTPUpstreamTransfer? { streams[id] }

    fileprivate func streamClosed(_ id: Int32, _ code: UInt32) {
        guard let t = streams.removeValue(forKey: id) else { return }
        t.h2StreamClosed(code)
        streamEnded()
    }

    /// GOAWAY: no new streams here (`pickH2` skips it); it closes once its streams are done.
    fileprivate func goawayReceived() {
        draining = true                 // closed once `mem_recv` returns if no stream is left
    }

    /// Callbacks, made once per process.
    nonisolated(unsafe) static let callbacks: OpaquePointer = {
        var cb: OpaquePointer?
        precondition(nghttp2_session_callbacks_new(&cb) == 0, "nghttp2_session_callbacks_new failed")
        nghttp2_session_callbacks_set_on_begin_headers_callback(cb) { _, frame, ud in
            guard let frame, let ud else { return 0 }
            let h2 = Unmanaged<H2Connection>.fromOpaque(ud).takeUnretainedValue()
            h2.transfer(frame.pointee.hd.stream_id)?.h2BeginHeaders()
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(cb) { _, frame, name, namelen, value, valuelen, _, ud in
            guard let frame, let ud, let name, let value else { return 0 }
            let h2 = Unmanaged<H2Connection>.fromOpaque(ud).takeUnretainedValue()
            h2.transfer(frame.pointee.hd.stream_id)?.h2Header(UnsafeRawBufferPointer(start: name, count: namelen),
                                                              UnsafeRawBufferPointer(start: value, count: valuelen))
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb) { _, frame, ud in
            guard let frame, let ud else { return 0 }
            let h2 = Unmanaged<H2Connection>.fromOpaque(ud).takeUnretainedValue()
            let hd = frame.pointee.hd
            let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
            switch UInt32(hd.type) {
            case NGHTTP2_HEADERS.rawValue:
                h2.transfer(hd.stream_id)?.h2HeadersComplete(endStream: endStream)
            case NGHTTP2_DATA.rawValue:
                if endStream { h2.transfer(hd.stream_id)?.h2EndStream() }
            case NGHTTP2_GOAWAY.rawValue:
                h2.goawayReceived()
            default:
                break
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb) { _, _, id, data, len, ud in
            guard let ud, let data else { return 0 }
            let h2 = Unmanaged<H2Connection>.fromOpaque(ud).takeUnretainedValue()
            if let t = h2.transfer(id) {
                t.h2Data(UnsafeRawBufferPointer(start: data, count: len))
            } else if let s = h2.session {
                // A stream we no longer want (cancelled): its bytes still count against the
                // connection window.
                _ = nghttp2_session_consume_connection(s, len)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_not_send_callback(cb) { _, frame, _, ud in
            // A request's HEADERS that could not go out (a GOAWAY came first): never processed.
            guard let frame, let ud, UInt32(frame.pointee.hd.type) == NGHTTP2_HEADERS.rawValue else { return 0 }
            Unmanaged<H2Connection>.fromOpaque(ud).takeUnretainedValue().streamClosed(frame.pointee.hd.stream_id, NGHTTP2_REFUSED_STREAM.rawValue)
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(cb) { _, id, code, ud in
            guard let ud else { return 0 }
            Unmanaged<H2Connection>.fromOpaque(ud).takeUnretainedValue().streamClosed(id, code)
            return 0
        }
        return cb!
    }()
}

/// A request's HTTP/2 header list (`:method`, `:scheme`, `:authority`, `:path`, then its own
/// fields, lowercased, without the connection-specific ones RFC 9113 §8.2.2 forbids), built in
/// one byte buffer that the `nghttp2_nv` entries point into. One per client, reused: building
/// a list allocates nothing once the buffers have grown.
struct H2HeaderBlock {
    private var bytes: [UInt8] = []
    private var spans: [(name: Range<Int>, value: Range<Int>)] = []

    mutating func build(method: String, scheme: StaticString, authority: String, url: String, target: Range<Int>,
                        headers: HTTPHeaders, shared: HTTPHeaders?, bodyCount: Int) {
        bytes.removeAll(keepingCapacity: true)
        spans.removeAll(keepingCapacity: true)
        var m = method
        pseudo(":method") { b in m.withUTF8 { for c in $0 { b.append(c >= 0x61 && c <= 0x7A ? c - 0x20 : c) } } }
        pseudo(":scheme") { $0.append(contentsOf: UnsafeBufferPointer(start: scheme.utf8Start, count: scheme.utf8CodeUnitCount)) }
        var callerHost: String?
        for h in headers where asciiCaseInsensitiveEquals(h.name, "host") { callerHost = h.value }
        var a = callerHost ?? authority
        pseudo(":authority") { b in a.withUTF8 { b.append(contentsOf: $0) } }
        var u = url
        pseudo(":path") { b in
            u.withUTF8 { ub in
                if target.isEmpty || ub[target.lowerBound] != 0x2F { b.append(0x2F) }
                for i in target {
                    let c = ub[i]
                    if c >= 0x80 {       // as RequestHeadWriter: bytes above ASCII percent-encoded
                        b.append(0x25); b.append(Self.hex(c >> 4)); b.append(Self.hex(c & 15))
                    } else {
                        b.append(c)
                    }
                }
            }
        }
        for f in headers { field(f.name, f.value) }
        if let shared { for f in shared { field(f.name, f.value) } }
        if bodyCount > 0 {
            pseudo("content-length") { RequestHeadWriter.appendDecimal(bodyCount, into: &$0) }
        }
    }

    @inline(__always) private static func hex(_ v: UInt8) -> UInt8 { v < 10 ? 0x30 + v : 0x41 + v - 10 }

    /// A name given as a literal and a value written by `value`.
    private mutating func pseudo(_ name: StaticString, _ value: (inout [UInt8]) -> Void) {
        let ns = bytes.count
        bytes.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        let vs = bytes.count
        value(&bytes)
        spans.append((ns..<vs, vs..<bytes.count))
    }

    /// A caller's field, sanitised and filtered as for HTTP/1.1 (`RequestHeadWriter.appendField`
    /// writes `Name: value\r\n` here), then its name lowercased in place; `host` is dropped
    /// (it became `:authority`).
    private mutating func field(_ name: String, _ value: String) {
        let start = bytes.count
        RequestHeadWriter.appendField(name, value, into: &bytes)
        guard bytes.count > start else { return }                   // dropped
        var colon = start
        while bytes[colon] != 0x3A { bytes[colon] = asciiLower(bytes[colon]); colon += 1 }
        if colon - start == 4 && bytes[start] == 0x68 && bytes[start + 1] == 0x6F && bytes[start + 2] == 0x73 && bytes[start + 3] == 0x74 {
            bytes.removeSubrange(start...)
            return
        }
        bytes.removeLast(2)                                          // CRLF
        spans.append((start..<colon, (colon + 2)..<bytes.count))
    }

    /// The list as `nghttp2_nv`, valid during `body`.
    mutating func withNV<R>(_ body: (UnsafePointer<nghttp2_nv>, Int) -> R) -> R {
        bytes.withUnsafeMutableBufferPointer { b in
            withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: max(1, spans.count)) { nv in
                let base = b.baseAddress ?? UnsafeMutablePointer<UInt8>(bitPattern: 1)!
                for (i, s) in spans.enumerated() {
                    nv[i] = nghttp2_nv(name: base + s.name.lowerBound, value: base + s.value.lowerBound,
                                       namelen: s.name.count, valuelen: s.value.count, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
                }
                return body(UnsafePointer(nv.baseAddress!), spans.count)
            }
        }
    }
}
