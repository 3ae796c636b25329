import HTTPWire
import Testing

/// Feeding sizes: whole buffer, byte by byte, and a few odd splits.
let steps = [Int.max, 1, 2, 3, 7, 16]

struct Accepted: Sendable, CustomTestStringConvertible {
    var name: String
    var raw: String
    var method = "GET"
    var target = "/"
    var versionMinor = 1
    var body = ""
    var fields: [String: String] = [:]
    var testDescription: String { name }
}

private let H = "Host: a\r\n"
private let TE = "Transfer-Encoding: chunked\r\n"

let accepted: [Accepted] = [
    Accepted(name: "simple GET", raw: "GET /index.html?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n",
             target: "/index.html?x=1", fields: ["host": "example.com", "user-agent": "t"]),
    Accepted(name: "POST with Content-Length", raw: "POST /submit HTTP/1.1\r\n\(H)Content-Length: 5\r\n\r\nhello",
             method: "POST", target: "/submit", body: "hello"),
    Accepted(name: "Content-Length 0", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 0\r\n\r\n", method: "POST"),
    Accepted(name: "Content-Length leading zeros are decimal", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 005\r\n\r\nhello",
             method: "POST", body: "hello"),
    Accepted(name: "Content-Length 18 digits of zeros", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 000000000000000003\r\n\r\nabc",
             method: "POST", body: "abc"),
    Accepted(name: "identical Content-Length fields", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
             method: "POST", body: "hello"),
    Accepted(name: "identical Content-Length list 5,5", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 5,5\r\n\r\nhello",
             method: "POST", body: "hello"),
    Accepted(name: "identical Content-Length list with OWS", raw: "POST / HTTP/1.1\r\n\(H)Content-Length: 5 ,\t5\r\n\r\nhello",
             method: "POST", body: "hello"),
    Accepted(name: "chunked with extensions and trailers",
             raw: "POST /c HTTP/1.1\r\n\(H)\(TE)\r\n5;name=val;q=\"x \\\" y\"\r\nhello\r\n6 ; flag\r\n world\r\n0\r\nX-Trailer: t\r\nY: z\r\n\r\n",
             method: "POST", target: "/c", body: "hello world"),
    Accepted(name: "chunked, uppercase hex and coding", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding: CHUNKED\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
             method: "POST", body: "0123456789"),
    Accepted(name: "chunked, leading zeros in size", raw: "POST / HTTP/1.1\r\n\(H)\(TE)\r\n0003\r\nabc\r\n000\r\n\r\n",
             method: "POST", body: "abc"),
    Accepted(name: "TE with HTAB OWS", raw: "POST / HTTP/1.1\r\n\(H)Transfer-Encoding:\tchunked\t\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
             method: "POST", body: "abc"),
    Accepted(name: "chunked, empty body", raw: "POST / HTTP/1.1\r\n\(H)\(TE)\r\n0\r\n\r\n", method: "POST"),
    Accepted(name: "absolute-form reduced", raw: "GET http://example.com:8080/a/b?q=1 HTTP/1.1\r\nHost: other\r\n\r\n",
             target: "/a/b?q=1", fields: ["host": "example.com:8080"]),
    Accepted(name: "absolute-form without path", raw: "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
             target: "/", fields: ["host": "example.com"]),
    Accepted(name: "absolute-form query only", raw: "GET https://example.com?x=y HTTP/1.1\r\nHost: example.com\r\n\r\n",
             target: "/?x=y"),
    Accepted(name: "absolute-form uppercase scheme", raw: "GET HTTPS://Ex.com/p HTTP/1.1\r\nHost: ex.com\r\n\r\n", target: "/p"),
    Accepted(name: "absolute-form in HTTP/1.0 adds Host", raw: "GET http://ex.com/p HTTP/1.0\r\n\r\n",
             target: "/p", versionMinor: 0, fields: ["host": "ex.com"]),
    Accepted(name: "OPTIONS *", raw: "OPTIONS * HTTP/1.1\r\n\(H)\r\n", method: "OPTIONS", target: "*"),
    Accepted(name: "HTTP/1.0 without Host", raw: "GET / HTTP/1.0\r\n\r\n", versionMinor: 0),
    Accepted(name: "HTTP/1.0 with Content-Length", raw: "POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
             method: "POST", versionMinor: 0, body: "hi"),
    Accepted(name: "leading empty lines", raw: "\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\(H)\r\n"),
    Accepted(name: "OWS trimmed in values", raw: "GET / HTTP/1.1\r\nHost:\t a \t\r\nX-Empty:\r\nX-In: a  b\r\n\r\n",
             fields: ["host": "a", "x-empty": "", "x-in": "a  b"]),
    Accepted(name: "obs-text in value", raw: "GET / HTTP/1.1\r\n\(H)X-Name: café\r\n\r\n", fields: ["x-name": "café"]),
    Accepted(name: "empty Host value", raw: "GET / HTTP/1.1\r\nHost:\r\n\r\n", fields: ["host": ""]),
    Accepted(name: "IPv6 Host", raw: "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", fields: ["host": "[::1]:8080"]),
    Accepted(name: "token method", raw: "M-SEARCH! / HTTP/1.1\r\n\(H)\r\n", method: "M-SEARCH!"),
    Accepted(name: "target with visible punctuation", raw: "GET /a%20b/~c;d=e?f=g&h=[i] HTTP/1.1\r\n\(H)\r\n",
             target: "/a%20b/~c;d=e?f=g&h=[i]"),
    Accepted(name: "GET with body via Content-Length", raw: "GET / HTTP/1.1\r\n\(H)Content-Length: 3\r\n\r\nabc", body: "abc"),
]

@Test(arguments: accepted, steps)
func acceptedRequest(_ c: Accepted, _ step: Int) throws {
    let out = feed(c.raw, step: step)
    #expect(out.error == nil, "\(c.name): \(String(describing: out.error))")
    #expect(out.heads.count == 1)
    #expect(out.ends == 1)
    #expect(out.leftover == 0)
    let head = try #require(out.head)
    #expect(head.method == c.method)
    #expect(head.target == c.target)
    #expect(head.versionMinor == c.versionMinor)
    #expect(out.body == c.body)
    for (name, value) in c.fields {
        #expect(head.headers[name] == value, "\(name)")
    }
}

@Test func headFieldsKeepOrderAndCase() throws {
    let out = feed("GET / HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nx-two: 2\r\nX-One: 3\r\n\r\n")
    let head = try #require(out.head)
    #expect(head.headers.fields == [
        HTTPField(name: "Host", value: "a"), HTTPField(name: "X-One", value: "1"),
        HTTPField(name: "x-two", value: "2"), HTTPField(name: "X-One", value: "3"),
    ])
    #expect(head.headers.values("x-one") == ["1", "3"])
}

@Test(arguments: steps)
func pipelinedRequests(_ step: Int) throws {
    let raw = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        + "POST /b HTTP/1.1\r\nHost: a\r\n\(TE)\r\n2\r\nxy\r\n0\r\n\r\n"
        + "GET /c HTTP/1.1\r\nHost: a\r\n\r\n"
    let out = feed(raw, step: step)
    #expect(out.error == nil)
    #expect(out.heads.map(\.target) == ["/a", "/b", "/c"])
    #expect(out.ends == 3)
    #expect(out.bodies.map { String(decoding: $0, as: UTF8.self) } == ["abc", "xy", ""])
    #expect(out.leftover == 0)
}

@Test func chunkedByteByByteMatchesWhole() {
    var raw = "POST /up HTTP/1.1\r\nHost: a\r\n\(TE)\r\n"
    var expected = ""
    for i in 1...20 {
        let piece = String(repeating: Character(UnicodeScalar(UInt8(0x60 + i))), count: i * 3)
        raw += String(piece.utf8.count, radix: 16) + (i % 3 == 0 ? ";ext=\(i)" : "") + "\r\n" + piece + "\r\n"
        expected += piece
    }
    raw += "0\r\nTrailer-A: 1\r\n\r\n"
    let whole = feed(raw)
    #expect(whole.body == expected)
    for step in [1, 2, 5, 13, 64] {
        let out = feed(raw, step: step)
        #expect(out.error == nil)
        #expect(out.body == expected, "step \(step)")
        #expect(out.ends == 1)
        #expect(out.leftover == 0)
    }
}

@Test func headIsNotConsumedUntilComplete() throws {
    let full = Array("GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n".utf8)
    var parser = HTTPRequestParser()
    for cut in 0..<full.count {
        let part = Array(full[..<cut])
        let r = try part.withUnsafeBytes { try parser.next($0) }
        #expect(r.consumed == 0 && r.event == nil, "cut \(cut)")
    }
    let r = try full.withUnsafeBytes { try parser.next($0) }
    #expect(r.consumed == full.count)
    guard case .head(let h)? = r.event else { Issue.record("no head"); return }
    #expect(h.headers["x"] == "y")
    let end = try full.withUnsafeBytes { try parser.next(UnsafeRawBufferPointer(rebasing: $0[full.count...])) }
    #expect(end.consumed == 0 && end.event == .end)
}

@Test func bodyRangesPointIntoInput() throws {
    let bytes = Array("POST / HTTP/1.1\r\nHost: a\r\n\(TE)\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".utf8)
    var parser = HTTPRequestParser()
    var start = 0
    var events: [HTTPParserEvent] = []
    var consumed: [Int] = []
    while true {
        let s = start
        let r = try bytes.withUnsafeBytes { try parser.next(UnsafeRawBufferPointer(rebasing: $0[s...])) }
        guard let e = r.event else { break }
        events.append(e)
        consumed.append(r.consumed)
        if case .body(let range) = e {
            #expect(String(decoding: bytes[(s + range.lowerBound)..<(s + range.upperBound)], as: UTF8.self) == (events.count == 2 ? "abc" : "de"))
        }
        start += r.consumed
        if e == .end { break }
    }
    #expect(events.count == 4)
    #expect(events[1] == .body(7..<10))   // "3;x=y\r\n" framing first
    #expect(events[2] == .body(5..<7))    // "\r\n" + "2\r\n" framing, then "de"
    #expect(events[3] == .end)
    #expect(consumed[3] == 7)              // "\r\n0\r\n\r\n"
    #expect(start == bytes.count)
}

@Test func emptyInputIsFine() throws {
    var parser = HTTPRequestParser()
    let r = try [UInt8]().withUnsafeBytes { try parser.next($0) }
    #expect(r.consumed == 0 && r.event == nil)
    let r2 = try parser.next(UnsafeRawBufferPointer(start: nil, count: 0))
    #expect(r2.consumed == 0 && r2.event == nil)
}

@Test func limitsAtExactBoundaryAreAccepted() {
    var l = HTTPLimits()
    l.maxRequestLineBytes = 16      // "GET /abc HTTP/1.1" is 17
    #expect(feed("GET /ab HTTP/1.1\r\nHost: a\r\n\r\n", limits: l).error == nil)
    #expect(feed("GET /abc HTTP/1.1\r\nHost: a\r\n\r\n", limits: l).error?.status == 414)
    #expect(feed("GET /abc HTTP/1.1\r\nHost: a\r\n\r\n", step: 1, limits: l).error?.status == 414)

    var h = HTTPLimits()
    h.maxHeaderBytes = 18           // "Host: a\r\n" + "X: 1234\r\n" = 18
    #expect(feed("GET / HTTP/1.1\r\nHost: a\r\nX: 1234\r\n\r\n", limits: h).error == nil)
    #expect(feed("GET / HTTP/1.1\r\nHost: a\r\nX: 1234\r\n\r\n", step: 1, limits: h).error == nil)
    #expect(feed("GET / HTTP/1.1\r\nHost: a\r\nX: 12345\r\n\r\n", limits: h).error?.status == 431)

    var c = HTTPLimits()
    c.maxHeaderCount = 2
    #expect(feed("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n", limits: c).error == nil)
    #expect(feed("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n\r\n", limits: c).error?.status == 431)

    var b = HTTPLimits()
    b.maxBodyBytes = 5
    #expect(feed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", limits: b).body == "hello")
    #expect(feed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nhello!", limits: b).error?.status == 413)
    #expect(feed("POST / HTTP/1.1\r\nHost: a\r\n\(TE)\r\n5\r\nhello\r\n0\r\n\r\n", limits: b).body == "hello")
    #expect(feed("POST / HTTP/1.1\r\nHost: a\r\n\(TE)\r\n3\r\nhel\r\n3\r\nlo!\r\n0\r\n\r\n", limits: b).error?.status == 413)

    var t = HTTPLimits()
    t.maxTrailerBytes = 8           // "A: 1234\r\n" is 9
    #expect(feed("POST / HTTP/1.1\r\nHost: a\r\n\(TE)\r\n0\r\nA: 123\r\n\r\n", limits: t).error == nil)
    #expect(feed("POST / HTTP/1.1\r\nHost: a\r\n\(TE)\r\n0\r\nA: 1234\r\n\r\n", limits: t).error?.status == 431)

    var k = HTTPLimits()
    k.maxChunkLineBytes = 6         // "5;a=bc" is 6
    #expect(feed("POST / HTTP/1.1\r\nHost: a\r\n\(TE)\r\n5;a=bc\r\nhello\r\n0\r\n\r\n", limits: k).body == "hello")
    #expect(feed("POST / HTTP/1.1\r\nHost: a\r\n\(TE)\r\n5;a=bcd\r\nhello\r\n0\r\n\r\n", limits: k).error?.status == 400)
}

@Test func incompleteBodyWaits() {
    let out = feed("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
    #expect(out.error == nil && out.heads.count == 1 && out.ends == 0 && out.leftover == 0)
    let chunked = feed("POST / HTTP/1.1\r\nHost: a\r\n\(TE)\r\n5\r\nhel")
    #expect(chunked.error == nil && chunked.ends == 0 && chunked.leftover == 0)
}

struct ConnCase: Sendable, CustomTestStringConvertible {
    var raw: String
    var keepAlive: Bool
    var expectsContinue: Bool
    var testDescription: String { raw.replacingCRLF }
}

extension String {
    var replacingCRLF: String { split(separator: "\r\n").joined(separator: " | ") }
}

@Test(arguments: [
    ConnCase(raw: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", keepAlive: true, expectsContinue: false),
    ConnCase(raw: "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", keepAlive: false, expectsContinue: false),
    ConnCase(raw: "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n", keepAlive: false, expectsContinue: false),
    ConnCase(raw: "GET / HTTP/1.0\r\n\r\n", keepAlive: false, expectsContinue: false),
    ConnCase(raw: "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", keepAlive: true, expectsContinue: false),
    ConnCase(raw: "GET / HTTP/1.0\r\nConnection: ,\t keep-alive\t,\r\n\r\n", keepAlive: true, expectsContinue: false),
    ConnCase(raw: "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nConnection: ,close\r\n\r\n", keepAlive: false, expectsContinue: false),
    ConnCase(raw: "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed, enclose\r\n\r\n", keepAlive: true, expectsContinue: false),
    ConnCase(raw: "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", keepAlive: false, expectsContinue: false),
    ConnCase(raw: "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx", keepAlive: true, expectsContinue: true),
    ConnCase(raw: "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue \r\nContent-Length: 1\r\n\r\nx", keepAlive: true, expectsContinue: true),
    ConnCase(raw: "POST / HTTP/1.1\r\nHost: a\r\nExpect: something\r\nContent-Length: 1\r\n\r\nx", keepAlive: true, expectsContinue: false),
])
func connectionSemantics(_ c: ConnCase) throws {
    let out = feed(c.raw)
    let head = try #require(out.head)
    #expect(head.keepAlive == c.keepAlive)
    #expect(head.expectsContinue == c.expectsContinue)
}

/// Smuggling: a request that would be framed differently by another parser must never yield a
/// second request out of the first one's body.
@Test func smugglingNeverYieldsHiddenRequest() {
    let vectors = [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\u{0B}44\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nFoo: x\nContent-Length: 44\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    ]
    for v in vectors {
        for step in [Int.max, 1] {
            let out = feed(v, step: step)
            #expect(out.error?.status == 400, "\(v.replacingCRLF)")
            #expect(!out.heads.contains { $0.target == "/admin" })
        }
    }
}

@Test func pathAndQuerySplitAtTheFirstQuestionMark() {
    let h = HTTPRequestHead(method: "GET", target: "/v1/videos?after=a?b&limit=2")
    #expect(h.path == "/v1/videos")
    #expect(h.query == "after=a?b&limit=2")
    let bare = HTTPRequestHead(method: "GET", target: "/v1/models")
    #expect(bare.path == "/v1/models")
    #expect(bare.query == nil)
    #expect(HTTPRequestHead(method: "GET", target: "/x?").query == "")
    // Multi-byte UTF-8 before the mark: the byte offset maps back to the right index.
    let wide = HTTPRequestHead(method: "GET", target: "/vidéo/ü?x=ä")
    #expect(wide.path == "/vidéo/ü")
    #expect(wide.query == "x=ä")
    #expect(HTTPRequestHead(method: "GET", target: "?only").path == "")
}
