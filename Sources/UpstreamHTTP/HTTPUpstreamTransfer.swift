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
    private var parts: UpstreamURL?
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
        guard let (pool, url) = client.origin(for: request.url) else { return finish(.refused("malformed URL")) }
        guard request.allowedSchemes.contains(where: { asciiCaseInsensitiveEquals($0, url.scheme.rawValue) }) else {
            return finish(.refused("scheme \(url.scheme.rawValue) not allowed"))
        }
        guard Self.isTokenMethod(request.method) else { return finish(.refused("invalid method")) }
        origin = pool
        parts = url
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

    /// The DNS answer for this transfer's origin arrived (`HTTPUpstreamClient.resolved`).
    func addressesResolved(_ answer: Resolver.Answer) {
        guard !isFinished, phase == .resolving else { return }
        switch answer {
        case .success(let list):
            addresses = list
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
                                      sessions: origin.sessions, scratch: client.tlsScratch) else {
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
        guard let c = conn, let parts else { return }
        c.parser.reset(requestIsHEAD: isHEAD)
        c.carry.removeAll(keepingCapacity: true)
        let shared = request.sharedHeaders.map { client.sharedBytes($0) }
        RequestHeadWriter.write(method: request.method, url: request.url, parts: parts, headers: request.headers,
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
        defer {
            if !isFinished && off < buf.count && conn === c {
                c.carry.append(contentsOf: UnsafeRawBufferPointer(rebasing: buf[off...]))
            }
        }
        while !isFinished && !paused {
            let input = UnsafeRawBufferPointer(rebasing: buf[off...])
            let r: (consumed: Int, event: HTTPResponseEvent?)
            do { r = try c.parser.next(input) } catch {
                let why = (error as? HTTPError)?.message ?? "invalid response"
                abort(.broken("invalid response from upstream: \(why)"))
                return
            }
            switch r.event {
            case nil:
                off += r.consumed
                return
            case .head(let start)?:
                var fields: [(name: String, value: String)] = []
                fields.reserveCapacity(c.parser.fieldSpans.count)
                for s in c.parser.fieldSpans {
                    fields.append((String(decoding: UnsafeRawBufferPointer(rebasing: input[s.name]), as: UTF8.self),
                                   String(decoding: UnsafeRawBufferPointer(rebasing: input[s.value]), as: UTF8.self)))
                }
                off += r.consumed
                if let cap = request.maxResponseBytes, let cl = start.contentLength, cl > cap {
                    abort(.tooLarge)
                    return
                }
                keepAlive = start.keepAlive
                headDelivered = true
                let head = UpstreamResponseHead(status: start.status, headers: fields, httpVersion: 1)
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
        if resumeQueued || readAgainQueued {
            let wasResume = resumeQueued
            resumeQueued = false
            readAgainQueued = false
            guard !isFinished, !paused, phase == .exchanging, let c = conn else { return }
            updateInterest(c)
            if wasResume && !c.carry.isEmpty {
                // Bytes held back by the pause: parsed before anything new is read.
                let buffer = client.readBuffer
                let k = c.carry.count
                c.carry.withUnsafeBytes { buffer.copyMemory(from: $0) }
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
        finish(error)
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
        client.unregister(self)
        if let origin, let i = origin.waiters.firstIndex(where: { $0 === self }) { origin.waiters.remove(at: i) }
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
        }
        pendingFinish = nil
        if !inDelegate { deliverFinish(finishSent ? nil : .cancelled) }
    }

    // MARK: UpstreamTransfer

    func pause() {
        guard !isFinished, !paused else { return }
        paused = true
        if phase == .exchanging, let c = conn { updateInterest(c) }
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
