import Testing
import HTTPWire

/// `asciiCaseInsensitiveEquals` is on every per-request path (header lookups, allow-lists,
/// schemes): its byte fast path and its iterator fallback must agree.
@Suite struct HeaderCaseTests {
    @Test(arguments: [
        ("content-type", "Content-Type", true), ("X-REQUEST-ID", "x-request-id", true), ("", "", true),
        ("accept", "accept-encoding", false), ("accept-encoding", "accept", false), ("a", "", false),
        ("authorization", "authorizatioN", true), ("authorization", "authorizatio_", false),
        // Only ASCII letters fold: '@' (0x40) and '`' (0x60) differ by the case bit but are not letters.
        ("@", "`", false), ("[", "{", false), ("Ä", "ä", false), ("Ünï", "Ünï", true),
        ("a-much-longer-header-name-than-fifteen-bytes", "A-MUCH-LONGER-HEADER-NAME-THAN-FIFTEEN-BYTES", true),
    ])
    func equality(_ a: String, _ b: String, _ expected: Bool) {
        #expect(asciiCaseInsensitiveEquals(a, b) == expected)
        #expect(asciiCaseInsensitiveEquals(b, a) == expected)
        #expect(asciiCaseInsensitiveEquals(a[...], b) == expected)                        // Substring
        let x = Array(a.utf8), y = Array(b.utf8)
        #expect(x.withUnsafeBufferPointer { p in y.withUnsafeBufferPointer { asciiCaseInsensitiveEqualBytes(p, $0) } } == expected)
    }

    @Test func substringsInsideLongerStrings() {
        let line = "Content-Type: application/json"
        let name = line[..<line.firstIndex(of: ":")!]
        #expect(asciiCaseInsensitiveEquals(name, "content-type"))
        #expect(!asciiCaseInsensitiveEquals(name, "content-typ"))
        var h = HTTPHeaders()
        h.add("X-Request-Id", "r1")
        #expect(h["x-request-id"] == "r1")
        #expect(h["x-request-i"] == nil)
    }
}

/// Optional whitespace (SP, HTAB) trimmed from both ends; nothing else (CR, LF, NBSP) is.
@Suite struct OWSTrimTests {
    @Test(arguments: [
        ("  a b \t", "a b"), ("\t\t", ""), ("", ""), ("x", "x"), (" é ", "é"),
        ("\r\nv\r\n", "\r\nv\r\n"), ("\u{A0}v", "\u{A0}v"), ("a \t b", "a \t b"),
    ])
    func trims(_ input: String, _ expected: String) {
        #expect(input.trimmingASCIISpaces() == expected)
        #expect(input.trimmingOWS() == expected[...])
        let padded = "[" + input + "]"
        let inner = padded.dropFirst().dropLast()                    // a slice not at index 0
        #expect(String(inner.trimmingOWS()) == expected)
    }
}
