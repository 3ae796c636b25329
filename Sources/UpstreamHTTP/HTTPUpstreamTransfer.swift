import CNGHTTP2
import CSystem
import Glibc
import HTTPWire
import Reactor
import Upstream

/// One request and its response: the exchange's rules (what to write, how to read, when to
/// retry, which error to report) over a connection it borrows. Loop-thread only.
///
/// Lifecycle (`phase`): created → [resolving] → [connecting] → exchanging → finished; a stale
/// kept-alive connection sends it back to connecting once (`RetryPolicy`). Delegate events
/// follow `UpstreamAPI.swift`: head once, data, finish exactly once; never from inside `start`,
/// never nested inside this delegate's own callback.
final class HTTPUpstreamTransfer: UpstreamTransfer, @unchecked Sendable {
    enum Phase { case created, resolving, connecting, exchanging, finished }

    /// Not retained: the client finishes every transfer in its deinit (`clientGoing`), and a
    /// finished transfer never touches it.
    unowned(unsafe) let client: HTTPUpstreamClient
    private var delegate: UpstreamDelegate?
    let request: UpstreamRequest
    /// Index in the client's running list (-1 when not in it).
    var activeIndex = -1
    private(set) var phase: Phase = .created
    private var origin: OriginPool?
    /// The request target: a range of the URL's UTF-8.
    private var target: Range<Int> = 0..<0
    private(set) var conn: UpstreamConnection?
    private let isHEAD: Bool
    private let readSize: Int

    // Deadlines (loop milliseconds).
    private var connectDeadline: UInt64 = 0
    private var totalDeadline: UInt64 = 0
    private let stallMillis: Int
    private var lastActivity: UInt64 = 0

    // Request progress (this attempt).
    private var headSent = 0
    private var bodySent = 0
    private var requestBytesSent = 0
    private var requestDone = false
    private var retriesDone = 0
    private var freshOnly = false

    // Response progress (this attempt).
    private var responseBytes = 0
    private var headDelivered = false
    private var received = 0
    private var keepAlive = false

    // Connecting.
    private var addresses: [SocketAddress] = []
    private var addressIndex = 0
    private var lastConnectError: String?
    private var refusedReason: String?
    private var refusedCount = 0

    // Delegate state.
    private(set) var isFinished = false
    private var finishSent = false
    private var inDelegate = false
    private var queuedFinish: UpstreamError?? = nil
    private var starting = false
    private var pendingFinish: UpstreamError?? = nil
    private var tickQueued = false

    // Back-pressure.
    private var paused = false
    private var resumeQueued = false
    private var readAgainQueued = false

    // HTTP/2 (when the exchange is a stream of `h2`).
    private var h2: H2Connection?
    private var streamID: Int32 = 0
    private var h2Status = 0
    private var h2Fields: [HTTPField] = []
    /// Bytes received while paused (at most the stream window), not yet consumed.
    private var h2Held: [UInt8] = []
    private var h2BodySent = 0
    private var h2EndSeen = false
    private var h2StreamOpen = false
    /// Waiting for a connection being set up to say whether it speaks HTTP/2.
    private var h2Waiting = false
    private var h2WaitOver = false

    init(client: HTTPUpstreamClient, request: UpstreamRequest, delegate: UpstreamDelegate) {
        self.client = client
        self.request = request
        self.delegate = delegate
        stallMillis = max(0, request.stallTimeoutMillis)
        isHEAD = asciiCaseInsensitiveEquals(request.method, "HEAD")
        let wanted = request.receiveBufferBytes ?? client.settings.receiveBufferBytes
        readSize = Swift.min(Swift.max(wanted, 1_024), 524_288)
    }

    // MARK: starting

    func begin() {
        starting = true
        defer {
            starting = false
            if pendingFinish != nil { queueTick() }
        }
        let now = client.loop.now
        lastActivity = now
        connectDeadline = now + UInt64(max(1, request.connectTimeoutMillis))
        totalDeadline = request.timeoutMillis > 0 ? now + UInt64(request.timeoutMillis) : .max
        client.register(self)
        guard let (pool, target) = client.origin(for: request.url) else { return finish(.refused("malformed URL")) }
        let scheme = pool.url.scheme.rawValue
        guard request.allowedSchemes.contains(where: { asciiCaseInsensitiveEquals($0, scheme) }) else {
            return finish(.refused("scheme \(scheme) not allowed"))
        }
        guard Self.isTokenMethod(request.method) else { return finish(.refused("invalid method")) }
        origin = pool
        self.target = target
        acquire()
    }

    private static func isTokenMethod(_ m: String) -> Bool {
        var m = m
        return m.withUTF8 { b in !b.isEmpty && b.allSatisfy { RequestHeadWriter.isToken($0) } }
    }

    /// A kept-alive connection when there is one (never for `refusePrivateAddresses` or a retry),
    /// else a new one.
    private func acquire() {
        guard let origin else { return }
        if joinHTTP2(origin) { return }
        if !request.refusePrivateAddresses && !freshOnly, let c = client.takeIdle(origin) {
            bind(c)
            startExchange()
            return
        }
        if let literal = origin.literal {
            addresses = [literal]
            connectNext()
            return
        }
        if !origin.addresses.isEmpty && client.loop.now < origin.addressesExpire {
            addresses = origin.addresses
            connectNext()
            return
        }
        phase = .resolving
        origin.waiters.append(self)
        if !origin.resolving {
            origin.resolving = true
            let key = origin.key
            client.resolver.resolve(origin.url.host, port: origin.url.port, on: client.loop) { [weak client] answer in
                client?.resolved(key, answer)
            }
        }
    }

    /// HTTP/2 first for an https origin that may speak it: a stream on one of its connections,
    /// or a wait for the connection being set up (it may turn out to speak HTTP/2) rather than a
    /// connection of its own. False when this transfer needs a connection.
    private func joinHTTP2(_ origin: OriginPool) -> Bool {
        guard origin.url.isTLS, client.settings.http2 == .auto, !request.refusePrivateAddresses,
              origin.negotiated != .http1 else { return false }
        if let h = client.pickH2(origin) {
            attachH2(h)
            return true
        }
        guard origin.h2Probe != nil else { return false }
        phase = .connecting
        h2Waiting = true
        origin.h2Waiters.append(self)
        return true
    }

    /// The DNS answer for this transfer's origin arrived (`HTTPUpstreamClient.resolved`).
    func addressesResolved(_ answer: Resolver.Answer) {
        guard !isFinished, phase == .resolving else { return }
        switch answer {
        case .success(let list):
            addresses = list
            // While it waited, another transfer may have opened the origin's HTTP/2 connection.
            if let origin, joinHTTP2(origin) { return }
            connectNext()
        case .failure(let f):
            finish(.connect(f.message))
        }
    }

    // MARK: connecting

    /// Tries the next address (non-blocking connect). The address policy is applied to the
    /// address actually connected.
    private func connectNext() {
        phase = .connecting
        guard let origin else { return }
        while addressIndex < addresses.count {
            let addr = addresses[addressIndex]
            addressIndex += 1
            if request.refusePrivateAddresses,
               let why = AddressPolicy.refusal(address: addr.ipBytes, host: origin.url.host, allowList: request.addressAllowList) {
                refusedReason = why
                refusedCount += 1
                continue
            }
            let fd = socket(addr.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 {
                lastConnectError = "socket: \(String(cString: strerror(veil_errno())))"
                continue
            }
            configureSocket(fd)
            var a = addr
            let rc = withUnsafePointer(to: &a.storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, a.length) }
            }
            let e = rc == 0 ? 0 : veil_errno()
            if rc != 0 && e != EINPROGRESS {
                lastConnectError = "connect to \(addr.description): \(String(cString: strerror(e)))"
                Glibc.close(fd)
                continue
            }
            let c = UpstreamConnection(fd: fd, client: client, origin: origin, peer: addr.description,
                                       poolable: !request.refusePrivateAddresses)
            client.connectionOpened()
            conn = c
            c.owner = self
            if origin.url.isTLS && client.settings.http2 == .auto && !request.refusePrivateAddresses
                && origin.negotiated != .http1 && origin.h2Probe == nil {
                origin.h2Probe = c
            }
            if rc == 0 {
                connected(c)
            } else {
                c.state = .connecting
                c.setInterest([.writable])
            }
            return
        }
        if refusedCount > 0 && refusedCount == addresses.count, let why = refusedReason {
            finish(.refused(why))
        } else {
            finish(.connect(lastConnectError ?? refusedReason ?? "no address to connect to"))
        }
    }

    private func configureSocket(_ fd: Int32) {
        var one: Int32 = 1
        let size = socklen_t(MemoryLayout<Int32>.size)
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, size)
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, size)
        var idle = Int32(max(1, client.settings.tcpKeepAliveIdleSeconds))
        var interval = Int32(max(1, client.settings.tcpKeepAliveIdleSeconds / 2))
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, size)
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &interval, size)
    }

    private func connectFinished(_ c: UpstreamConnection) {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 { err = veil_errno() }
        if err == EINPROGRESS || err == EALREADY { return }
        if err != 0 {
            lastConnectError = "connect to \(c.peer): \(String(cString: strerror(err)))"
            conn = nil
            c.closeNow()
            connectNext()
            return
        }
        connected(c)
    }

    private func connected(_ c: UpstreamConnection) {
        guard let origin else { return }
        if origin.url.isTLS {
            let ctx: TLSContext
            switch client.tlsContext() {
            case .success(let made): ctx = made
            case .failure(let e):
                conn = nil
                c.closeNow()
                return finish(.connect("TLS setup: \(e.message)"))
            }
            guard let tls = TLSStream(context: ctx, fd: c.fd, host: origin.url.host, hostIsIP: origin.literal != nil,
                                      sessions: origin.sessions, scratch: client.tlsScratch,
                                      http1Only: request.refusePrivateAddresses) else {
                conn = nil
                c.closeNow()
                return finish(.connect("TLS: cannot create a connection: \(TLSStream.drainErrors())"))
            }
            c.tls = tls
            c.state = .handshaking
            handshakeStep(c)
            return
        }
        c.state = .active
        bind(c)
        startExchange()
    }

    /// One step of the TLS handshake (non-blocking; the connect deadline bounds it).
    private func handshakeStep(_ c: UpstreamConnection) {
        guard let tls = c.tls else { return }
        switch tls.handshake() {
        case .done:
            client.noteHandshake(resumed: tls.resumed)
            guard let origin else { return }
            let wasProbe = origin.h2Probe === c
            if wasProbe { origin.h2Probe = nil }
            if tls.negotiatedProtocol == "h2" {
                origin.negotiated = .http2
                conn = nil
                c.owner = nil
                guard c.poolable, let h = H2Connection(conn: c, client: client, origin: origin) else {
                    c.closeNow()
                    return finish(.connect("HTTP/2: cannot set up a session"))
                }
                c.state = .multiplexed
                c.h2 = h
                tls.keepBuffers()
                client.addH2(h)
                if wasProbe { client.releaseH2Waiters(origin) }
                attachH2(h)
                return
            }
            if c.poolable { origin.negotiated = .http1 }
            if wasProbe { client.releaseH2Waiters(origin) }
            c.state = .active
            bind(c)
            startExchange()
        case .wantRead:
            c.setInterest([.readable])
        case .wantWrite:
            c.setInterest([.writable])
        case .failed(let why):
            conn = nil
            c.closeNow()
            finish(.connect("TLS handshake with \(origin?.url.host ?? "?"): \(why)"))
        }
    }

    private func bind(_ c: UpstreamConnection) {
        conn = c
        c.owner = self
        phase = .exchanging
    }

    // MARK: the exchange

    /// Writes the request (head and body in one `sendmsg`) and waits for the response.
    private func startExchange() {
        guard let c = conn, let origin else { return }
        c.parser.reset(requestIsHEAD: isHEAD)
        c.carry.removeAll(keepingCapacity: true)
        let shared = request.sharedHeaders.map { client.sharedBytes($0) }
        RequestHeadWriter.write(method: request.method, url: request.url, target: target, authority: origin.url.authority,
                                headers: request.headers,
                                shared: shared, bodyCount: request.body.count, into: &c.head)
        headSent = 0
        bodySent = 0
        requestBytesSent = 0
        requestDone = false
        responseBytes = 0
        headDelivered = false
        received = 0
        lastActivity = client.loop.now
        writeRequest(c)
        if !isFinished { updateInterest(c) }
    }

    private func writeRequest(_ c: UpstreamConnection) {
        while !requestDone {
            let result = c.head.withUnsafeBytes { h in
                request.body.withUnsafeBytes { b in
                    c.write(UnsafeRawBufferPointer(rebasing: h[headSent...]), UnsafeRawBufferPointer(rebasing: b[bodySent...]))
                }
            }
            switch result {
            case .wrote(let n):
                requestBytesSent += n
                touch()
                let toHead = min(n, c.head.count - headSent)
                headSent += toHead
                bodySent += n - toHead
                if headSent == c.head.count && bodySent == request.body.count { requestDone = true }
            case .wouldBlock:
                return
            case .failed(let why, let reset):
                return ioFailed(c, why, reset: reset)
            }
        }
    }

    private func updateInterest(_ c: UpstreamConnection) {
        var ev: IOEvents = []
        if !paused { ev.insert(.readable) }
        if !requestDone || (c.readWantsWrite && !paused) { ev.insert(.writable) }
        c.setInterest(ev)
    }

    /// Readiness on this transfer's connection (connecting or exchanging).
    func connectionReady(_ c: UpstreamConnection, _ events: IOEvents) {
        guard !isFinished, c === conn else { return }
        switch phase {
        case .connecting:
            if c.state == .handshaking { handshakeStep(c) } else { connectFinished(c) }
        case .exchanging:
            if !requestDone && (events.contains(.writable) || events.rawValue & IOEvents.hangup.rawValue != 0) {
                writeRequest(c)
                if isFinished { return }
                if requestDone { updateInterest(c) }
            }
            var readNow = events.contains(.readable) || events.rawValue & IOEvents.hangup.rawValue != 0
            if c.readWantsWrite && events.contains(.writable) {
                c.readWantsWrite = false
                updateInterest(c)
                readNow = true
            }
            if !paused && readNow { readResponse(c) }
        default:
            break
        }
    }

    /// Reads and parses until the socket is drained (at most `maxReadsPerEvent` reads), the
    /// transfer pauses, or it ends.
    private func readResponse(_ c: UpstreamConnection) {
        var reads = 0
        let buffer = client.readBuffer
        while !isFinished && !paused && reads < client.settings.maxReadsPerEvent {
            reads += 1
            let k = c.carry.count
            if k > 0 { c.carry.withUnsafeBytes { buffer.copyMemory(from: $0) } }
            let room = min(readSize, buffer.count - k)
            switch c.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[k..<(k + room)])) {
            case .data(let n):
                responseBytes += n
                touch()
                c.carry.removeAll(keepingCapacity: true)
                process(c, UnsafeRawBufferPointer(rebasing: buffer[0..<(k + n)]))
                // Drained (a short read, and nothing left inside TLS): epoll (level-triggered)
                // says when more comes; another read now would only return EAGAIN.
                if n < room && !c.hasBufferedInput { return }
            case .wouldBlock(let wantsWrite):
                if wantsWrite {
                    c.readWantsWrite = true
                    updateInterest(c)
                }
                return
            case .eof:
                return endOfStream(c)
            case .failed(let why, let reset):
                return ioFailed(c, why, reset: reset)
            }
        }
        if !isFinished && !paused && c.hasBufferedInput { queueReadAgain() }
    }

    /// Runs the parser over `buf` and delivers what it finds; keeps unparsed bytes in `carry`.
    private func process(_ c: UpstreamConnection, _ buf: UnsafeRawBufferPointer) {
        var off = 0
        // The parser is worked on as a local and put back once: a class property mutated per
        // event costs a dynamic exclusivity check each time.
        var parser = c.takeParser()
        defer {
            c.parser = parser
            if !isFinished && off < buf.count && conn === c {
                c.carry.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[off...]))
            }
        }
        while !isFinished && !paused {
            let input = UnsafeRawBufferPointer(rebasing: buf[off...])
            let r: (consumed: Int, event: HTTPResponseEvent?)
            do { r = try parser.next(input) } catch {
                let why = (error as? HTTPError)?.message ?? "invalid response"
                abort(.broken("invalid response from upstream: \(why)"))
                return
            }
            switch r.event {
            case nil:
                off += r.consumed
                return
            case .head(let start)?:
                var fields: [HTTPField] = []
                let spans = parser.fieldSpans
                fields.reserveCapacity(spans.count)
                for s in spans {
                    fields.append(HTTPField(name: String(decoding: UnsafeRawBufferPointer(rebasing: input[s.name]), as: UTF8.self),
                                            value: String(decoding: UnsafeRawBufferPointer(rebasing: input[s.value]), as: UTF8.self)))
                }
                off += r.consumed
                if let cap = request.maxResponseBytes, let cl = start.contentLength, cl > cap {
                    abort(.tooLarge)
                    return
                }
                keepAlive = start.keepAlive
                headDelivered = true
                let head = UpstreamResponseHead(status: start.status, headers: HTTPHeaders(fields), httpVersion: 1)
                callDelegate { $0.upstreamDidReceiveHead(head) }
            case .body(let range)?:
                if let cap = request.maxResponseBytes, received + range.count > cap {
                    abort(.tooLarge)
                    return
                }
                received += range.count
                let bytes = UnsafeRawBufferPointer(rebasing: input[range])
                off += r.consumed
                callDelegate { $0.upstreamDidReceive(bytes) }
            case .end?:
                off += r.consumed
                let leftover = buf.count - off
                off = buf.count                  // nothing is carried past the end
                exchangeCompleted(c, cleanEnd: leftover == 0)
                return
            }
        }
    }

    /// The response ended: the connection goes back to the pool when it can carry another
    /// exchange, then the delegate hears of it (so that a request it starts can reuse it).
    private func exchangeCompleted(_ c: UpstreamConnection, cleanEnd: Bool) {
        c.exchanges += 1
        conn = nil
        c.owner = nil
        if keepAlive && requestDone && cleanEnd && !c.hasBufferedInput && c.carry.isEmpty {
            client.release(c)
        } else {
            c.closeNow()
        }
        finish(nil)
    }

    /// The upstream closed its side.
    private func endOfStream(_ c: UpstreamConnection) {
        let event: HTTPResponseEvent?
        do { event = try c.parser.endOfInput(unconsumed: c.carry.count) } catch {
            let why = (error as? HTTPError)?.message ?? "response cut short"
            abort(.broken(why))
            return
        }
        if event == .end {
            c.carry.removeAll()
            conn = nil
            c.exchanges += 1
            c.closeNow()
            finish(nil)
            return
        }
        ioFailed(c, "upstream closed the connection before answering", reset: true)
    }

    /// A read or write failed, or the upstream closed before a response: retried on a fresh
    /// connection when `RetryPolicy` allows it, else reported.
    private func ioFailed(_ c: UpstreamConnection, _ why: String, reset: Bool) {
        if responseBytes == 0 && !headDelivered {
            if RetryPolicy.mayRetry(method: request.method, reusedConnection: c.isReused, requestBytesSent: requestBytesSent,
                                    responseBytesReceived: responseBytes, retriesSoFar: retriesDone) {
                retry(c)
                return
            }
            var detail = why
            if c.isReused && requestBytesSent > 0 {
                detail += " (on a kept-alive connection; \(request.method) not retried: it may have been processed)"
            }
            abort(.connect(detail))
            return
        }
        abort(.broken(why))
    }

    private func retry(_ c: UpstreamConnection) {
        conn = nil
        c.closeNow()
        retriesDone += 1
        freshOnly = true
        client.noteRetry()
        connectDeadline = client.loop.now + UInt64(max(1, request.connectTimeoutMillis))
        addresses = []
        addressIndex = 0
        lastConnectError = nil
        acquire()
    }

    // MARK: deadlines

    private func touch() {
        if stallMillis > 0 { lastActivity = client.loop.now }
    }

    /// Called by the client's sweep.
    func checkDeadlines(_ now: UInt64) {
        guard !isFinished else { return }
        if phase == .resolving || phase == .connecting, now >= connectDeadline {
            return abort(.timeout("connecting took longer than \(request.connectTimeoutMillis) ms"))
        }
        if now >= totalDeadline {
            return abort(.timeout("no complete answer within \(request.timeoutMillis) ms"))
        }
        if stallMillis > 0 && phase == .exchanging {
            if paused { lastActivity = now; return }      // our own back-pressure is no stall
            if now >= lastActivity + UInt64(stallMillis) {
                abort(.timeout("no data moved for \(stallMillis) ms"))
            }
        }
    }

    // MARK: next-iteration work

    private func queueTick() {
        guard !tickQueued else { return }
        tickQueued = true
        client.enqueueTick(self)
    }

    private func queueReadAgain() {
        readAgainQueued = true
        queueTick()
    }

    func tick() {
        tickQueued = false
        if let pf = pendingFinish {
            pendingFinish = nil
            deliverFinish(pf)
            return
        }
        if h2WaitOver {
            h2WaitOver = false
            if !isFinished { acquire() }
        }
        if resumeQueued && h2 != nil || resumeQueued && h2EndSeen {
            resumeQueued = false
            if !isFinished && !paused { h2DeliverHeld() }
            return
        }
        if resumeQueued || readAgainQueued {
            let wasResume = resumeQueued
            resumeQueued = false
            readAgainQueued = false
            guard !isFinished, !paused, phase == .exchanging, let c = conn else { return }
            updateInterest(c)
            if wasResume {
                // Bytes held back by the pause are parsed before anything new is read; with none
                // the parser still runs: a sized body's end needs no further byte, and a pause
                // taken on its last bytes would otherwise wait for input that never comes.
                let buffer = client.readBuffer
                let k = c.carry.count
                if k > 0 { c.carry.withUnsafeBytes { buffer.copyMemory(from: $0) } }
                c.carry.removeAll(keepingCapacity: true)
                process(c, UnsafeRawBufferPointer(rebasing: buffer[0..<k]))
            }
            if !isFinished && !paused { readResponse(c) }
        }
    }

    // MARK: delegate

    private func callDelegate(_ body: (UpstreamDelegate) -> Void) {
        guard !isFinished, let d = delegate else { return }
        inDelegate = true
        body(d)
        inDelegate = false
        if let queued = queuedFinish {
            queuedFinish = nil
            deliverFinish(queued)
        }
    }

    /// Closes the connection (its exchange is incomplete) and reports `error`.
    private func abort(_ error: UpstreamError) {
        guard !isFinished else { return }
        if let c = conn {
            conn = nil
            c.closeNow()
        }
        dropStream()
        finish(error)
    }

    /// Leaves the HTTP/2 connection: an open stream is reset (RST_STREAM CANCEL).
    private func dropStream() {
        guard let h = h2 else { return }
        h2 = nil
        if !h2Held.isEmpty {
            h.consume(streamID, h2Held.count)        // held bytes still count against the connection window
            h2Held = []
        }
        if h2StreamOpen {
            h2StreamOpen = false
            h.reset(streamID)
        }
    }

    /// Ends the transfer once: out of the client's list and the DNS waiters, then the delegate
    /// hears of it — on the next iteration when inside `start`, right after its callback when
    /// inside one.
    private func finish(_ error: UpstreamError?) {
        guard !isFinished else { return }
        isFinished = true
        phase = .finished
        if let c = conn {
            conn = nil
            c.closeNow()
        }
        dropStream()
        client.unregister(self)
        if let origin, let i = origin.waiters.firstIndex(where: { $0 === self }) { origin.waiters.remove(at: i) }
        if h2Waiting, let origin, let i = origin.h2Waiters.firstIndex(where: { $0 === self }) {
            origin.h2Waiters.remove(at: i)
            h2Waiting = false
        }
        if starting {
            pendingFinish = .some(error)
            return
        }
        if inDelegate {
            queuedFinish = .some(error)
            return
        }
        deliverFinish(error)
    }

    private func deliverFinish(_ error: UpstreamError?) {
        guard !finishSent else { return }
        finishSent = true
        let d = delegate
        delegate = nil
        d?.upstreamDidFinish(error)
    }

    /// The client is being deinitialised: report `.cancelled` without touching it again.
    func clientGoing() {
        if !isFinished {
            isFinished = true
            phase = .finished
            if let c = conn { conn = nil; c.owner = nil; c.closeNow() }
            h2 = nil
        }
        pendingFinish = nil
        if !inDelegate { deliverFinish(finishSent ? nil : .cancelled) }
    }

    // MARK: HTTP/2

    /// The connection this transfer waited for is set up (or gone): look again, next iteration.
    func h2WaitEnded() {
        guard h2Waiting, !isFinished else { return }
        h2Waiting = false
        h2WaitOver = true
        queueTick()
    }

    /// Opens this transfer's stream on `h`.
    private func attachH2(_ h: H2Connection) {
        guard let origin else { return }
        h2 = h
        phase = .exchanging
        lastActivity = client.loop.now
        h2Status = 0
        h2Fields = []
        h2Held = []
        h2BodySent = 0
        h2EndSeen = false
        headDelivered = false
        received = 0
        responseBytes = 0
        client.h2Headers.build(method: request.method, scheme: "https", authority: origin.url.authority, url: request.url,
                               target: target, headers: request.headers, shared: request.sharedHeaders?.fields,
                               bodyCount: request.body.count)
        guard let id = h.submit(self, headers: &client.h2Headers) else {
            h2 = nil
            return finish(.connect("HTTP/2: the connection refused a new stream"))
        }
        streamID = id
        h2StreamOpen = true
    }

    /// nghttp2 asks for request body bytes (DATA frames).
    func h2ReadBody(_ buf: UnsafeMutablePointer<UInt8>, _ length: Int, _ flags: UnsafeMutablePointer<UInt32>) -> Int {
        let n = min(length, request.body.count - h2BodySent)
        if n > 0 {
            request.body.withUnsafeBytes { b in
                UnsafeMutableRawPointer(buf).copyMemory(from: b.baseAddress! + h2BodySent, byteCount: n)
            }
            h2BodySent += n
            touch()
        }
        if h2BodySent == request.body.count { flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue }
        return n
    }

    func h2BeginHeaders() {
        if !headDelivered {
            h2Status = 0
            h2Fields.removeAll(keepingCapacity: true)
        }
    }

    func h2Header(_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) {
        guard !headDelivered, !isFinished else { return }      // trailers: not forwarded
        responseBytes += name.count + value.count
        if name.count == 7 && name.first == 0x3A {              // ":status"
            var v = 0
            for c in value where c >= 0x30 && c <= 0x39 { v = v * 10 + Int(c - 0x30) }
            h2Status = v
            return
        }
        if name.first == 0x3A { return }
        if h2Fields.isEmpty { h2Fields.reserveCapacity(16) }
        h2Fields.append(HTTPField(name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self)))
    }

    func h2HeadersComplete(endStream: Bool) {
        guard !isFinished, !headDelivered else { return }
        touch()
        if h2Status >= 100 && h2Status < 200 {                  // interim: the final head follows
            h2Status = 0
            h2Fields.removeAll(keepingCapacity: true)
            return
        }
        if let cap = request.maxResponseBytes,
           let cl = h2Fields.first(where: { $0.name == "content-length" }).flatMap({ Int($0.value) }), cl > cap {
            return abort(.tooLarge)
        }
        headDelivered = true
        let head = UpstreamResponseHead(status: h2Status, headers: HTTPHeaders(h2Fields), httpVersion: 2)
        h2Fields = []
        callDelegate { $0.upstreamDidReceiveHead(head) }
        if endStream { h2EndStream() }
    }

    func h2Data(_ bytes: UnsafeRawBufferPointer) {
        guard !isFinished, let h = h2 else { return }
        touch()
        responseBytes += bytes.count
        if let cap = request.maxResponseBytes, received + bytes.count > cap {
            h.consume(streamID, bytes.count)
            return abort(.tooLarge)
        }
        received += bytes.count
        if paused || !h2Held.isEmpty {
            h2Held.append(contentsOf: bytes)
            return
        }
        callDelegate { $0.upstreamDidReceive(bytes) }
        h.consume(streamID, bytes.count)
    }

    func h2EndStream() {
        guard !isFinished else { return }
        h2EndSeen = true
        if !paused && h2Held.isEmpty { h2Complete() }
    }

    /// The response is complete: off the connection (the stream closes by itself), then done.
    private func h2Complete() {
        h2 = nil
        h2StreamOpen = false
        finish(nil)
    }

    /// Held bytes after a resume: delivered in one call, then consumed (the window opens).
    private func h2DeliverHeld() {
        if !h2Held.isEmpty {
            let held = h2Held
            h2Held = []
            held.withUnsafeBytes { b in callDelegate { $0.upstreamDidReceive(b) } }
            // After the stream closed too: nghttp2 still credits the connection window.
            h2?.consume(streamID, held.count)
        }
        if !isFinished && !paused && h2EndSeen { h2Complete() }
    }

    /// The stream closed (nghttp2's on_stream_close): after END_STREAM that is the normal end;
    /// otherwise a reset, mapped like an HTTP/1.1 failure.
    func h2StreamClosed(_ code: UInt32) {
        h2StreamOpen = false
        guard !isFinished, h2 != nil else { return }
        if code == NGHTTP2_NO_ERROR.rawValue && h2EndSeen {
            if !paused && h2Held.isEmpty { h2Complete() }
            return                                  // held bytes go out on resume
        }
        h2 = nil
        if code == NGHTTP2_REFUSED_STREAM.rawValue && !headDelivered && refusedRetries < Self.maxRefusedRetries {
            // Refused (or above a GOAWAY's last stream): never processed, whatever the method.
            refusedRetries += 1
            return h2Retry(counted: false)
        }
        let why = "HTTP/2 stream reset by the upstream (\(String(cString: nghttp2_http2_strerror(code))))"
        abort(headDelivered ? .broken(why) : .connect(why))
    }

    /// The whole HTTP/2 connection failed under this stream.
    func h2ConnectionFailed(_ why: String) {
        h2StreamOpen = false
        guard !isFinished, h2 != nil else { return }
        h2 = nil
        if !headDelivered && RetryPolicy.mayRetry(method: request.method, reusedConnection: true, requestBytesSent: 1,
                                                  responseBytesReceived: responseBytes, retriesSoFar: retriesDone) {
            return h2Retry()
        }
        abort(headDelivered ? .broken(why) : .connect(why))
    }

    /// A stream refused by the upstream is sent again up to this many times (each refusal proves
    /// it was not processed; a GOAWAY per few requests refuses a burst in waves).
    static let maxRefusedRetries = 8
    private var refusedRetries = 0

    private func h2Retry(counted: Bool = true) {
        if counted { retriesDone += 1 }
        client.noteRetry()
        connectDeadline = client.loop.now + UInt64(max(1, request.connectTimeoutMillis))
        h2Held = []
        queueTickAcquire()
    }

    private func queueTickAcquire() {
        h2WaitOver = true
        phase = .connecting
        queueTick()
    }

    // MARK: UpstreamTransfer

    func pause() {
        guard !isFinished, !paused else { return }
        paused = true
        if phase == .exchanging, let c = conn { updateInterest(c) }
        // HTTP/2: what arrives is held and not consumed; the stream window closes.
    }

    func resume() {
        guard !isFinished, paused else { return }
        paused = false
        resumeQueued = true
        queueTick()
    }

    func cancel() {
        if isFinished {
            // Finished but not yet told (a failure deferred out of `start`): cancelled wins.
            if !finishSent && pendingFinish != nil && !inDelegate {
                pendingFinish = nil
                deliverFinish(.cancelled)
            }
            return
        }
        abort(.cancelled)
    }
}
