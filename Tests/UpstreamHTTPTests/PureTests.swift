import CNGHTTP2
import HTTPWire
import Testing
import Upstream
@testable import UpstreamHTTP

/// URL splitting: what is accepted and what each part is.
@Suite struct UpstreamURLTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var url: String
        var scheme: UpstreamURL.Scheme
        var host: String
        var port: UInt16
        var authority: String
        var target: String
        var testDescription: String { url }
    }

    static let accepted: [Row] = [
        Row(url: "http://127.0.0.1:8080/v1/chat/completions", scheme: .http, host: "127.0.0.1", port: 8080,
            authority: "127.0.0.1:8080", target: "/v1/chat/completions"),
        Row(url: "https://ai.Example.cn", scheme: .https, host: "ai.example.cn", port: 443, authority: "ai.Example.cn", target: ""),
        Row(url: "HTTPS://h.example/x?y=1#frag", scheme: .https, host: "h.example", port: 443, authority: "h.example", target: "/x?y=1"),
        Row(url: "http://h.example?q=1", scheme: .http, host: "h.example", port: 80, authority: "h.example", target: "?q=1"),
        Row(url: "http://[::1]:9/x", scheme: .http, host: "::1", port: 9, authority: "[::1]:9", target: "/x"),
        Row(url: "http://[2001:db8::1]/", scheme: .http, host: "2001:db8::1", port: 80, authority: "[2001:db8::1]", target: "/"),
        Row(url: "http://h:65535/p%20q", scheme: .http, host: "h", port: 65535, authority: "h:65535", target: "/p%20q"),
        Row(url: "http://h/ünï", scheme: .http, host: "h", port: 80, authority: "h", target: "/ünï"),
    ]

    @Test(arguments: accepted)
    func splits(_ r: Row) throws {
        let u = try #require(UpstreamURL.parse(r.url))
        #expect(u.scheme == r.scheme)
        #expect(u.host == r.host)
        #expect(u.port == r.port)
        #expect(u.authority == r.authority)
        let bytes = Array(r.url.utf8)
        #expect(String(decoding: bytes[u.originLength..<u.targetEnd], as: UTF8.self) == r.target)
    }

    @Test(arguments: [
        "ftp://h/x", "http:/h/x", "h/x", "http://", "http:///x", "http://user@h/x", "http://user:pw@h/x",
        "http://h:0/", "http://h:65536/", "http://h:/x", "http://h:12a/", "http://h/a b", "http://h/a\r\nX: y",
        "http://h/\u{7F}", "http://[::1/x", "http://[]/", "http://[::1]x/", "http://h h/", "http://[fe80::1%eth0]/",
    ])
    func refuses(_ url: String) {
        #expect(UpstreamURL.parse(url) == nil, "\(url)")
    }

    @Test func originKeysNormalise() throws {
        #expect(try #require(UpstreamURL.parse("HTTP://H.Example/x")).originKey == "http://h.example:80")
        #expect(try #require(UpstreamURL.parse("https://[::1]/")).originKey == "https://[::1]:443")
        #expect(try #require(UpstreamURL.parse("http://10.0.0.1:81")).hostIsIP)
        #expect(try !(#require(UpstreamURL.parse("http://localhost:81")).hostIsIP))
    }
}

/// The request head on the wire, byte for byte.
@Suite struct RequestHeadWriterTests {
    private func head(_ method: String, _ url: String, _ headers: HTTPHeaders = [],
                      shared: HTTPHeaders? = nil, body: Int = 0) -> String? {
        guard let parts = UpstreamURL.parse(url) else { return nil }
        var out: [UInt8] = []
        let ok = RequestHeadWriter.write(method: method, url: url, target: parts.originLength..<parts.targetEnd,
                                         authority: parts.authority, headers: headers,
                                         shared: shared.map { RequestHeadWriter.sharedBlockBytes($0) }, bodyCount: body, into: &out)
        return ok ? String(decoding: out, as: UTF8.self) : nil
    }

    @Test func getHasHostAndNothingElse() {
        #expect(head("GET", "http://127.0.0.1:8080/v1/models") == "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")
        #expect(head("get", "https://h.example") == "GET / HTTP/1.1\r\nHost: h.example\r\n\r\n")
        #expect(head("GET", "http://h.example?x=1#f") == "GET /?x=1 HTTP/1.1\r\nHost: h.example\r\n\r\n")
    }

    @Test func bodiesAndLengths() {
        #expect(head("POST", "http://h/c", [("Content-Type", "application/json")], body: 13)
                == "POST /c HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n")
        #expect(head("POST", "http://h/c") == "POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
        #expect(head("PUT", "http://h/c") == "PUT /c HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
        #expect(head("PATCH", "http://h/c", body: 2) == "PATCH /c HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n")
        #expect(head("DELETE", "http://h/c") == "DELETE /c HTTP/1.1\r\nHost: h\r\n\r\n")
        #expect(head("GET", "http://h/c", body: 1_234_567_890) == "GET /c HTTP/1.1\r\nHost: h\r\nContent-Length: 1234567890\r\n\r\n")
        #expect(head("POSTX", "http://h/c") == "POSTX /c HTTP/1.1\r\nHost: h\r\n\r\n")
    }

    @Test func fieldsAreSanitisedAndClientOwnedOnesDropped() {
        let fields: HTTPHeaders = [
            ("X-Evil", "a\r\nX-Injected: 1"), ("X-Nul", "a\0b"), ("X-Empty", ""), (" X-Pad ", "  v \t"),
            ("Bad Name", "x"), ("Bad:Name", "x"), ("", "x"), ("Ünï", "x"),
            ("Content-Length", "999"), ("transfer-encoding", "chunked"), ("Connection", "close"),
            ("Keep-Alive", "1"), ("TE", "trailers"), ("Upgrade", "h2c"), ("Expect", "100-continue"), ("Proxy-Connection", "x"),
        ]
        #expect(head("POST", "http://h/", fields, body: 1)
                == "POST / HTTP/1.1\r\nHost: h\r\nX-Evil: a  X-Injected: 1\r\nX-Nul: a b\r\nX-Empty: \r\nX-Pad: v\r\nContent-Length: 1\r\n\r\n")
    }

    @Test func callerHostWinsAndSharedBlockFollowsOwnFields() {
        #expect(head("GET", "http://10.0.0.1/x", [("host", "api.example")], shared: [("Authorization", "Bearer k"), ("X-Bad", "a\nb")])
                == "GET /x HTTP/1.1\r\nhost: api.example\r\nAuthorization: Bearer k\r\nX-Bad: a b\r\n\r\n")
    }

    @Test func targetBytesAboveASCIIArePercentEncoded() {
        #expect(head("GET", "http://h/ü?q=é") == "GET /%C3%BC?q=%C3%A9 HTTP/1.1\r\nHost: h\r\n\r\n")
    }

    @Test func nonTokenMethodsAreRefused() {
        #expect(head("GE T", "http://h/") == nil)
        #expect(head("", "http://h/") == nil)
        #expect(head("GET\r\n", "http://h/") == nil)
    }
}

/// RFC 9110 §9.2.2, as a table.
@Suite struct RetryPolicyTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var name: String
        var method: String
        var reused: Bool
        var sent: Int
        var received: Int
        var retries: Int
        var retry: Bool
        var testDescription: String { name }
    }

    static let rows: [Row] = [
        Row(name: "GET on a stale kept-alive connection", method: "GET", reused: true, sent: 120, received: 0, retries: 0, retry: true),
        Row(name: "PUT, DELETE, HEAD, OPTIONS are idempotent", method: "PUT", reused: true, sent: 50, received: 0, retries: 0, retry: true),
        Row(name: "DELETE", method: "DELETE", reused: true, sent: 50, received: 0, retries: 0, retry: true),
        Row(name: "lowercase get", method: "get", reused: true, sent: 50, received: 0, retries: 0, retry: true),
        Row(name: "POST that may have been processed", method: "POST", reused: true, sent: 200, received: 0, retries: 0, retry: false),
        Row(name: "PATCH that may have been processed", method: "PATCH", reused: true, sent: 1, received: 0, retries: 0, retry: false),
        Row(name: "POST of which no byte was sent", method: "POST", reused: true, sent: 0, received: 0, retries: 0, retry: true),
        Row(name: "never on a fresh connection", method: "GET", reused: false, sent: 0, received: 0, retries: 0, retry: false),
        Row(name: "never after a response byte", method: "GET", reused: true, sent: 50, received: 1, retries: 0, retry: false),
        Row(name: "never a retry of a retry", method: "GET", reused: true, sent: 50, received: 0, retries: 1, retry: false),
    ]

    @Test(arguments: rows)
    func decides(_ r: Row) {
        #expect(RetryPolicy.mayRetry(method: r.method, reusedConnection: r.reused, requestBytesSent: r.sent,
                                     responseBytesReceived: r.received, retriesSoFar: r.retries) == r.retry)
    }
}

/// The HTTP/2 header list sent for a request.
@Suite struct H2HeaderBlockTests {
    @Test func pseudoHeadersThenLowercasedFieldsWithoutConnectionSpecificOnes() throws {
        let url = "https://api.example/v1/chat/completions?x=ü"
        let parts = try #require(UpstreamURL.parse(url))
        var block = H2HeaderBlock()
        block.build(method: "post", scheme: "https", authority: parts.authority, url: url,
                    target: parts.originLength..<parts.targetEnd,
                    headers: [("Content-Type", "application/json"), ("Connection", "keep-alive"), ("X-Evil", "a\r\nb"),
                              ("Transfer-Encoding", "chunked"), ("Bad Name", "x")],
                    shared: [("Authorization", "Bearer k"), ("Host", "ignored.example")], bodyCount: 13)
        let list = block.withNV { nv, n in
            (0..<n).map { i in
                (String(decoding: UnsafeBufferPointer(start: nv[i].name, count: nv[i].namelen), as: UTF8.self),
                 String(decoding: UnsafeBufferPointer(start: nv[i].value, count: nv[i].valuelen), as: UTF8.self))
            }
        }
        #expect(list.map(\.0) == [":method", ":scheme", ":authority", ":path", "content-type", "x-evil", "authorization", "content-length"])
        #expect(list.map(\.1) == ["POST", "https", "api.example", "/v1/chat/completions?x=%C3%BC", "application/json", "a  b", "Bearer k", "13"])
        // A caller's Host becomes :authority; building again reuses the buffers.
        block.build(method: "GET", scheme: "https", authority: "a", url: "https://a", target: 9..<9,
                    headers: [("host", "b.example")], shared: nil, bodyCount: 0)
        let again = block.withNV { nv, n in
            (0..<n).map { String(decoding: UnsafeBufferPointer(start: nv[$0].value, count: nv[$0].valuelen), as: UTF8.self) }
        }
        #expect(again == ["GET", "https", "b.example", "/"])
    }
}
