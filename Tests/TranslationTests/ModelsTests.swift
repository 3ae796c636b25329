import Testing
@testable import Translation

@Suite struct ModelsTests {
    /// The stand-in's (and new-api's) answer: vendor names, `success`, extra fields.
    static let upstream = #"""
    {"data":[
      {"id":"gpt-3.5-turbo","object":"model","created":1626777600,"owned_by":"openai","supported_endpoint_types":["openai"]},
      {"id":"sora-2-yijia","object":"model","created":1700000000,"owned_by":"custom"},
      {"id":"gpt-4o-mini","object":"model","created":1626777600,"owned_by":"openai"},
      {"id":"sora-2","object":"model","created":1626777600,"owned_by":"openai"},
      {"id":"sora-2-pro-yijia","object":"model","owned_by":""},
      {"id":"-yijia","object":"model","created":"17","owned_by":"custom"},
      {"id":42},{"object":"model"},"gpt-5",null,
      {"id":"\#(String(repeating: "x", count: 300))"}
    ],"object":"list","success":true}
    """#

    @Test(arguments: [
        ("sora-2-yijia", "sora-2"),
        ("sora-2-pro-yijia", "sora-2-pro"),
        ("gpt-4o", "gpt-4o"),
        ("-yijia", "-yijia"),          // nothing would be left: kept
        ("yijia", "yijia"),
        ("sora-2-yijia-yijia", "sora-2-yijia"),  // one suffix, once
        ("sora-2-YIJIA", "sora-2-YIJIA"),        // exact, case-sensitive
    ])
    func canonicalNames(_ upstream: String, _ expected: String) {
        #expect(ModelCatalog.canonicalName(upstream) == expected)
    }

    @Test func configuredSuffixes() {
        #expect(ModelCatalog.canonicalName("gpt-4o-vendor", vendorSuffixes: ["-yijia", "-vendor"]) == "gpt-4o")
        #expect(ModelCatalog.canonicalName("sora-2-yijia", vendorSuffixes: []) == "sora-2-yijia")
        #expect(ModelCatalog.canonicalName("sora-2", vendorSuffixes: [""]) == "sora-2")
    }

    @Test(arguments: [
        // allow-list, visible ids in order
        (nil as [String]?, ["gpt-3.5-turbo", "sora-2", "gpt-4o-mini", "sora-2-pro", "-yijia"]),
        (["sora-2"], ["sora-2"]),
        (["sora-2-yijia"], []),                        // vendor names are not names a team can be allowed
        (["gpt-4o-mini", "gpt-3.5-turbo", "dall-e-3"], ["gpt-3.5-turbo", "gpt-4o-mini"]),
        ([], []),
    ])
    func visibleList(_ allowed: [String]?, _ ids: [String]) throws {
        let models = try ModelCatalog.visibleModels(upstreamJSON: Array(Self.upstream.utf8), allowed: allowed)
        #expect(models.map(\.id) == ids)
    }

    @Test func duplicatesKeepThePlaceOfTheFirstAndTheUnsuffixedFields() throws {
        let models = try ModelCatalog.visibleModels(upstreamJSON: Array(Self.upstream.utf8), allowed: nil)
        // sora-2 first appeared as sora-2-yijia (2nd); the upstream's own sora-2 entry wins its fields.
        #expect(models[1] == OpenAIModel(id: "sora-2", created: 1626777600, ownedBy: "openai"))
        #expect(models[3] == OpenAIModel(id: "sora-2-pro", created: 0, ownedBy: "system"))   // no created, empty owner
        #expect(models[4].created == 17)                                                   // "17" read leniently
        // The unsuffixed entry first, the vendor copy after: the first stays.
        let reversed = #"{"data":[{"id":"sora-2","created":1,"owned_by":"openai"},{"id":"sora-2-yijia","created":2,"owned_by":"custom"}]}"#
        #expect(try ModelCatalog.visibleModels(upstreamJSON: Array(reversed.utf8), allowed: nil) == [OpenAIModel(id: "sora-2", created: 1, ownedBy: "openai")])
        // Two vendor copies: the first.
        let two = #"{"data":[{"id":"a-yijia","created":1},{"id":"a-yijia","created":2}]}"#
        #expect(try ModelCatalog.visibleModels(upstreamJSON: Array(two.utf8), allowed: nil).map(\.created) == [1])
    }

    @Test(arguments: [
        (#"{"success":false,"message":"无效的令牌"}"#, TranslationError.Kind.upstreamFailure),
        (#"{"object":"list"}"#, .unexpectedShape),
        (#"{"data":{}}"#, .unexpectedShape),
        (#"[]"#, .unexpectedShape),
        (#"{"data":["#, .invalidJSON),
        ("", .unexpectedShape),          // the parser: "expected a JSON object"
    ])
    func refusals(_ body: String, _ kind: TranslationError.Kind) {
        #expect(throws: TranslationError.self) { try ModelCatalog.visibleModels(upstreamJSON: Array(body.utf8), allowed: nil) }
        do { _ = try ModelCatalog.visibleModels(upstreamJSON: Array(body.utf8), allowed: nil) } catch { #expect(error.kind == kind) }
    }

    @Test func bodiesHoldOnlyOpenAIFields() throws {
        let models = try ModelCatalog.visibleModels(upstreamJSON: Array(Self.upstream.utf8), allowed: ["sora-2", "gpt-4o-mini"])
        let body = String(decoding: ModelCatalog.listBody(models), as: UTF8.self)
        #expect(body == #"{"object":"list","data":[{"id":"sora-2","object":"model","created":1626777600,"owned_by":"openai"},{"id":"gpt-4o-mini","object":"model","created":1626777600,"owned_by":"openai"}]}"#)
        #expect(String(decoding: ModelCatalog.listBody([]), as: UTF8.self) == #"{"object":"list","data":[]}"#)
        // The list body parses back as JSON.
        #expect((try? JSONValue.parse(ModelCatalog.listBody(models))) != nil)
    }

    @Test func singleModelLookup() throws {
        let models = try ModelCatalog.visibleModels(upstreamJSON: Array(Self.upstream.utf8), allowed: ["sora-2"])
        #expect(ModelCatalog.model(id: "sora-2", in: models)?.jsonBytes == Array(#"{"id":"sora-2","object":"model","created":1626777600,"owned_by":"openai"}"#.utf8))
        #expect(ModelCatalog.model(id: "sora-2-yijia", in: models) == nil)
        #expect(ModelCatalog.model(id: "gpt-4o-mini", in: models) == nil)   // exists upstream, not allowed
        let e = ModelCatalog.notFound(id: "gpt-4o-mini")
        #expect(e.code == "model_not_found" && e.type == "invalid_request_error" && e.param == "model")
        #expect(String(decoding: e.jsonBytes, as: UTF8.self) == #"{"error":{"message":"The model `gpt-4o-mini` does not exist or you do not have access to it.","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#)
    }

    @Test func boundedAndNeverTraps() throws {
        var big = #"{"data":["#
        for i in 0..<(ModelCatalog.maxModels + 50) { big += (i > 0 ? "," : "") + #"{"id":"m\#(i)"}"# }
        big += "]}"
        #expect(try ModelCatalog.visibleModels(upstreamJSON: Array(big.utf8), allowed: nil).count == ModelCatalog.maxModels)
        // Every prefix of a valid body either parses or throws; none traps.
        let bytes = Array(Self.upstream.utf8)
        for cut in stride(from: 0, to: bytes.count, by: 7) {
            _ = try? ModelCatalog.visibleModels(upstreamJSON: Array(bytes[..<cut]), allowed: nil)
        }
    }
}
