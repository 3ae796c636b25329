import Testing
@testable import Translation

@Suite struct PercentDecodingTests {
    @Test(arguments: [
        ("a%20b", false, "a b"),
        ("a+b", false, "a+b"),
        ("a+b", true, "a b"),
        ("%2B", true, "+"),                         // an escaped plus stays a plus
        ("caf%C3%A9", false, "café"),
        ("%e2%9c%93", false, "✓"),                  // lower-case hex
        ("", false, ""),
        ("plain", false, "plain"),
    ])
    func decodes(_ input: String, _ plus: Bool, _ expected: String) {
        #expect(PercentDecoding.decode(input, plusIsSpace: plus) == expected)
    }

    /// Malformed escapes and bytes that are not UTF-8 are refused, never half-decoded.
    @Test(arguments: ["%", "%4", "a%zz", "%4g", "%C3", "%FF", "%C3%28", "100%"])
    func refuses(_ input: String) {
        #expect(PercentDecoding.decode(input) == nil)
    }

    /// A slice decodes like the string it was cut from.
    @Test func decodesSubstrings() {
        let q = "x=1&name=a%26b"
        let v = q[q.index(q.startIndex, offsetBy: 9)...]
        #expect(PercentDecoding.decode(v) == "a&b")
    }
}
