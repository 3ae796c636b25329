import HTTPWire
import Testing

private func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

@Test func writesHead() {
    var out: [UInt8] = []
    HTTPResponseWriter.head(HTTPResponseHead(status: 200, headers: ["Content-Type": "text/plain", "Content-Length": "5"]), into: &out)
    #expect(text(out) == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n")
}

@Test func writesHeadWithoutFieldsAndAppends() {
    var out: [UInt8] = Array("x".utf8)
    HTTPResponseWriter.head(HTTPResponseHead(status: 204), into: &out)
    #expect(text(out) == "xHTTP/1.1 204 No Content\r\n\r\n")
    out = []
    HTTPResponseWriter.head(HTTPResponseHead(status: 299), into: &out)
    #expect(text(out) == "HTTP/1.1 299 Unknown\r\n\r\n")
}

@Test func headerInjectionIsNeutralised() {
    var h = HTTPHeaders()
    h.add("X-Evil", "a\r\nSet-Cookie: pwned")
    h.add("Bad\r\nName", "v")
    h.add("Bad Name", "v")
    h.add("", "v")
    h.add("X-Nul", "a\0b\tc")
    h.add("X-UTF8", "café")
    var out: [UInt8] = []
    HTTPResponseWriter.head(HTTPResponseHead(status: 200, headers: h), into: &out)
    #expect(text(out) == "HTTP/1.1 200 OK\r\nX-Evil: a  Set-Cookie: pwned\r\nX-Nul: a b\tc\r\nX-UTF8: café\r\n\r\n")
}

@Test(arguments: [(0, ""), (1, "1"), (10, "a"), (255, "ff"), (256, "100"), (4096, "1000"), (65537, "10001")])
func writesChunk(_ size: Int, _ hex: String) {
    let payload = [UInt8](repeating: 0x41, count: size)
    var out: [UInt8] = []
    payload.withUnsafeBytes { HTTPResponseWriter.chunk($0, into: &out) }
    if size == 0 {
        #expect(out.isEmpty)
    } else {
        #expect(out == Array("\(hex)\r\n".utf8) + payload + Array("\r\n".utf8))
    }
}

@Test func lastChunk() {
    #expect(text(HTTPResponseWriter.lastChunk) == "0\r\n\r\n")
}

@Test func reasonPhrases() {
    let expected: [Int: String] = [
        100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created", 202: "Accepted",
        204: "No Content", 206: "Partial Content", 301: "Moved Permanently", 302: "Found",
        304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
        404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
        411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
        415: "Unsupported Media Type", 416: "Range Not Satisfiable", 422: "Unprocessable Content",
        429: "Too Many Requests", 431: "Request Header Fields Too Large",
        500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
        503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    ]
    for (status, phrase) in expected {
        #expect(HTTPResponseWriter.reasonPhrase(status) == phrase)
    }
    #expect(HTTPResponseWriter.reasonPhrase(299) == "Unknown")
    #expect(HTTPResponseWriter.reasonPhrase(0) == "Unknown")
}

@Test func writerOutputParsesBackAsFields() throws {
    // Round trip through the request parser's field rules: a written head is well-formed.
    var out: [UInt8] = Array("GET / HTTP/1.1\r\n".utf8)
    var h = HTTPHeaders()
    h.add("Host", "a")
    h.add("X-Evil", "1\r\n\r\nGET /admin HTTP/1.1")
    var resp: [UInt8] = []
    HTTPResponseWriter.head(HTTPResponseHead(status: 200, headers: h), into: &resp)
    // Drop the status line, keep the field lines.
    let firstCRLF = try #require(resp.firstIndex(of: 0x0A))
    out += resp[(firstCRLF + 1)...]
    let parsed = feed(out)
    #expect(parsed.error == nil)
    #expect(parsed.heads.count == 1)
    #expect(parsed.head?.headers["x-evil"] == "1    GET /admin HTTP/1.1")
}
