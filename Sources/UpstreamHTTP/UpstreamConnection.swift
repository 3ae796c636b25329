import CSystem
import Glibc
import HTTPWire
import Reactor

/// One upstream socket (plain TCP, or TLS over it) registered with the client's loop: the bytes
/// layer under a transfer. It owns the descriptor, the response parser, the request head's buffer
/// and the few response bytes a read left unparsed; it knows nothing of the exchange's rules (the
/// transfer, `HTTPUpstreamTransfer`, drives it) nor of pooling (the client does).
///
/// Registration: level-triggered, readable from the moment it connects until it closes, idle
/// or busy (a kept-alive connection's next request costs no `epoll_ctl`); writable only while a
/// write is pending. Unregistered only while its transfer is paused (a level-triggered hang-up
/// would otherwise spin).
final class UpstreamConnection: IOHandler {
    enum State {
        /// TCP connect in progress.
        case connecting
        /// TLS handshake in progress.
        case handshaking
        /// In the pool, waiting for a request.
        case idle
        /// Carrying a transfer's exchange.
        case active
        /// HTTP/2: carrying many transfers' streams (`h2`).
        case multiplexed
        case closed
    }

    let fd: Int32
    unowned(unsafe) let client: HTTPUpstreamClient
    let origin: OriginPool
    let peer: String
    var state: State = .connecting
    /// The transfer using this connection (connecting, handshaking, active).
    var owner: HTTPUpstreamTransfer?
    /// May go back to the pool after a clean exchange (false for connections opened under
    /// `refusePrivateAddresses`: an address checked for one request is never lent to another).
    let poolable: Bool
    /// Exchanges completed on this connection (> 0: the next one is on a reused connection).
    var exchanges = 0
    var idleSince: UInt64 = 0
    private(set) var interest: IOEvents = []
    private var registered = false

    var parser: HTTPResponseParser
    private static let placeholder = HTTPResponseParser()

    /// The parser, moved out (a placeholder is left) so that the caller's copy is unique: its
    /// field list is then mutated in place, not copied.
    func takeParser() -> HTTPResponseParser {
        defer { parser = Self.placeholder }
        return parser
    }
    /// The request head being written (kept, with its capacity, for the next request).
    var head: [UInt8] = []
    /// Response bytes the parser has not consumed yet (a partial head or chunk line, or bytes
    /// held back while the transfer is paused).
    var carry: [UInt8] = []
    /// TLS over the socket (nil: plain TCP).
    var tls: TLSStream?
    /// The HTTP/2 session over this connection (state `.multiplexed`).
    var h2: H2Connection?
    /// TLS asked to write before it can read again (a renegotiation or key update).
    var readWantsWrite = false

    init(fd: Int32, client: HTTPUpstreamClient, origin: OriginPool, peer: String, poolable: Bool) {
        self.fd = fd
        self.client = client
        self.origin = origin
        self.peer = peer
        self.poolable = poolable
        parser = HTTPResponseParser(limits: client.settings.responseLimits)
    }

    deinit {
        // Every path closes explicitly; this only guards the descriptor.
        if state != .closed { Glibc.close(fd) }
    }

    var isReused: Bool { exchanges > 0 }

    // MARK: registration

    func setInterest(_ events: IOEvents) {
        guard state != .closed else { return }
        if registered && events == interest { return }
        interest = events
        if events.isEmpty {
            if registered { client.loop.unwatch(fd); registered = false }
        } else {
            client.loop.watch(fd, events, self)
            registered = true
        }
    }

    func ioReady(_ events: IOEvents) {
        switch state {
        case .connecting, .handshaking, .active:
            owner?.connectionReady(self, events)
        case .idle:
            client.idleConnectionWoke(self)
        case .multiplexed:
            h2?.ioReady(events)
        case .closed:
            break
        }
    }

    // MARK: bytes

    enum ReadResult {
        case data(Int)
        /// Nothing now; `wantsWrite`: TLS must write before it can read again.
        case wouldBlock(wantsWrite: Bool)
        case eof
        case failed(String, reset: Bool)
    }

    enum WriteResult {
        case wrote(Int)
        case wouldBlock(wantsRead: Bool)
        case failed(String, reset: Bool)
    }

    func read(into buf: UnsafeMutableRawBufferPointer) -> ReadResult {
        if let tls { return tls.read(into: buf) }
        while true {
            let n = Glibc.read(fd, buf.baseAddress, buf.count)
            if n > 0 { return .data(n) }
            if n == 0 { return .eof }
            let e = veil_errno()
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock(wantsWrite: false) }
            return .failed(String(cString: strerror(e)), reset: e == ECONNRESET || e == EPIPE)
        }
    }

    /// Writes `a` then `b` with one `sendmsg` (plain) or as TLS records (TLS).
    func write(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> WriteResult {
        if let tls { return tls.write(a, b) }
        return withUnsafeTemporaryAllocation(of: iovec.self, capacity: 2) { iov -> WriteResult in
            var count = 0
            if a.count > 0 { iov[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: a.baseAddress), iov_len: a.count); count += 1 }
            if b.count > 0 { iov[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count); count += 1 }
            if count == 0 { return .wrote(0) }
            var msg = msghdr()
            msg.msg_iov = iov.baseAddress
            msg.msg_iovlen = count
            while true {
                // sendmsg, not writev: MSG_NOSIGNAL (a reset peer is an error, never SIGPIPE).
                let n = sendmsg(fd, &msg, Int32(MSG_NOSIGNAL))
                if n >= 0 { return .wrote(n) }
                let e = veil_errno()
                if e == EINTR { continue }
                if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock(wantsRead: false) }
                return .failed(String(cString: strerror(e)), reset: e == ECONNRESET || e == EPIPE)
            }
        }
    }

    /// Unparsed bytes still buffered above the socket (TLS records already read and decrypted).
    var hasBufferedInput: Bool { tls?.hasBufferedInput ?? false }

    /// An idle connection became readable. True when it may stay in the pool (a spurious
    /// wake-up); false when the upstream closed it or sent bytes no request asked for.
    func idleReadKeepsConnection() -> Bool {
        if let tls {
            // A TLS record that carries no data (a session ticket) is fine; data or a close is not.
            var byte: UInt8 = 0
            return withUnsafeMutableBytes(of: &byte) { b in
                if case .wouldBlock = tls.read(into: b) { return !tls.hasBufferedInput }
                return false
            }
        }
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT))
        if n < 0 {
            let e = veil_errno()
            return e == EAGAIN || e == EWOULDBLOCK || e == EINTR
        }
        return false
    }

    // MARK: closing

    /// Closes at once (TLS: without waiting for the peer's close_notify).
    func closeNow() {
        guard state != .closed else { return }
        state = .closed
        owner = nil
        if registered { client.loop.forgetClosing(fd); registered = false }
        tls?.shutdownQuietly()
        tls = nil
        Glibc.close(fd)
        client.connectionClosed(self)
    }
}
