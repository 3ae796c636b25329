import HTTPWire
import Testing
@testable import Gateway

/// Small per-response decisions of the proxies, as pure functions.
@Suite struct ProxyRulesTests {
    @Test(arguments: [
        (200, "text/event-stream", true), (200, "text/event-stream; charset=utf-8", true),
        (200, "Text/Event-Stream", true), (200, "TEXT/EVENT-STREAM;charset=UTF-8", true),
        (200, "application/json", false), (200, "text/event", false), (200, "", false),
        (500, "text/event-stream", false), (201, "text/event-stream", false),
    ])
    func eventStreamDetection(_ status: Int, _ type: String, _ expected: Bool) {
        #expect(ChatHooks.isEventStream(status: status, contentType: type) == expected)
    }

    @Test func noContentTypeIsNoStream() {
        #expect(!ChatHooks.isEventStream(status: 200, contentType: nil))
    }

    /// The caller's allowed fields and the request id are each request's own; the key and
    /// Accept-Encoding come from the configuration's shared block, never from the caller.
    @Test func upstreamHeadersSplitOwnAndShared() {
        let caller: HTTPHeaders = ["Content-Type": "application/json", "Authorization": "Bearer team-token",
                                   "Cookie": "a=b", "Accept": "text/event-stream", "X-Other": "1"]
        let own = HeaderPolicy.upstreamHeaders(from: caller, requestID: "req_1")
        #expect(own.map(\.name) == ["content-type", "accept", "x-request-id"])
        #expect(own.fields.last?.value == "req_1")
        // A JSON body's type comes from the shared block: the caller's is not forwarded.
        #expect(HeaderPolicy.upstreamHeaders(from: caller, requestID: "r", omitting: "content-type").map(\.name) == ["accept", "x-request-id"])
        #expect(HeaderPolicy.sharedUpstreamHeaders(authorization: "a", json: true).fields.map(\.name)
                == ["authorization", "accept-encoding", "content-type"])
        let block = HeaderPolicy.sharedUpstreamHeaders(authorization: "Bearer sk-upstream")
        #expect(block.fields.map(\.name) == ["authorization", "accept-encoding"])
        #expect(block.fields.fields.first?.value == "Bearer sk-upstream")
        #expect(block.fields.fields.last?.value == "identity")
    }

    /// Routing compares path prefixes as bytes.
    @Test func pathPrefixesAreBytes() {
        let target = "/v1/videos/characters/abc?x=1"
        let path = target[..<target.firstIndex(of: "?")!]
        #expect(path.hasBytePrefix("/v1/"))
        #expect(path.hasBytePrefix("/v1/videos/characters/"))
        #expect(!path.hasBytePrefix("/v1/characters/"))
        #expect(!path.hasBytePrefix("/v1/videos/characters/abc/"))
        #expect(Substring("/v1").hasBytePrefix("/v1") && !Substring("/v1").hasBytePrefix("/v1/"))
        // A combining mark after the slash: a Character-wise test says no, bytes say yes.
        #expect(Substring("/v1/\u{301}x").hasBytePrefix("/v1/"))
    }
}
