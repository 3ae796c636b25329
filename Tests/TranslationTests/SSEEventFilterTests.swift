import Testing
@testable import Translation

/// The key written with JSON escapes in a few ways (each decodes to the key).
func escapedForms(of key: String) -> [String] {
    let u = Array(key.unicodeScalars)
    func esc(_ s: Unicode.Scalar) -> String {
        let h = String(s.value, radix: 16)
        return "\\u" + String(repeating: "0", count: 4 - h.count) + h
    }
    return [
        esc(u[0]) + String(String.UnicodeScalarView(u[1...])),                        // \u0073k-…
        u.map(esc).joined(),                                                            // all escaped
        String(String.UnicodeScalarView(u[..<5])) + esc(u[5]).uppercased().replacingOccurrences(of: "\\U", with: "\\u")
            + String(String.UnicodeScalarView(u[6...])),                                 // one in the middle, upper-case hex
        u.enumerated().map { $0.offset % 2 == 0 ? esc($0.element) : String($0.element) }.joined(),   // mixed
        String(String.UnicodeScalarView(u.dropLast())) + esc(u.last!),                  // last one
    ]
}

extension String {
    func replacingOccurrences(of a: String, with b: String) -> String {
        guard !a.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: a) {
            out += rest[..<r.lowerBound]
            out += b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

extension Substring {
    func range(of needle: String) -> Range<Index>? {
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) { return i..<index(i, offsetBy: needle.count) }
            i = index(after: i)
        }
        return nil
    }
}

func runFilter(_ chunks: [[UInt8]], key: [UInt8], drop: Bool = false, max: Int = SSEEventFilter.defaultMaxEventBytes)
    -> (out: [UInt8], filter: SSEEventFilter, error: SSEFilterError?) {
    var f = SSEEventFilter(secret: key, dropUsageChunk: drop, maxEventBytes: max)
    var out: [UInt8] = []
    // The closure API: bytes emitted before an error in the same call are kept.
    do {
        for c in chunks { try c.withUnsafeBytes { b in try f.process(b) { out.append(contentsOf: $0) } } }
        try f.finish { out.append(contentsOf: $0) }
    } catch {
        return (out, f, error as? SSEFilterError)
    }
    return (out, f, nil)
}

/// Every decoded string of every event's data (lines joined with LF), plus the data unescaped
/// everywhere: what any client could make of the output.
func clientViews(_ out: [UInt8]) -> [[UInt8]] {
    var views: [[UInt8]] = [out]
    var data: [UInt8] = []
    var hasData = false
    func flush() {
        if hasData {
            views.append(data.withUnsafeBufferPointer { jsonUnescapedEverywhere($0) })
            if let v = try? JSONValue.parse(data) { views += allStrings(v).map { Array($0.utf8) } }
        }
        data = []; hasData = false
    }
    var lines: [[UInt8]] = []
    var cur: [UInt8] = []
    var i = 0
    while i < out.count {
        let c = out[i]
        if c == 0x0A || c == 0x0D {
            lines.append(cur); cur = []
            if c == 0x0D, i + 1 < out.count, out[i + 1] == 0x0A { i += 1 }
        } else { cur.append(c) }
        i += 1
    }
    if !cur.isEmpty { lines.append(cur) }
    for l in lines {
        if l.isEmpty { flush(); continue }
        if l.starts(with: Array("data".utf8)) {
            var v = Array(l.dropFirst(4))
            if v.first == 0x3A { v.removeFirst(); if v.first == 0x20 { v.removeFirst() } } else if !v.isEmpty { continue }
            if hasData { data.append(0x0A) }
            data += v; hasData = true
        }
    }
    flush()
    return views
}

func allStrings(_ v: JSONValue) -> [String] {
    switch v {
    case .string(let s): return [s]
    case .array(let a): return a.flatMap(allStrings)
    case .object(let ms): return ms.flatMap { [$0.key] + allStrings($0.value) }
    default: return []
    }
}

func holdsKey(_ out: [UInt8], _ key: [UInt8]) -> Bool {
    clientViews(out).contains { KeyRedactor.contains(key, in: $0) }
}

@Suite struct SSEEventFilterTests {
    static let keyString = "sk-5D7uABCdefGHIjkl0123456789"
    static let key = Array(keyString.utf8)

    /// A stream as the upstream sends it (OpenAI shapes, escapes in the content).
    static func stream(_ nl: String) -> String {
        let events = [
            #"data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}"#,
            #"data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hello \"you\"\nline \u00e9 \u4e2d"}}],"usage":null}"#,
            ": keep-alive",
            "event: message" + nl + #"data: {"id":"c1","choices":[{"index":0,"delta":{"content":"a\/b"}}]}"#,
            #"data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
            #"data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            "data: [DONE]",
        ]
        return events.map { $0 + nl + nl }.joined()
    }
    static let usageEvent = #"data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#

    @Test(arguments: ["\n", "\r\n", "\r"])
    func cleanStreamsPassByteForByteAtEverySplit(_ nl: String) {
        let bytes = Array(Self.stream(nl).utf8)
        for cut in 0...bytes.count {
            let r = runFilter([Array(bytes[..<cut]), Array(bytes[cut...])], key: Self.key)
            #expect(r.out == bytes, "cut \(cut)")
            #expect(r.error == nil)
            #expect(r.filter.usage == Usage(promptTokens: 3, completionTokens: 4, totalTokens: 7), "cut \(cut)")
            #expect(r.filter.sawDone && r.filter.redactedEvents == 0 && !r.filter.droppedIncompleteEvent, "cut \(cut)")
        }
        let one = runFilter(bytes.map { [$0] }, key: Self.key)
        #expect(one.out == bytes && one.filter.sawDone && one.filter.usage?.totalTokens == 7)
    }

    @Test(arguments: ["\n", "\r\n", "\r"])
    func theUsageChunkIsDroppedOnlyWhenAsked(_ nl: String) {
        let s = Self.stream(nl)
        let bytes = Array(s.utf8)
        let without = Array(s.replacingOccurrences(of: Self.usageEvent + nl + nl, with: "").utf8)
        #expect(without.count == bytes.count - (Self.usageEvent + nl + nl).utf8.count)
        for cut in 0...bytes.count {
            let dropped = runFilter([Array(bytes[..<cut]), Array(bytes[cut...])], key: Self.key, drop: true)
            #expect(dropped.out == without, "cut \(cut)")
            #expect(dropped.filter.usage?.totalTokens == 7 && dropped.filter.droppedUsageChunks == 1 && dropped.filter.sawDone)
            let kept = runFilter([Array(bytes[..<cut]), Array(bytes[cut...])], key: Self.key, drop: false)
            #expect(kept.out == bytes && kept.filter.droppedUsageChunks == 0)
        }
    }

    /// A usage chunk that still has choices is not usage-only: kept, usage read.
    @Test func aChunkWithChoicesAndUsageIsKept() throws {
        let e = Array("data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"total_tokens\":9}}\n\ndata: {\"choices\":[],\"usage\" : null}\n\n".utf8)
        let r = runFilter([e], key: Self.key, drop: true)
        #expect(r.out == e && r.filter.usage?.totalTokens == 9 && r.filter.droppedUsageChunks == 0)
    }

    @Test func completeEventsGoOutInTheSameCallWithoutACopy() throws {
        var f = SSEEventFilter(secret: Self.key, dropUsageChunk: true)
        let chunk = Array(Self.stream("\n").utf8.prefix(Self.stream("\n").utf8.count / 2))
        // Up to the last complete event of the first half.
        let text = String(decoding: chunk, as: UTF8.self)
        let cut = text.utf8.count - (text.split(separator: "\n\n", omittingEmptySubsequences: false).last?.utf8.count ?? 0)
        let complete = Array(chunk[..<cut])
        try complete.withUnsafeBytes { buf in
            var calls = 0
            try f.process(buf) { out in
                calls += 1
                #expect(out.baseAddress == buf.baseAddress && out.count == buf.count)
            }
            #expect(calls == 1)
        }
        #expect(f.heldBytes == 0)
        // A partial event is held, the complete ones before it are not.
        let partial = Array("data: {\"choices\":[]}\n\ndata: {\"x\":".utf8)
        #expect(try f.process(partial) == Array("data: {\"choices\":[]}\n\n".utf8))
        #expect(f.heldBytes == 11)
        #expect(try f.process(Array("1}\n\n".utf8)) == Array("data: {\"x\":1}\n\n".utf8))
        #expect(f.heldBytes == 0)
    }

    /// The key JSON-escaped inside an event, in every way, in values and member names, at every
    /// split point: the output never decodes to the key; the other events stay byte for byte.
    @Test(arguments: escapedForms(of: keyString))
    func escapedKeysAreRedactedAtEverySplit(_ form: String) throws {
        let before = #"data: {"choices":[{"delta":{"content":"line\nnext"}}]}"# + "\n\n"
        let after = "data: [DONE]\n\n"
        for bad in [#"data: {"choices":[{"delta":{"content":"key: \#(form)!"}}]}"#,
                    #"data: {"error":{"message":"bad \#(form)","\#(form)":1}}"#,
                    #"data: {"a":["x","\#(form)"],"n":1.50e3}"#] {
            let s = Array((before + bad + "\n\n" + after).utf8)
            for cut in stride(from: 0, through: s.count, by: 1) {
                let r = runFilter([Array(s[..<cut]), Array(s[cut...])], key: Self.key)
                #expect(!holdsKey(r.out, Self.key), "cut \(cut): \(String(decoding: r.out, as: UTF8.self))")
                #expect(r.out.starts(with: Array(before.utf8)) && r.out.suffix(after.utf8.count).elementsEqual(after.utf8))
                #expect(r.filter.redactedEvents == 1 && r.filter.sawDone)
            }
            let r = runFilter([s], key: Self.key)
            let middle = Array(r.out[before.utf8.count..<(r.out.count - after.utf8.count)])
            let v = try JSONValue.parse(Array(middle.dropFirst(6).dropLast(2)))
            #expect(allStrings(v).contains { $0.contains("[redacted]") })
            #expect(middle.starts(with: Array("data: ".utf8)) && middle.suffix(2) == [0x0A, 0x0A])
        }
    }

    @Test func numbersAndOtherFieldsSurviveARewrite() throws {
        let ev = "id: 7\nevent: x\ndata: {\"k\":\"\\u0073k-5D7uABCdefGHIjkl0123456789\",\"n\":1.50e3,\"b\":[true,null],\"u\":\"\\u00e9\\ud83d\\ude00\"}\n\n"
        let r = runFilter([Array(ev.utf8)], key: Self.key)
        #expect(String(decoding: r.out, as: UTF8.self)
                == "id: 7\nevent: x\ndata: {\"k\":\"[redacted]\",\"n\":1.50e3,\"b\":[true,null],\"u\":\"é😀\"}\n\n")
    }

    /// `\/` only matters for a key with a slash; the filter unescapes it like any other.
    @Test func slashEscapes() {
        let key = Array("sk-ab/cd-0123456789".utf8)
        let ev = Array("data: {\"t\":\"sk-ab\\/cd-0123456789\"}\n\n".utf8)
        let r = runFilter([ev], key: key)
        #expect(!holdsKey(r.out, key) && r.filter.redactedEvents == 1)
        // With an alphanumeric key, `\/` is not even looked at: the event passes untouched.
        let clean = Array("data: {\"t\":\"a\\/b sk-5D7u\"}\n\n".utf8)
        #expect(runFilter([clean], key: Self.key).out == clean)
    }

    @Test func theKeyInClearSplitAcrossChunksIsCaught() {
        let s = Array("data: {\"k\":\"\(Self.keyString)\"}\n\n".utf8)
        for a in 0...s.count {
            for b in a...s.count where (b - a) % 3 == 0 {
                let r = runFilter([Array(s[..<a]), Array(s[a..<b]), Array(s[b...])], key: Self.key)
                #expect(r.out == Array("data: {\"k\":\"[redacted]\"}\n\n".utf8), "cuts \(a) \(b)")
            }
        }
    }

    /// Data that is not JSON but unescapes to the key: the event is dropped.
    @Test func nonJSONDataWithAnEscapedKeyIsDropped() {
        let s = Array("data: x\n\ndata: \\u0073k-5D7uABCdefGHIjkl0123456789\n\ndata: y\n\n".utf8)
        let r = runFilter([s], key: Self.key)
        #expect(r.out == Array("data: x\n\ndata: y\n\n".utf8) && r.filter.redactedEvents == 1)
    }

    /// A JSON value split over several `data:` lines is read as the client reads it (joined).
    @Test func multiLineDataIsJoined() {
        let s = Array("data: {\"a\":\ndata: \"\\u0073k-5D7uABCdefGHIjkl0123456789\"}\n\n".utf8)
        let r = runFilter([s], key: Self.key)
        #expect(!holdsKey(r.out, Self.key))
        #expect(r.out == Array("data: {\"a\":\"[redacted]\"}\n\n".utf8))
        let usage = Array("data: {\"choices\":[],\ndata: \"usage\":{\"total_tokens\":5}}\n\n".utf8)
        let u = runFilter([usage], key: Self.key, drop: true)
        #expect(u.out.isEmpty && u.filter.usage?.totalTokens == 5)
    }

    @Test func eventsOverTheLimitFailAndHoldNothing() {
        let big = Array(("data: {\"c\":\"" + String(repeating: "x", count: 300) + "\"}\n\n").utf8)
        let small = Array("data: {}\n\n".utf8)
        // In one chunk, or trickled in: the same outcome, and the small event before it is out.
        for pieces in [[small + big], [small, Array(big[..<100]), Array(big[100...])], (small + big).map { [$0] }] {
            let r = runFilter(pieces, key: Self.key, max: 256)
            #expect(r.error == .eventTooLarge(limit: 256))
            #expect(r.out == small)
            #expect(r.filter.heldBytes == 0)
        }
        // An incomplete event over the limit fails as soon as it is over.
        var f = SSEEventFilter(secret: Self.key, maxEventBytes: 256)
        #expect(throws: SSEFilterError.eventTooLarge(limit: 256)) { _ = try f.process(Array(big[..<260])) }
        #expect(f.heldBytes == 0)
        #expect(throws: SSEFilterError.eventTooLarge(limit: 256)) { _ = try f.process(small) }
        // At the limit exactly: fine.
        let exact = Array(("data: " + String(repeating: "y", count: 248) + "\n\n").utf8)
        #expect(exact.count == 256)
        #expect(runFilter([Array(exact[..<10]), Array(exact[10...])], key: Self.key, max: 256).out == exact)
    }

    /// The key in clear is found by a rare byte of it, not its first: leftmost, non-overlapping
    /// occurrences exactly as `KeyRedactor` finds them, for keys of every shape (anchor first,
    /// last, repeated, overlapping prefixes) and every chunking.
    @Test func keysInClearMatchTheByteRedactor() {
        var rng = SplitMix(state: 77)
        let alphabet = Array("aAbB1".utf8)
        for round in 0..<3000 {
            let key = (0..<Int.random(in: 1...5, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            var s: [UInt8] = []
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                s += Array("data: ".utf8)
                s += (0..<Int.random(in: 0...14, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
                s += Bool.random(using: &rng) ? [0x0A, 0x0A] : [0x0A]
            }
            s += [0x0A]
            let want = KeyRedactor.redact(s, secret: key)
            var pieces: [[UInt8]] = []
            var i = 0
            while i < s.count {
                let l = Int.random(in: 1...6, using: &rng)
                pieces.append(Array(s[i..<min(s.count, i + l)]))
                i += l
            }
            #expect(runFilter([s], key: key).out == want, "round \(round) key \(key)")
            #expect(runFilter(pieces, key: key).out == want, "round \(round) key \(key) pieces")
        }
    }

    @Test func theAnchorIsARareByteOfTheKey() {
        func anchor(_ k: String) -> Int { Array(k.utf8).withUnsafeBufferPointer { SSEKeySearch.anchorIndex($0) } }
        #expect(anchor("sk-5D7uABC") == 4)
        #expect(anchor("sk-proj-abc") == 6)      // no upper case: j, the rarest letter in it
        #expect(anchor("sk-123") == 1)
        #expect(anchor("123") == 0)
        #expect(anchor("----") == 0)
    }

    @Test func finishDropsAnIncompleteEventButCompletesDONE() throws {
        for (tail, out, done) in [("data: {\"a\":", "", false),
                                  ("data: [DONE]", "data: [DONE]\n\n", true),
                                  ("data: [DONE]\n", "data: [DONE]\n\n", true),
                                  ("data: [DONE]\r", "data: [DONE]\r\n", true),
                                  ("data: {\"k\":\"sk-5D7uABCdefG", "", false),
                                  ("data: {\"k\":\"\\u0073k-5D7uABCdefGHIjkl0123456789\"}", "", false)] {
            let head = "data: {}\n\n"
            let r = runFilter([Array((head + tail).utf8)], key: Self.key)
            #expect(r.out == Array((head + out).utf8), "\(tail)")
            #expect(r.filter.sawDone == done && r.filter.droppedIncompleteEvent == !done, "\(tail)")
        }
        // Usage is still read from an incomplete last event.
        let r = runFilter([Array("data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}".utf8)], key: Self.key)
        #expect(r.out.isEmpty && r.filter.usage?.totalTokens == 3)
    }

    /// Found by fuzzing: an incomplete last event after a CR-ended one kept its leading LF when
    /// the LF came alone, and lost it when it came with the event.
    @Test func theLeadingLFOfADroppedLastEventStaysWhateverTheChunking() {
        let s = Array("data: a\r\r\ndata: {\"cut".utf8)
        let want = Array("data: a\r\r\n".utf8)
        #expect(runFilter([s], key: Self.key).out == want)
        #expect(runFilter(s.map { [$0] }, key: Self.key).out == want)
        // The limit counts an event from its first line, not from that LF (found by fuzzing:
        // an event of exactly the limit failed when its LF came with it).
        let atLimit = Array(("data: a\r\r\ndata: " + String(repeating: "x", count: 292) + "\r\r").utf8)
        for chunks in [[atLimit], atLimit.map { [$0] }] {
            let r = runFilter(chunks, key: Self.key, max: 300)
            #expect(r.out == atLimit && r.error == nil)
        }
        // Likewise before an event over the limit (also found by fuzzing).
        let big = Array(("data: a\r\r\ndata: " + String(repeating: "x", count: 400) + "\r\r").utf8)
        for chunks in [[big], big.map { [$0] }, [Array(big[..<10]), Array(big[10..<13]), Array(big[13...])]] {
            let r = runFilter(chunks, key: Self.key, max: 300)
            #expect(r.out == want && r.error == .eventTooLarge(limit: 300))
        }
    }

    @Test func aTrailingLFOfCRLFIsNotHeld() throws {
        var f = SSEEventFilter(secret: Self.key)
        #expect(try f.process(Array("data: 1\r\n\r".utf8)) == Array("data: 1\r\n\r".utf8))
        #expect(try f.process(Array("\n".utf8)) == [0x0A])
        #expect(f.heldBytes == 0)
        #expect(try f.finish().isEmpty && !f.droppedIncompleteEvent)
    }

    @Test func noSecretMeansNoRedactionButFraming() {
        let s = Array("data: {\"k\":\"\\u0073k-x\"}\n\n".utf8)
        #expect(runFilter([s], key: []).out == s)
    }

    @Test func unescapeEverywhereMatchesTheParser() throws {
        for s in [#""a\u0041\n\"\\u0041\/\ud83d\ude00\ud800x\udc00""#, #""plain""#, #""\\\\\"""#] {
            let bytes = Array(s.utf8)
            let parsed = try JSONValue.parse(bytes).stringValue!
            let global = bytes.withUnsafeBufferPointer { jsonUnescapedEverywhere($0) }
            #expect(global == [0x22] + Array(parsed.utf8) + [0x22], "\(s)")
        }
    }

    /// Random streams (clean, keyed in clear or escaped, usage, comments, multi-line data, LF,
    /// CRLF or CR) in random pieces: the output does not depend on the pieces, never decodes
    /// to the key, and equals the input when the input holds no key and nothing is dropped.
    @Test func randomStreamsInRandomPieces() {
        var rng = SplitMix(state: 31337)
        let forms = escapedForms(of: Self.keyString)
        let words = ["hi", "\\n", "\\\"", "\\u00e9", "sk-5D7", "\\u0073k", "\\\\u0073", "usage", "{", "\\/", "中"]
        for round in 0..<400 {
            let nl = ["\n", "\r\n", "\r"].randomElement(using: &rng)!
            var events: [String] = []
            var hasKey = false, hasUsage = false
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                switch Int.random(in: 0..<8, using: &rng) {
                case 0:
                    events.append("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}")
                    hasUsage = true
                case 1:
                    events.append("data: {\"c\":\"\(forms.randomElement(using: &rng)!)\"}"); hasKey = true
                case 2:
                    events.append("data: {\"c\":\"x \(Self.keyString) y\"}"); hasKey = true
                case 3: events.append(": ping")
                case 4: events.append("event: e\(nl)data: {\"a\":\(nl)data: \"\(words.randomElement(using: &rng)!)\"}")
                default:
                    let text = (0..<Int.random(in: 0...5, using: &rng)).map { _ in words.randomElement(using: &rng)! }.joined(separator: " ")
                    events.append("data: {\"choices\":[{\"delta\":{\"content\":\"\(text)\"}}],\"usage\":null}")
                }
            }
            events.append("data: [DONE]")
            let s = Array(events.map { $0 + nl + nl }.joined().utf8)
            let drop = Bool.random(using: &rng)
            let whole = runFilter([s], key: Self.key, drop: drop)
            #expect(whole.error == nil)
            #expect(!holdsKey(whole.out, Self.key), "round \(round): \(String(decoding: whole.out, as: UTF8.self))")
            #expect(whole.filter.sawDone)
            if !hasKey && !(drop && hasUsage) { #expect(whole.out == s, "round \(round)") }
            if hasUsage { #expect(whole.filter.usage?.totalTokens == 3) }
            for _ in 0..<6 {
                var pieces: [[UInt8]] = []
                var i = 0
                while i < s.count {
                    let l = Int.random(in: 0...24, using: &rng)
                    pieces.append(Array(s[i..<min(s.count, i + l)]))
                    i += l
                }
                let r = runFilter(pieces, key: Self.key, drop: drop)
                #expect(r.out == whole.out, "round \(round)")
                #expect(r.filter.usage == whole.filter.usage && r.filter.redactedEvents == whole.filter.redactedEvents)
            }
        }
    }
}
