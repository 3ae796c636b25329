/// Limits of one server connection, all in one place; every one is a configuration key
/// (`limits.*`, README) with the default given here.
public struct ConnectionLimits: Sendable, Equatable {
    /// From a connection's accept (or a request's first byte) to its complete head → 408.
    public var headerTimeoutMillis = 10_000
    /// Longest wait between two reads of a request body → 408.
    public var bodyTimeoutMillis = 30_000
    /// An idle keep-alive connection is closed after this long.
    public var idleTimeoutMillis = 75_000
    /// Queued output the client does not take for this long → the connection is closed
    /// (nginx's `send_timeout`): a client that stops reading holds nothing for ever.
    public var sendTimeoutMillis = 60_000
    /// Unsent output past which the connection stops reading and dispatching (and producers are
    /// asked to pause); they resume once it is back under `writeLowWaterBytes`.
    public var writeHighWaterBytes = 256 * 1024
    public var writeLowWaterBytes = 64 * 1024
    /// Bytes read ahead (pipelined requests) while a response is in progress.
    public var maxPipelinedBytes = 64 * 1024
    /// Lingering close (nginx's `lingering_time` / `lingering_timeout`): after an answer that leaves
    /// input unread (an error, a refusal before the body), the write side is shut and input is read
    /// and discarded for at most this long in all, this long between reads, and this many bytes,
    /// so the client reads the answer instead of a reset.
    public var lingeringTimeMillis = 30_000
    public var lingeringTimeoutMillis = 5_000
    public var lingeringBytes = 64 * 1024 * 1024
    public init() {}
}

/// One HTTP/1.1 server connection's semantics as a pure state machine (h11's shape): bytes and
/// events go in, actions come out. No sockets, no clock of its own (callers pass `now`, in
/// monotonic milliseconds), no callbacks: the driver (`HTTPConnection`) feeds it, pulls
/// `nextAction()` until nil and performs each action. Nothing here calls anything back, so a
/// response that ends while its request is being dispatched only changes state, and the driver's
/// loop picks up the next pipelined request: never recursion.
///
/// The request side and the response side are separate (`RequestState`, `ResponseState`):
/// - A request's head is offered for admission (`.admit`) before any body byte is read. The
///   application answers it at once (`refused()`: the body is discarded, never buffered; `100
///   Continue` is never sent) or admits it with a body limit (`admitted(bodyLimit:)`).
/// - An admitted request's body is collected up to its limit, then the request is dispatched
///   (`.dispatch`). One request at a time: pipelined bytes wait in the buffer (read ahead up to
///   `maxPipelinedBytes`) until the response in progress ends.
/// - A response that starts before its request was wholly received ends with the connection
///   (RFC 9112 §9.6: the rest of the request can't be trusted to be read).
/// - Unsent output past `writeHighWaterBytes` stops reading and dispatching until it falls under
///   `writeLowWaterBytes`: a client that pipelines and never reads costs bounded memory.
/// - Closing with input possibly unread lingers (`.shutdownWrite`, then input discarded within the
///   lingering limits, then `.close`), so the client reads the answer rather than a reset.
/// - One deadline at a time (`.armTimer(at:)`, only when it moves earlier than the one armed):
///   header, body, idle, send and lingering timeouts; `timerFired(now:)` settles whichever passed.
public struct HTTPServerConnection {
    public enum Action: Equatable {
        /// A request head is in and no body byte was read: admit it (`admitted(bodyLimit:)`) or
        /// answer it (`refused()`) before asking for the next action.
        case admit(HTTPRequestHead)
        /// Send `HTTP/1.1 100 Continue` (only to an admitted request that asked for it).
        case sendContinue
        /// The admitted request is complete: hand it (with its body) to the application.
        case dispatch(body: [UInt8])
        /// Send the connection's own error answer (parse errors, timeouts, limits); the
        /// connection then closes (lingering if input may be unread).
        case sendError(status: Int, message: String)
        case pauseReading
        case resumeReading
        /// The response in progress (or the request being admitted) is dead: its producer is told.
        case abortResponse
        /// Lingering close, step one: all output is sent; shut the write side, keep reading.
        case shutdownWrite
        /// Close the socket now.
        case close
        /// Have `timerFired(now:)` called at this monotonic millisecond (an earlier deadline than
        /// any armed before; a timer armed for a later one fires early and is re-armed by then).
        case armTimer(at: UInt64)
    }

    public enum RequestState: Equatable {
        /// Between requests: nothing of the next one received.
        case idle
        /// Part of a head received.
        case head
        /// A head is waiting for `admitted` / `refused`.
        case admission
        /// Reading an admitted request's body.
        case body
        /// Reading a refused (or early-answered) request's body to throw it away.
        case discarding
        /// The request is complete; its response is (or will be) in progress.
        case complete
        /// Nothing more is read as a request on this connection (a framing error, an answer before
        /// the body was read): the connection ends after the response.
        case finished
    }

    public enum ResponseState: Equatable {
        case idle
        case sending
        /// The response ended; the connection closes once the output is sent.
        case closing
        /// Write side shut; input is being read and discarded until EOF or a lingering limit.
        case lingering
        case closed
    }

    public let limits: ConnectionLimits
    public private(set) var parser: HTTPRequestParser
    /// Unparsed input past which reading pauses: the pipelining read-ahead, or a whole head at
    /// its largest if that is more (a head the parser may accept must always fit).
    private let readAheadLimit: Int
    public private(set) var request: RequestState = .idle
    public private(set) var response: ResponseState = .idle

    /// Received bytes not yet consumed by the parser: `input[inputStart...]`.
    private var input: [UInt8] = []
    private var inputStart = 0
    /// The admitted request's body, handed out with `.dispatch`.
    private var body: [UInt8] = []
    private var bodyLimit = 0
    private var bodyReceived = 0
    /// The request whose head was offered asked for `100 Continue`.
    private var expectsContinue = false
    /// Every byte the client sent so far was read as part of a whole request (its end seen):
    /// closing then needs no lingering.
    private var requestWhole = true

    private var actions: [Action] = []
    private var readingWanted = true
    /// Output over the high-water mark: no reading, no dispatching until under the low mark.
    private var blockedByOutput = false
    public private(set) var pendingOutput = 0
    private var closeAfterResponse = false
    private var draining = false
    private var peerClosed = false

    // Deadlines (monotonic ms; 0 = none).
    private var headDeadline: UInt64 = 0
    private var bodyDeadline: UInt64 = 0
    private var idleDeadline: UInt64 = 0
    private var lastSendProgress: UInt64 = 0
    private var lingerStart: UInt64 = 0
    private var lastLingerRead: UInt64 = 0
    private var lingered = 0
    private var armedDeadline: UInt64 = 0
    private var now: UInt64 = 0

    /// A new connection at `now`: its first head must arrive within the header timeout.
    public init(limits: ConnectionLimits, parserLimits: HTTPLimits, now: UInt64) {
        self.limits = limits
        self.parser = HTTPRequestParser(limits: parserLimits)
        // A head's bytes: up to 4 empty lines, the request line and its CRLF, the fields, the
        // final CRLF (the parser's limits count the rest).
        readAheadLimit = max(limits.maxPipelinedBytes, parserLimits.maxRequestLineBytes + parserLimits.maxHeaderBytes + 16)
        self.now = now
        idleDeadline = now + UInt64(limits.headerTimeoutMillis)
        syncDeadline()
    }

    // MARK: - Queries

    /// Bytes received and not yet consumed.
    public var bufferedInput: Int { input.count - inputStart }
    /// Whether the driver should be reading the socket.
    public var wantsRead: Bool { readingWanted }

    // MARK: - Inputs

    /// Bytes read from the socket (copied; the pointer may be reused afterwards).
    public mutating func received(_ bytes: UnsafeRawBufferPointer, now: UInt64) {
        self.now = now
        guard !bytes.isEmpty else { return }
        switch response {
        case .closed:
            return
        case .closing:
            requestWhole = false         // the client sends more than we will read: linger
            return
        case .lingering:
            lingered += bytes.count
            lastLingerRead = now
            if lingered > limits.lingeringBytes { closeNow() }
            syncDeadline()
            return
        case .idle, .sending:
            break
        }
        switch request {
        case .idle:
            request = .head
            requestWhole = false
            headDeadline = now + UInt64(limits.headerTimeoutMillis)
        case .body, .discarding:
            bodyDeadline = now + UInt64(limits.bodyTimeoutMillis)
        case .finished:
            requestWhole = false                     // never read as a request again: dropped
            return
        case .head, .admission, .complete:
            break
        }
        if inputStart == input.count && inputStart > 0 {
            input.removeAll(keepingCapacity: true)
            inputStart = 0
        }
        input.append(contentsOf: bytes)
        if request == .discarding { discardBuffered() }    // thrown away at once, never kept
        syncReading()
        syncDeadline()
    }

    /// The peer shut down its side (EOF), or the socket failed.
    public mutating func peerClosed(now: UInt64) {
        self.now = now
        peerClosed = true
        switch response {
        case .closed: return
        case .lingering: closeNow(); return
        case .idle, .sending, .closing: break
        }
        // A request admitted or answered, or a response in progress, loses its client.
        if response == .sending || request == .admission || request == .body || request == .complete {
            actions.append(.abortResponse)
        }
        closeNow()
    }

    /// The application admitted the request offered by `.admit`: read its body (at most
    /// `bodyLimit` bytes; a declared length over it is refused at once with 413).
    public mutating func admitted(bodyLimit: Int, now: UInt64) {
        self.now = now
        guard request == .admission else { return }
        self.bodyLimit = bodyLimit
        bodyReceived = 0
        if case .length(let n) = parser.bodyFraming, n > bodyLimit {
            actions.append(.abortResponse)
            fail(413, "request body too large")
            return
        }
        request = .body
        bodyDeadline = now + UInt64(limits.bodyTimeoutMillis)
        if parser.bodyFraming != .none, expectsContinue { actions.append(.sendContinue) }
        syncReading()
        syncDeadline()
    }

    /// The application answered the request offered by `.admit` itself (a refusal), or will answer
    /// it without its body: the body is discarded as it arrives, never buffered, and no `100
    /// Continue` is sent. The connection is kept only if the whole body arrives by the time the
    /// answer starts.
    public mutating func refused(now: UInt64) {
        self.now = now
        guard request == .admission else { return }
        startDiscarding()
        syncReading()
        syncDeadline()
    }

    /// From here on the request's body is read only to be thrown away; a request without a body
    /// completes at once (its end marker is all the parser holds).
    private mutating func startDiscarding() {
        request = .discarding
        body = []
        bodyDeadline = now + UInt64(limits.bodyTimeoutMillis)
        discardBuffered()
    }

    /// A response starts (its head is about to be queued). `wantsClose`: the response itself needs
    /// the connection to end (HTTP/1.0 without a length, `Connection: close` asked). Returns
    /// whether the connection ends after it (the head must then say `Connection: close`).
    public mutating func responseStarted(wantsClose: Bool, now: UInt64) -> Bool {
        self.now = now
        guard response == .idle else { return closeAfterResponse }
        response = .sending
        lastSendProgress = now
        switch request {
        case .admission, .body:
            // Answered before the request was read (a refusal at admission, or an early answer):
            // its body is thrown away from here on, never buffered.
            startDiscarding()
        case .discarding:
            discardBuffered()
        case .idle, .head, .complete, .finished:
            break
        }
        if request != .complete { closeAfterResponse = true }
        if wantsClose || draining { closeAfterResponse = true }
        syncReading()
        syncDeadline()
        return closeAfterResponse
    }

    /// The response ended properly. The connection serves the next request or closes.
    public mutating func responseEnded(now: UInt64) {
        self.now = now
        guard response == .sending else { return }
        if closeAfterResponse || draining || request != .complete {
            response = .closing
            request = .finished
            if pendingOutput == 0 { finishClosing() }
        } else {
            response = .idle
            request = .idle
            if bufferedInput > 0 {
                request = .head
                requestWhole = false
                headDeadline = now + UInt64(limits.headerTimeoutMillis)
            } else {
                idleDeadline = now + UInt64(limits.idleTimeoutMillis)
            }
        }
        syncReading()
        syncDeadline()
    }

    /// The response was cut (its producer failed after the head): the client must see a
    /// truncated message, so the connection closes once what is queued is sent.
    public mutating func responseAborted(now: UInt64) {
        self.now = now
        guard response == .sending || response == .idle else { return }
        closeAfterResponse = true
        response = .closing
        request = .finished
        if pendingOutput == 0 { finishClosing() }
        syncReading()
        syncDeadline()
    }

    /// The driver's unsent output is now `pending` bytes; `progressed`: the client took some.
    public mutating func outputChanged(pending: Int, progressed: Bool, now: UInt64) {
        self.now = now
        pendingOutput = pending
        if progressed { lastSendProgress = now }
        if blockedByOutput {
            if pending <= limits.writeLowWaterBytes { blockedByOutput = false }
        } else if pending > limits.writeHighWaterBytes {
            blockedByOutput = true
        }
        if pending == 0 && response == .closing { finishClosing() }
        syncReading()
        syncDeadline()
    }

    /// Graceful shutdown: an idle connection closes now; one with a request in progress closes
    /// after its response.
    public mutating func beginDrain(now: UInt64) {
        self.now = now
        draining = true
        if response == .idle && request == .idle && bufferedInput == 0 {
            closeNow()
        } else if response == .sending {
            closeAfterResponse = true
        }
        syncDeadline()
    }

    /// The armed timer fired: settles every deadline that passed.
    public mutating func timerFired(now: UInt64) {
        self.now = now
        armedDeadline = 0
        switch response {
        case .closed:
            return
        case .lingering:
            if now >= lingerStart + UInt64(limits.lingeringTimeMillis)
                || now >= lastLingerRead + UInt64(limits.lingeringTimeoutMillis) {
                closeNow()
                return
            }
        case .sending, .closing:
            if pendingOutput > 0 && now >= lastSendProgress + UInt64(limits.sendTimeoutMillis) {
                if response == .sending { actions.append(.abortResponse) }
                closeNow()
                return
            }
        case .idle:
            break
        }
        if response == .idle || response == .sending {
            switch request {
            case .idle:
                if response == .idle && idleDeadline != 0 && now >= idleDeadline { closeNow(); return }
            case .head:
                if response == .idle && !blockedByOutput && headDeadline != 0 && now >= headDeadline {
                    fail(408, "request head not received in time")
                    return
                }
            case .body:
                if bodyDeadline != 0 && now >= bodyDeadline {
                    actions.append(.abortResponse)
                    fail(408, "request body not received in time")
                    return
                }
            case .discarding:
                if bodyDeadline != 0 && now >= bodyDeadline {
                    // The answer is (being) sent already: stop waiting for the rest.
                    request = .finished
                    closeAfterResponse = true
                    if response == .idle { response = .closing; if pendingOutput == 0 { finishClosing() } }
                }
            default:
                break
            }
        }
        syncDeadline()
    }

    /// A long response (a stream) started: the input buffer's capacity is not kept meanwhile
    /// (memory per open stream); it is allocated again when bytes arrive.
    public mutating func releaseInputBufferIfEmpty() {
        if bufferedInput == 0 && input.capacity > 0 {
            input = []
            inputStart = 0
        }
    }

    // MARK: - Output

    /// The next thing to do, or nil when the machine waits for input.
    public mutating func nextAction() -> Action? {
        if actions.isEmpty { advance() }
        guard !actions.isEmpty else { return nil }
        return actions.removeFirst()
    }

    // MARK: - Parsing

    /// Runs the parser while the state lets it, until it produces an action or needs bytes.
    private mutating func advance() {
        while actions.isEmpty {
            switch request {
            case .idle, .head:
                // The next request is parsed only once the previous response is done, and not
                // while the client is not taking its answers.
                guard response == .idle, !blockedByOutput, bufferedInput > 0 else { return }
            case .body, .discarding:
                break
            case .admission, .complete, .finished:
                return
            }
            guard parseOnce() else { return }
        }
    }

    /// One parser step over the buffered input. False when it needs more bytes.
    private mutating func parseOnce() -> Bool {
        let start = inputStart
        var result: (consumed: Int, event: HTTPParserEvent?) = (0, nil)
        var failure: HTTPError?
        var bodyRange: Range<Int>?
        input.withUnsafeBytes { buf in
            do {
                result = try parser.next(UnsafeRawBufferPointer(rebasing: buf[start...]))
                if case .body(let r)? = result.event { bodyRange = r }
            } catch {
                failure = error as? HTTPError ?? HTTPError(400, "bad request")
            }
        }
        if let failure {
            if request == .discarding {
                // The answer is already decided; the connection just ends after it.
                request = .finished
                closeAfterResponse = true
                if response == .idle { response = .closing; if pendingOutput == 0 { finishClosing() } }
                syncDeadline()
                return false
            }
            if request == .body { actions.append(.abortResponse) }
            fail(failure.status, failure.message)
            return false
        }
        guard let event = result.event else {
            inputStart += result.consumed
            compactInput()
            return false
        }
        switch event {
        case .head(let h):
            inputStart += result.consumed
            request = .admission
            requestWhole = false
            expectsContinue = h.expectsContinue && h.versionMinor >= 1
            actions.append(.admit(h))
        case .body:
            if request == .body, let r = bodyRange {
                bodyReceived += r.count
                if bodyReceived > bodyLimit {
                    actions.append(.abortResponse)
                    fail(413, "request body too large")
                    return false
                }
                input.withUnsafeBytes { body.append(contentsOf: $0[(start + r.lowerBound)..<(start + r.upperBound)]) }
            }
            inputStart += result.consumed
        case .end:
            inputStart += result.consumed
            let admitted = request == .body
            request = .complete
            requestWhole = bufferedInput == 0
            if admitted {
                var out: [UInt8] = []
                swap(&out, &body)
                actions.append(.dispatch(body: out))
            }
            bodyDeadline = 0
        }
        compactInput()
        syncReading()
        syncDeadline()
        return true
    }

    /// Runs the parser over what is buffered, throwing body bytes away (no copy). A body that
    /// just ended, or a request without one, completes with no bytes at all (the parser's end
    /// marker).
    private mutating func discardBuffered() {
        while request == .discarding {
            guard parseOnce() else { return }
        }
    }

    /// Consumed input is dropped once this much of it precedes the rest (one move, rarely), and a
    /// buffer that grew past it is not kept once empty.
    static let compactAfterBytes = 16 * 1024

    private mutating func compactInput() {
        if inputStart == input.count {
            inputStart = 0
            if input.capacity > Self.compactAfterBytes { input = [] } else { input.removeAll(keepingCapacity: true) }
        } else if inputStart > Self.compactAfterBytes {
            input.removeSubrange(0..<inputStart)
            inputStart = 0
        }
    }

    // MARK: - Closing

    /// The connection's own error answer; it ends the connection.
    private mutating func fail(_ status: Int, _ message: String) {
        request = .finished
        input = []
        inputStart = 0
        body = []
        closeAfterResponse = true
        actions.append(.sendError(status: status, message: message))
        response = .closing
        lastSendProgress = now
        // The driver reports the queued answer through `outputChanged`; with nothing pending yet,
        // closing waits for it (an error answer always queues bytes).
        syncReading()
        syncDeadline()
    }

    /// All output is sent and the connection must end: linger if the client may still be
    /// sending (input unread, a request not wholly received), else close.
    private mutating func finishClosing() {
        if !peerClosed && (bufferedInput > 0 || !requestWhole) {
            response = .lingering
            lingerStart = now
            lastLingerRead = now
            lingered = 0
            input = []
            inputStart = 0
            actions.append(.shutdownWrite)
        } else {
            closeNow()
        }
    }

    private mutating func closeNow() {
        guard response != .closed else { return }
        response = .closed
        request = .finished
        input = []
        inputStart = 0
        body = []
        actions.append(.close)
        readingWanted = false
    }

    // MARK: - Reading and deadlines

    private mutating func syncReading() {
        let want: Bool
        switch response {
        case .closed, .closing: want = false
        case .lingering: want = true
        case .idle, .sending:
            if blockedByOutput { want = false; break }
            switch request {
            // Input waits unparsed between requests (a response in progress, or a driver that
            // spreads a long pipeline over several loop turns): read ahead only so much.
            case .idle, .head, .complete: want = bufferedInput < readAheadLimit
            // Body bytes are consumed as they arrive.
            case .body, .discarding: want = true
            case .admission: want = readingWanted     // decided synchronously: no change
            case .finished: want = false
            }
        }
        if want != readingWanted {
            readingWanted = want
            actions.append(want ? .resumeReading : .pauseReading)
        }
    }

    /// The earliest deadline that applies now (0 = none).
    public var deadline: UInt64 {
        var d: UInt64 = 0
        func take(_ t: UInt64) { if t != 0 && (d == 0 || t < d) { d = t } }
        switch response {
        case .closed:
            return 0
        case .lingering:
            take(min(lingerStart + UInt64(limits.lingeringTimeMillis), lastLingerRead + UInt64(limits.lingeringTimeoutMillis)))
            return d
        case .sending, .closing:
            if pendingOutput > 0 { take(lastSendProgress + UInt64(limits.sendTimeoutMillis)) }
        case .idle:
            break
        }
        switch request {
        case .idle: if response == .idle { take(idleDeadline) }
        case .head: if response == .idle && !blockedByOutput { take(headDeadline) }
        case .body, .discarding: take(bodyDeadline)
        case .admission, .complete, .finished: break
        }
        return d
    }

    private mutating func syncDeadline() {
        let d = deadline
        guard d != 0 else { return }
        if armedDeadline == 0 || d < armedDeadline {
            armedDeadline = d
            actions.append(.armTimer(at: d))
        }
    }
}
