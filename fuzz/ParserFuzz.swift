// libFuzzer target for the HTTP/1.1 request parser (Sources/HTTPWire), compiled together with the
// module's sources by `fuzz/run parser <seconds>` (see SECURITY.md).
//
// Byte 0 of the input picks how the rest is cut into reads (1..16 bytes, or all at once); byte 1
// picks small limits (so limit paths are reached by short inputs). Each input is parsed twice:
// once as one buffer, once fed piece by piece the way HTTPConnection does (unconsumed bytes are
// offered again, followed by new ones). Invariants checked (a violation traps = a crash report):
// - `consumed` never exceeds the bytes offered; body ranges lie inside the buffer offered;
// - progress: the number of calls is bounded by the input length (no infinite loop);
// - the two runs agree: same heads, same body bytes, same ends, and they refuse at the same point
//   with the same status (an incremental parser that frames differently when bytes arrive in other
//   pieces is a request-smuggling bug);
// - a head never carries CR, LF or NUL in its target, names or values, names are tokens, at most
//   one Host, never both Content-Length and Transfer-Encoding; a body never exceeds the limit;
// - errors are only the documented statuses (400, 405 for CONNECT, 413, 414, 431, 501, 505).

enum Ev: Equatable {
    case head(HTTPRequestHead)
    case body([UInt8])
    case end
    case error(Int)
}

func limitsFor(_ sel: UInt8) -> HTTPLimits {
    var l = HTTPLimits()
    if sel & 1 == 1 {
        l.maxRequestLineBytes = 64
        l.maxHeaderBytes = 128
        l.maxHeaderCount = 4
        l.maxBodyBytes = 64
        l.maxChunkLineBytes = 24
        l.maxTrailerBytes = 32
    }
    return l
}

func fail(_ why: String) -> Never {
    fatalError("parser invariant violated: \(why)")
}

func checkHead(_ h: HTTPRequestHead, _ limits: HTTPLimits) {
    for u in h.target.utf8 where u == 13 || u == 10 || u == 0 || u == 32 { fail("bad byte in target") }
    if h.method.isEmpty { fail("empty method") }
    for u in h.method.utf8 where !isTchar(u) { fail("method not a token") }
    var hosts = 0, cl = false, te = false
    for f in h.headers.fields {
        if f.name.isEmpty { fail("empty name") }
        for u in f.name.utf8 where !isTchar(u) { fail("name not a token") }
        for u in f.value.utf8 where u == 13 || u == 10 || u == 0 { fail("CR/LF/NUL in value") }
        if asciiCaseInsensitiveEquals(f.name, "host") { hosts += 1 }
        if asciiCaseInsensitiveEquals(f.name, "content-length") { cl = true }
        if asciiCaseInsensitiveEquals(f.name, "transfer-encoding") { te = true }
    }
    if hosts > 1 { fail("two Host fields") }
    if cl && te { fail("both CL and TE accepted") }
    if h.versionMinor == 1 && hosts == 0 { fail("HTTP/1.1 without Host") }
    if h.headers.count > limits.maxHeaderCount + 1 { fail("header count limit") }
}

/// Parses `data` delivered in pieces of `piece` bytes (0 = all at once). Returns the events.
func run(_ data: [UInt8], piece: Int, limits: HTTPLimits) -> [Ev] {
    var parser = HTTPRequestParser(limits: limits)
    var buf: [UInt8] = []
    var start = 0
    var fed = 0
    var events: [Ev] = []
    var calls = 0
    let maxCalls = 4 * data.count + 64
    var bodyLen = 0
    while true {
        // Deliver the next piece.
        if fed < data.count {
            let k = piece == 0 ? data.count : min(piece, data.count - fed)
            buf.append(contentsOf: data[fed..<(fed + k)])
            fed += k
        }
        // Drain what the parser can do with the bytes it has.
        while true {
            calls += 1
            if calls > maxCalls { fail("no progress (\(calls) calls for \(data.count) bytes)") }
            let avail = buf.count - start
            var r: (consumed: Int, event: HTTPParserEvent?) = (0, nil)
            var err: HTTPError?
            buf.withUnsafeBytes { p in
                do { r = try parser.next(UnsafeRawBufferPointer(rebasing: p[start...])) }
                catch let e as HTTPError { err = e }
                catch { fail("non-HTTPError thrown") }
            }
            if let e = err {
                if ![400, 405, 413, 414, 431, 501, 505].contains(e.status) { fail("status \(e.status)") }
                events.append(.error(e.status))
                return events
            }
            if r.consumed < 0 || r.consumed > avail { fail("consumed \(r.consumed) of \(avail)") }
            switch r.event {
            case nil:
                start += r.consumed
            case .head(let h)?:
                checkHead(h, limits)
                if r.consumed == 0 { fail("head consumed nothing") }
                events.append(.head(h))
                bodyLen = 0
                start += r.consumed
            case .body(let range)?:
                if range.lowerBound < 0 || range.upperBound > avail || range.isEmpty { fail("body range \(range) of \(avail)") }
                if range.upperBound > r.consumed { fail("body range past consumed") }
                bodyLen += range.count
                if bodyLen > limits.maxBodyBytes { fail("body over the limit") }
                let bytes = Array(buf[(start + range.lowerBound)..<(start + range.upperBound)])
                if case .body(let prev)? = events.last { events[events.count - 1] = .body(prev + bytes) }
                else { events.append(.body(bytes)) }
                start += r.consumed
            case .end?:
                events.append(.end)
                start += r.consumed
            }
            if r.event == nil { break }
        }
        if fed == data.count { return events }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzParser(_ ptr: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 2 else { return 0 }
    let sel = ptr[0], lim = ptr[1]
    let data = Array(UnsafeBufferPointer(start: ptr + 2, count: size - 2))
    let limits = limitsFor(lim)
    let piece = Int(sel % 17)   // 0 = one buffer, else 1...16 bytes per read
    let whole = run(data, piece: 0, limits: limits)
    let pieces = run(data, piece: piece == 0 ? 1 : piece, limits: limits)
    if whole != pieces {
        fail("whole vs pieces differ:\n whole: \(whole)\n pieces: \(pieces)")
    }
    return 0
}
