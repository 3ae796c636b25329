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

    @Test func sseEverySplit() {
        let bytes = Array(Self.stream.utf8)
        for cut in 0...bytes.count {
            var s = SSEUsageScanner()
            s.feed(Array(bytes[..<cut]))
            s.feed(Array(bytes[cut...]))
            s.finish()
            #expect(s.usage == Usage(promptTokens: 3, completionTokens: 4, totalTokens: 7), "cut \(cut)")
            #expect(s.sawDone)
        }
        var one = SSEUsageScanner()
        for b in bytes { one.feed([b]) }
        #expect(one.usage?.totalTokens == 7 && one.sawDone)
    }

    @Test func sseKeepsLastUsageAndSkipsLongLines() {
        var s = SSEUsageScanner(maxLineBytes: 100)
        s.feed(Array("data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n".utf8))
        let long = "data: {\"pad\":\"\(String(repeating: "x", count: 200))\",\"usage\":{\"total_tokens\":99}}\n"
        let lb = Array(long.utf8)
        s.feed(Array(lb[..<50])); s.feed(Array(lb[50..<150])); s.feed(Array(lb[150...]))
        #expect(s.usage?.totalTokens == 2)
        s.feed(Array(long.utf8))
        #expect(s.usage?.totalTokens == 2)
        s.feed(Array("data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6}}".utf8))
        #expect(s.usage?.totalTokens == 2)
        s.finish()
        #expect(s.usage?.totalTokens == 11)
        #expect(!s.sawDone)
    }

    /// The eight-bytes-a-step line-end search agrees with a naive one at every offset.
    @Test func firstLineEndMatchesNaive() {
        var rng = SplitMix(state: 11)
        let alphabet: [UInt8] = [0x0A, 0x0D, 0x61, 0x8A, 0x8D, 0x00, 0x0B]
        for _ in 0..<500 {
            let s = (0..<Int.random(in: 0...40, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            s.withUnsafeBytes { b in
                for from in 0...s.count {
                    let naive = s.indices.first { $0 >= from && (s[$0] == 0x0A || s[$0] == 0x0D) }
                    let fast = b.baseAddress.flatMap { firstLineEnd(in: $0, from: from, count: s.count) }
                    #expect(fast == naive, "\(s) from \(from)")
                }
            }
        }
    }

    /// The `"usage"` key found wherever it sits in a data line, and only as that exact key.
    @Test func usageKeyAnywhereInTheLine() {
        for line in [#"data: {"usage":{"total_tokens":5}}"#, #"data:{"a":"g","usage":{"total_tokens":5}}"#,
                     #"data: {"choices":[{"delta":{"content":"gggg usag"}}],"usage":{"total_tokens":5}}"#] {
            var s = SSEUsageScanner()
            s.feed(Array((line + "\n").utf8))
            #expect(s.usage?.totalTokens == 5, "\(line)")
        }
        var none = SSEUsageScanner()
        none.feed(Array(#"data: {"usages":{"total_tokens":5},"xusage":1}"#.utf8) + [0x0A])
        #expect(none.usage == nil)
    }

    @Test func sseGarbageDoesNotCrash() {
        var rng = SplitMix(state: 3)
        var s = SSEUsageScanner(maxLineBytes: 64)
        let pieces = ["data: ", "{", "\"usage\"", ":", "}", "\n", "\r", "[DONE]", "\u{0}", "中"]
        for _ in 0..<3000 { s.feed(Array(pieces.randomElement(using: &rng)!.utf8)) }
        s.finish()
    }
}
