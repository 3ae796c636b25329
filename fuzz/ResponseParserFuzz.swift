// libFuzzer target for the HTTP/1.1 response parser (Sources/HTTPWire/ResponseParser.swift),
// compiled together with the module's sources by `fuzz/run response <seconds>`.
//
// Byte 0 of the input picks how the rest is cut into reads (1..16 bytes, or all at once); byte 1
// picks small limits (bit 0) and whether the request was a HEAD (bit 1). Each input is parsed
// twice: once as one buffer, once fed piece by piece the way the upstream client does
// (unconsumed bytes offered again, followed by new ones), then the end of input is reported.
// Invariants checked (a violation traps = a crash report):
// - `consumed` never exceeds the bytes offered; body ranges and field spans lie inside the
//   buffer offered; the number of calls is bounded by the input length (no infinite loop);
// - the two runs agree exactly: same heads (status, framing, keep-alive, fields), same body
//   bytes, same ends, same outcome at end of input, and a refusal at the same point (a client
//   that frames a response differently depending on how it arrived is a response-splitting bug);
// - a head never carries CR, LF or NUL in names or values, names are tokens; a 1xx never
//   surfaces; HEAD/204/304 responses have no body; `.length(n)` bodies are exactly n bytes;
//   `keepAlive` is never true for a close-delimited body; errors are always 502.

enum RespEv: Equatable {
    case head(HTTPResponseStart, [HTTPField])
    case body([UInt8])
    case end
    case eof(Bool)      // endOfInput: true = `.end`, false = nil
    case error
}

func respLimitsFor(_ sel: UInt8) -> HTTPResponseLimits {
    var l = HTTPResponseLimits()
    if sel & 1 == 1 {
        l.maxStatusLineBytes = 32
        l.maxHeaderBytes = 96
        l.maxHeaderCount = 4
        l.maxChunkLineBytes = 24
        l.maxTrailerBytes = 32
        l.maxInterimResponses = 2
    }
    return l
}

func respFail(_ why: String) -> Never {
    fatalError("response parser invariant violated: \(why)")
}

func checkResponseHead(_ h: HTTPResponseStart, _ fields: [HTTPField], head: Bool) {
    if h.status < 200 || h.status > 599 { respFail("status \(h.status) surfaced") }
    if h.versionMinor != 0 && h.versionMinor != 1 { respFail("version") }
    for f in fields {
        if f.name.isEmpty { respFail("empty name") }
        for u in f.name.utf8 where !isTchar(u) { respFail("name not a token") }
        for u in f.value.utf8 where u == 13 || u == 10 || u == 0 { respFail("CR/LF/NUL in value") }
    }
    if (head || h.status == 204 || h.status == 304) && h.framing != .none { respFail("body where none is allowed") }
    if h.framing == .untilClose && h.keepAlive { respFail("keep-alive with a close-delimited body") }
}

/// Parses `data` delivered in pieces of `piece` bytes (0 = all at once), then ends the input.
func runResponse(_ data: [UInt8], piece: Int, limits: HTTPResponseLimits, head: Bool) -> [RespEv] {
    var parser = HTTPResponseParser(limits: limits, requestIsHEAD: head)
    var buf: [UInt8] = []
    var start = 0
    var fed = 0
    var events: [RespEv] = []
    var calls = 0
    let maxCalls = 4 * data.count + 64
    var expectLength: Int? = nil
    var bodyLen = 0
    func addBody(_ bytes: [UInt8]) {
        if case .body(let prev)? = events.last { events[events.count - 1] = .body(prev + bytes) }
        else { events.append(.body(bytes)) }
    }
    while true {
        if fed < data.count {
            let k = piece == 0 ? data.count : min(piece, data.count - fed)
            buf.append(contentsOf: data[fed..<(fed + k)])
            fed += k
        }
        while true {
            calls += 1
            if calls > maxCalls { respFail("no progress (\(calls) calls for \(data.count) bytes)") }
            let avail = buf.count - start
            var r: (consumed: Int, event: HTTPResponseEvent?) = (0, nil)
            var err: HTTPError?
            var fields: [HTTPField] = []
            buf.withUnsafeBytes { p in
                let input = UnsafeRawBufferPointer(rebasing: p[start...])
                do {
                    r = try parser.next(input)
                    if case .head? = r.event {
                        for s in parser.fieldSpans where s.name.lowerBound < 0 || s.value.upperBound > r.consumed {
                            respFail("field span outside the head")
                        }
                        fields = parser.fields(in: input)
                    }
                }
                catch let e as HTTPError { err = e }
                catch { respFail("non-HTTPError thrown") }
            }
            if let e = err {
                if e.status != 502 { respFail("status \(e.status)") }
                events.append(.error)
                return events
            }
            if r.consumed < 0 || r.consumed > avail { respFail("consumed \(r.consumed) of \(avail)") }
            switch r.event {
            case nil:
                start += r.consumed
            case .head(let h)?:
                checkResponseHead(h, fields, head: head)
                if r.consumed == 0 { respFail("head consumed nothing") }
                events.append(.head(h, fields))
                if case .length(let n) = h.framing { expectLength = n } else { expectLength = nil }
                bodyLen = 0
                start += r.consumed
            case .body(let range)?:
                if range.lowerBound < 0 || range.upperBound > avail || range.isEmpty { respFail("body range \(range) of \(avail)") }
                if range.upperBound > r.consumed { respFail("body range past consumed") }
                bodyLen += range.count
                if let n = expectLength, bodyLen > n { respFail("body longer than Content-Length") }
                addBody(Array(buf[(start + range.lowerBound)..<(start + range.upperBound)]))
                start += r.consumed
            case .end?:
                if let n = expectLength, bodyLen != n { respFail("body of \(bodyLen) for Content-Length \(n)") }
                events.append(.end)
                expectLength = nil
                start += r.consumed
            }
            if r.event == nil { break }
        }
        if fed == data.count { break }
    }
    do {
        let e = try parser.endOfInput(unconsumed: buf.count - start)
        events.append(.eof(e == .end))
    } catch let e as HTTPError {
        if e.status != 502 { respFail("status \(e.status) at end of input") }
        events.append(.error)
    } catch {
        respFail("non-HTTPError thrown at end of input")
    }
    return events
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzResponseParser(_ ptr: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 2 else { return 0 }
    let sel = ptr[0], opts = ptr[1]
    let data = Array(UnsafeBufferPointer(start: ptr + 2, count: size - 2))
    let limits = respLimitsFor(opts)
    let head = opts & 2 == 2
    let piece = Int(sel % 17)
    let whole = runResponse(data, piece: 0, limits: limits, head: head)
    let pieces = runResponse(data, piece: piece == 0 ? 1 : piece, limits: limits, head: head)
    if whole != pieces {
        respFail("whole vs pieces differ:\n whole: \(whole)\n pieces: \(pieces)")
    }
    return 0
}
