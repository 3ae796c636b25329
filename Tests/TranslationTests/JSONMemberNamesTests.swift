import Testing
@testable import Translation

/// A naive reference: parse everything, fold every top-level name, report the first repeat.
func naiveAmbiguous(_ body: [UInt8], reading: Set<String> = []) -> String?? {
    guard case .object(let members)? = try? JSONValue.parse(body) else { return .none }
    let read = Dictionary(reading.map { (foldMemberName(Array($0.utf8)), $0) }, uniquingKeysWith: { a, _ in a })
    var seen: [[UInt8]] = []
    for m in members {
        let f = foldMemberName(Array(m.key.utf8))
        if seen.contains(f) { return .some(m.key) }
        if let exact = read[f], exact != m.key { return .some(m.key) }
        seen.append(f)
    }
    return .some(nil)
}

@Suite struct JSONMemberNamesTests {
    /// (body, the member reported or nil)
    static let table: [(String, String?)] = [
        (#"{"model":"A","messages":[]}"#, nil),
        (#"{}"#, nil),
        (#"{"model":"A","model":"B"}"#, "model"),
        (#"{"model":"A","Model":"B"}"#, "Model"),
        (#"{"model":"A","MODEL":"B"}"#, "MODEL"),
        (#"{"stream":false,"sTrEaM":true}"#, "sTrEaM"),
        (#"{"Stream":true,"stream":false}"#, "stream"),
        // Escaped names are compared decoded.
        (#"{"model":"A","mod\u0065l":"B"}"#, "model"),
        (#"{"model":"A","\u004dODEL":"B"}"#, "MODEL"),
        (#"{"a\/b":1,"a/b":2}"#, "a/b"),
        // Go folds ſ (U+017F) to S and the Kelvin sign (U+212A) to K.
        (#"{"stream":false,"ſtream":true}"#, "ſtream"),
        (#"{"stream":false,"\u017ftream":true}"#, "ſtream"),
        (#"{"max_tokens":1,"max_\u212aens":2}"#, nil),
        (#"{"max_tokens":1,"max_to\u212aens":2}"#, "max_to\u{212A}ens"),
        // Nested objects are not examined: top level only.
        (#"{"model":"A","metadata":{"x":1,"x":2,"X":3},"stream_options":{"include_usage":true}}"#, nil),
        (#"{"messages":[{"role":"user","ROLE":"x"}]}"#, nil),
        // Non-ASCII case pairs other than ſ/K stay apart (no ASCII field can be reached by them).
        (#"{"état":1,"ÉTAT":2}"#, nil),
        (#"{"\u00e9":1,"\u00c9":2}"#, nil),
        (#"{"ı":1,"i":2,"İ":3}"#, nil),
        // Exact duplicates of non-ASCII names do collide.
        (#"{"名前":1,"名前":2}"#, "名前"),
        (#"{"名前":1,"\u540d\u524d":2}"#, "名前"),
        // The first collision is reported.
        (#"{"a":1,"b":2,"B":3,"A":4}"#, "B"),
        (#" { "a" : 1 , "A" : 2 } "#, "A"),
    ]

    @Test(arguments: table)
    func firstAmbiguousMember(_ body: String, _ want: String?) throws {
        let bytes = Array(body.utf8)
        #expect(try JSONParser.ambiguousTopLevelMember(bytes) == want, "\(body)")
        #expect(naiveAmbiguous(bytes) == .some(want), "reference disagrees on \(body)")
    }

    /// Names Veil reads are refused in any other spelling, even alone.
    @Test(arguments: [
        (#"{"model":"A","Stream":true}"#, "Stream"),
        (#"{"MODEL":"B"}"#, "MODEL"),
        (#"{"model":"A","ſtream":true}"#, "ſtream"),
        (#"{"model":"A","stream":true,"Stream_Options":{}}"#, "Stream_Options"),
        (#"{"model":"A","stream":true,"stream_options":{}}"#, nil),
        (#"{"model":"A","mod\u0065l":"A"}"#, "model"),
    ] as [(String, String?)])
    func variantsOfNamesVeilReads(_ body: String, _ want: String?) throws {
        let got = try JSONParser.ambiguousTopLevelMember(Array(body.utf8), reading: ChatRequestInfo.decisionMembers)
        #expect(got == want, "\(body)")
    }

    @Test(arguments: ["", "[]", "\"model\"", "{\"model\":", "{\"a\":1}x", "{\"a\" 1}", "{\"a\":1,}", "{\"a\\x\":1}", "{\"a\":1,\"a\":}"])
    func invalidJSONThrows(_ body: String) {
        #expect(throws: TranslationError.self) { try JSONParser.ambiguousTopLevelMember(Array(body.utf8)) }
    }

    /// The whole document is validated even after an ambiguity is found.
    @Test func validatesPastTheFirstAmbiguity() {
        #expect(throws: TranslationError.self) { try JSONParser.ambiguousTopLevelMember(Array(#"{"a":1,"A":2,"b":}"#.utf8)) }
    }

    @Test func foldingIsGoFoldingOnTheNamesThatMatter() {
        #expect(foldMemberName(Array("sTrEaM_0".utf8)) == Array("STREAM_0".utf8))
        #expect(foldMemberName(Array("\u{17F}\u{212A}".utf8)) == Array("SK".utf8))
        #expect(foldMemberName(Array("é".utf8)) == Array("é".utf8))
    }

    @Test func readRefusesAmbiguityWithParam() {
        for (body, param) in [(#"{"model":"A","MODEL":"B","messages":[]}"#, "MODEL"),
                              (#"{"model":"A","Stream":true}"#, "Stream"),
                              (#"{"model":"A","stream":true,"stream_options":{"include_usage":false,"INCLUDE_USAGE":true}}"#, "stream_options.INCLUDE_USAGE"),
                              (#"{"model":"A","stream":true,"stream_options":{"Include_Usage":true}}"#, "stream_options.Include_Usage")] {
            do {
                _ = try ChatRequestInfo.read(Array(body.utf8))
                Issue.record("accepted \(body)")
            } catch {
                #expect(error.kind == .ambiguousMember && error.param == param, "\(body): \(error)")
            }
        }
    }

    @Test func readTakesModelStreamAndIncludeUsage() throws {
        #expect(try ChatRequestInfo.read(Array(#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#.utf8))
                == ChatRequest(model: "m", stream: false, includeUsage: false))
        #expect(try ChatRequestInfo.read(Array(#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#.utf8))
                == ChatRequest(model: "m", stream: true, includeUsage: true))
        #expect(try ChatRequestInfo.read(Array(#"{"model":1,"stream":"yes","stream_options":null}"#.utf8))
                == ChatRequest(model: nil, stream: false, includeUsage: false))
    }

    /// Randomised against the naive reference: names drawn from case variants and escapes.
    @Test func randomisedAgainstReference() throws {
        var rng = SplitMix(state: 2024)
        let spellings = ["model", "Model", "MODEL", "mod\\u0065l", "stream", "ſtream", "\\u017Ftream", "x", "X", "é", "É", "a\\/b", "a/b"]
        for _ in 0..<3000 {
            let n = Int.random(in: 0...5, using: &rng)
            var parts: [String] = []
            for _ in 0..<n {
                let name = spellings.randomElement(using: &rng)!
                let value = Bool.random(using: &rng) ? "1" : "{\"\(spellings.randomElement(using: &rng)!)\":[]}"
                parts.append("\"\(name)\":\(value)")
            }
            let body = Array(("{" + parts.joined(separator: ",") + "}").utf8)
            let reading: Set<String> = Bool.random(using: &rng) ? [] : ["model", "stream"]
            #expect(naiveAmbiguous(body, reading: reading) == .some(try JSONParser.ambiguousTopLevelMember(body, reading: reading)),
                    "\(String(decoding: body, as: UTF8.self))")
        }
    }
}

@Suite struct IncludeUsageTests {
    static func ask(_ s: String) throws(TranslationError) -> (Bool, String) {
        let r = try ChatRequestInfo.askingUpstreamForUsage(Array(s.utf8))
        return (r.callerAskedForUsage, String(decoding: r.body, as: UTF8.self))
    }

    @Test(arguments: [
        (#"{"model":"m","stream":true}"#, false, #"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#),
        (#"{"model":"m","stream":true }"#, false, #"{"model":"m","stream":true ,"stream_options":{"include_usage":true}}"#),
        (#"{}"#, false, #"{"stream_options":{"include_usage":true}}"#),
        (#" { } "#, false, #" { "stream_options":{"include_usage":true}} "#),
        (#"{"stream":true,"stream_options":null,"n":1}"#, false, #"{"stream":true,"stream_options":{"include_usage":true},"n":1}"#),
        (#"{"stream":true,"stream_options":{}}"#, false, #"{"stream":true,"stream_options":{"include_usage":true}}"#),
        (#"{"stream":true,"stream_options":{ "x" : 1 }}"#, false, #"{"stream":true,"stream_options":{ "x" : 1 ,"include_usage":true}}"#),
        (#"{"stream_options":{"include_usage": false,"x":[1]},"stream":true}"#, false, #"{"stream_options":{"include_usage": true,"x":[1]},"stream":true}"#),
        (#"{"stream_options":{"include_usage":null}}"#, false, #"{"stream_options":{"include_usage":true}}"#),
        (#"{"stream_options":{"include_usage":true},"messages":[{"content":"\u00e9 \"q\""}]}"#, true, #"{"stream_options":{"include_usage":true},"messages":[{"content":"\u00e9 \"q\""}]}"#),
    ] as [(String, Bool, String)])
    func rewritesOnlyStreamOptions(_ body: String, _ asked: Bool, _ want: String) throws {
        let (a, out) = try Self.ask(body)
        #expect(a == asked)
        #expect(out == want)
        // The result asks for usage and reads back the same otherwise.
        let r = try ChatRequestInfo.read(Array(out.utf8))
        #expect(r.includeUsage)
    }

    @Test func theSameArrayWhenAlreadyAsked() throws {
        let body = Array(#"{"stream":true,"stream_options":{"include_usage":true}}"#.utf8)
        let r = try ChatRequestInfo.askingUpstreamForUsage(body)
        #expect(r.callerAskedForUsage)
        #expect(r.body.withUnsafeBufferPointer { $0.baseAddress } == body.withUnsafeBufferPointer { $0.baseAddress })
    }

    @Test(arguments: [
        (#"{"stream":true,"STREAM_OPTIONS":{}}"#, TranslationError.Kind.ambiguousMember, "STREAM_OPTIONS"),
        (#"{"stream_options":{},"stream_options":{}}"#, .ambiguousMember, "stream_options"),
        (#"{"model":"a","Model":"b"}"#, .ambiguousMember, "Model"),
        (#"{"stream_options":{"include_usage":false,"Include_usage":true}}"#, .ambiguousMember, "stream_options.Include_usage"),
        (#"{"stream_options":"yes"}"#, .unexpectedShape, "stream_options"),
        (#"{"stream_options":{"include_usage":1}}"#, .unexpectedShape, "stream_options.include_usage"),
    ] as [(String, TranslationError.Kind, String)])
    func refusals(_ body: String, _ kind: TranslationError.Kind, _ param: String) {
        do {
            _ = try Self.ask(body)
            Issue.record("accepted \(body)")
        } catch {
            #expect(error.kind == kind && error.param == param, "\(body): \(error)")
        }
    }

    @Test(arguments: ["", "[]", "{\"stream\":true", "{\"stream_options\":{\"include_usage\":tru}}"])
    func invalidJSONThrows(_ body: String) {
        #expect(throws: TranslationError.self) { try Self.ask(body) }
    }
}
