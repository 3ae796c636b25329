import CSystem
import Glibc
import HTTPWire
import Reactor

/// One client connection, owned by one loop: a thin driver of `HTTPServerConnection` (HTTPWire),
/// which decides everything HTTP/1.1 about it. The driver moves bytes between the socket and the
/// machine, performs the machine's actions (admit and dispatch requests to the handler, send,
/// pause or resume reading, shut the write side, close, arm the timer) and reports what the
/// socket did (bytes read, EOF, output sent).
///
/// Every entry point (readiness, timer, a responder call) ends in `drive()`, which pulls actions
/// until the machine waits. `drive()` is not re-entrant: an action that leads back here (a handler
/// answering inside its own dispatch) only changes the machine's state, and the loop already
/// running picks up what follows. A response that ends outside `drive()` (from an upstream
/// callback) schedules it on the loop instead, so the next pipelined request is never dispatched
/// from inside the previous one's producer.
final class HTTPConnection: IOHandler, DeferredFlush, TimerTarget, LoopTask {
    let fd: Int32
    unowned let loop: EventLoop
    unowned let server: HTTPServer
    let worker: HTTPServer.Worker
    let peer: String
    /// Unchecked exclusivity: touched only on this loop's thread, and its methods are pure (they
    /// call out to nothing), so no access to it can overlap another; the dynamic check cost a few
    /// thousand instructions per request across its many small calls.
    @exclusivity(unchecked) private(set) var machine: HTTPServerConnection
    private(set) var writeBuf: [UInt8] = []
    private var writeStart = 0
    /// The admitted request's head, kept from admission to dispatch.
    private var head: HTTPRequestHead?
    /// The response side of the request in progress (from admission to its end).
    private(set) var responder: HTTPResponder?
    private(set) var generation = 0
    private(set) var closed = false
    private var interest: IOEvents = []
    private var flushQueued = false
    private var driving = false
    private var driveQueued = false
    private var timer: LoopTimer?

    init(fd: Int32, peer: String, server: HTTPServer, worker: HTTPServer.Worker) {
        self.fd = fd
        self.peer = peer
        self.server = server
        self.worker = worker
        self.loop = worker.loop
        self.machine = HTTPServerConnection(limits: server.config.connection, parserLimits: server.config.limits, now: worker.loop.now)
    }

    var pendingWriteBytes: Int { writeBuf.count - writeStart }

    func start() {
        drive()
    }

    // MARK: readiness

    func ioReady(_ events: IOEvents) {
        if closed { return }
        if events.contains(.writable) { flush() }
        if closed { return }
        let hangup = events.rawValue & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
        if events.contains(.readable) || hangup {
            if machine.wantsRead { readAvailable() } else if hangup { machine.peerClosed(now: loop.now) }
        }
        drive()
    }

    /// At most a few reads per wake-up, so one busy client cannot starve the loop.
    private func readAvailable() {
        for _ in 0..<HTTPConnection.readsPerWakeup {
            guard machine.wantsRead else { return }
            let n = worker.scratch.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                server.bytesIn.add(n)
                worker.scratch.withUnsafeBytes { machine.received(UnsafeRawBufferPointer(rebasing: $0[0..<n]), now: loop.now) }
                if n < worker.scratch.count { return }
            } else if n == 0 {
                machine.peerClosed(now: loop.now)
                return
            } else {
                let e = veil_errno()
                if e == EAGAIN || e == EWOULDBLOCK { return }
                if e == EINTR { continue }
                machine.peerClosed(now: loop.now)
                return
            }
        }
    }

    // MARK: the machine's actions

    /// Pulls and performs actions until the machine waits (or this connection used its share of
    /// the loop: pipelined requests beyond `dispatchesPerTurn` wait for the next iteration).
    func drive() {
        guard !driving, !closed else { return }
        driving = true
        var dispatched = 0
        while !closed, let action = machine.nextAction() {
            perform(action)
            if case .dispatch = action {
                dispatched += 1
                if dispatched >= server.config.dispatchesPerTurn { scheduleDrive(); break }
            }
        }
        driving = false
        if !closed { syncInterest() }
    }

    private func scheduleDrive() {
        guard !driveQueued else { return }
        driveQueued = true
        loop.runSoon(self)
    }

    func runLoopTask() {
        driveQueued = false
        drive()
    }

    private func perform(_ action: HTTPServerConnection.Action) {
        switch action {
        case .admit(let h):
            generation &+= 1
            let r = HTTPResponder(connection: self, generation: generation, head: h)
            responder = r
            switch server.handler.admit(h, r, peer: peer, loop: loop) {
            case .readBody(let limit):
                head = h
                machine.admitted(bodyLimit: limit, now: loop.now)
            case .answered:
                machine.refused(now: loop.now)
            }
        case .sendContinue:
            queue { $0.append(contentsOf: HTTPConnection.continueLine) }
        case .dispatch(let body):
            guard let h = head, let r = responder else { return }
            head = nil
            server.handler.handle(HTTPRequest(head: h, body: body, remoteAddress: peer, loop: loop), r)
        case .sendError(let status, let message):
            if status == 408 { server.timeouts.add(1) }
            sendError(status, message)
        case .pauseReading, .resumeReading:
            break                                        // applied by `syncInterest`
        case .abortResponse:
            let r = responder
            responder = nil
            head = nil
            r?.clientGone()
        case .shutdownWrite:
            _ = Glibc.shutdown(fd, Int32(SHUT_WR))
        case .close:
            close()
        case .armTimer(let at):
            armTimer(at: at)
        }
    }

    static let continueLine: [UInt8] = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
    /// Sent bytes are dropped from the front of the write buffer once this many precede the rest.
    static let compactWriteAfterBytes = 64 * 1024
    /// Reads per wake-up, so one busy client cannot starve the loop.
    static let readsPerWakeup = 4

    /// The connection's own answer (parse errors, timeouts, limits), in the application's error
    /// envelope; the machine closes the connection after it.
    private func sendError(_ status: Int, _ message: String) {
        let (ct, b) = server.config.errorBody(status, message)
        var h = HTTPResponseHead(status: status, headers: ["content-type": ct, "content-length": String(b.count), "connection": "close"])
        h.headers.add("date", server.httpDate(loop.now))
        queue {
            HTTPResponseWriter.head(h, into: &$0)
            $0.append(contentsOf: b)
        }
    }

    // MARK: calls from the responder

    /// A response starts: whether the connection ends after it.
    func responseStarting(wantsClose: Bool) -> Bool {
        machine.responseStarted(wantsClose: wantsClose, now: loop.now)
    }

    func responseEnded() {
        responder = nil
        reportDeferredOutput()
        machine.responseEnded(now: loop.now)
        afterResponderCall()
    }

    func responseAborted() {
        responder = nil
        reportDeferredOutput()
        machine.responseAborted(now: loop.now)
        afterResponderCall()
    }

    /// Bytes queued for the deferred flush are not reported one write at a time (per SSE event
    /// that would be wasted work); the machine learns of them before it decides to close.
    private func reportDeferredOutput() {
        if pendingWriteBytes != machine.pendingOutput {
            machine.outputChanged(pending: pendingWriteBytes, progressed: false, now: loop.now)
        }
    }

    /// A long response (a stream) started: the read buffer's capacity is not kept meanwhile.
    func releaseReadBufferIfEmpty() { machine.releaseInputBufferIfEmpty() }

    /// Inside `drive()` the running loop picks the machine's next actions up; outside it (an
    /// upstream callback, a timer) they run once the current callback has unwound.
    private func afterResponderCall() {
        if !driving { scheduleDrive() }
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
        var progressed = false
        while writeStart < writeBuf.count {
            let n = writeBuf.withUnsafeBytes { send(fd, $0.baseAddress! + writeStart, $0.count - writeStart, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                writeStart += n
                progressed = true
                server.bytesOut.add(n)
                continue
            }
            let e = veil_errno()
            if n < 0 && e == EINTR { continue }
            if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) { break }
            machine.peerClosed(now: loop.now)             // EPIPE, ECONNRESET: the client is gone
            drive()
            return
        }
        if writeStart == writeBuf.count {
            writeStart = 0
            worker.giveBack(&writeBuf)      // all sent: the buffer serves the next writer on this loop
        } else if writeStart > HTTPConnection.compactWriteAfterBytes {
            writeBuf.removeSubrange(0..<writeStart)
            writeStart = 0
        }
        machine.outputChanged(pending: pendingWriteBytes, progressed: progressed, now: loop.now)
        if pendingWriteBytes <= server.config.connection.writeLowWaterBytes { responder?.drained() }
        drive()
    }

    // MARK: interest and timers

    private func syncInterest() {
        var want: IOEvents = machine.wantsRead ? [.readable] : []
        // Bytes waiting for the deferred flush are not a reason to watch for writability: that
        // flush runs as soon as this callback returns and asks for it only if the socket is full
        // (otherwise every response would cost two epoll_ctl: writable on, writable off).
        if pendingWriteBytes > 0 && !flushQueued { want.insert(.writable) }
        // Always told when the client hangs up, even while not reading (a stream in progress).
        want.insert(.peerClosed)
        if want == interest { return }
        interest = want
        loop.watch(fd, want, self)
    }

    /// Lazy timer: one pending at a time; one armed for a later deadline fires early and the
    /// machine, finding nothing due, asks again.
    private func armTimer(at deadline: UInt64) {
        if let t = timer, t.isPending, t.deadline <= deadline { return }
        timer?.cancel()
        let delay = deadline > loop.now ? Int(deadline - loop.now) : 0
        timer = loop.schedule(afterMillis: delay, target: self)
    }

    // The timer does not keep the connection alive: cancelled here at the latest.
    deinit { timer?.cancel() }

    func timerFired(_ fired: LoopTimer) {
        guard fired === timer else { return }
        timer = nil
        machine.timerFired(now: loop.now)
        drive()
    }

    /// Called by the server when it starts draining.
    func beginDrain() {
        machine.beginDrain(now: loop.now)
        drive()
    }

    private func close() {
        guard !closed else { return }
        closed = true
        timer?.cancel()
        timer = nil
        loop.forgetClosing(fd)            // close() takes it out of epoll: no EPOLL_CTL_DEL
        Glibc.close(fd)
        worker.giveBack(&writeBuf)
        writeStart = 0
        worker.connectionClosed(self)
        let r = responder
        responder = nil
        head = nil
        r?.clientGone()
    }
}
