import Testing
@testable import Translation

@Suite struct ChatTests {
    @Test(arguments: [
        (#"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}],"stream":true}"#, "gpt-3.5-turbo" as String?, true),
        (#"{"messages":[],"stream":false}"#, nil, false),
        (#"{"model":5,"stream":"true"}"#, nil, false),
        (#"  {"stream":true,"model":"m"}  "#, "m", true),
    ])
    func requestInfo(_ body: String, _ model: String?, _ stream: Bool) throws {
        let r = try ChatRequestInfo.parse(Array(body.utf8))
        #expect(r.model == model && r.stream == stream)
    }

    @Test(arguments: ["", "[]", "{\"model\":", "null", "{\"a\":1}x"])
    func requestInfoThrows(_ body: String) {
        #expect(throws: TranslationError.self) { try ChatRequestInfo.parse(Array(body.utf8)) }
    }

    @Test func usageFromJSON() {
        #expect((try? extractUsage(fromJSON: Array(#"{"id":"x","usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#.utf8)))
            == Usage(promptTokens: 9, completionTokens: 12, totalTokens: 21))
        #expect((try? extractUsage(fromJSON: Array(#"{"usage":{"prompt_tokens":9,"completion_tokens":1}}"#.utf8)))?.totalTokens == 10)
        #expect((try? extractUsage(fromJSON: Array(#"{"usage":null}"#.utf8))) == nil)
        #expect((try? extractUsage(fromJSON: Array(#"{"usage":{}}"#.utf8))) == nil)
        #expect((try? extractUsage(fromJSON: Array("nope".utf8))) == nil)
        #expect(throws: TranslationError.self) { try extractUsage(fromJSON: Array("nope".utf8)) }
        #expect((try? extractUsage(fromJSON: Array(#"{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":5}}"#.utf8)))?.totalTokens == Int.max)
    }

    static let stream = "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"你好\"}}],\"usage\":null}\r\n\r\n"
        + ": keep-alive\n\n"
        + "data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n"
        + "data:{\"choices\":[{\"delta\":{\"content\":\"the word \\\"usage\\\" in text\"}}]}\n\n"
        + "data: [DONE]\n\n"

    /// The stream's usage (read by `SSEEventFilter`, which replaced the line scanner: its every-split
    /// and random-stream tests are in SSEEventFilterTests) wherever `"usage"` sits in an event, only
    /// as that exact key, and nested in the Responses API's `response.completed`.
    @Test func usageKeyAnywhereInTheEventAndInResponsesCompleted() throws {
        for line in [#"data: {"usage":{"total_tokens":5}}"#, #"data:{"a":"g","usage":{"total_tokens":5}}"#,
                     #"data: {"choices":[{"delta":{"content":"gggg usag"}}],"usage":{"total_tokens":5}}"#,
                     #"data: {"type":"response.completed","response":{"id":"r","usage":{"input_tokens":2,"output_tokens":3,"total_tokens":5}}}"#] {
            var f = SSEEventFilter(secret: Array("sk-secret-key-0123".utf8))
            _ = try f.process(Array((line + "\n\n").utf8))
            #expect(f.usage?.totalTokens == 5, "\(line)")
        }
        var none = SSEEventFilter(secret: Array("sk-secret-key-0123".utf8))
        _ = try none.process(Array(#"data: {"usages":{"total_tokens":5},"xusage":1}"#.utf8) + [0x0A, 0x0A])
        #expect(none.usage == nil)
        #expect(Usage(try JSONValue.parse(Array(#"{"input_tokens":2,"output_tokens":3}"#.utf8))) == Usage(promptTokens: 2, completionTokens: 3, totalTokens: 5))
    }
}
