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
