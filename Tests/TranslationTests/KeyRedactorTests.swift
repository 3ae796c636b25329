import Testing
@testable import Translation

/// Reference: leftmost, non-overlapping replace-all.
func naiveReplace(_ s: [UInt8], _ key: [UInt8], _ rep: [UInt8]) -> [UInt8] {
    guard !key.isEmpty else { return s }
    var out: [UInt8] = []
    var i = 0
    while i < s.count {
        if i + key.count <= s.count, Array(s[i..<i + key.count]) == key {
            out += rep
            i += key.count
        } else {
            out.append(s[i])
            i += 1
        }
    }
    return out
}

func streamed(_ chunks: [[UInt8]], key: [UInt8], rep: [UInt8] = Array("[redacted]".utf8)) -> [UInt8] {
    var r = KeyRedactor(secret: key, replacement: rep)
    var out: [UInt8] = []
    for c in chunks { out += r.process(c) }
    out += r.finish()
    return out
}

struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct KeyRedactorTests {
    static let key = "sk-5D7uABCdefGHIjkl0123456789"

    static let inputs: [String] = [
        "",
        "no secret here",
        key,
        "\(key) at start",
        "at end \(key)",
        "data: {\"api_key\":\"\(key)\"}\n\n",
        "\(key)\(key)\(key)",
        "sk-5D7 almost sk-5D7uABCdefGHIjkl012345678 but not quite, then \(key)!",
        "sk-sk-\(key)sk-",
        "中文\(key)中文",
    ]

    @Test(arguments: inputs)
    func everySplitPointTwoChunks(_ s: String) {
        let bytes = Array(s.utf8), key = Array(Self.key.utf8)
        let expected = naiveReplace(bytes, key, Array("[redacted]".utf8))
        #expect(!String(decoding: expected, as: UTF8.self).contains(Self.key))
        for cut in 0...bytes.count {
            #expect(streamed([Array(bytes[..<cut]), Array(bytes[cut...])], key: key) == expected, "cut \(cut)")
        }
        #expect(streamed(bytes.map { [$0] }, key: key) == expected)
        #expect(KeyRedactor.redact(bytes, secret: key) == expected)
    }

    @Test func everyPairOfSplitPoints() {
        let s = Array("xx\(Self.key)y\(Self.key)\(Self.key)sk-5".utf8), key = Array(Self.key.utf8)
        let expected = naiveReplace(s, key, Array("[redacted]".utf8))
        for a in 0...s.count {
            for b in a...s.count {
                let got = streamed([Array(s[..<a]), Array(s[a..<b]), Array(s[b...])], key: key)
                #expect(got == expected, "cuts \(a) \(b)")
            }
        }
    }

    @Test func overlappingPrefixes() {
        #expect(KeyRedactor.redact("aaab", secret: "aab", replacement: "X") == "aX")
        #expect(KeyRedactor.redact("aabaab", secret: "aab", replacement: "X") == "XX")
        #expect(KeyRedactor.redact("abab", secret: "aba", replacement: "X") == "Xb")
        for cut in 0...4 {
            let s = Array("aaab".utf8)
            #expect(streamed([Array(s[..<cut]), Array(s[cut...])], key: Array("aab".utf8), rep: [0x58]) == Array("aX".utf8))
        }
    }

    @Test func randomisedAgainstReference() {
        var rng = SplitMix(state: 42)
        let alphabet = Array("aab".utf8)
        for _ in 0..<2000 {
            let keyLen = Int.random(in: 1...4, using: &rng)
            let key = (0..<keyLen).map { _ in alphabet.randomElement(using: &rng)! }
            let len = Int.random(in: 0...40, using: &rng)
            let s = (0..<len).map { _ in alphabet.randomElement(using: &rng)! }
            var chunks: [[UInt8]] = []
            var i = 0
            while i < s.count {
                let l = Int.random(in: 0...5, using: &rng)
                chunks.append(Array(s[i..<min(s.count, i + l)]))
                i += l
            }
            #expect(streamed(chunks, key: key, rep: [0x2A]) == naiveReplace(s, key, [0x2A]))
        }
    }

    @Test func holdsBackOnlyAPrefixAndNeverACompleteSSEEvent() {
        var r = KeyRedactor(secret: Self.key)
        #expect(r.process(Array("data: x sk-5D".utf8)) == Array("data: x ".utf8))
        #expect(r.held == Array("sk-5D".utf8))
        #expect(r.process(Array("Q\n\n".utf8)) == Array("sk-5DQ\n\n".utf8))
        #expect(r.held.isEmpty)
        #expect(r.process(Array("data: {}\n\n".utf8)) == Array("data: {}\n\n".utf8))
        #expect(r.finish().isEmpty)
    }

    @Test func zeroCopyWhenNothingChanges() {
        var r = KeyRedactor(secret: Self.key)
        let input = Array("data: {\"choices\":[]}\n\n plenty of bytes without the key".utf8)
        input.withUnsafeBytes { buf in
            var calls = 0
            r.process(buf) { out in
                calls += 1
                #expect(out.baseAddress == buf.baseAddress)
                #expect(out.count == buf.count)
            }
            #expect(calls == 1)
        }
    }

    /// One-shot redaction agrees with the naive reference (both paths: the no-key early return
    /// and the redactor), and returns the very same storage when there is nothing to replace.
    @Test func oneShotMatchesReferenceAndSharesStorageWhenClean() {
        var rng = SplitMix(state: 99)
        let alphabet = Array("aab".utf8)
        for _ in 0..<2000 {
            let key = (0..<Int.random(in: 1...4, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            let s = (0..<Int.random(in: 0...40, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            #expect(KeyRedactor.redact(s, secret: key, replacement: [0x2A]) == naiveReplace(s, key, [0x2A]))
            #expect(KeyRedactor.contains(key, in: s) == (naiveReplace(s, key, [0x2A]) != s))
        }
        let clean = Array(String(repeating: "{\"choices\":[]} ", count: 64).utf8)
        let key = Array(Self.key.utf8)
        let out = KeyRedactor.redact(clean, secret: key)
        #expect(out.withUnsafeBufferPointer { $0.baseAddress } == clean.withUnsafeBufferPointer { $0.baseAddress })
        // The key at the very end and at the very start is still found.
        #expect(KeyRedactor.contains(key, in: Array("x".utf8) + key))
        #expect(KeyRedactor.contains(key, in: key + Array("x".utf8)))
        #expect(!KeyRedactor.contains(key, in: Array(key.dropLast())))
    }

    @Test func emptySecretPassesThrough() {
        #expect(KeyRedactor.redact(Array("abc".utf8), secret: []) == Array("abc".utf8))
        #expect(KeyRedactor.redact("abc", secret: "") == "abc")
    }

    @Test func firstIndexMatchesNaive() {
        var rng = SplitMix(state: 7)
        for _ in 0..<500 {
            let s = (0..<Int.random(in: 0...40, using: &rng)).map { _ in UInt8.random(in: 0...3, using: &rng) }
            let from = Int.random(in: 0...s.count, using: &rng)
            let want = s[from...].firstIndex(of: 2)
            let got = s.withUnsafeBytes { b in b.baseAddress.flatMap { firstIndex(of: 2, in: $0, from: from, count: s.count) } }
            #expect(got == want)
        }
    }
}

/// Reference for `finish`: replace-all, then a tail after the last match that is a proper prefix
/// of the key and at least `minimum` long is replaced too.
func naiveRedactCut(_ s: [UInt8], _ key: [UInt8], _ rep: [UInt8], minimum: Int) -> [UInt8] {
    var out: [UInt8] = []
    var i = 0
    while i < s.count {
        if i + key.count <= s.count, Array(s[i..<i + key.count]) == key {
            out += rep
            i += key.count
            continue
        }
        // A suffix from here on that is a proper prefix of the key is the cut tail.
        if s.count - i < key.count, Array(key.prefix(s.count - i)) == Array(s[i...]) {
            out += s.count - i >= minimum ? rep : Array(s[i...])
            return out
        }
        out.append(s[i])
        i += 1
    }
    return out
}

@Suite struct KeyRedactorCutTests {
    static let key = Array("sk-5D7uABCdefGHIjkl0123456789".utf8)
    static let rep = Array("[redacted]".utf8)

    /// A stream that ends inside the key: a prefix of 8 bytes or more is redacted, never
    /// released; a shorter one is released (this failed before: all but the last byte leaked).
    @Test func aStreamCutInsideTheKeyReleasesNoLongPrefix() {
        let head = Array("data: {\"error\":\"bad key ".utf8)
        for l in 1..<Self.key.count {
            let body = head + Self.key.prefix(l)
            let want = l >= 8 ? head + Self.rep : body
            for cut in 0...body.count {
                let got = streamed([Array(body[..<cut]), Array(body[cut...])], key: Self.key)
                #expect(got == want, "prefix \(l) cut \(cut)")
            }
            #expect(streamed(body.map { [$0] }, key: Self.key) == want, "prefix \(l) byte by byte")
            #expect(KeyRedactor.redact(body, secret: Self.key) == want, "prefix \(l) one-shot")
            if l >= 8 {
                #expect(!String(decoding: KeyRedactor.redact(body, secret: Self.key), as: UTF8.self)
                    .contains(String(decoding: Self.key.prefix(8), as: UTF8.self)))
            }
        }
    }

    /// Bodies that only end like the key begins stay intact (binary files, log lines).
    @Test func shortEndingsAreKept() {
        #expect(KeyRedactor.redact("1 tokens", secret: "sk-5D7uABCdefGHIjkl0123456789") == "1 tokens")
        #expect(KeyRedactor.redact("keys look like sk-", secret: "sk-5D7uABCdefGHIjkl0123456789") == "keys look like sk-")
        #expect(KeyRedactor.redact("x sk-5D7uABC", secret: "sk-5D7uABCdefGHIjkl0123456789") == "x [redacted]")
        let binary: [UInt8] = [0, 1, 2, 0x73]
        #expect(KeyRedactor.redact(binary, secret: Self.key) == binary)
    }

    /// Every chunking of random inputs agrees with the reference, with the rule at small sizes.
    @Test(arguments: [1, 2, 3, 5])
    func randomisedAgainstCutReference(_ minimum: Int) {
        var rng = SplitMix(state: UInt64(minimum) * 7919)
        let alphabet = Array("aab".utf8)
        for _ in 0..<1500 {
            let key = (0..<Int.random(in: 1...7, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            let s = (0..<Int.random(in: 0...30, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            var r = KeyRedactor(secret: key, replacement: [0x2A], minimumRedactedPrefix: minimum)
            var out: [UInt8] = []
            var i = 0
            while i < s.count {
                let l = Int.random(in: 0...4, using: &rng)
                out += r.process(Array(s[i..<min(s.count, i + l)]))
                i += l
            }
            out += r.finish()
            #expect(out == naiveRedactCut(s, key, [0x2A], minimum: minimum), "key \(key) s \(s)")
        }
    }

    @Test func longestSuffixPrefixMatchesTheHeldBytes() {
        var rng = SplitMix(state: 5)
        let alphabet = Array("ab".utf8)
        for _ in 0..<1000 {
            let key = (0..<Int.random(in: 1...6, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            let s = (0..<Int.random(in: 0...12, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            guard !KeyRedactor.contains(key, in: s) else { continue }
            var r = KeyRedactor(secret: key)
            _ = r.process(s)
            #expect(KeyRedactor.longestSuffixPrefix(of: s, secret: key) == r.held.count, "key \(key) s \(s)")
        }
    }
}
