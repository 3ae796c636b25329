/// Incremental, strict HTTP/1.1 response parser (RFC 9112), the twin of `HTTPRequestParser`.
/// Sans-I/O: bytes in, events out; it never allocates once warm (the field list keeps its capacity).
///
/// Like picohttpparser, the head is not copied: a `.head` event carries the status and framing,
/// and `fieldSpans` gives each field's name and value as ranges of the buffer passed with that
/// event (valid until the caller drops those bytes). `fields(in:)` makes Strings when wanted.
///
/// Head: nothing is consumed until the whole head (through the empty line) is present; the scan
/// resumes where it stopped (complete lines only), so a head fed one byte at a time costs O(n).
/// This relies on the contract that unconsumed bytes are offered again unchanged, followed by new
/// ones. Every limit is checked on partial input too, so a slow upstream can't make us buffer.
///
/// Decisions on cases the RFCs leave open (each one is a row in the tests):
/// - Status line: `HTTP/1.0` or `HTTP/1.1` only (HTTP/2 or 0.9 over this framing, 1.2+ → error);
///   exactly one SP, a three-digit code in 100...599, then `SP reason` or nothing at all
///   (`HTTP/1.1 200` is accepted, as nginx and curl do). The reason may hold SP, HTAB, VCHAR and
///   obs-text; other controls → error. It is ignored.
/// - Interim responses (1xx except 101) are consumed and skipped without an event, at most
///   `maxInterimResponses` in a row; their fields are discarded. 101 is an error: Veil never asks
///   to switch protocols.
/// - No body for a response to HEAD, for 1xx, 204 and 304, whatever Content-Length or
///   Transfer-Encoding say (they are still syntax-checked).
/// - Content-Length: 1*DIGIT (leading zeros are decimal), at most 18 digits. Repeated identical
///   values (several fields or a list `5, 5`) count as one; differing values, empty members,
///   signs or anything else → error.
/// - Transfer-Encoding: only `chunked` (case-insensitive, OWS trimmed), once. Any other coding
///   (`gzip, chunked`, `identity`) → error: Veil never decodes transfer codings, and passing
///   encoded bytes on as the body would corrupt it. In an HTTP/1.0 response → error. Together
///   with Content-Length → error (RFC 9112 §6.3 calls it a smuggling sign; nginx refuses too).
/// - Neither: the body runs until the upstream closes (`untilClose`); such a connection is never
///   reused.
/// - obs-fold (a field line starting with SP/HTAB) → error, the 502 of RFC 9112 §5.2's two
///   options for a gateway. Whitespace between a field name and its colon → error.
/// - Bare CR or bare LF anywhere in a head, chunk line or trailer → error. Bytes before the status
///   line (even CRLF) → error.
/// - Field values: controls other than HTAB, and DEL → error; obs-text kept; OWS trimmed.
/// - Chunked: size in hex, at most 15 digits; extensions syntax-checked (token names, token or
///   quoted values) and ignored; trailer fields syntax-checked and discarded (≤ `maxTrailerBytes`).
/// - Keep-alive: HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`;
///   never for `untilClose`.
/// - End of input (`endOfInput`): ends a close-delimited body; before any byte of a response it is
///   a clean close (nil); anywhere else (head, fixed or chunked body cut short) → error.
///
/// Errors are `HTTPError` with status 502 (what a gateway answers for a bad upstream response);
/// after one the connection must be closed.
public struct HTTPResponseParser: Sendable {
    public let limits: HTTPResponseLimits
    /// The request this response answers was a HEAD: the response has no body.
    public private(set) var requestIsHEAD: Bool

    private enum State: Sendable {
        case head
        case endPending
        case fixed(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case untilClose
    }

    private enum HeadStage: Sendable { case statusLine, fields }

    private var state: State = .head

    // Head scan progress, relative to the start of the current head.
    private var stage: HeadStage = .statusLine
    private var scanPos = 0
    private var status = 0
    private var versionMinor = 1
    private var spans: [HTTPFieldSpan] = []
    private var contentLength: Int? = nil
    private var teSeen = false
    private var teChunked = false
    private var connectionClose = false
    private var connectionKeepAlive = false
    private var interimSkipped = 0

    // Body progress.
    private var trailerBytes = 0

    public init(limits: HTTPResponseLimits = HTTPResponseLimits(), requestIsHEAD: Bool = false) {
        self.limits = limits
        self.requestIsHEAD = requestIsHEAD
    }

    /// The fields of the head just returned, as ranges of the buffer passed with that `.head`
    /// event. Valid until the next call to `next`.
    public var fieldSpans: [HTTPFieldSpan] { spans }

    /// Interim (1xx) responses skipped before the current one.
    public var interimResponsesSkipped: Int { interimSkipped }

    /// Whether the parser is between responses with nothing of the next one seen yet.
    public var isIdle: Bool {
        if case .head = state, stage == .statusLine, scanPos == 0, interimSkipped == 0 { return true }
        return false
    }

    /// Makes the parser ready for the response to a new request (after `.end`, or a fresh one).
    public mutating func reset(requestIsHEAD: Bool) {
        self.requestIsHEAD = requestIsHEAD
        resetForNextResponse()
        interimSkipped = 0
    }

    /// Parses from the start of `input` (the connection's unconsumed bytes). Returns how many
    /// bytes were consumed (the caller drops them) and the event found, or nil when more bytes
    /// are needed. Unconsumed bytes must be offered again, followed by what arrives next. After
    /// `.end` the parser expects the next response (to a request of the same kind).
    /// Throws only `HTTPError` (status 502); the connection must then be closed.
    public mutating func next(_ input: UnsafeRawBufferPointer) throws -> (consumed: Int, event: HTTPResponseEvent?) {
        var offset = 0
        let n = input.count
        while true {
            switch state {
            case .head:
                guard let length = try parseHead(input, base: offset) else { return (offset, nil) }
                if status < 200 {
                    // Interim: skipped in this same call (the final head may already be here).
                    offset += length
                    interimSkipped += 1
                    if interimSkipped > limits.maxInterimResponses { throw HTTPError(502, "too many interim responses") }
                    resetForNextResponse()
                    continue
                }
                let start = finishHead()
                if offset > 0 {
                    for i in spans.indices {
                        spans[i].name = (spans[i].name.lowerBound + offset)..<(spans[i].name.upperBound + offset)
                        spans[i].value = (spans[i].value.lowerBound + offset)..<(spans[i].value.upperBound + offset)
                    }
                }
                return (offset + length, .head(start))

            case .endPending:
                resetForNextResponse()
                interimSkipped = 0
                return (offset, .end)

            case .fixed(let remaining):
                let avail = n - offset
                if avail == 0 { return (offset, nil) }
                let take = min(avail, remaining)
                state = remaining == take ? .endPending : .fixed(remaining: remaining - take)
                return (offset + take, .body(offset..<(offset + take)))

            case .untilClose:
                let avail = n - offset
                if avail == 0 { return (offset, nil) }
                return (n, .body(offset..<n))

            case .chunkSize:
                guard let used = try parseChunkLine(input, from: offset) else { return (offset, nil) }
                offset += used

            case .chunkData(let remaining):
                let avail = n - offset
                if avail == 0 { return (offset, nil) }
                let take = min(avail, remaining)
                state = remaining == take ? .chunkDataEnd : .chunkData(remaining: remaining - take)
                return (offset + take, .body(offset..<(offset + take)))

            case .chunkDataEnd:
                let avail = n - offset
                if avail == 0 { return (offset, nil) }
                if input[offset] != cr { throw HTTPError(502, "chunk data not followed by CRLF") }
                if avail == 1 { return (offset, nil) }
                if input[offset + 1] != lf { throw HTTPError(502, "chunk data not followed by CRLF") }
                offset += 2
                state = .chunkSize

            case .trailers:
                guard let (used, done) = try parseTrailerLine(input, from: offset) else { return (offset, nil) }
                offset += used
                if done {
                    resetForNextResponse()
                    interimSkipped = 0
                    return (offset, .end)
                }
            }
        }
    }

    /// The upstream closed its side. Call after `next` has taken every event from the bytes
    /// buffered; `unconsumed` is how many it left. Returns `.end` for a close-delimited body, nil
    /// when nothing of a response had arrived (a clean close between responses); throws when a
    /// response was cut short.
    public mutating func endOfInput(unconsumed: Int) throws -> HTTPResponseEvent? {
        switch state {
        case .untilClose:
            resetForNextResponse()
            interimSkipped = 0
            return .end
        case .head:
            if unconsumed == 0 && stage == .statusLine && scanPos == 0 && interimSkipped == 0 { return nil }
            throw HTTPError(502, "upstream closed the connection in the response head")
        case .endPending:
            // Only reachable if the caller stopped before taking `.end`.
            resetForNextResponse()
            interimSkipped = 0
            return .end
        default:
            throw HTTPError(502, "upstream closed the connection before the end of the response body")
        }
    }

    /// The head's fields as Strings (tests, tools; the client builds its own from the spans).
    public func fields(in input: UnsafeRawBufferPointer) -> [HTTPField] {
        spans.map { HTTPField(name: makeString(input, $0.name.lowerBound, $0.name.upperBound),
                              value: makeString(input, $0.value.lowerBound, $0.value.upperBound)) }
    }

    // MARK: - Reset

    private mutating func resetForNextResponse() {
        state = .head
        stage = .statusLine
        scanPos = 0
        status = 0
        versionMinor = 1
        contentLength = nil
        teSeen = false
        teChunked = false
        connectionClose = false
        connectionKeepAlive = false
        trailerBytes = 0
    }

    // MARK: - Head

    /// The length of the head starting at `base` once it is complete, nil when more bytes are
    /// needed. Field spans are recorded relative to `base`.
    private mutating func parseHead(_ b: UnsafeRawBufferPointer, base: Int) throws -> Int? {
        let n = b.count
        if stage == .statusLine {
            // The status line is short (≤ maxStatusLineBytes): rescanned until complete.
            spans.removeAll(keepingCapacity: true)
            guard let p = try lineEnd(b, from: base, origin: base, budget: limits.maxStatusLineBytes, crlfCounts: false,
                                      tooLong: "status line too long", what: "status line") else { return nil }
            try parseStatusLine(b, base, p)
            scanPos = p + 2 - base
            stage = .fields
        }
        let maxBytes = limits.maxHeaderBytes
        let headerStart = base + statusLineLength
        while true {
            let ls = base + scanPos
            if ls == n { return nil }
            let first = b[ls]
            if first == cr {
                if ls + 1 == n { return nil }
                if b[ls + 1] != lf { throw HTTPError(502, "bare CR in response header section") }
                try checkFraming()
                return ls + 2 - base
            }
            if first == lf { throw HTTPError(502, "bare LF in response header section") }
            if first == sp || first == htab { throw HTTPError(502, "obsolete line folding in response") }
            guard let p = try lineEnd(b, from: ls, origin: headerStart, budget: maxBytes, crlfCounts: true,
                                      tooLong: "response header section too large",
                                      what: "response header section") else { return nil }
            if status >= 200 && spans.count >= limits.maxHeaderCount { throw HTTPError(502, "too many response header fields") }
            try parseFieldLine(b, ls, p, base: base)
            scanPos = p + 2 - base
        }
    }

    /// Length of the status line with its CRLF (the field lines start after it).
    private var statusLineLength = 0

    private mutating func parseStatusLine(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) throws {
        // HTTP-version SP 3DIGIT [ SP reason-phrase ]
        let len = e - s
        guard len >= 12, b[s] == 0x48, b[s + 1] == 0x54, b[s + 2] == 0x54, b[s + 3] == 0x50, b[s + 4] == slash,
              b[s + 5] == 0x31, b[s + 6] == dot, b[s + 8] == sp else {
            throw HTTPError(502, "malformed status line")
        }
        switch b[s + 7] {
        case 0x30: versionMinor = 0
        case 0x31: versionMinor = 1
        default: throw HTTPError(502, "unsupported HTTP version in status line")
        }
        let d0 = b[s + 9], d1 = b[s + 10], d2 = b[s + 11]
        guard isDigit(d0), isDigit(d1), isDigit(d2) else { throw HTTPError(502, "malformed status code") }
        let code = Int(d0 &- 0x30) * 100 + Int(d1 &- 0x30) * 10 + Int(d2 &- 0x30)
        guard code >= 100 && code <= 599 else { throw HTTPError(502, "status code out of range") }
        if code == 101 { throw HTTPError(502, "unexpected 101 Switching Protocols") }
        if len > 12 {
            if b[s + 12] != sp { throw HTTPError(502, "malformed status code") }
            for i in (s + 13)..<e {
                let c = b[i]
                if c < 0x20 && c != htab || c == 0x7F { throw HTTPError(502, "invalid character in reason phrase") }
            }
        }
        status = code
        statusLineLength = len + 2
    }

    private mutating func parseFieldLine(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int, base: Int) throws {
        var p = s
        while p < e, isTchar(b[p]) { p += 1 }
        if p == e || b[p] != colon {
            throw HTTPError(502, p == e ? "response header field without colon" : "invalid response header field name")
        }
        if p == s { throw HTTPError(502, "empty response header field name") }
        let nameEnd = p
        p += 1
        for i in p..<e {
            let c = b[i]
            if c < 0x20 && c != htab || c == 0x7F { throw HTTPError(502, "invalid character in response header value") }
        }
        var vs = p, ve = e
        while vs < ve, b[vs] == sp || b[vs] == htab { vs += 1 }
        while ve > vs, b[ve - 1] == sp || b[ve - 1] == htab { ve -= 1 }

        let nameLen = nameEnd - s
        if nameLen == 14 && lowerEquals(b, s, "content-length") {
            try noteContentLength(b, vs, ve)
        } else if nameLen == 17 && lowerEquals(b, s, "transfer-encoding") {
            try noteTransferEncoding(b, vs, ve)
        } else if nameLen == 10 && lowerEquals(b, s, "connection") {
            noteConnection(b, vs, ve)
        }
        if status >= 200 {   // interim fields are discarded
            spans.append(HTTPFieldSpan(name: (s - base)..<(nameEnd - base), value: (vs - base)..<(ve - base)))
        }
    }

    private mutating func noteContentLength(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) throws {
        var p = s
        while true {
            while p < e, b[p] == sp || b[p] == htab { p += 1 }
            let ds = p
            var value = 0
            while p < e, isDigit(b[p]) {
                if p - ds >= 18 { throw HTTPError(502, "response Content-Length too large") }
                value = value * 10 + Int(b[p] &- 0x30)
                p += 1
            }
            if p == ds { throw HTTPError(502, "invalid response Content-Length") }
            while p < e, b[p] == sp || b[p] == htab { p += 1 }
            if let cl = contentLength, cl != value { throw HTTPError(502, "conflicting response Content-Length values") }
            contentLength = value
            if p == e { return }
            if b[p] != comma { throw HTTPError(502, "invalid response Content-Length") }
            p += 1
        }
    }

    private mutating func noteTransferEncoding(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) throws {
        var p = s
        while true {
            while p < e, b[p] == sp || b[p] == htab { p += 1 }
            let ts = p
            while p < e, isTchar(b[p]) { p += 1 }
            let te = p
            if te == ts { throw HTTPError(502, "invalid response Transfer-Encoding") }
            while p < e, b[p] == sp || b[p] == htab { p += 1 }
            if p < e && b[p] != comma { throw HTTPError(502, "invalid response Transfer-Encoding") }
            guard te - ts == 7 && lowerEquals(b, ts, "chunked") else {
                throw HTTPError(502, "response transfer coding not supported")
            }
            if teChunked { throw HTTPError(502, "chunked applied more than once") }
            teChunked = true
            teSeen = true
            if p == e { return }
            p += 1
        }
    }

    /// `Connection` tokens: only `close` and `keep-alive` matter here; others are ignored.
    private mutating func noteConnection(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) {
        var p = s
        while p < e {
            while p < e, b[p] == sp || b[p] == htab || b[p] == comma { p += 1 }
            let ts = p
            while p < e, b[p] != comma { p += 1 }
            var te = p
            while te > ts, b[te - 1] == sp || b[te - 1] == htab { te -= 1 }
            if te - ts == 5 && lowerEquals(b, ts, "close") { connectionClose = true }
            if te - ts == 10 && lowerEquals(b, ts, "keep-alive") { connectionKeepAlive = true }
        }
    }

    /// Conflicts between framing fields, checked once the whole head is present.
    private func checkFraming() throws {
        guard teSeen else { return }
        if contentLength != nil { throw HTTPError(502, "response has both Content-Length and Transfer-Encoding") }
        if versionMinor == 0 { throw HTTPError(502, "Transfer-Encoding in an HTTP/1.0 response") }
    }

    /// Sets up the body state once the whole final head is present (framing already checked).
    private mutating func finishHead() -> HTTPResponseStart {
        let noBody = requestIsHEAD || status == 204 || status == 304
        var framing: HTTPResponseFraming
        if noBody {
            framing = .none
        } else if teChunked {
            framing = .chunked
        } else if let cl = contentLength {
            framing = cl == 0 ? .none : .length(cl)
        } else {
            framing = .untilClose
        }
        var keepAlive = versionMinor >= 1 ? !connectionClose : (connectionKeepAlive && !connectionClose)
        if case .untilClose = framing { keepAlive = false }
        switch framing {
        case .none: state = .endPending
        case .length(let n): state = .fixed(remaining: n)
        case .chunked: state = .chunkSize
        case .untilClose: state = .untilClose
        }
        stage = .statusLine
        scanPos = 0
        return HTTPResponseStart(status: status, versionMinor: versionMinor, framing: framing, keepAlive: keepAlive,
                                 contentLength: noBody ? nil : contentLength)
    }

    /// Finds the CRLF ending the line that starts at `s`; see `HTTPRequestParser.lineEnd`.
    @inline(__always)
    private func lineEnd(_ b: UnsafeRawBufferPointer, from s: Int, origin: Int, budget: Int, crlfCounts: Bool,
                         tooLong: StaticString, what: StaticString) throws -> Int? {
        let n = b.count
        let scanEnd = min(n, origin + budget + 1)
        var p = s
        while p < scanEnd {
            let c = b[p]
            if c == cr || c == lf { break }
            p += 1
        }
        if p >= scanEnd {
            if p - origin > budget { throw HTTPError(502, "\(tooLong)") }
            return nil
        }
        if b[p] == lf { throw HTTPError(502, "bare LF in \(what)") }
        if p + (crlfCounts ? 2 : 0) - origin > budget { throw HTTPError(502, "\(tooLong)") }
        if p + 1 == n { return nil }
        if b[p + 1] != lf { throw HTTPError(502, "bare CR in \(what)") }
        return p
    }

    // MARK: - Chunked body

    private mutating func parseChunkLine(_ b: UnsafeRawBufferPointer, from s: Int) throws -> Int? {
        guard let e = try lineEnd(b, from: s, origin: s, budget: limits.maxChunkLineBytes, crlfCounts: false,
                                  tooLong: "chunk size line too long", what: "chunk size line") else { return nil }
        var q = s
        var size = 0
        while q < e, let d = hexValue(b[q]) {
            if q - s >= 15 { throw HTTPError(502, "chunk size too large") }
            size = size << 4 | Int(d)
            q += 1
        }
        if q == s { throw HTTPError(502, "invalid chunk size") }
        try validateChunkExtensions(b, q, e)
        state = size == 0 ? .trailers : .chunkData(remaining: size)
        return e + 2 - s
    }

    /// chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ), ext-val = token / quoted-string.
    private func validateChunkExtensions(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) throws {
        let bad = HTTPError(502, "invalid chunk extension")
        var p = s
        @inline(__always) func skipBWS() { while p < e, b[p] == sp || b[p] == htab { p += 1 } }
        while true {
            if p == e { return }
            skipBWS()
            if p == e || b[p] != semicolon { throw bad }
            p += 1
            skipBWS()
            let ns = p
            while p < e, isTchar(b[p]) { p += 1 }
            if p == ns { throw bad }
            skipBWS()
            if p < e && b[p] == equals {
                p += 1
                skipBWS()
                if p == e { throw bad }
                if b[p] == dquote {
                    p += 1
                    var closed = false
                    while p < e {
                        let c = b[p]
                        if c == dquote { closed = true; p += 1; break }
                        if c == backslash {
                            p += 1
                            if p == e { throw bad }
                            let q = b[p]
                            if !(q == htab || q == sp || (q >= 0x21 && q != 0x7F)) { throw bad }
                        } else if !(c == htab || c == sp || (c >= 0x21 && c != 0x7F)) {
                            throw bad
                        }
                        p += 1
                    }
                    if !closed { throw bad }
                } else {
                    let vs = p
                    while p < e, isTchar(b[p]) { p += 1 }
                    if p == vs { throw bad }
                }
            }
        }
    }

    /// One trailer field line, or the final empty line (done = true). Nil if incomplete.
    private mutating func parseTrailerLine(_ b: UnsafeRawBufferPointer, from s: Int) throws -> (Int, Bool)? {
        let n = b.count
        if s == n { return nil }
        let first = b[s]
        if first == cr {
            if s + 1 == n { return nil }
            if b[s + 1] != lf { throw HTTPError(502, "bare CR in trailer section") }
            return (2, true)
        }
        if first == lf { throw HTTPError(502, "bare LF in trailer section") }
        if first == sp || first == htab { throw HTTPError(502, "obsolete line folding in trailer") }
        guard let p = try lineEnd(b, from: s, origin: s, budget: limits.maxTrailerBytes - trailerBytes, crlfCounts: true,
                                  tooLong: "trailer section too large", what: "trailer section") else { return nil }
        var q = s
        while q < p, isTchar(b[q]) { q += 1 }
        if q == s || q == p || b[q] != colon { throw HTTPError(502, "invalid trailer field") }
        for i in (q + 1)..<p {
            let c = b[i]
            if c < 0x20 && c != htab || c == 0x7F { throw HTTPError(502, "invalid character in trailer value") }
        }
        trailerBytes += p + 2 - s
        return (p + 2 - s, false)
    }
}

/// A field of a parsed head as ranges of the buffer it was parsed from (no copy).
public struct HTTPFieldSpan: Sendable, Equatable {
    public var name: Range<Int>
    public var value: Range<Int>
    public init(name: Range<Int>, value: Range<Int>) { self.name = name; self.value = value }
}

/// How a response's body is delimited (RFC 9112 §6.3).
public enum HTTPResponseFraming: Sendable, Equatable {
    /// No body (HEAD, 204, 304, or Content-Length: 0).
    case none
    case length(Int)
    case chunked
    /// Until the upstream closes the connection.
    case untilClose
}

/// The final status line of a response and what its fields decide.
public struct HTTPResponseStart: Sendable, Equatable {
    public var status: Int
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var versionMinor: Int
    public var framing: HTTPResponseFraming
    /// The connection may carry the next request once this response has ended.
    public var keepAlive: Bool
    /// The declared body length (nil without one, or when the response has no body).
    public var contentLength: Int?
    public init(status: Int, versionMinor: Int, framing: HTTPResponseFraming, keepAlive: Bool, contentLength: Int?) {
        self.status = status; self.versionMinor = versionMinor; self.framing = framing
        self.keepAlive = keepAlive; self.contentLength = contentLength
    }
}

/// What the response parser found in the bytes it was given.
public enum HTTPResponseEvent: Sendable, Equatable {
    /// The final (non-1xx) head; its fields are the parser's `fieldSpans`.
    case head(HTTPResponseStart)
    /// Body bytes: a range of the buffer passed to `next(_:)` (already de-chunked).
    case body(Range<Int>)
    /// The response, body included, is complete.
    case end
}

/// Limits the response parser enforces; each has a default sized for API responses.
public struct HTTPResponseLimits: Sendable, Equatable {
    /// Longest status line, CRLF excluded.
    public var maxStatusLineBytes: Int = 1024
    /// Largest header section (all field lines, CRLFs included), per response.
    public var maxHeaderBytes: Int = 64 * 1024
    /// Most header fields per response.
    public var maxHeaderCount: Int = 128
    /// Longest chunk-size line, extensions included.
    public var maxChunkLineBytes: Int = 1024
    /// Largest trailer section.
    public var maxTrailerBytes: Int = 8 * 1024
    /// Most interim (1xx) responses before the final one.
    public var maxInterimResponses: Int = 8
    public init() {}
}
