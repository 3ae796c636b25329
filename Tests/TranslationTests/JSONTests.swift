import Testing
@testable import Translation

@Suite struct JSONTests {
    @Test func parsesNestedAndNumbersKeepText() throws {
        let v = try JSONValue.parse(#"{"id":4078,"p":"45.5","a":[1,true,null],"s":"a\"\u00e9\ud83d\ude00\n"}"#)
        #expect(v["id"]?.lenientString == "4078")
        #expect(v["p"]?.lenientInt == 45)
        #expect(v["a"] == .array([.number("1"), .bool(true), .null]))
        #expect(v["s"]?.stringValue == "a\"é😀\n")
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\":}", "01", "1.", "\"\\x\"", "\"a", "nul", "{} x",
                      String(repeating: "[", count: 10_000), "\"\u{01}\"", "-", "1e"])
    func rejectsGarbage(_ s: String) {
        #expect(throws: TranslationError.self) { try JSONValue.parse(s) }
    }

    @Test func loneSurrogatesBecomeReplacement() throws {
        #expect(try JSONValue.parse(#""\ud800x""#).stringValue == "\u{FFFD}x")
        #expect(try JSONValue.parse(#""\udc00""#).stringValue == "\u{FFFD}")
    }

    @Test func hugeNumbersDoNotTrap() throws {
        let v = try JSONValue.parse("[1e400, 99999999999999999999999, -1e300]")
        guard case .array(let a) = v else { Issue.record(); return }
        #expect(a[0].lenientInt == nil)
        #expect(a[1].lenientInt == nil)
        #expect(a[2].lenientInt == nil)
    }

    @Test func topLevelMembersSkipsOthers() throws {
        let m = try JSONParser.topLevelMembers(Array(#"{"x":[{"y":"z"}],"model":"m","model":"n"}"#.utf8), wanted: ["model"])
        #expect(m == ["model": .string("n")])
        #expect(throws: TranslationError.self) { try JSONParser.topLevelMembers(Array("[1]".utf8), wanted: []) }
    }

    @Test func topLevelKeysMatchedAsBytesOrDecoded() throws {
        // Escaped spellings of a wanted key are still that key; near-misses are not.
        let m = try JSONParser.topLevelMembers(Array(#"{"us\u0061ge":1,"usag":2,"usagee":3,"model":"m"}"#.utf8),
                                              wanted: ["usage", "model"])
        #expect(m == ["usage": .number("1"), "model": .string("m")])
        #expect(try JSONParser.topLevelMembers(Array(#"{"a\"b":1}"#.utf8), wanted: ["a\"b"]) == ["a\"b": .number("1")])
        #expect(try JSONParser.topLevelMembers(Array(#"{"é":1}"#.utf8), wanted: ["é"]) == ["é": .number("1")])
    }

    /// The word-at-a-time string skipper agrees with a byte-at-a-time reference on strings with
    /// a quote, backslash, control or high byte at every offset.
    @Test func skipStringAgreesWithReferenceAtEveryOffset() {
        func reference(_ b: [UInt8]) -> Int? {          // index after the closing quote, or nil
            guard b.first == 0x22 else { return nil }
            var i = 1
            while i < b.count {
                let c = b[i]
                if c == 0x22 { return i + 1 }
                if c < 0x20 { return nil }
                if c == 0x5C {
                    guard i + 1 < b.count else { return nil }
                    let e = b[i + 1]
                    if e == 0x75 {
                        guard i + 6 <= b.count, b[(i + 2)..<(i + 6)].allSatisfy({ $0.isHexDigitASCII }) else { return nil }
                        i += 6; continue
                    }
                    guard [0x22, 0x5C, 0x2F, 0x62, 0x66, 0x6E, 0x72, 0x74].contains(e) else { return nil }
                    i += 2; continue
                }
                i += 1
            }
            return nil
        }
        let specials: [[UInt8]] = [[0x22], [0x5C, 0x22], [0x5C, 0x6E], [0x01], [0x1F], [0x20], [0x7F], [0xC3, 0xA9],
                                   [0xFF], [0x5C, 0x75, 0x30, 0x30, 0x34, 0x31], [0x5C, 0x78], [0x5C]]
        var checked = 0
        for len in 0..<24 {
            for at in 0...len {
                for sp in specials {
                    var body = [UInt8](repeating: 0x61, count: len)
                    body.insert(contentsOf: sp, at: at)
                    for closed in [true, false] {
                        let doc: [UInt8] = [0x22] + body + (closed ? [0x22] : [])
                        let want = reference(doc)
                        let got: Int? = doc.withUnsafeBufferPointer { b in
                            var p = JSONParser(b)
                            do { try p.skipString(); return p.i } catch { return nil }
                        }
                        #expect(got == want, "\(doc)")
                        checked += 1
                    }
                }
            }
        }
        #expect(checked > 7_000)
    }

    @Test func escaping() {
        let s = String(decoding: JSONEscaping.quoted("a\"b\\c\n\r\t\u{01}\u{2028}é中"), as: UTF8.self)
        #expect(s == #""a\"b\\c\n\r\t\u0001\u2028é中""#)
    }

    @Test func openAIError() {
        let e = OpenAIError.bytes(status: 404, message: "No \"video\" here")
        #expect(String(decoding: e, as: UTF8.self)
            == #"{"error":{"message":"No \"video\" here","type":"invalid_request_error","param":null,"code":null}}"#)
        let f = OpenAIError(message: "m", type: .rateLimit, param: "p", code: "c").jsonBytes
        #expect(String(decoding: f, as: UTF8.self) == #"{"error":{"message":"m","type":"rate_limit_error","param":"p","code":"c"}}"#)
    }

    @Test(arguments: [(400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
                      (404, "invalid_request_error"), (405, "invalid_request_error"), (409, "invalid_request_error"),
                      (413, "invalid_request_error"), (414, "invalid_request_error"), (431, "invalid_request_error"),
                      (429, "rate_limit_error"), (500, "api_error"), (502, "api_error"), (504, "api_error"), (200, "api_error")])
    func statusToType(_ status: Int, _ type: String) {
        #expect(OpenAIErrorType(status: status).rawValue == type)
    }
}

private extension UInt8 {
    var isHexDigitASCII: Bool { (0x30...0x39).contains(self) || (0x41...0x46).contains(self) || (0x61...0x66).contains(self) }
}
