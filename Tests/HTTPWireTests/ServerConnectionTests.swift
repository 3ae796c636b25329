import HTTPWire
import Testing

/// The connection state machine, driven the way `HTTPConnection` drives it, with plain bytes and
/// a fake clock: every decision it makes is visible in its actions.
typealias A = HTTPServerConnection.Action

/// Short names for actions in expectations (heads compared by method and target only).
enum Step: Equatable, CustomStringConvertible {
    case admit(String), cont, dispatch(String), error(Int), pause, resume, abort, shutdown, close, timer(UInt64)
    init(_ a: A) {
        switch a {
        case .admit(let h): self = .admit("\(h.method) \(h.target)")
        case .sendContinue: self = .cont
        case .dispatch(let b): self = .dispatch(String(decoding: b, as: UTF8.self))
        case .sendError(let s, _): self = .error(s)
        case .pauseReading: self = .pause
        case .resumeReading: self = .resume
        case .abortResponse: self = .abort
        case .shutdownWrite: self = .shutdown
        case .close: self = .close
        case .armTimer(let t): self = .timer(t)
        }
    }
    var description: String {
        switch self {
        case .admit(let s): return "admit(\(s))"
        case .dispatch(let s): return "dispatch(\(s))"
        case .error(let s): return "error(\(s))"
        case .timer(let t): return "timer(\(t))"
        case .cont: return "continue"
        case .pause: return "pause"
        case .resume: return "resume"
        case .abort: return "abort"
        case .shutdown: return "shutdown"
        case .close: return "close"
        }
    }
}

/// A machine plus a clock; `steps` pulls every action (timers left out unless asked).
struct Conn {
    var m: HTTPServerConnection
    var now: UInt64 = 1_000
    init(_ limits: ConnectionLimits = ConnectionLimits(), parser: HTTPLimits = HTTPLimits()) {
        m = HTTPServerConnection(limits: limits, parserLimits: parser, now: 1_000)
        _ = steps(timers: true)
    }
    mutating func send(_ s: String) { Array(s.utf8).withUnsafeBytes { m.received($0, now: now) } }
    mutating func send(_ b: [UInt8]) { b.withUnsafeBytes { m.received($0, now: now) } }
    mutating func steps(timers: Bool = false) -> [Step] {
        var out: [Step] = []
        while let a = m.nextAction() {
            let s = Step(a)
            if case .timer = s, !timers { continue }
            out.append(s)
        }
        return out
    }
    /// Answers the request in progress with `bytes` of output that the client takes at once.
    mutating func answer(closeWanted: Bool = false) -> Bool {
        let close = m.responseStarted(wantsClose: closeWanted, now: now)
        m.outputChanged(pending: 100, progressed: false, now: now)
        m.responseEnded(now: now)
        m.outputChanged(pending: 0, progressed: true, now: now)
        return close
    }
}

private let get = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"

@Suite struct ServerConnectionTests {
    @Test func aRequestIsAdmittedThenDispatchedWithItsBody() {
        var c = Conn()
        c.send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel")
        #expect(c.steps() == [.admit("POST /p")])
        c.m.admitted(bodyLimit: 100, now: c.now)
        #expect(c.steps() == [])                      // waits for the rest of the body
        c.send("lo")
        #expect(c.steps() == [.dispatch("hello")])
        #expect(c.answer() == false)
        #expect(c.m.request == .idle && c.m.response == .idle)
    }

    @Test func pipelinedRequestsAreDispatchedOneAtATimeInOrder() {
        var c = Conn()
        c.send(String(repeating: get, count: 3) + "GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(c.steps() == [.admit("GET /a")])
        c.m.admitted(bodyLimit: 0, now: c.now)
        #expect(c.steps() == [.dispatch("")])
        // Nothing more is parsed while the response is in progress.
        #expect(c.steps() == [])
        var admitted: [Step] = []
        for _ in 0..<3 {
            _ = c.answer()
            let s = c.steps()
            admitted.append(s.first!)
            c.m.admitted(bodyLimit: 0, now: c.now)
            #expect(c.steps() == [.dispatch("")])
        }
        #expect(admitted == [.admit("GET /a"), .admit("GET /a"), .admit("GET /b")])
        _ = c.answer()
        #expect(c.steps() == [])
    }

    @Test func aClientThatDoesNotReadStopsReadingAndDispatching() {
        var limits = ConnectionLimits()
        limits.writeHighWaterBytes = 1_000
        limits.writeLowWaterBytes = 200
        var c = Conn(limits)
        c.send(String(repeating: get, count: 10))
        var dispatched = 0
        var pending = 0
        while case .admit? = c.steps().first {
            c.m.admitted(bodyLimit: 0, now: c.now)
            _ = c.steps()
            dispatched += 1
            _ = c.m.responseStarted(wantsClose: false, now: c.now)
            pending += 400                              // the client takes none of it
            c.m.outputChanged(pending: pending, progressed: false, now: c.now)
            c.m.responseEnded(now: c.now)
        }
        #expect(dispatched == 3)                        // 1,200 bytes queued: over the mark
        #expect(!c.m.wantsRead)
        #expect(c.steps() == [])
        c.m.outputChanged(pending: 500, progressed: true, now: c.now)
        #expect(c.steps() == [])                        // still above the low-water mark
        c.m.outputChanged(pending: 100, progressed: true, now: c.now)
        #expect(c.steps() == [.resume, .admit("GET /a")])
    }

    @Test func aPausedReaderResumesAndPipelinedReadAheadIsBounded() {
        var limits = ConnectionLimits()
        limits.maxPipelinedBytes = 64
        var parser = HTTPLimits()
        parser.maxRequestLineBytes = 20
        parser.maxHeaderBytes = 20
        var c = Conn(limits, parser: parser)
        c.send(get)
        _ = c.steps()
        c.m.admitted(bodyLimit: 0, now: c.now)
        #expect(c.steps() == [.dispatch("")])
        c.send(String(repeating: get, count: 3))        // read ahead while the response runs
        #expect(c.steps() == [.pause])
        _ = c.answer()
        #expect(c.steps() == [.admit("GET /a")])
        c.m.admitted(bodyLimit: 0, now: c.now)
        #expect(c.steps() == [.resume, .dispatch("")])    // under the limit again
    }

    /// The driver pulls only so many requests per loop turn; meanwhile reading must stop at the
    /// read-ahead limit, not pile up whatever a fast pipeliner sends (the bug: 273 MB accepted).
    @Test func inputWaitingBetweenTurnsIsBounded() {
        var limits = ConnectionLimits()
        limits.maxPipelinedBytes = 64 * 1024
        var parser = HTTPLimits()
        parser.maxRequestLineBytes = 1_000
        parser.maxHeaderBytes = 4_000
        var c = Conn(limits, parser: parser)
        let batch = Array(String(repeating: get, count: 1_000).utf8)   // 28 KB
        c.send(batch)
        // The driver handles one request, then leaves the rest for its next turn.
        #expect(c.m.nextAction().map(Step.init) == .admit("GET /a"))
        c.m.admitted(bodyLimit: 0, now: c.now)
        #expect(c.m.nextAction().map(Step.init) == .dispatch(""))
        _ = c.answer()
        #expect(c.m.wantsRead)
        c.send(batch)
        c.send(batch)                                   // 84 KB waiting: past the read-ahead
        #expect(!c.m.wantsRead)
        var answered = 1
        while true {
            let s = c.steps()
            guard s.contains(where: { if case .admit = $0 { return true }; return false }) else { break }
            c.m.admitted(bodyLimit: 0, now: c.now)
            _ = c.steps()
            _ = c.answer()
            answered += 1
        }
        #expect(answered == 3_000)
        #expect(c.m.wantsRead)
    }

    @Test func aRefusalAtAdmissionNeverReadsTheBodyNorSendsContinue() {
        var c = Conn()
        c.send("POST /v1/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 20971520\r\n\r\n")
        #expect(c.steps() == [.admit("POST /v1/x")])
        // The application answers inside its admission call (a 401), then says so.
        #expect(c.m.responseStarted(wantsClose: false, now: c.now) == true)   // body unread: close
        c.m.refused(now: c.now)
        c.m.outputChanged(pending: 200, progressed: false, now: c.now)
        c.m.responseEnded(now: c.now)
        #expect(c.steps() == [.pause])
        c.send([UInt8](repeating: 65, count: 1 << 20))  // the body arrives anyway: not buffered
        #expect(c.m.bufferedInput == 0)
        c.m.outputChanged(pending: 0, progressed: true, now: c.now)
        #expect(c.steps() == [.shutdown, .resume])     // lingering close
        c.send([UInt8](repeating: 65, count: 1 << 20))
        #expect(c.m.bufferedInput == 0)
        c.m.peerClosed(now: c.now)
        #expect(c.steps() == [.close])
    }

    @Test func aRefusedRequestWhoseSmallBodyIsAlreadyHereKeepsTheConnection() {
        var c = Conn()
        c.send("POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody" + get)
        #expect(c.steps() == [.admit("POST /v1/x")])
        #expect(c.m.responseStarted(wantsClose: false, now: c.now) == false)
        c.m.refused(now: c.now)
        c.m.responseEnded(now: c.now)
        #expect(c.steps() == [.admit("GET /a")])
    }

    @Test func aRefusedRequestWithoutBodyKeepsTheConnection() {
        var c = Conn()
        c.send(get)
        _ = c.steps()
        c.m.refused(now: c.now)
        #expect(c.m.responseStarted(wantsClose: false, now: c.now) == false)
        c.m.responseEnded(now: c.now)
        #expect(c.m.request == .idle)
        #expect(c.steps() == [])
    }

    @Test func continueIsSentOnlyToAnAdmittedRequestThatAskedForIt() {
        var c = Conn()
        c.send("POST /p HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        _ = c.steps()
        c.m.admitted(bodyLimit: 10, now: c.now)
        #expect(c.steps() == [.cont])
        c.send("ok")
        #expect(c.steps() == [.dispatch("ok")])
        var d = Conn()
        d.send("POST /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        _ = d.steps()
        d.m.admitted(bodyLimit: 10, now: d.now)
        #expect(d.steps() == [])                     // HTTP/1.0: no interim answers
    }

    @Test func aDeclaredLengthOverTheRouteLimitIs413BeforeAnyBodyByte() {
        var c = Conn()
        c.send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
        _ = c.steps()
        c.m.admitted(bodyLimit: 10, now: c.now)
        #expect(c.steps() == [.abort, .error(413), .pause])
    }

    @Test func aChunkedBodyOverTheRouteLimitIs413() {
        var c = Conn()
        c.send("POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        _ = c.steps()
        c.m.admitted(bodyLimit: 10, now: c.now)
        c.send("6\r\nabcdef\r\n6\r\nghijkl\r\n")
        #expect(c.steps() == [.abort, .error(413), .pause])
        c.m.outputChanged(pending: 0, progressed: true, now: c.now)
        #expect(c.steps() == [.shutdown, .resume])
    }

    @Test func parserRefusalsAnswerThenLinger() {
        var parser = HTTPLimits()
        parser.maxHeaderBytes = 1_000
        var c = Conn(parser: parser)
        c.send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + String(repeating: "a", count: 2_000))
        #expect(c.steps() == [.error(431), .pause])
        c.m.outputChanged(pending: 300, progressed: false, now: c.now)
        c.m.outputChanged(pending: 0, progressed: true, now: c.now)
        #expect(c.steps() == [.shutdown, .resume])
        var d = Conn()
        d.send("GET / HTTP/1.1\r\nHost: x\r\nBad Field: y\r\n\r\n")
        #expect(d.steps() == [.error(400), .pause])
    }

    @Test func headerBodyIdleSendAndLingeringTimeouts() {
        var limits = ConnectionLimits()
        limits.headerTimeoutMillis = 100
        limits.bodyTimeoutMillis = 200
        limits.idleTimeoutMillis = 300
        limits.sendTimeoutMillis = 400
        limits.lingeringTimeoutMillis = 50
        limits.lingeringTimeMillis = 120

        // A new connection that sends nothing: a silent close at the header timeout.
        var a = Conn(limits)
        #expect(a.m.deadline == 1_100)
        a.m.timerFired(now: 1_099)
        #expect(a.steps() == [])
        a.m.timerFired(now: 1_100)
        #expect(a.steps() == [.close])

        // Part of a head: 408.
        var b = Conn(limits)
        b.now = 1_050
        b.send("GET / HT")
        #expect(b.m.deadline == 1_150)
        b.m.timerFired(now: 1_150)
        #expect(b.steps() == [.error(408), .pause])

        // A body that stops coming: the producer is told, then 408.
        var c = Conn(limits)
        c.send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nab")
        _ = c.steps()
        c.m.admitted(bodyLimit: 100, now: c.now)
        #expect(c.m.deadline == 1_200)
        c.m.timerFired(now: 1_200)
        #expect(c.steps() == [.abort, .error(408), .pause])

        // Idle after an answer: closed at the idle timeout.
        var d = Conn(limits)
        d.send(get)
        _ = d.steps()
        d.m.admitted(bodyLimit: 0, now: d.now)
        _ = d.steps()
        _ = d.answer()
        #expect(d.m.deadline == 1_300)
        d.m.timerFired(now: 1_300)
        #expect(d.steps() == [.close])

        // Output the client never takes: the response is abandoned at the send timeout.
        var e = Conn(limits)
        e.send(get)
        _ = e.steps()
        e.m.admitted(bodyLimit: 0, now: e.now)
        _ = e.steps()
        _ = e.m.responseStarted(wantsClose: false, now: e.now)
        e.m.outputChanged(pending: 50_000, progressed: false, now: e.now)
        #expect(e.m.deadline == 1_400)
        e.m.timerFired(now: 1_400)
        #expect(e.steps() == [.abort, .close])

        // Lingering: closed when the client goes quiet for the lingering timeout...
        var f = Conn(limits)
        f.send("GET /\u{1} HTTP/1.1\r\n\r\n")
        _ = f.steps()
        f.m.outputChanged(pending: 0, progressed: true, now: f.now)
        #expect(f.steps() == [.shutdown, .resume])
        f.now = 1_040
        f.send("more")
        #expect(f.m.deadline == 1_090)
        f.m.timerFired(now: 1_090)
        #expect(f.steps() == [.close])
        // ...and at the lingering time however much it keeps sending.
        var g = Conn(limits)
        g.send("GET /\u{1} HTTP/1.1\r\n\r\n")
        _ = g.steps()
        g.m.outputChanged(pending: 0, progressed: true, now: g.now)
        _ = g.steps()
        for t in stride(from: UInt64(1_030), through: 1_120, by: 30) { g.now = t; g.send("x") }
        #expect(g.m.deadline == 1_120)
        g.m.timerFired(now: 1_120)
        #expect(g.steps() == [.close])
    }

    @Test func lingeringStopsAfterTheByteLimit() {
        var limits = ConnectionLimits()
        limits.lingeringBytes = 1_000
        var c = Conn(limits)
        c.send("BAD\r\n\r\n")
        _ = c.steps()
        c.m.outputChanged(pending: 0, progressed: true, now: c.now)
        #expect(c.steps() == [.shutdown, .resume])
        c.send([UInt8](repeating: 0, count: 900))
        #expect(c.steps() == [])
        c.send([UInt8](repeating: 0, count: 200))
        #expect(c.steps() == [.close])
    }

    @Test func aCloseAfterAWholeRequestNeedsNoLingering() {
        var c = Conn()
        c.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        _ = c.steps()
        c.m.admitted(bodyLimit: 0, now: c.now)
        _ = c.steps()
        #expect(c.answer(closeWanted: true) == true)
        #expect(c.steps() == [.pause, .close])
    }

    @Test func theClientLeavingAbortsTheResponseInProgress() {
        var c = Conn()
        c.send(get)
        _ = c.steps()
        c.m.admitted(bodyLimit: 0, now: c.now)
        _ = c.steps()
        _ = c.m.responseStarted(wantsClose: false, now: c.now)
        c.m.peerClosed(now: c.now)
        #expect(c.steps() == [.abort, .close])
        var idle = Conn()
        idle.m.peerClosed(now: idle.now)
        #expect(idle.steps() == [.close])
    }

    @Test func drainingClosesIdleConnectionsAndEndsBusyOnesAfterTheirAnswer() {
        var idle = Conn()
        idle.m.beginDrain(now: idle.now)
        #expect(idle.steps() == [.close])
        var busy = Conn()
        busy.send(get)
        _ = busy.steps()
        busy.m.admitted(bodyLimit: 0, now: busy.now)
        _ = busy.steps()
        busy.m.beginDrain(now: busy.now)
        #expect(busy.answer() == true)
        #expect(busy.steps() == [.pause, .close])
    }

    @Test func anEarlyAnswerDuringTheBodyDiscardsItAndEndsTheConnection() {
        var c = Conn()
        c.send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
        _ = c.steps()
        c.m.admitted(bodyLimit: 10_000, now: c.now)
        #expect(c.steps() == [])
        #expect(c.m.responseStarted(wantsClose: false, now: c.now) == true)
        #expect(c.m.request == .discarding)
        c.send([UInt8](repeating: 1, count: 500))
        #expect(c.m.bufferedInput == 0)
        c.m.responseEnded(now: c.now)
        #expect(c.steps() == [.shutdown])
    }

    @Test func aHundredThousandPipelinedRequestsRunIteratively() {
        // The bug this replaces: each instant answer dispatched the next request from inside its
        // own call chain, and a long enough pipeline overflowed the stack.
        var c = Conn()
        let n = 100_000
        let batch = Array(String(repeating: get, count: 1_000).utf8)
        var answered = 0
        for _ in 0..<(n / 1_000) {
            c.send(batch)
            while case .admit? = c.steps().first {
                c.m.admitted(bodyLimit: 0, now: c.now)
                _ = c.steps()
                _ = c.answer()
                answered += 1
            }
        }
        #expect(answered == n)
        #expect(c.m.bufferedInput == 0)
    }
}
