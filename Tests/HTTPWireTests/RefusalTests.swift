import HTTPWire
import Testing

struct Refusal: Sendable, CustomTestStringConvertible {
    var name: String
    var raw: String
    var status: Int
    var small = false
    var testDescription: String { name }
}

private let H = "Host: a\r\n"

/// Every request the parser must refuse, with the status it answers.
let refusals: [Refusal] = [
    // Framing conflicts (request smuggling).
    Refusal(name: "CL.TE", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX", status: 400),
    Refusal(name: "TE.CL", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n", status: 400),
    Refusal(name: "CL differing fields", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", status: 400),
    Refusal(name: "CL differing list", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 5, 6\r\n\r\nhello!", status: 400),
    Refusal(name: "CL +5", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: +5\r\n\r\nhello", status: 400),
    Refusal(name: "CL -5", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: -5\r\n\r\nhello", status: 400),
    Refusal(name: "CL ' 5 5'", raw: "POST / HTTP/1.1\r\n\(H)Content-Length:  5 5\r\n\r\nhello", status: 400),
    Refusal(name: "CL 0x5", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 0x5\r\n\r\nhello", status: 400),
    Refusal(name: "CL 5a", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 5a\r\n\r\nhello", status: 400),
    Refusal(name: "CL empty", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: \r\n\r\n", status: 400),
    Refusal(name: "CL empty list member", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 5,,5\r\n\r\nhello", status: 400),
    Refusal(name: "CL trailing comma", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 5,\r\n\r\nhello", status: 400),
    Refusal(name: "CL 19 digits", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 1234567890123456789\r\n\r\n", status: 400),
    Refusal(name: "CL overflow", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 99999999999999999999999\r\n\r\n", status: 400),
    Refusal(name: "CL 19 digits with leading zeros", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 0000000000000000005\r\n\r\nhello", status: 400),
    Refusal(name: "CL too large for limit", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 33\r\n\r\n", status: 413, small: true),

    // Transfer-Encoding.
    Refusal(name: "TE in HTTP/1.0", raw: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 400),
    Refusal(name: "TE space before colon", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", status: 400),
    Refusal(name: "TE xchunked", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", status: 400),
    Refusal(name: "TE chunked, identity", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", status: 400),
    Refusal(name: "TE identity", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: identity\r\n\r\n", status: 400),
    Refusal(name: "TE chunked + x fields", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n", status: 400),
    Refusal(name: "TE chunked twice (fields)", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 400),
    Refusal(name: "TE chunked twice (list)", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", status: 400),
    Refusal(name: "TE empty", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: \r\n\r\n", status: 400),
    Refusal(name: "TE empty member", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", status: 400),
    Refusal(name: "TE with parameter", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n", status: 400),
    Refusal(name: "TE quoted", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n", status: 400),
    Refusal(name: "TE vertical tab", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: \u{0B}chunked\r\n\r\n0\r\n\r\n", status: 400),
    Refusal(name: "TE gzip, chunked", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", status: 501),
    Refusal(name: "TE x + chunked fields", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", status: 501),

    // Field syntax.
    Refusal(name: "obs-fold SP", raw: "GET / HTTP/1.1\r\n\(H)X-A: b\r\n c\r\n\r\n", status: 400),
    Refusal(name: "obs-fold HTAB", raw: "GET / HTTP/1.1\r\n\(H)X-A: b\r\n\tc\r\n\r\n", status: 400),
    Refusal(name: "first field line folded", raw: "GET / HTTP/1.1\r\n Host: a\r\n\r\n", status: 400),
    Refusal(name: "space before colon", raw: "GET / HTTP/1.1\r\nHost : a\r\n\r\n", status: 400),
    Refusal(name: "tab before colon", raw: "GET / HTTP/1.1\r\n\(H)X-A\t: b\r\n\r\n", status: 400),
    Refusal(name: "empty field name", raw: "GET / HTTP/1.1\r\n\(H): b\r\n\r\n", status: 400),
    Refusal(name: "field without colon", raw: "GET / HTTP/1.1\r\n\(H)X-A b\r\n\r\n", status: 400),
    Refusal(name: "non-token field name", raw: "GET / HTTP/1.1\r\n\(H)X(A): b\r\n\r\n", status: 400),
    Refusal(name: "non-ASCII field name", raw: "GET / HTTP/1.1\r\n\(H)X-é: b\r\n\r\n", status: 400),
    Refusal(name: "NUL in field value", raw: "GET / HTTP/1.1\r\n\(H)X-A: a\0b\r\n\r\n", status: 400),
    Refusal(name: "NUL in field name", raw: "GET / HTTP/1.1\r\n\(H)X\0A: b\r\n\r\n", status: 400),
    Refusal(name: "CTL in field value", raw: "GET / HTTP/1.1\r\n\(H)X-A: a\u{01}b\r\n\r\n", status: 400),
    Refusal(name: "DEL in field value", raw: "GET / HTTP/1.1\r\n\(H)X-A: a\u{7F}b\r\n\r\n", status: 400),
    Refusal(name: "bare CR in field value", raw: "GET / HTTP/1.1\r\n\(H)X-A: a\rb\r\n\r\n", status: 400),
    Refusal(name: "bare LF in field value", raw: "GET / HTTP/1.1\r\n\(H)X-A: a\nb\r\n\r\n", status: 400),

    // Line endings.
    Refusal(name: "bare LF terminators", raw: "GET / HTTP/1.1\nHost: a\n\n", status: 400),
    Refusal(name: "bare LF after field", raw: "GET / HTTP/1.1\r\nHost: a\n\r\n", status: 400),
    Refusal(name: "bare LF as final line", raw: "GET / HTTP/1.1\r\nHost: a\r\n\n", status: 400),
    Refusal(name: "bare CR in request line", raw: "GET / HTTP/1.1\rHost: a\r\n\r\n", status: 400),
    Refusal(name: "bare CR as final line", raw: "GET / HTTP/1.1\r\nHost: a\r\n\rX", status: 400),
    Refusal(name: "bare LF before request line", raw: "\nGET / HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "five leading empty lines", raw: "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\(H)\r\n", status: 400),

    // Request line.
    Refusal(name: "non-token method", raw: "G(T / HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "empty method", raw: " / HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "tab separator", raw: "GET\t/ HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "two spaces after method", raw: "GET  / HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "two spaces after target", raw: "GET /  HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "trailing space after version", raw: "GET / HTTP/1.1 \r\n\(H)\r\n", status: 400),
    Refusal(name: "space inside target", raw: "GET /a b HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "NUL in target", raw: "GET /a\0b HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "tab in target", raw: "GET /a\tb HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "DEL in target", raw: "GET /a\u{7F} HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "non-ASCII target", raw: "GET /café HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "missing version", raw: "GET /\r\n\(H)\r\n", status: 400),
    Refusal(name: "HTTP/1", raw: "GET / HTTP/1\r\n\(H)\r\n", status: 400),
    Refusal(name: "http/1.1 lowercase", raw: "GET / http/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "HTTP/1.1x", raw: "GET / HTTP/1.1x\r\n\(H)\r\n", status: 400),
    Refusal(name: "HTTP/1.10", raw: "GET / HTTP/1.10\r\n\(H)\r\n", status: 400),
    Refusal(name: "HTTP/ 1.1", raw: "GET / HTTP/ 1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "HTTP/2.0", raw: "GET / HTTP/2.0\r\n\(H)\r\n", status: 505),
    Refusal(name: "HTTP/1.2", raw: "GET / HTTP/1.2\r\n\(H)\r\n", status: 505),
    Refusal(name: "HTTP/3", raw: "GET / HTTP/3\r\n\(H)\r\n", status: 505),
    Refusal(name: "HTTP/2", raw: "GET / HTTP/2\r\n\(H)\r\n", status: 505),
    Refusal(name: "HTTP/0.9", raw: "GET / HTTP/0.9\r\n\(H)\r\n", status: 505),

    // Host.
    Refusal(name: "HTTP/1.1 without Host", raw: "GET / HTTP/1.1\r\n\r\n", status: 400),
    Refusal(name: "two Host fields", raw: "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", status: 400),
    Refusal(name: "two Host fields in HTTP/1.0", raw: "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", status: 400),
    Refusal(name: "Host with space", raw: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", status: 400),
    Refusal(name: "Host with slash", raw: "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", status: 400),
    Refusal(name: "Host with userinfo", raw: "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", status: 400),
    Refusal(name: "Host list", raw: "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", status: 400),

    // Targets.
    Refusal(name: "asterisk with GET", raw: "GET * HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "authority-form with GET", raw: "GET example.com:80 HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "CONNECT", raw: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", status: 405),
    Refusal(name: "relative target", raw: "GET foo HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "ftp scheme", raw: "GET ftp://a/ HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "empty authority", raw: "GET http:///x HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "userinfo in absolute-form", raw: "GET http://u:p@a/ HTTP/1.1\r\n\(H)\r\n", status: 400),
    Refusal(name: "scheme without slashes", raw: "GET http:a HTTP/1.1\r\n\(H)\r\n", status: 400),

    // Chunked framing.
    Refusal(name: "chunk size not hex", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\nzz\r\n", status: 400),
    Refusal(name: "chunk size empty", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n\r\n", status: 400),
    Refusal(name: "chunk size negative", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n-1\r\n", status: 400),
    Refusal(name: "chunk size 0x prefix", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", status: 400),
    Refusal(name: "chunk size leading space", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", status: 400),
    Refusal(name: "chunk size trailing space", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", status: 400),
    Refusal(name: "chunk size 16 hex digits", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n", status: 400),
    Refusal(name: "chunk size 16 digits with zeros", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n0000000000000005\r\nhello\r\n0\r\n\r\n", status: 400),
    Refusal(name: "chunk data not followed by CRLF", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n", status: 400),
    Refusal(name: "chunk data followed by bare LF", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", status: 400),
    Refusal(name: "chunk data followed by CR only", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n5\r\nhello\rX0\r\n\r\n", status: 400),
    Refusal(name: "chunk line bare LF", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", status: 400),
    Refusal(name: "chunk ext NUL", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n5;a\0=b\r\nhello\r\n0\r\n\r\n", status: 400),
    Refusal(name: "chunk ext without name", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n5;=b\r\nhello\r\n0\r\n\r\n", status: 400),
    Refusal(name: "chunk ext without semicolon", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n5 a\r\nhello\r\n0\r\n\r\n", status: 400),
    Refusal(name: "chunk ext unterminated quote", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n5;a=\"b\r\nhello\r\n0\r\n\r\n", status: 400),
    Refusal(name: "chunk ext empty value", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n5;a=\r\nhello\r\n0\r\n\r\n", status: 400),
    Refusal(name: "chunk line too long", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n5;a=" + String(repeating: "b", count: 40) + "\r\nhello\r\n0\r\n\r\n", status: 400, small: true),
    Refusal(name: "chunk line too long, no CRLF yet", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n5;a=" + String(repeating: "b", count: 40), status: 400, small: true),
    Refusal(name: "chunks over maxBodyBytes", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n11\r\n", status: 413, small: true),
    Refusal(name: "trailer obs-fold", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n0\r\nA: b\r\n c\r\n\r\n", status: 400),
    Refusal(name: "trailer without colon", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n0\r\nA b\r\n\r\n", status: 400),
    Refusal(name: "trailer NUL", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n0\r\nA: \0\r\n\r\n", status: 400),
    Refusal(name: "trailer bare LF", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n0\r\nA: b\n\r\n", status: 400),
    Refusal(name: "trailers over maxTrailerBytes", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n0\r\nA: 0123456789\r\nB: 0123456789\r\nC: 0123456789\r\n\r\n", status: 431, small: true),
    Refusal(name: "trailer line over maxTrailerBytes, no CRLF yet", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: chunked\r\n\r\n0\r\nA: " + String(repeating: "x", count: 40), status: 431, small: true),

    // Head limits (small limits: 64-byte request line, 128-byte header section, 5 fields).
    Refusal(name: "request line too long", raw: "GET /" + String(repeating: "a", count: 80) + " HTTP/1.1\r\n\(H)\r\n", status: 414, small: true),
    Refusal(name: "request line too long, no CRLF yet", raw: "GET /" + String(repeating: "a", count: 80), status: 414, small: true),
    Refusal(name: "garbage without CRLF", raw: String(repeating: "x", count: 100), status: 414, small: true),
    Refusal(name: "header section too large", raw: "GET / HTTP/1.1\r\n\(H)X: " + String(repeating: "a", count: 130) + "\r\n\r\n", status: 431, small: true),
    Refusal(name: "header section too large, no end yet", raw: "GET / HTTP/1.1\r\n\(H)X: " + String(repeating: "a", count: 130), status: 431, small: true),
    Refusal(name: "header section too large over many lines", raw: "GET / HTTP/1.1\r\n\(H)A: 0123456789012345678901234567890\r\nB: 0123456789012345678901234567890\r\nC: 0123456789012345678901234567890\r\nD: 0123456789012345678901234567890\r\n\r\n", status: 431, small: true),
    Refusal(name: "too many fields", raw: "GET / HTTP/1.1\r\n\(H)A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", status: 431, small: true),
]

@Test(arguments: refusals)
func refusedWhole(_ c: Refusal) {
    let out = feed(c.raw, limits: c.small ? smallLimits() : HTTPLimits())
    #expect(out.error?.status == c.status, "\(c.name): \(String(describing: out.error)) heads=\(out.heads.count)")
    #expect(out.ends == 0 || out.error != nil)
    if let e = out.error { #expect(!e.message.isEmpty) }
}

@Test(arguments: refusals)
func refusedByteByByte(_ c: Refusal) {
    let out = feed(c.raw, step: 1, limits: c.small ? smallLimits() : HTTPLimits())
    #expect(out.error?.status == c.status, "\(c.name): \(String(describing: out.error))")
}

@Test func connectMessage() {
    let out = feed("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n")
    #expect(out.error == HTTPError(405, "CONNECT not supported"))
}

@Test func unknownCodingMessage() {
    let out = feed("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    #expect(out.error == HTTPError(501, "transfer coding not implemented"))
}

@Test func partialOverlongRequestLineFailsBeforeCRLF() throws {
    // Exactly one byte past the limit, no CRLF: already 414 (a slow client cannot make us buffer).
    var parser = HTTPRequestParser(limits: smallLimits())
    let bytes = Array(("GET /" + String(repeating: "a", count: 60)).utf8)
    #expect(bytes.count == 65)
    #expect(throws: HTTPError.self) {
        _ = try bytes.withUnsafeBytes { try parser.next($0) }
    }
    var parser2 = HTTPRequestParser(limits: smallLimits())
    let ok = Array(bytes.dropLast())
    let r = try ok.withUnsafeBytes { try parser2.next($0) }
    #expect(r.consumed == 0 && r.event == nil)
}
