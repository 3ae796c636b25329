import CSystem
import Glibc
import HTTPWire
import Reactor

/// One client connection, owned by one loop: reads and parses requests, hands each complete
/// request to the handler, writes the response with back-pressure, enforces the timeouts.
/// Requests on a connection are answered in order; pipelined bytes wait in the read buffer.
final class HTTPConnection: IOHandler, DeferredFlush, TimerTarget {
    enum State { case readingHead, readingBody, responding, closing }

    let fd: Int32
    unowned let loop: EventLoop
    unowned let server: HTTPServer
    let worker: HTTPServer.Worker
    let peer: String
    var parser: HTTPRequestParser
    var state: State = .readingHead
    var readBuf: [UInt8] = []
    var readStart = 0
    var writeBuf: [UInt8] = []
    var writeStart = 0
    var head: HTTPRequestHead?
    var body: [UInt8] = []
    var generation = 0
    var responder: HTTPResponder?
    var closeAfterResponse = false
    var closed = false
    var interest: IOEvents = []
    var sentContinue = false
    var flushQueued = false
    // Timeouts: one timer per connection, re-armed lazily when the deadline moves.
    var deadline: UInt64 = 0
    var timer: LoopTimer?
    var deadlineReason: DeadlineReason = .header
    enum DeadlineReason { case header, body, idle, drain }

    init(fd: Int32, peer: String, server: HTTPServer, worker: HTTPServer.Worker) {
        self.fd = fd
        self.peer = peer
        self.server = server
        self.worker = worker
        self.loop = worker.loop
        self.parser = HTTPRequestParser(limits: server.config.limits)
    }

    var pendingWriteBytes: Int { writeBuf.count - writeStart }

    func start() {
        setInterest([.readable])
        arm(.header, server.config.headerTimeoutMillis)
    }

    // MARK: readiness

    func ioReady(_ events: IOEvents) {
        if closed { return }
        if events.contains(.writable) { flush() }
        if closed { return }
        if events.contains(.readable) || events.rawValue & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 {
            readAvailable(hangup: events.rawValue & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0)
        }
    }

    private func readAvailable(hangup: Bool) {
        var gotEOF = false
        // Bounded: at most a few reads per wake-up so one busy client cannot starve the loop.
        for _ in 0..<4 {
            if state == .responding && readBuf.count - readStart >= server.config.maxPipelinedBytes { break }
            let n = worker.scratch.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                worker.scratch.withUnsafeBytes { readBuf.append(contentsOf: $0[0..<n]) }
                server.bytesIn.add(n)
                if n < worker.scratch.count { break }
            } else if n == 0 {
                gotEOF = true
                break
            } else {
                let e = veil_errno()
                if e == EAGAIN || e == EWOULDBLOCK { break }
                if e == EINTR { continue }
                close()
                return
            }
        }
        if state == .readingBody { arm(.body, server.config.bodyTimeoutMillis) }
        processInput()
        if closed { return }
        if gotEOF || (hangup && state != .readingHead && state != .readingBody) {
            // The client closed its side. A response in progress is abandoned: its producer is told.
            if state == .responding || state == .closing || readBuf.count == readStart {
                close()
                return
            }
            close()
            return
        }
        updateInterest()
    }

    /// Runs the parser over buffered bytes while a request is being read.
    func processInput() {
        while !closed, state == .readingHead || state == .readingBody {
            // With nothing buffered only a head already parsed can progress (to `.end`, no body).
            if readBuf.count == readStart && state == .readingHead { break }
            var outcome: Result<(consumed: Int, event: HTTPParserEvent?), HTTPError> = .failure(HTTPError(400, "bad request"))
            let start = readStart
            readBuf.withUnsafeBytes { buf in
                do { outcome = .success(try parser.next(UnsafeRawBufferPointer(rebasing: buf[start...]))) }
                catch { outcome = .failure(error as? HTTPError ?? HTTPError(400, "bad request")) }
            }
            let result: (consumed: Int, event: HTTPParserEvent?)
            switch outcome {
            case .success(let r): result = r
            case .failure(let error): refuse(error); return
            }
            guard let event = result.event else {
                readStart += result.consumed
                break
            }
            switch event {
            case .head(let h):
                head = h
                body = []
                state = .readingBody
                arm(.body, server.config.bodyTimeoutMillis)
                if h.expectsContinue && h.versionMinor >= 1 && !sentContinue {
                    sentContinue = true
                    queue { $0.append(contentsOf: Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)) }
                }
            case .body(let range):
                let base = readStart
                readBuf.withUnsafeBytes { body.append(contentsOf: $0[(base + range.lowerBound)..<(base + range.upperBound)]) }
            case .end:
                readStart += result.consumed
                dispatch()
                continue
            }
            readStart += result.consumed
        }
        compactReadBuffer()
    }

    private func compactReadBuffer() {
        if readStart == readBuf.count {
            readStart = 0
            if readBuf.capacity > 16 * 1024 { readBuf = [] } else { readBuf.removeAll(keepingCapacity: true) }
        } else if readStart > 16 * 1024 {
            readBuf.removeSubrange(0..<readStart)
            readStart = 0
        }
    }

    /// A long response (a stream) started: the read buffer's capacity is not kept for the next
    /// request while it runs (memory per open stream); it is allocated again when needed.
    func releaseReadBufferIfEmpty() {
        if readStart == readBuf.count && readBuf.capacity > 0 {
            readBuf = []
            readStart = 0
        }
    }

    private func dispatch() {
        guard let h = head else { return }
        state = .responding
        sentContinue = false
        disarm()
        generation &+= 1
        let r = HTTPResponder(connection: self, generation: generation, head: h)
        responder = r
        let request = HTTPRequest(head: h, body: body, remoteAddress: peer, loop: loop)
        head = nil
        body = []
        server.handler.handle(request, r)
    }

    /// A request the parser refused: answer with its status and close (RFC 9112 §11: once framing
    /// is in doubt nothing after it on this connection can be trusted).
    private func refuse(_ error: HTTPError) {
        state = .closing
        closeAfterResponse = true
        readBuf = []
        readStart = 0
        sendServerError(error.status, error.message)
    }

    func sendServerError(_ status: Int, _ message: String) {
        let (ct, b) = server.config.errorBody(status, message)
        var h = HTTPResponseHead(status: status, headers: ["content-type": ct, "content-length": String(b.count), "connection": "close"])
        h.headers.add("date", server.httpDate(loop.now))
        queue {
            HTTPResponseWriter.head(h, into: &$0)
            $0.append(contentsOf: b)
        }
        state = .closing
        closeAfterResponse = true
        if pendingWriteBytes == 0 { close() } else { arm(.drain, 5_000) }
    }

    // MARK: writing

    /// Appends bytes to the write buffer and tries to send them at once.
    func queue(_ fill: (inout [UInt8]) -> Void) {
        guard !closed else { return }
        if writeBuf.capacity == 0 { writeBuf = worker.takeWriteBuffer() }
        fill(&writeBuf)
        server.peakQueuedBytes.observe(writeBuf.count - writeStart)
        flush()
    }

    /// Appends body bytes and sends them when the current loop callback returns: every chunk a
    /// producer writes during one callback (all the SSE events of one upstream read) leaves in
    /// one `send`, as nginx does, instead of one `send` per chunk.
    func queueDeferred(_ fill: (inout [UInt8]) -> Void) {
        guard !closed else { return }
        if writeBuf.capacity == 0 { writeBuf = worker.takeWriteBuffer() }
        fill(&writeBuf)
        if !flushQueued {
            flushQueued = true
            loop.flushAfterCallback(self)
        }
    }

    func flushDeferred() {
        flushQueued = false
        if !closed && pendingWriteBytes > 0 { flush() }
    }

    func flush() {
        while writeStart < writeBuf.count {
            let n = writeBuf.withUnsafeBytes { send(fd, $0.baseAddress! + writeStart, $0.count - writeStart, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                writeStart += n
                server.bytesOut.add(n)
                continue
            }
            let e = veil_errno()
            if n < 0 && e == EINTR { continue }
            if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) { break }
            close()
            return
        }
        if writeStart == writeBuf.count {
            writeStart = 0
            worker.giveBack(&writeBuf)      // all sent: the buffer serves the next writer on this loop
            if state == .closing { close(); return }
        } else if writeStart > 64 * 1024 {
            writeBuf.removeSubrange(0..<writeStart)
            writeStart = 0
        }
        if pendingWriteBytes < server.config.writeLowWaterBytes { responder?.drained() }
        updateInterest()
    }

    // MARK: response lifecycle

    func responseEnded() {
        responder = nil
        if closeAfterResponse || server.isDraining {
            state = .closing
            if pendingWriteBytes == 0 { close() } else { arm(.drain, 30_000); updateInterest() }
            return
        }
        state = .readingHead
        parser = HTTPRequestParser(limits: server.config.limits)
        if readBuf.count > readStart {
            arm(.header, server.config.headerTimeoutMillis)
            processInput()
        } else {
            arm(.idle, server.config.idleTimeoutMillis)
        }
        if !closed { updateInterest() }
    }

    func abortResponse() {
        responder = nil
        state = .closing
        if pendingWriteBytes == 0 { close() } else { arm(.drain, 5_000); updateInterest() }
    }

    /// Called by the server when it starts draining: idle connections go at once.
    func drainIfIdle() {
        if state == .readingHead && readBuf.count == readStart { close() }
    }

    // MARK: interest and timers

    private func updateInterest() {
        guard !closed else { return }
        var want: IOEvents = []
        switch state {
        case .readingHead, .readingBody: want.insert(.readable)
        case .responding:
            if readBuf.count - readStart < server.config.maxPipelinedBytes { want.insert(.readable) }
        case .closing: break
        }
        // Bytes waiting for the deferred flush are not a reason to watch for writability: that
        // flush runs as soon as this callback returns and asks for it only if the socket is full
        // (otherwise every response would cost two epoll_ctl: writable on, writable off).
        if pendingWriteBytes > 0 && !flushQueued { want.insert(.writable) }
        setInterest(want)
    }

    private func setInterest(_ wanted: IOEvents) {
        // Always told when the client hangs up, even while not reading (a stream in progress).
        let want = wanted.union(.peerClosed)
        if want == interest { return }
        interest = want
        loop.watch(fd, want, self)
    }

    func arm(_ reason: DeadlineReason, _ millis: Int) {
        deadlineReason = reason
        deadline = loop.now + UInt64(max(millis, 1))
        if let t = timer, t.isPending, t.deadline <= deadline { return }
        timer?.cancel()
        scheduleTimer(at: deadline)
    }

    private func scheduleTimer(at when: UInt64) {
        let delay = when > loop.now ? Int(when - loop.now) : 0
        timer = loop.schedule(afterMillis: delay, target: self)
    }

    func disarm() { deadline = 0 }

    // The timer does not keep the connection alive: cancelled here at the latest.
    deinit { timer?.cancel() }

    func timerFired(_ fired: LoopTimer) {
        timer = nil
        guard !closed, deadline != 0 else { return }
        if loop.now < deadline { scheduleTimer(at: deadline); return }
        deadline = 0
        switch deadlineReason {
        case .header, .body:
            if state == .readingHead && readBuf.count == readStart && deadlineReason == .header {
                // Nothing received: a silent close, as for an idle keep-alive connection.
                close()
            } else {
                server.timeouts.add(1)
                readBuf = []
                readStart = 0
                sendServerError(408, deadlineReason == .header ? "request head not received in time" : "request body not received in time")
            }
        case .idle, .drain:
            close()
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        timer?.cancel()
        timer = nil
        loop.forgetClosing(fd)            // close() takes it out of epoll: no EPOLL_CTL_DEL
        Glibc.close(fd)
        worker.connectionClosed(self)
        let r = responder
        responder = nil
        r?.clientGone()
    }
}
