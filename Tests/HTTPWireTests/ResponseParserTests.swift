import HTTPWire
import Testing

/// What feeding a byte string to the response parser produced.
struct ResponseOutcome {
    var heads: [HTTPResponseStart] = []
    var fields: [[HTTPField]] = []
    var bodies: [[UInt8]] = []
    var ends = 0
    var error: HTTPError?
    var leftover = 0
    /// What `endOfInput` said after the last byte (only when `eof` was asked for).
    var eofEvent: HTTPResponseEvent?

    var head: HTTPResponseStart? { heads.first }
    var body: String? { bodies.first.map { String(decoding: $0, as: UTF8.self) } }
}

/// Feeds `input` `step` bytes at a time the way the upstream client does (unconsumed bytes are
/// offered again with new ones appended), then, with `eof`, reports the end of input.
func feedResponse(_ input: [UInt8], step: Int = .max, limits: HTTPResponseLimits = HTTPResponseLimits(),
                  head: Bool = false, eof: Bool = false) -> ResponseOutcome {
    var parser = HTTPResponseParser(limits: limits, requestIsHEAD: head)
    var out = ResponseOutcome()
    var buf: [UInt8] = []
    var start = 0
    var pos = 0
    var current: [UInt8] = []
    var guardCount = 0
    repeat {
        let take = min(step, input.count - pos)
        buf.append(contentsOf: input[pos..<(pos + take)])
        pos += take
        while true {
            guardCount += 1
            if guardCount > 10_000_000 { out.error = HTTPError(-1, "parser loops"); return out }
            let s = start
            let result: (consumed: Int, event: HTTPResponseEvent?)
            do {
                result = try buf.withUnsafeBytes { try parser.next(UnsafeRawBufferPointer(rebasing: $0[s...])) }
            } catch {
                out.error = (error as? HTTPError) ?? HTTPError(-2, "non-HTTPError thrown")
                out.leftover = buf.count - start
                return out
            }
            precondition(result.consumed >= 0 && result.consumed <= buf.count - start, "consumed out of range")
            switch result.event {
            case .head(let h):
                out.heads.append(h)
                out.fields.append(buf.withUnsafeBytes { parser.fields(in: UnsafeRawBufferPointer(rebasing: $0[s...])) })
                current = []
            case .body(let r):
                precondition(r.lowerBound >= 0 && r.upperBound <= result.consumed, "body range outside consumed")
                current.append(contentsOf: buf[(s + r.lowerBound)..<(s + r.upperBound)])
            case .end:
                out.ends += 1
                out.bodies.append(current)
                current = []
            case nil:
                break
            }
            start += result.consumed
            if result.event == nil { break }
        }
    } while pos < input.count
    out.leftover = buf.count - start
    if eof {
        do {
            out.eofEvent = try parser.endOfInput(unconsumed: out.leftover)
            if out.eofEvent == .end { out.ends += 1; out.bodies.append(current) }
        } catch {
            out.error = error as? HTTPError
        }
    }
    return out
}

func feedResponse(_ input: String, step: Int = .max, limits: HTTPResponseLimits = HTTPResponseLimits(),
                  head: Bool = false, eof: Bool = false) -> ResponseOutcome {
    feedResponse(Array(input.utf8), step: step, limits: limits, head: head, eof: eof)
}

func smallResponseLimits() -> HTTPResponseLimits {
    var l = HTTPResponseLimits()
    l.maxStatusLineBytes = 32
    l.maxHeaderBytes = 64
    l.maxHeaderCount = 3
    l.maxChunkLineBytes = 16
    l.maxTrailerBytes = 24
    l.maxInterimResponses = 2
    return l
}

struct AcceptedResponse: Sendable, CustomTestStringConvertible {
    var name: String
    var raw: String
    var status = 200
    var versionMinor = 1
    var framing: HTTPResponseFraming
    var keepAlive = true
    var body = ""
    var fields: [String: String] = [:]
    var head = false
    /// The body ends at end of input (close-delimited).
    var eof = false
    var testDescription: String { name }
}

private let TE = "Transfer-Encoding: chunked\r\n"

let acceptedResponses: [AcceptedResponse] = [
    AcceptedResponse(name: "Content-Length", raw: "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                     framing: .length(2), body: "{}", fields: ["content-type": "application/json", "content-length": "2"]),
    AcceptedResponse(name: "no reason phrase, no SP", raw: "HTTP/1.1 404\r\nContent-Length: 1\r\n\r\nx", status: 404, framing: .length(1), body: "x"),
    AcceptedResponse(name: "empty reason phrase", raw: "HTTP/1.1 503 \r\nContent-Length: 0\r\n\r\n", status: 503, framing: .none),
    AcceptedResponse(name: "reason with obs-text and tab", raw: "HTTP/1.1 200 Très\tbien\r\nContent-Length: 0\r\n\r\n", framing: .none),
    AcceptedResponse(name: "Content-Length 0", raw: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", framing: .none),
    AcceptedResponse(name: "Content-Length leading zeros", raw: "HTTP/1.1 200 OK\r\nContent-Length: 003\r\n\r\nabc", framing: .length(3), body: "abc"),
    AcceptedResponse(name: "identical Content-Length fields", raw: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
                     framing: .length(3), body: "abc"),
    AcceptedResponse(name: "identical Content-Length list", raw: "HTTP/1.1 200 OK\r\nContent-Length: 3 ,\t3\r\n\r\nabc", framing: .length(3), body: "abc"),
    AcceptedResponse(name: "chunked with extensions and trailers",
                     raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n5;name=val;q=\"x \\\" y\"\r\nhello\r\n6 ; flag\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
                     framing: .chunked, body: "hello world"),
    AcceptedResponse(name: "chunked uppercase coding and hex", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
                     framing: .chunked, body: "0123456789"),
    AcceptedResponse(name: "chunked leading zeros", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n0003\r\nabc\r\n000\r\n\r\n", framing: .chunked, body: "abc"),
    AcceptedResponse(name: "chunked empty", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n0\r\n\r\n", framing: .chunked),
    AcceptedResponse(name: "SSE chunks", raw: "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\(TE)\r\nb\r\ndata: one\n\n\r\nb\r\ndata: two\n\n\r\n0\r\n\r\n",
                     framing: .chunked, body: "data: one\n\ndata: two\n\n"),
    AcceptedResponse(name: "close-delimited", raw: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
                     framing: .untilClose, keepAlive: false, body: "until the end", eof: true),
    AcceptedResponse(name: "close-delimited empty", raw: "HTTP/1.1 200 OK\r\n\r\n", framing: .untilClose, keepAlive: false, eof: true),
    AcceptedResponse(name: "HTTP/1.0 close-delimited", raw: "HTTP/1.0 200 OK\r\n\r\nold", versionMinor: 0, framing: .untilClose,
                     keepAlive: false, body: "old", eof: true),
    AcceptedResponse(name: "HTTP/1.0 with length: not kept alive", raw: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", versionMinor: 0,
                     framing: .length(2), keepAlive: false, body: "hi"),
    AcceptedResponse(name: "HTTP/1.0 keep-alive", raw: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi",
                     versionMinor: 0, framing: .length(2), body: "hi"),
    AcceptedResponse(name: "Connection: close", raw: "HTTP/1.1 200 OK\r\nConnection: upgrade, Close\r\nContent-Length: 2\r\n\r\nhi",
                     framing: .length(2), keepAlive: false, body: "hi"),
    AcceptedResponse(name: "204 ignores Content-Length", raw: "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", status: 204, framing: .none),
    AcceptedResponse(name: "304 ignores chunked", raw: "HTTP/1.1 304 Not Modified\r\n\(TE)\r\n", status: 304, framing: .none),
    AcceptedResponse(name: "HEAD ignores Content-Length", raw: "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", framing: .none, head: true),
    AcceptedResponse(name: "HEAD without framing is not close-delimited", raw: "HTTP/1.1 200 OK\r\n\r\n", framing: .none, head: true),
    AcceptedResponse(name: "100 Continue skipped", raw: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
                     status: 201, framing: .length(1), body: "x"),
    AcceptedResponse(name: "103 Early Hints fields discarded",
                     raw: "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nX-Final: 1\r\nContent-Length: 0\r\n\r\n",
                     framing: .none, fields: ["x-final": "1"]),
    AcceptedResponse(name: "two interim responses", raw: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                     framing: .none),
    AcceptedResponse(name: "OWS trimmed, empty value, obs-text", raw: "HTTP/1.1 200 OK\r\nX-A:\t a  b \t\r\nX-Empty:\r\nX-Name: café\r\nContent-Length: 0\r\n\r\n",
                     framing: .none, fields: ["x-a": "a  b", "x-empty": "", "x-name": "café"]),
    AcceptedResponse(name: "non-standard 2xx", raw: "HTTP/1.1 299 Whatever\r\nContent-Length: 0\r\n\r\n", status: 299, framing: .none),
    AcceptedResponse(name: "599", raw: "HTTP/1.1 599 x\r\nContent-Length: 0\r\n\r\n", status: 599, framing: .none),
]

@Test(arguments: acceptedResponses, steps)
func acceptedResponse(_ c: AcceptedResponse, _ step: Int) throws {
    let out = feedResponse(c.raw, step: step, head: c.head, eof: c.eof)
    #expect(out.error == nil, "\(c.name): \(String(describing: out.error))")
    #expect(out.heads.count == 1)
    #expect(out.ends == 1)
    #expect(out.leftover == 0)
    let head = try #require(out.head)
    #expect(head.status == c.status)
    #expect(head.versionMinor == c.versionMinor)
    #expect(head.framing == c.framing)
    #expect(head.keepAlive == c.keepAlive)
    #expect(out.body == c.body)
    let fields = HTTPHeaders(out.fields.first ?? [])
    for (name, value) in c.fields { #expect(fields[name] == value, "\(name)") }
    if c.eof { #expect(out.eofEvent == .end) }
}

struct RefusedResponse: Sendable, CustomTestStringConvertible {
    var name: String
    var raw: String
    var small = false
    var head = false
    /// Refused only once the input ends (a cut response).
    var eof = false
    var testDescription: String { name }
}

/// Every response the parser must refuse (each is a 502 and a closed connection).
let refusedResponses: [RefusedResponse] = [
    // Framing conflicts (response splitting / smuggling).
    RefusedResponse(name: "CL and TE", raw: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\(TE)\r\n0\r\n\r\n"),
    RefusedResponse(name: "TE and CL", raw: "HTTP/1.1 200 OK\r\n\(TE)Content-Length: 3\r\n\r\nabc"),
    RefusedResponse(name: "CL and TE even for HEAD", raw: "HTTP/1.1 200 OK\r\n\(TE)Content-Length: 3\r\n\r\n", head: true),
    RefusedResponse(name: "CL differing fields", raw: "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    RefusedResponse(name: "CL differing list", raw: "HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd"),
    RefusedResponse(name: "CL +3", raw: "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc"),
    RefusedResponse(name: "CL -1", raw: "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
    RefusedResponse(name: "CL hex", raw: "HTTP/1.1 200 OK\r\nContent-Length: 0x3\r\n\r\nabc"),
    RefusedResponse(name: "CL inner space", raw: "HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n"),
    RefusedResponse(name: "CL empty", raw: "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n"),
    RefusedResponse(name: "CL empty list member", raw: "HTTP/1.1 200 OK\r\nContent-Length: 3,,3\r\n\r\nabc"),
    RefusedResponse(name: "CL 19 digits", raw: "HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n\r\n"),
    RefusedResponse(name: "CL overflow", raw: "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
    RefusedResponse(name: "TE gzip, chunked", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    RefusedResponse(name: "TE identity", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nabc"),
    RefusedResponse(name: "TE chunked twice (list)", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    RefusedResponse(name: "TE chunked twice (fields)", raw: "HTTP/1.1 200 OK\r\n\(TE)\(TE)\r\n0\r\n\r\n"),
    RefusedResponse(name: "TE empty", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n"),
    RefusedResponse(name: "TE with parameter", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n"),
    RefusedResponse(name: "TE in HTTP/1.0", raw: "HTTP/1.0 200 OK\r\n\(TE)\r\n0\r\n\r\n"),
    RefusedResponse(name: "TE space before colon", raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),

    // Status line.
    RefusedResponse(name: "HTTP/2 status line", raw: "HTTP/2 200\r\n\r\n"),
    RefusedResponse(name: "HTTP/1.2", raw: "HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n"),
    RefusedResponse(name: "HTTP/0.9 body", raw: "<html>hello</html>\r\n"),
    RefusedResponse(name: "lowercase http", raw: "http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    RefusedResponse(name: "two-digit status", raw: "HTTP/1.1 20 OK\r\n\r\n"),
    RefusedResponse(name: "four-digit status", raw: "HTTP/1.1 2000 OK\r\n\r\n"),
    RefusedResponse(name: "status below 100", raw: "HTTP/1.1 099 x\r\n\r\n"),
    RefusedResponse(name: "status 600", raw: "HTTP/1.1 600 x\r\n\r\n"),
    RefusedResponse(name: "non-digit status", raw: "HTTP/1.1 2x0 OK\r\n\r\n"),
    RefusedResponse(name: "two spaces before status", raw: "HTTP/1.1  200 OK\r\n\r\n"),
    RefusedResponse(name: "tab separator", raw: "HTTP/1.1\t200 OK\r\n\r\n"),
    RefusedResponse(name: "control in reason", raw: "HTTP/1.1 200 O\u{01}K\r\nContent-Length: 0\r\n\r\n"),
    RefusedResponse(name: "DEL in reason", raw: "HTTP/1.1 200 O\u{7F}K\r\nContent-Length: 0\r\n\r\n"),
    RefusedResponse(name: "101 Switching Protocols", raw: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
    RefusedResponse(name: "empty line before status", raw: "\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    RefusedResponse(name: "too many interim responses", raw: "HTTP/1.1 100 A\r\n\r\nHTTP/1.1 100 B\r\n\r\nHTTP/1.1 100 C\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", small: true),

    // Fields.
    RefusedResponse(name: "obs-fold SP", raw: "HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n"),
    RefusedResponse(name: "obs-fold HTAB", raw: "HTTP/1.1 200 OK\r\nX-A: b\r\n\tc\r\nContent-Length: 0\r\n\r\n"),
    RefusedResponse(name: "space before colon", raw: "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"),
    RefusedResponse(name: "empty field name", raw: "HTTP/1.1 200 OK\r\n: x\r\n\r\n"),
    RefusedResponse(name: "field without colon", raw: "HTTP/1.1 200 OK\r\nX-A b\r\n\r\n"),
    RefusedResponse(name: "non-token field name", raw: "HTTP/1.1 200 OK\r\nX(A): b\r\n\r\n"),
    RefusedResponse(name: "NUL in value", raw: "HTTP/1.1 200 OK\r\nX-A: a\0b\r\n\r\n"),
    RefusedResponse(name: "CTL in value", raw: "HTTP/1.1 200 OK\r\nX-A: a\u{01}b\r\n\r\n"),
    RefusedResponse(name: "DEL in value", raw: "HTTP/1.1 200 OK\r\nX-A: a\u{7F}b\r\n\r\n"),
    RefusedResponse(name: "obs-fold in an interim response", raw: "HTTP/1.1 103 x\r\nLink: a\r\n b\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),

    // Line endings.
    RefusedResponse(name: "bare LF terminators", raw: "HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
    RefusedResponse(name: "bare LF after field", raw: "HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n"),
    RefusedResponse(name: "bare LF as final line", raw: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n"),
    RefusedResponse(name: "bare CR in status line", raw: "HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n"),
    RefusedResponse(name: "bare CR in value", raw: "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n"),
    RefusedResponse(name: "bare CR as final line", raw: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\rX"),

    // Chunked body.
    RefusedResponse(name: "chunk size not hex", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\nzz\r\n"),
    RefusedResponse(name: "chunk size empty", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n\r\n"),
    RefusedResponse(name: "chunk size negative", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n-1\r\n"),
    RefusedResponse(name: "chunk size 16 hex digits", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n1000000000000000\r\n"),
    RefusedResponse(name: "chunk size with space then junk", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n3 x\r\nabc\r\n0\r\n\r\n"),
    RefusedResponse(name: "chunk extension without name", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n3;\r\nabc\r\n0\r\n\r\n"),
    RefusedResponse(name: "chunk extension unterminated quote", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n3;a=\"b\r\nabc\r\n0\r\n\r\n"),
    RefusedResponse(name: "chunk data too long", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n3\r\nabcd\r\n0\r\n\r\n"),
    RefusedResponse(name: "chunk data without CRLF", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n3\r\nabc\n0\r\n\r\n"),
    RefusedResponse(name: "bare LF after chunk size", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n3\nabc\r\n0\r\n\r\n"),
    RefusedResponse(name: "invalid trailer", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n0\r\nbad trailer\r\n\r\n"),
    RefusedResponse(name: "folded trailer", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n0\r\nA: b\r\n c\r\n\r\n"),
    RefusedResponse(name: "chunk line too long", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n3;abcdefghijklmnopq\r\nabc\r\n0\r\n\r\n", small: true),
    RefusedResponse(name: "trailers too large", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n0\r\nA: 123456789\r\nB: 123456789\r\n\r\n", small: true),

    // Limits.
    RefusedResponse(name: "status line too long", raw: "HTTP/1.1 200 " + String(repeating: "x", count: 40) + "\r\n\r\n", small: true),
    RefusedResponse(name: "header section too large", raw: "HTTP/1.1 200 OK\r\nX-A: " + String(repeating: "x", count: 80) + "\r\n\r\n", small: true),
    RefusedResponse(name: "too many fields", raw: "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", small: true),

    // Cut short (refused at end of input).
    RefusedResponse(name: "cut in status line", raw: "HTTP/1.1 20", eof: true),
    RefusedResponse(name: "cut in head", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", eof: true),
    RefusedResponse(name: "cut after an interim response", raw: "HTTP/1.1 100 Continue\r\n\r\n", eof: true),
    RefusedResponse(name: "cut in fixed body", raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", eof: true),
    RefusedResponse(name: "cut in chunk data", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n5\r\nabc", eof: true),
    RefusedResponse(name: "cut before last chunk", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n3\r\nabc\r\n", eof: true),
    RefusedResponse(name: "cut in trailers", raw: "HTTP/1.1 200 OK\r\n\(TE)\r\n0\r\nX: 1\r\n", eof: true),
]

@Test(arguments: refusedResponses, steps)
func refusedResponse(_ c: RefusedResponse, _ step: Int) {
    let out = feedResponse(c.raw, step: step, limits: c.small ? smallResponseLimits() : HTTPResponseLimits(), head: c.head, eof: c.eof)
    #expect(out.error?.status == 502, "\(c.name): \(String(describing: out.error)) heads=\(out.heads.count) ends=\(out.ends)")
    if let e = out.error { #expect(!e.message.isEmpty) }
}

/// Refusals at end of input happen only then: before it, the same bytes are just incomplete.
@Test func cutResponsesAreOnlyIncompleteBeforeTheEnd() {
    for c in refusedResponses where c.eof {
        let out = feedResponse(c.raw)
        #expect(out.error == nil, "\(c.name)")
        #expect(out.ends == 0, "\(c.name)")
    }
}

@Test func cleanCloseBetweenResponsesIsNil() {
    let out = feedResponse("", eof: true)
    #expect(out.error == nil)
    #expect(out.eofEvent == nil)
    let after = feedResponse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", eof: true)
    #expect(after.error == nil)
    #expect(after.ends == 1)
    #expect(after.eofEvent == nil)
}

@Test(arguments: steps)
func pipelinedResponses(_ step: Int) {
    let raw = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        + "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n\(TE)\r\n2\r\nxy\r\n0\r\n\r\n"
        + "HTTP/1.1 204 No Content\r\n\r\n"
        + "HTTP/1.1 500 Oops\r\nContent-Length: 1\r\n\r\n!"
    let out = feedResponse(raw, step: step)
    #expect(out.error == nil)
    #expect(out.heads.map(\.status) == [200, 201, 204, 500])
    #expect(out.ends == 4)
    #expect(out.bodies.map { String(decoding: $0, as: UTF8.self) } == ["abc", "xy", "", "!"])
    #expect(out.leftover == 0)
}

@Test func fieldSpansPointIntoTheBufferAfterInterimResponses() throws {
    let raw = Array("HTTP/1.1 103 Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nX-One: 1\r\nx-two: two\r\nContent-Length: 0\r\n\r\n".utf8)
    var parser = HTTPResponseParser()
    let (consumed, event, fields, interim) = try raw.withUnsafeBytes { b in
        let r = try parser.next(b)
        return (r.consumed, r.event, parser.fields(in: b), parser.interimResponsesSkipped)
    }
    #expect(consumed == raw.count)
    #expect(interim == 1)
    guard case .head(let h)? = event else { Issue.record("no head"); return }
    #expect(h.status == 200)
    #expect(fields == [HTTPField(name: "X-One", value: "1"), HTTPField(name: "x-two", value: "two"),
                       HTTPField(name: "Content-Length", value: "0")])
    #expect(h.contentLength == 0)
}

@Test func headRequestThenGetOnOneParser() throws {
    var parser = HTTPResponseParser(requestIsHEAD: true)
    let a = Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".utf8)
    let r1 = try a.withUnsafeBytes { try parser.next($0) }
    guard case .head(let h)? = r1.event else { Issue.record("no head"); return }
    #expect(h.framing == .none && h.contentLength == nil)
    let r2 = try a.withUnsafeBytes { try parser.next(UnsafeRawBufferPointer(rebasing: $0[r1.consumed...])) }
    #expect(r2.event == .end)
    parser.reset(requestIsHEAD: false)
    let b = Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".utf8)
    let r3 = try b.withUnsafeBytes { try parser.next($0) }
    guard case .head(let h2)? = r3.event else { Issue.record("no head"); return }
    #expect(h2.framing == .length(5))
    #expect(parser.isIdle == false)
}

@Test func partialOverlongStatusLineFailsBeforeCRLF() throws {
    var parser = HTTPResponseParser(limits: smallResponseLimits())
    let bytes = Array(("HTTP/1.1 200 " + String(repeating: "a", count: 20)).utf8)
    #expect(bytes.count == 33)
    #expect(throws: HTTPError.self) { _ = try bytes.withUnsafeBytes { try parser.next($0) } }
    var parser2 = HTTPResponseParser(limits: smallResponseLimits())
    let r = try Array(bytes.dropLast()).withUnsafeBytes { try parser2.next($0) }
    #expect(r.consumed == 0 && r.event == nil)
}

@Test func largeChunkedBodyByteByByteMatchesWhole() {
    var raw = "HTTP/1.1 200 OK\r\n\(TE)\r\n"
    var expected = ""
    for i in 1...30 {
        let piece = String(repeating: Character(UnicodeScalar(UInt8(0x40 + i))), count: i * 5)
        raw += String(piece.utf8.count, radix: 16) + (i % 4 == 0 ? ";ext=\(i)" : "") + "\r\n" + piece + "\r\n"
        expected += piece
    }
    raw += "0\r\nTrailer-A: 1\r\n\r\n"
    for step in [1, 2, 5, 64, Int.max] {
        let out = feedResponse(raw, step: step)
        #expect(out.error == nil)
        #expect(out.body == expected, "step \(step)")
    }
}
