/// Incremental, strict HTTP/1.1 request parser (RFC 9112). Sans-I/O: bytes in, events out.
///
/// Works on the raw bytes; Strings are created once per head (method, target, field names/values).
///
/// Head: nothing is consumed until the whole head (through the empty line) is present. The parser
/// remembers how far it has already validated (complete lines only), so feeding a head one byte at
/// a time costs O(n), not O(n²); this relies on the contract that unconsumed bytes are offered again
/// unchanged, followed by new ones. Limits are checked on partial input as well.
///
/// Decisions on cases the RFCs leave open (all documented in the tests):
/// - Content-Length: 1*DIGIT, leading zeros accepted as decimal (`005` is 5); at most 18 digits.
///   Repeated identical values (in several fields or as a list `5, 5`) are accepted as one;
///   differing values, empty list members, signs, hex, inner spaces → 400.
/// - Transfer-Encoding: comma-separated tokens, case-insensitive, OWS trimmed. Empty members or
///   parameters → 400; `chunked` more than once → 400; final coding not `chunked` → 400; any other
///   coding before a final `chunked` (e.g. `gzip, chunked`) → 501. With Content-Length → 400; in
///   HTTP/1.0 → 400.
/// - Up to 4 empty lines (CRLF) before the request line are skipped; more → 400.
/// - Bare LF and bare CR anywhere in the head, chunk lines or trailers → 400.
/// - absolute-form targets (`http://` / `https://` only) are reduced to origin-form and the Host
///   field is replaced by the target's authority (RFC 9112 §3.2.2); userinfo (`@`) → 400.
/// - Field values keep obs-text bytes; they are decoded as UTF-8 (invalid sequences become U+FFFD).
public struct HTTPRequestParser: Sendable {
    public let limits: HTTPLimits

    private enum State: Sendable {
        case head
        case endPending
        case fixed(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
    }

    private enum HeadStage: Sendable { case leading, requestLine, fields }

    private var state: State = .head

    /// How the body of the request whose head was just returned is framed. Valid from the `.head`
    /// event until that request's `.end`: the connection decides admission (declared length against
    /// a route's limit) before reading a byte of it.
    public enum BodyFraming: Sendable, Equatable {
        case none
        case length(Int)
        case chunked
    }
    public private(set) var bodyFraming: BodyFraming = .none

    // Head scan progress (offsets relative to the start of the input offered).
    private var stage: HeadStage = .leading
    private var scanPos = 0
    private var leadingEmptyLines = 0
    private var headerStart = 0
    private var method = ""
    private var target = ""
    private var absoluteAuthority: String? = nil
    private var versionMinor = 1
    private var fields: [HTTPField] = []
    private var hostCount = 0
    private var contentLength: Int? = nil
    private var teSeen = false
    private var teChunkedCount = 0
    private var teLastIsChunked = false
    private var teHasOther = false

    // Body progress.
    private var bodyTotal = 0
    private var trailerBytes = 0

    public init(limits: HTTPLimits = HTTPLimits()) { self.limits = limits }

    /// Parses from the start of `input` (the connection's unconsumed bytes).
    /// Returns how many bytes of `input` were consumed (the caller drops them) and the event found,
    /// or a nil event when more bytes are needed. Bytes not consumed must be offered again, followed
    /// by whatever arrives next. After `.end` the parser is ready for the next request.
    /// Throws only `HTTPError` (status + message); the connection must then be closed.
    /// (Untyped `throws`: Swift 6.3 crashes lowering typed throws through `withUnsafeBytes`.)
    public mutating func next(_ input: UnsafeRawBufferPointer) throws -> (consumed: Int, event: HTTPParserEvent?) {
        var offset = 0
        let n = input.count
        while true {
            switch state {
            case .head:
                guard let (length, head) = try parseHead(input) else { return (0, nil) }
                return (length, .head(head))

            case .endPending:
                resetForNextRequest()
                return (offset, .end)

            case .fixed(let remaining):
                let avail = n - offset
                if avail == 0 { return (offset, nil) }
                let take = min(avail, remaining)
                state = remaining == take ? .endPending : .fixed(remaining: remaining - take)
                return (offset + take, .body(offset..<(offset + take)))

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
                if input[offset] != cr { throw HTTPError(400, "chunk data not followed by CRLF") }
                if avail == 1 { return (offset, nil) }
                if input[offset + 1] != lf { throw HTTPError(400, "chunk data not followed by CRLF") }
                offset += 2
                state = .chunkSize

            case .trailers:
                // Consumed line by line; the section is discarded.
                guard let (used, done) = try parseTrailerLine(input, from: offset) else { return (offset, nil) }
                offset += used
                if done {
                    resetForNextRequest()
                    return (offset, .end)
                }
            }
        }
    }

    // MARK: - Reset

    private mutating func resetForNextRequest() {
        state = .head
        stage = .leading
        scanPos = 0
        leadingEmptyLines = 0
        headerStart = 0
        method = ""
        target = ""
        absoluteAuthority = nil
        versionMinor = 1
        fields = []
        hostCount = 0
        contentLength = nil
        teSeen = false
        teChunkedCount = 0
        teLastIsChunked = false
        teHasOther = false
        bodyTotal = 0
        trailerBytes = 0
        bodyFraming = .none
    }

    // MARK: - Head

    /// Returns the head length and the head once complete, nil when more bytes are needed.
    private mutating func parseHead(_ b: UnsafeRawBufferPointer) throws -> (Int, HTTPRequestHead)? {
        let n = b.count
        if stage == .leading {
            while true {
                let p = scanPos
                if p == n { return nil }
                let c = b[p]
                if c == cr {
                    if p + 1 == n { return nil }
                    if b[p + 1] != lf { throw HTTPError(400, "bare CR in request") }
                    leadingEmptyLines += 1
                    if leadingEmptyLines > 4 { throw HTTPError(400, "too many empty lines before request line") }
                    scanPos = p + 2
                } else if c == lf {
                    throw HTTPError(400, "bare LF in request")
                } else {
                    stage = .requestLine
                    break
                }
            }
        }

        if stage == .requestLine {
            let start = scanPos
            guard let p = try lineEnd(b, from: start, origin: start, budget: limits.maxRequestLineBytes, crlfCounts: false,
                                      tooLong: HTTPError(414, "request line too long"), what: "request line") else { return nil }
            try parseRequestLine(b, start, p)
            scanPos = p + 2
            headerStart = scanPos
            stage = .fields
        }

        // Field lines.
        let maxBytes = limits.maxHeaderBytes
        while true {
            let ls = scanPos
            if ls == n { return nil }
            let first = b[ls]
            if first == cr {
                if ls + 1 == n { return nil }
                if b[ls + 1] != lf { throw HTTPError(400, "bare CR in header section") }
                let length = ls + 2
                let head = try finishHead()
                return (length, head)
            }
            if first == lf { throw HTTPError(400, "bare LF in header section") }
            if first == sp || first == htab { throw HTTPError(400, "obsolete line folding") }
            // The end of this line, bounded by the header byte limit.
            guard let p = try lineEnd(b, from: ls, origin: headerStart, budget: maxBytes, crlfCounts: true,
                                      tooLong: HTTPError(431, "header section too large"), what: "header section") else { return nil }
            if fields.count >= limits.maxHeaderCount { throw HTTPError(431, "too many header fields") }
            try parseFieldLine(b, ls, p)
            scanPos = p + 2
        }
    }

    private mutating func parseRequestLine(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws {
        // method SP request-target SP HTTP-version
        var p = start
        while p < end, isTchar(b[p]) { p += 1 }
        if p == start || p == end || b[p] != sp { throw HTTPError(400, "invalid request method") }
        let methodEnd = p
        p += 1
        let targetStart = p
        while p < end, b[p] >= 0x21 && b[p] <= 0x7E { p += 1 }
        if p == targetStart || p == end || b[p] != sp { throw HTTPError(400, "invalid request target") }
        let targetEnd = p
        p += 1
        versionMinor = try parseVersion(b, p, end)

        method = makeString(b, start, methodEnd)
        if method == "CONNECT" { throw HTTPError(405, "CONNECT not supported") }
        let t0 = b[targetStart]
        if t0 == slash {
            target = makeString(b, targetStart, targetEnd)
        } else if t0 == star && targetEnd - targetStart == 1 {
            if method != "OPTIONS" { throw HTTPError(400, "asterisk-form target only with OPTIONS") }
            target = "*"
        } else {
            try reduceAbsoluteForm(b, targetStart, targetEnd)
        }
    }

    private func parseVersion(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) throws -> Int {
        let len = e - s
        guard len >= 6, b[s] == 0x48, b[s + 1] == 0x54, b[s + 2] == 0x54, b[s + 3] == 0x50, b[s + 4] == slash,
              isDigit(b[s + 5]) else { throw HTTPError(400, "malformed HTTP version") }
        let major = b[s + 5] &- 0x30
        if len == 6 {
            // `HTTP/2`, `HTTP/3`: real protocols we do not speak over this framing.
            if major >= 2 { throw HTTPError(505, "HTTP version not supported") }
            throw HTTPError(400, "malformed HTTP version")
        }
        guard len == 8, b[s + 6] == dot, isDigit(b[s + 7]) else { throw HTTPError(400, "malformed HTTP version") }
        let minor = b[s + 7] &- 0x30
        if major == 1 && minor <= 1 { return Int(minor) }
        throw HTTPError(505, "HTTP version not supported")
    }

    /// absolute-form: `http(s)://authority[/path][?query]` → `/path?query`.
    private mutating func reduceAbsoluteForm(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) throws {
        var p = s
        // scheme
        while p < e, isAlpha(b[p]) || isDigit(b[p]) || b[p] == 0x2B || b[p] == 0x2D || b[p] == dot { p += 1 }
        guard p > s, isAlpha(b[s]), e - p >= 3, b[p] == colon, b[p + 1] == slash, b[p + 2] == slash else {
            throw HTTPError(400, "invalid request target")
        }
        let schemeLen = p - s
        let isHTTP = schemeLen == 4 && lowerEquals(b, s, "http")
        let isHTTPS = schemeLen == 5 && lowerEquals(b, s, "https")
        if !(isHTTP || isHTTPS) { throw HTTPError(400, "unsupported scheme in request target") }
        p += 3
        let authStart = p
        while p < e, b[p] != slash, b[p] != question { p += 1 }
        let authEnd = p
        if authEnd == authStart { throw HTTPError(400, "empty authority in request target") }
        for i in authStart..<authEnd where !isHostChar(b[i]) {
            throw HTTPError(400, "invalid authority in request target")
        }
        absoluteAuthority = makeString(b, authStart, authEnd)
        if p == e {
            target = "/"
        } else if b[p] == question {
            target = "/" + makeString(b, p, e)
        } else {
            target = makeString(b, p, e)
        }
    }

    private mutating func parseFieldLine(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) throws {
        var p = s
        while p < e, isTchar(b[p]) { p += 1 }
        if p == e || b[p] != colon {
            throw HTTPError(400, p == e ? "header field without colon" : "invalid header field name")
        }
        if p == s { throw HTTPError(400, "empty header field name") }
        let nameEnd = p
        p += 1
        // Validate the value: VCHAR / obs-text / SP / HTAB.
        for i in p..<e {
            let c = b[i]
            if c < 0x20 && c != htab || c == 0x7F { throw HTTPError(400, "invalid character in header value") }
        }
        var vs = p, ve = e
        while vs < ve, b[vs] == sp || b[vs] == htab { vs += 1 }
        while ve > vs, b[ve - 1] == sp || b[ve - 1] == htab { ve -= 1 }

        let nameLen = nameEnd - s
        if nameLen == 4 && lowerEquals(b, s, "host") {
            hostCount += 1
            if hostCount > 1 { throw HTTPError(400, "more than one Host field") }
            for i in vs..<ve where !isHostChar(b[i]) { throw HTTPError(400, "invalid Host field") }
        } else if nameLen == 14 && lowerEquals(b, s, "content-length") {
            try noteContentLength(b, vs, ve)
        } else if nameLen == 17 && lowerEquals(b, s, "transfer-encoding") {
            try noteTransferEncoding(b, vs, ve)
        }
        if fields.isEmpty { fields.reserveCapacity(8) }    // one allocation, not one per doubling
        fields.append(HTTPField(name: makeString(b, s, nameEnd), value: makeString(b, vs, ve)))
    }

    private mutating func noteContentLength(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) throws {
        var p = s
        while true {
            // member: 1*DIGIT, surrounded by OWS inside a list
            while p < e, b[p] == sp || b[p] == htab { p += 1 }
            let ds = p
            var value = 0
            while p < e, isDigit(b[p]) {
                if p - ds >= 18 { throw HTTPError(400, "Content-Length too large") }
                value = value * 10 + Int(b[p] &- 0x30)
                p += 1
            }
            if p == ds { throw HTTPError(400, "invalid Content-Length") }
            while p < e, b[p] == sp || b[p] == htab { p += 1 }
            if let cl = contentLength, cl != value { throw HTTPError(400, "conflicting Content-Length values") }
            contentLength = value
            if p == e { return }
            if b[p] != comma { throw HTTPError(400, "invalid Content-Length") }
            p += 1
        }
    }

    private mutating func noteTransferEncoding(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) throws {
        teSeen = true
        var p = s
        while true {
            while p < e, b[p] == sp || b[p] == htab { p += 1 }
            let ts = p
            while p < e, isTchar(b[p]) { p += 1 }
            let te = p
            if te == ts { throw HTTPError(400, "invalid Transfer-Encoding") }
            while p < e, b[p] == sp || b[p] == htab { p += 1 }
            if p < e && b[p] != comma { throw HTTPError(400, "invalid Transfer-Encoding") }
            if te - ts == 7 && lowerEquals(b, ts, "chunked") {
                teChunkedCount += 1
                teLastIsChunked = true
            } else {
                teHasOther = true
                teLastIsChunked = false
            }
            if p == e { return }
            p += 1
        }
    }

    /// Framing and Host checks once the whole head is present; sets up the body state.
    private mutating func finishHead() throws -> HTTPRequestHead {
        if teSeen {
            if contentLength != nil { throw HTTPError(400, "both Content-Length and Transfer-Encoding") }
            if versionMinor == 0 { throw HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request") }
            if teChunkedCount > 1 { throw HTTPError(400, "chunked applied more than once") }
            if !teLastIsChunked { throw HTTPError(400, "final transfer coding is not chunked") }
            if teHasOther { throw HTTPError(501, "transfer coding not implemented") }
        }
        if versionMinor >= 1 && hostCount == 0 { throw HTTPError(400, "missing Host field") }
        var headers = HTTPHeaders(fields)
        if let authority = absoluteAuthority {
            // RFC 9112 §3.2.2: the target's authority wins over any Host field.
            if let i = headers.fields.firstIndex(where: { asciiCaseInsensitiveEquals($0.name, "host") }) {
                headers.fields[i].value = authority
            } else {
                headers.add("Host", authority)
            }
        }
        let head = HTTPRequestHead(method: method, target: target, versionMinor: versionMinor, headers: headers)
        if teSeen {
            state = .chunkSize
            bodyFraming = .chunked
        } else if let cl = contentLength, cl > 0 {
            if cl > limits.maxBodyBytes { throw HTTPError(413, "request body too large") }
            state = .fixed(remaining: cl)
            bodyFraming = .length(cl)
        } else {
            state = .endPending
            bodyFraming = .none
        }
        // Drop the head-scan state; body counters start fresh.
        stage = .leading
        scanPos = 0
        leadingEmptyLines = 0
        headerStart = 0
        fields = []
        method = ""
        target = ""
        absoluteAuthority = nil
        return head
    }

    /// Finds the CRLF ending the line that starts at `s` and returns the index of its CR, or nil
    /// when more bytes are needed. The line may use at most `budget` bytes counted from `origin`
    /// (its CRLF included when `crlfCounts`): the limit is enforced on partial input too, so a
    /// slow sender can't make the parser buffer without bound. Bare CR and bare LF are refused.
    @inline(__always)
    private func lineEnd(_ b: UnsafeRawBufferPointer, from s: Int, origin: Int, budget: Int, crlfCounts: Bool,
                         tooLong: HTTPError, what: StaticString) throws -> Int? {
        let n = b.count
        let scanEnd = min(n, origin + budget + 1)
        var p = s
        while p < scanEnd {
            let c = b[p]
            if c == cr || c == lf { break }
            p += 1
        }
        if p == scanEnd {
            if p - origin > budget { throw tooLong }
            return nil
        }
        if b[p] == lf { throw HTTPError(400, "bare LF in \(what)") }
        if p + (crlfCounts ? 2 : 0) - origin > budget { throw tooLong }
        if p + 1 == n { return nil }
        if b[p + 1] != lf { throw HTTPError(400, "bare CR in \(what)") }
        return p
    }

    // MARK: - Chunked body

    /// Parses `chunk-size [chunk-ext] CRLF` at `s`. Returns the bytes used, nil if incomplete.
    private mutating func parseChunkLine(_ b: UnsafeRawBufferPointer, from s: Int) throws -> Int? {
        guard let e = try lineEnd(b, from: s, origin: s, budget: limits.maxChunkLineBytes, crlfCounts: false,
                                  tooLong: HTTPError(400, "chunk size line too long"), what: "chunk size line") else { return nil }

        var q = s
        var size = 0
        while q < e, let d = hexValue(b[q]) {
            if q - s >= 15 { throw HTTPError(400, "chunk size too large") }
            size = size << 4 | Int(d)
            q += 1
        }
        if q == s { throw HTTPError(400, "invalid chunk size") }
        try validateChunkExtensions(b, q, e)

        if size == 0 {
            state = .trailers
        } else {
            bodyTotal += size
            if bodyTotal > limits.maxBodyBytes { throw HTTPError(413, "request body too large") }
            state = .chunkData(remaining: size)
        }
        return e + 2 - s
    }

    /// chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ), ext-val = token / quoted-string.
    private func validateChunkExtensions(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) throws {
        let bad = HTTPError(400, "invalid chunk extension")
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
            if b[s + 1] != lf { throw HTTPError(400, "bare CR in trailer section") }
            return (2, true)
        }
        if first == lf { throw HTTPError(400, "bare LF in trailer section") }
        if first == sp || first == htab { throw HTTPError(400, "obsolete line folding in trailer") }
        guard let p = try lineEnd(b, from: s, origin: s, budget: limits.maxTrailerBytes - trailerBytes, crlfCounts: true,
                                  tooLong: HTTPError(431, "trailer section too large"), what: "trailer section") else { return nil }
        // Validate the field line; the trailer is discarded.
        var q = s
        while q < p, isTchar(b[q]) { q += 1 }
        if q == s || q == p || b[q] != colon { throw HTTPError(400, "invalid trailer field") }
        for i in (q + 1)..<p {
            let c = b[i]
            if c < 0x20 && c != htab || c == 0x7F { throw HTTPError(400, "invalid character in trailer value") }
        }
        trailerBytes += p + 2 - s
        return (p + 2 - s, false)
    }
}

// MARK: - Byte helpers

@usableFromInline let cr: UInt8 = 0x0D
@usableFromInline let lf: UInt8 = 0x0A
@usableFromInline let sp: UInt8 = 0x20
@usableFromInline let htab: UInt8 = 0x09
@usableFromInline let colon: UInt8 = 0x3A
@usableFromInline let slash: UInt8 = 0x2F
@usableFromInline let star: UInt8 = 0x2A
@usableFromInline let dot: UInt8 = 0x2E
@usableFromInline let comma: UInt8 = 0x2C
@usableFromInline let question: UInt8 = 0x3F
@usableFromInline let semicolon: UInt8 = 0x3B
@usableFromInline let equals: UInt8 = 0x3D
@usableFromInline let dquote: UInt8 = 0x22
@usableFromInline let backslash: UInt8 = 0x5C

/// tchar (RFC 9110 §5.6.2): `!#$%&'*+-.^_`|~`, DIGIT, ALPHA.
@inline(__always) func isTchar(_ c: UInt8) -> Bool {
    if c < 64 { return (0x03FF_6CFA_0000_0000 as UInt64) >> UInt64(c) & 1 != 0 }
    if c < 128 { return (0x57FF_FFFF_C7FF_FFFE as UInt64) >> UInt64(c &- 64) & 1 != 0 }
    return false
}

/// Characters of `uri-host [":" port]`: unreserved, pct-encoded, sub-delims, `:`, `[`, `]`.
@inline(__always) func isHostChar(_ c: UInt8) -> Bool {
    if c < 64 { return (0x2FFF_7FF2_0000_0000 as UInt64) >> UInt64(c) & 1 != 0 }
    if c < 128 { return (0x47FF_FFFE_AFFF_FFFE as UInt64) >> UInt64(c &- 64) & 1 != 0 }
    return false
}

@inline(__always) func isDigit(_ c: UInt8) -> Bool { c &- 0x30 < 10 }
@inline(__always) func isAlpha(_ c: UInt8) -> Bool { (c | 0x20) &- 0x61 < 26 }

@inline(__always) func hexValue(_ c: UInt8) -> UInt8? {
    if c &- 0x30 < 10 { return c &- 0x30 }
    let l = c | 0x20
    if l &- 0x61 < 6 { return l &- 0x61 &+ 10 }
    return nil
}

/// Whether the bytes at `s` equal the lowercase ASCII `literal`, ignoring case. Caller checks length.
@inline(__always) func lowerEquals(_ b: UnsafeRawBufferPointer, _ s: Int, _ literal: StaticString) -> Bool {
    let count = literal.utf8CodeUnitCount
    let lit = literal.utf8Start
    for i in 0..<count where asciiLower(b[s + i]) != lit[i] { return false }
    return true
}

@inline(__always) func makeString(_ b: UnsafeRawBufferPointer, _ s: Int, _ e: Int) -> String {
    String(decoding: UnsafeRawBufferPointer(rebasing: b[s..<e]), as: UTF8.self)
}
