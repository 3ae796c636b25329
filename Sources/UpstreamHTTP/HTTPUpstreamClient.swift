import CSystem
import Glibc
import HTTPWire
import Reactor
import Upstream

/// Knobs of one `HTTPUpstreamClient` (one per event loop). Every limit has its default here.
public struct HTTPUpstreamSettings: Sendable {
    /// Idle (kept-alive) connections kept per loop, all origins together; a connection finishing
    /// its exchange beyond that is closed (nginx's `keepalive N`).
    public var maxIdleConnections: Int = 256
    /// An idle connection is closed after this long unused (nginx's `keepalive_timeout`). Keep
    /// it below the upstream's own idle timeout, so that it is Veil that closes idle connections:
    /// a POST is never retried on a connection the upstream closed under it (`RetryPolicy`).
    public var idleTimeoutMillis: Int = 30_000
    /// Bytes asked of the kernel per read when the request does not say
    /// (`UpstreamRequest.receiveBufferBytes`). Reads go into one buffer per loop, not per
    /// transfer, so this costs no memory per stream.
    public var receiveBufferBytes: Int = 16 * 1024
    /// TCP keep-alive probes on upstream connections (seconds idle before the first probe).
    public var tcpKeepAliveIdleSeconds: Int = 60
    /// How long a DNS answer is used (getaddrinfo does not report TTLs).
    public var dnsCacheMillis: Int = 30_000
    /// How often deadlines (connect, total, stall) and idle connections are checked: the
    /// precision of every timeout. One timer per loop instead of one per transfer.
    public var deadlineCheckMillis: Int = 50
    /// Origins (scheme, host, port) whose pool and DNS answer are kept; beyond it, origins with
    /// nothing idle or pending are forgotten (image fetches reach arbitrary hosts).
    public var maxOrigins: Int = 64
    /// Reads per readiness event before other connections get their turn.
    public var maxReadsPerEvent: Int = 4
    /// TLS for `https://` origins: verification (on by default), extra CA file, buffers. Its
    /// ALPN list is set from `http2`.
    public var tls = TLSConfiguration()
    /// HTTP/2 to `https://` origins when the upstream chooses it by ALPN (`upstream.http2`).
    public var http2: HTTP2Mode = .auto
    /// HTTP/2 connections per origin: a new one is opened when every one is at the upstream's
    /// stream limit, up to this many; past it, streams wait inside nghttp2 for a free slot.
    public var maxHTTP2ConnectionsPerOrigin: Int = 4
    /// Receive window of each HTTP/2 stream: what a paused transfer may hold at most.
    public var http2StreamWindowBytes: Int = 256 * 1024
    /// Receive window of each HTTP/2 connection (all its streams together).
    public var http2ConnectionWindowBytes: Int = 16 * 1024 * 1024
    /// Limits applied to every upstream response head and chunked body.
    public var responseLimits = HTTPResponseLimits()
    public init() {}
}

/// Veil's own upstream client: HTTP/1.1 on the event loop, one per loop. Implements
/// `UpstreamClientProtocol` (see `UpstreamAPI.swift` for the order of events it guarantees).
///
/// Structure, after nginx's upstream module: a transfer (`HTTPUpstreamTransfer`, per request)
/// drives one exchange over a connection (`UpstreamConnection`, per socket) that it takes from
/// its origin's pool (`OriginPool`: idle connections, DNS answer, lookups in flight) or opens.
/// DNS runs on resolver threads (`Resolver`); deadlines are checked by one timer per loop.
///
/// Loop-thread only: create it, use it and drop it on its loop's thread (`@unchecked Sendable`
/// only so it can be created inside `loop.execute { }`).
public final class HTTPUpstreamClient: UpstreamClientProtocol, TimerTarget, @unchecked Sendable {
    public let loop: EventLoop
    public let settings: HTTPUpstreamSettings

    /// Running transfers (each knows its index: O(1) removal).
    private var active: [HTTPUpstreamTransfer] = []
    public var activeTransfers: Int { active.count }

    private var origins: [String: OriginPool] = [:]
    /// The last origins looked up by URL prefix (no parsing, no hashing on the hot path).
    private var recentOrigins: [(prefix: [UInt8], pool: OriginPool)] = []
    private var idleCount = 0

    /// Transfers with work for the next loop iteration (a resume, a finish deferred out of `start`).
    private var tickQueue: [HTTPUpstreamTransfer] = []
    /// HTTP/2 connections with input left inside TLS after their read budget.
    private var h2ReadQueue: [H2Connection] = []
    /// Where HTTP/2 request header lists are built (reused).
    var h2Headers = H2HeaderBlock()
    private var tickTimer: LoopTimer?
    private var sweepTimer: LoopTimer?
    private var sweepDue: UInt64 = 0

    /// Where host names are looked up (tests substitute their own).
    var resolver: Resolver = .shared

    /// Reads land here (one buffer per loop; see `receiveBufferBytes`).
    var readBuffer: UnsafeMutableRawBufferPointer
    /// Wire forms of shared header blocks, serialised once per block (held: identity is the key).
    private var sharedBlocks: [(block: UpstreamHeaderBlock, bytes: [UInt8])] = []

    /// The TLS context (shared by every loop with the same settings), made on first https use.
    private var tlsContextResult: Result<TLSContext, TLSContext.TLSSetupError>?
    func tlsContext() -> Result<TLSContext, TLSContext.TLSSetupError> {
        if let r = tlsContextResult { return r }
        let r = TLSContext.shared(settings.tls)
        tlsContextResult = r
        return r
    }
    /// Where a TLS request head and a small body are joined into one record.
    let tlsScratch: UnsafeMutableRawBufferPointer

    /// Checks what can fail in the TLS settings (the CA file), for start-up: a bad file is then
    /// an error at start rather than a failed request later.
    public static func validate(_ settings: HTTPUpstreamSettings) -> String? {
        var tls = settings.tls
        tls.alpn = settings.http2 == .auto ? ["h2", "http/1.1"] : ["http/1.1"]
        if case .failure(let e) = TLSContext.shared(tls) { return e.message }
        return nil
    }

    // Counters (tests, metrics).
    public private(set) var tlsHandshakes = 0
    public private(set) var tlsResumptions = 0
    public private(set) var connectionsOpened = 0
    public private(set) var retries = 0
    public private(set) var openConnections = 0
    public var idleConnections: Int { idleCount }

    public init(loop: EventLoop, settings: HTTPUpstreamSettings = HTTPUpstreamSettings()) {
        self.loop = loop
        var settings = settings
        settings.tls.alpn = settings.http2 == .auto ? ["h2", "http/1.1"] : ["http/1.1"]
        self.settings = settings
        signal(SIGPIPE, SIG_IGN)   // TLS writes go through write(2); Veil ignores SIGPIPE anyway
        readBuffer = .allocate(byteCount: 512 * 1024 + 64 * 1024, alignment: 16)
        tlsScratch = .allocate(byteCount: 16 * 1024, alignment: 16)
    }

    deinit {
        tickTimer?.cancel()
        sweepTimer?.cancel()
        for t in active { t.clientGoing() }
        for t in tickQueue { t.clientGoing() }
        active.removeAll()
        for p in origins.values {
            for c in p.idle { c.closeNow() }
            for h in p.h2 { h.close(nil) }
        }
        readBuffer.deallocate()
        tlsScratch.deallocate()
    }

    // MARK: starting

    public func start(_ request: UpstreamRequest, delegate: UpstreamDelegate) -> UpstreamTransfer {
        let t = HTTPUpstreamTransfer(client: self, request: request, delegate: delegate)
        t.begin()
        return t
    }

    func register(_ t: HTTPUpstreamTransfer) {
        t.activeIndex = active.count
        active.append(t)
        armSweep()
    }

    func unregister(_ t: HTTPUpstreamTransfer) {
        let i = t.activeIndex
        guard i >= 0, i < active.count, active[i] === t else { return }
        let last = active.removeLast()
        if i < active.count {
            active[i] = last
            last.activeIndex = i
        }
        t.activeIndex = -1
    }

    /// The pool of `url`'s origin and the range of its bytes that is the request target, or nil
    /// for a URL that can't be sent. The last few origins are found by their URL prefix alone
    /// (no parsing, no hashing, no String made per request).
    func origin(for url: String) -> (pool: OriginPool, target: Range<Int>)? {
        var u = url
        return u.withUTF8 { b -> (pool: OriginPool, target: Range<Int>)? in
            guard let originEnd = UpstreamURL.originLength(b) else { return nil }
            let prefix = UnsafeBufferPointer(rebasing: b[0..<originEnd])
            for i in recentOrigins.indices where recentOrigins[i].prefix.count == originEnd {
                if recentOrigins[i].prefix.withUnsafeBufferPointer({ memcmp($0.baseAddress!, prefix.baseAddress!, originEnd) == 0 }) {
                    guard let end = UpstreamURL.targetEnd(b, from: originEnd) else { return nil }
                    let pool = recentOrigins[i].pool
                    if i > 0 { recentOrigins.swapAt(i, i - 1) }
                    return (pool, originEnd..<end)
                }
            }
            guard let parts = UpstreamURL.parse(bytes: b) else { return nil }
            let key = parts.originKey
            let pool: OriginPool
            if let p = origins[key] {
                pool = p
            } else {
                if origins.count >= settings.maxOrigins { forgetUnusedOrigins() }
                pool = OriginPool(key: key, url: parts)
                origins[key] = pool
            }
            if recentOrigins.count >= 8 { recentOrigins.removeLast() }
            recentOrigins.insert((Array(prefix), pool), at: 0)
            return (pool, parts.originLength..<parts.targetEnd)
        }
    }

    private func forgetUnusedOrigins() {
        for (k, p) in origins where p.idle.isEmpty && p.waiters.isEmpty && !p.resolving && p.h2.isEmpty && p.h2Waiters.isEmpty {
            origins[k] = nil
            p.registered = false
        }
        recentOrigins.removeAll { origins[$0.pool.key] !== $0.pool }
    }

    func sharedBytes(_ block: UpstreamHeaderBlock) -> [UInt8] {
        for e in sharedBlocks where e.block === block { return e.bytes }
        let bytes = RequestHeadWriter.sharedBlockBytes(block.fields)
        if sharedBlocks.count >= 8 { sharedBlocks.removeFirst() }
        sharedBlocks.append((block, bytes))
        return bytes
    }

    // MARK: pool

    /// An idle connection of `pool`, most recently used first (nginx's order: the warmest socket).
    func takeIdle(_ pool: OriginPool) -> UpstreamConnection? {
        guard let c = pool.idle.popLast() else { return nil }
        idleCount -= 1
        c.state = .active
        return c
    }

    /// A connection whose exchange ended cleanly: kept for the next request, or closed when the
    /// pool is full.
    func release(_ c: UpstreamConnection) {
        guard c.state == .active, c.poolable, settings.maxIdleConnections > 0 else { c.closeNow(); return }
        if !c.origin.registered {
            // Its origin was forgotten while this exchange ran: register it again, or close.
            guard origins[c.origin.key] == nil else { c.closeNow(); return }
            origins[c.origin.key] = c.origin
            c.origin.registered = true
        }
        if idleCount >= settings.maxIdleConnections {
            // Full: the oldest idle connection makes room (the one most likely stale).
            if let oldest = oldestIdle() { closeIdle(oldest) } else { c.closeNow(); return }
        }
        c.owner = nil
        c.state = .idle
        c.idleSince = loop.now
        c.setInterest([.readable])
        c.origin.idle.append(c)
        idleCount += 1
        armSweep()
    }

    private func closeIdle(_ c: UpstreamConnection) {
        if let i = c.origin.idle.firstIndex(where: { $0 === c }) {
            c.origin.idle.remove(at: i)
            idleCount -= 1
        }
        c.closeNow()
    }

    /// The connection idle the longest (each origin's list is oldest first). O(origins); only
    /// for eviction and the idle sweep.
    private func oldestIdle() -> UpstreamConnection? {
        var best: UpstreamConnection?
        for p in origins.values {
            if let c = p.idle.first, best == nil || c.idleSince < best!.idleSince { best = c }
        }
        return best
    }

    /// An idle connection became readable: the upstream closed it (or sent bytes nobody asked
    /// for, or a TLS record that is no data). Closed, unless TLS consumed a record that carried
    /// no data (a session ticket).
    func idleConnectionWoke(_ c: UpstreamConnection) {
        if c.idleReadKeepsConnection() { return }
        closeIdle(c)
    }

    /// A DNS answer for `key`'s origin: cached, and every transfer waiting for it continues.
    func resolved(_ key: String, _ answer: Resolver.Answer) {
        guard let pool = origins[key] else { return }
        pool.resolving = false
        if case .success(let list) = answer {
            pool.addresses = list
            pool.addressesExpire = loop.now + UInt64(max(0, settings.dnsCacheMillis))
        }
        let waiters = pool.waiters
        pool.waiters = []
        for w in waiters { w.addressesResolved(answer) }
    }

    func connectionOpened() { connectionsOpened += 1; openConnections += 1 }
    func connectionClosed(_ c: UpstreamConnection) {
        openConnections -= 1
        if c.origin.h2Probe === c || (c.origin.h2Probe == nil && !c.origin.h2Waiters.isEmpty) {
            c.origin.h2Probe = nil
            releaseH2Waiters(c.origin)
        }
    }

    /// HTTP/2 connections open now (tests).
    public var http2Connections: Int { origins.values.reduce(0) { $0 + $1.h2.count } }
    func noteRetry() { retries += 1 }
    func noteHandshake(resumed: Bool) {
        tlsHandshakes += 1
        if resumed { tlsResumptions += 1 }
    }

    // MARK: next-iteration work

    func enqueueTick(_ t: HTTPUpstreamTransfer) {
        tickQueue.append(t)
        if tickTimer == nil { tickTimer = loop.schedule(afterMillis: 0, target: self) }
    }

    func enqueueH2Read(_ h: H2Connection) {
        h2ReadQueue.append(h)
        if tickTimer == nil { tickTimer = loop.schedule(afterMillis: 0, target: self) }
    }

    // MARK: HTTP/2

    /// The HTTP/2 connection of `pool` to put a new stream on: the least busy one with room;
    /// nil when a new connection should be opened (none yet, or all full and fewer than the cap).
    func pickH2(_ pool: OriginPool) -> H2Connection? {
        var best: H2Connection?
        var open = 0
        for h in pool.h2 where !h.closed && !h.draining {
            open += 1
            if h.hasCapacity && (best == nil || h.streams.count < best!.streams.count) { best = h }
        }
        if let best { return best }
        if open >= max(1, settings.maxHTTP2ConnectionsPerOrigin) {
            // At the cap: the least busy one queues the stream until a slot frees.
            return pool.h2.filter { !$0.closed && !$0.draining }.min { $0.streams.count < $1.streams.count }
        }
        return nil
    }

    func addH2(_ h: H2Connection) {
        h.origin.h2.append(h)
        armSweep()
    }

    func h2Closed(_ h: H2Connection) {
        if let i = h.origin.h2.firstIndex(where: { $0 === h }) { h.origin.h2.remove(at: i) }
    }

    /// Transfers that waited for a connection being set up (to learn whether it speaks HTTP/2)
    /// look again: on its HTTP/2 session, or each on a connection of its own.
    func releaseH2Waiters(_ pool: OriginPool) {
        let waiters = pool.h2Waiters
        pool.h2Waiters = []
        for w in waiters { w.h2WaitEnded() }
    }

    // MARK: deadlines

    /// One timer per loop: every `deadlineCheckMillis` while transfers run, else at the next idle
    /// connection's expiry. Called per request: returns at once while a sweep soon enough is
    /// pending.
    private func armSweep() {
        let now = loop.now
        let check = UInt64(max(1, settings.deadlineCheckMillis))
        if sweepTimer != nil && (active.isEmpty || sweepDue <= now + check) { return }
        let due: UInt64
        if !active.isEmpty {
            due = now + check
        } else if let oldest = oldestIdle() {
            due = oldest.idleSince + UInt64(max(1, settings.idleTimeoutMillis))
        } else if origins.values.contains(where: { !$0.h2.isEmpty }) {
            due = now + UInt64(max(1, settings.idleTimeoutMillis))
        } else {
            return
        }
        sweepTimer?.cancel()
        sweepDue = due
        sweepTimer = loop.schedule(afterMillis: due > now ? Int(due - now) : 0, target: self)
    }

    public func timerFired(_ timer: LoopTimer) {
        if timer === tickTimer {
            tickTimer = nil
            if !h2ReadQueue.isEmpty {
                let queued = h2ReadQueue
                h2ReadQueue.removeAll(keepingCapacity: true)
                for h in queued where !h.closed { h.readAvailable() }
            }
            var i = 0
            while i < tickQueue.count {      // work may queue more (index-based on purpose)
                tickQueue[i].tick()
                i += 1
            }
            tickQueue.removeAll(keepingCapacity: true)
            return
        }
        guard timer === sweepTimer else { return }
        sweepTimer = nil
        let now = EventLoop.monotonicMillis()
        var i = 0
        while i < active.count {
            let t = active[i]
            t.checkDeadlines(now)
            if i < active.count && active[i] === t { i += 1 }   // else it finished and was swapped out
        }
        let idleLimit = UInt64(max(1, settings.idleTimeoutMillis))
        while let oldest = oldestIdle(), now >= oldest.idleSince + idleLimit { closeIdle(oldest) }
        for p in origins.values where !p.h2.isEmpty {
            for h in p.h2 where h.streams.isEmpty && now >= h.idleSince + idleLimit { h.close(nil) }
        }
        armSweep()
    }
}

/// Everything kept per origin (scheme, host, port): idle connections, the DNS answer, the
/// transfers waiting for it, the TLS session to resume.
final class OriginPool {
    let key: String
    let url: UpstreamURL
    /// Idle connections, most recently used last.
    var idle: [UpstreamConnection] = []
    var addresses: [SocketAddress] = []
    var addressesExpire: UInt64 = 0
    var resolving = false
    /// Transfers waiting for the DNS answer.
    var waiters: [HTTPUpstreamTransfer] = []
    /// The host is an IP literal: its one address, no DNS.
    let literal: SocketAddress?
    /// The newest TLS session for this origin (offered by its next new connection).
    let sessions = TLSSessionStore()
    /// What ALPN chose last time (unknown until a TLS connection here is set up).
    enum WireProtocol { case unknown, http1, http2 }
    var negotiated: WireProtocol = .unknown
    /// HTTP/2 connections to this origin.
    var h2: [H2Connection] = []
    /// A TLS connection being set up that may turn out to speak HTTP/2: other transfers wait for
    /// it instead of opening connections of their own (libcurl's PIPEWAIT).
    weak var h2Probe: UpstreamConnection?
    var h2Waiters: [HTTPUpstreamTransfer] = []
    /// In the client's table (false once forgotten, see `HTTPUpstreamClient.maxOrigins`).
    var registered = true

    init(key: String, url: UpstreamURL) {
        self.key = key
        self.url = url
        literal = SocketAddress(ip: url.host, port: url.port)
    }
}
