// libFuzzer target for the schema translators and stream filters (Sources/Translation and
// Sources/Inflate, compiled into one module named Translation): upstream bytes -> what Veil
// relays, as the gateway runs them. Built by `fuzz/run translation <seconds>`.
//
// Byte 0 picks the path; the rest is the upstream's body. To let the fuzzer place the shared key
// anywhere cheaply, bytes 0x01…0x05 in the body stand for the key in clear and in four
// JSON-escaped forms (each decodes to the key). Invariants (a violation traps):
// - nothing traps (Swift runtime errors are crashes under libFuzzer);
// - translated objects are valid JSON, and after the gateway's redaction neither their bytes nor
//   any decoded string contains the key;
// - characters: `api_key`, `token_id`, `username`, `gen_id` never reach Veil's object (the key is
//   in the output only if a whitelisted field carried it);
// - upstream error messages: the extracted message never contains the key once decoded;
// - streams (SSE): the streaming redactor, fed in fuzzer-chosen pieces, emits exactly what the
//   one-shot redactor does and never the key; the usage scanner never traps.
// - SSE event filter (modes 6, 7: default and tiny event limits): the output does not depend on
//   the chunking (bytes, error, usage, [DONE]); it never holds the key in its bytes, in any
//   event's data unescaped, or in any decoded JSON string; without the key and without a
//   dropped usage chunk it is the input itself.
// - compressed streams (mode 8): the body gzip/zlib/raw-deflate compressed, optionally with one
//   byte flipped, inflated in pieces and filtered: the same invariants, and without the flip
//   the same output as the uncompressed stream.
// - raw inflate of fuzzer bytes (mode 9): no trap; output within the cap; equal outputs for
//   whole and piecewise input when both succeed.
// - ambiguous member names (mode 10): `ambiguousTopLevelMember` agrees with a naive reference;
//   `askingUpstreamForUsage` yields a body that asks for usage and keeps every other member.
// - KeyRedactor end of stream (mode 11): streaming equals one-shot for any chunking; the output
//   never ends in 8 or more bytes of the key.

let key = Array("sk-FUZZKEY-0123456789abcdef".utf8)
let escapedKey = Array("sk-\\u0046UZZKEY-0123456789abcdef".utf8)
/// More escaped forms: the first byte, every byte, alternate bytes (upper-case hex).
let escapedForms: [[UInt8]] = [
    Array("\\u0073k-FUZZKEY-0123456789abcdef".utf8),
    key.flatMap { b -> [UInt8] in Array("\\u00".utf8) + Array(String(b, radix: 16).utf8) },
    key.enumerated().flatMap { i, b -> [UInt8] in i % 2 == 0 ? Array("\\u00".utf8) + Array(String(b, radix: 16, uppercase: true).utf8) : [b] },
]

func fail(_ why: String) -> Never { fatalError("translation invariant violated: \(why)") }

func contains(_ hay: [UInt8], _ needle: [UInt8]) -> Bool {
    guard hay.count >= needle.count, !needle.isEmpty else { return false }
    var i = 0
    while i + needle.count <= hay.count {
        if hay[i] == needle[0] && Array(hay[i..<(i + needle.count)]) == needle { return true }
        i += 1
    }
    return false
}

func strings(_ v: JSONValue, _ out: inout [String]) {
    switch v {
    case .string(let s): out.append(s)
    case .array(let a): for x in a { strings(x, &out) }
    case .object(let ms): for m in ms { out.append(m.key); strings(m.value, &out) }
    default: break
    }
}

/// What a client sees: the bytes and every decoded string of the JSON.
func assertKeyFree(_ out: [UInt8], _ what: String, mustBeJSON: Bool = true) {
    if contains(out, key) { fail("\(what): key in the bytes") }
    guard let v = try? JSONValue.parse(out) else {
        if mustBeJSON { fail("\(what): output is not JSON: \(String(decoding: out, as: UTF8.self))") }
        return
    }
    var all: [String] = []
    strings(v, &all)
    for s in all where contains(Array(s.utf8), key) { fail("\(what): key in a decoded string") }
}

let facts = VideoFacts(veilID: "video_4078", model: "sora-2", size: nil, seconds: nil, prompt: "p", createdAt: 1)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTranslation(_ ptr: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let mode = ptr[0] % 12
    var body: [UInt8] = []
    body.reserveCapacity(size + 64)
    for i in 1..<size {
        switch ptr[i] {
        case 1: body += key
        case 2: body += escapedKey
        case 3, 4, 5: body += escapedForms[Int(ptr[i]) - 3]
        default: body.append(ptr[i])
        }
    }
    let raw = Array(UnsafeBufferPointer(start: ptr, count: size))
    switch mode {
    case 0:
        // Video create/poll answer -> Veil video, as VideoRoutes does (translate, then redact).
        if let t = try? UpstreamVideoTask(json: body) {
            for f in [facts, VideoFacts(veilID: "video_1", model: "m", size: "720x720", seconds: "4", prompt: nil, createdAt: 0)] {
                let o = translateVideo(t, facts: f, now: 1_762_415_032)
                assertKeyFree(KeyRedactor.redact(o.jsonBytes, secret: key), "video")
                if o.progress < 0 || o.progress > 100 { fail("progress \(o.progress)") }
                if o.id != f.veilID || o.model != f.model { fail("id/model not from facts") }
            }
        }
    case 1, 2:
        // Character list / create answer -> Veil characters (whitelist, then redaction).
        let decoded: [UpstreamCharacter]? = mode == 1 ? (try? decodeCharacterList(body))
                                                      : (try? decodeCharacterCreate(body)).map { [$0] }
        for c in decoded ?? [] {
            let o = translateCharacter(c, utcOffsetSeconds: 28_800, now: 1_762_415_032)
            let rawOut = o.jsonBytes
            let carried = [c.id, c.uuid, c.instructionValue, c.createTime, c.timestamps, c.videoID]
                .contains { $0.map { contains(Array($0.utf8), key) } ?? false }
            if contains(rawOut, key) && !carried { fail("character: key from a non-whitelisted field") }
            assertKeyFree(KeyRedactor.redact(rawOut, secret: key), "character")
            if !o.id.hasPrefix("char_") { fail("character id \(o.id)") }
            if let vid = o.videoID, VeilID.upstreamVideoID(fromVeil: vid) == nil { fail("unsafe video id \(vid)") }
        }
    case 3:
        // An upstream error body -> the message Veil repeats to the caller.
        if let m = upstreamErrorMessage(body, secret: key) {
            if contains(Array(m.utf8), key) { fail("error message carries the key") }
            if m.count > 500 { fail("message not capped") }
        }
    case 4, 5:
        // A stream: chunk boundaries from the body's own bytes (every byte < 0x20 ends a piece).
        // (The event filter over the same stream is modes 6 and 7.)
        var r = KeyRedactor(secret: key)
        var out: [UInt8] = []
        var start = 0
        for i in 0...body.count where i == body.count || body[i] < 0x20 {
            let piece = Array(body[start..<min(i + 1, body.count)])
            out += r.process(piece)
            start = min(i + 1, body.count)
        }
        out += r.finish()
        if out != KeyRedactor.redact(body, secret: key) { fail("streaming redactor differs from one-shot") }
        if contains(out, key) { fail("key in the stream") }
        _ = try? extractUsage(fromJSON: body)
        _ = try? ChatRequestInfo.parse(body)
    case 6, 7:
        fuzzEventFilter(body, raw: raw, maxEvent: mode == 6 ? SSEEventFilter.defaultMaxEventBytes : 300)
    case 8:
        fuzzCompressedStream(body, raw: raw)
    case 9:
        fuzzInflate(Array(raw.dropFirst()), raw: raw)
    case 10:
        fuzzMemberNames(body)
    case 11:
        fuzzKeyRedactorEnd(body, raw: raw)
    default:
        break
    }
    return 0
}

// MARK: - Stream filters

/// Pieces of `body` whose sizes come from the fuzzer's bytes (deterministic per input).
func pieces(_ body: [UInt8], _ raw: [UInt8]) -> [[UInt8]] {
    var out: [[UInt8]] = []
    var state = UInt64(raw.count) &* 0x9E37_79B9_7F4A_7C15
    for b in raw { state = (state ^ UInt64(b)) &* 0x100_0000_01B3 }
    let maxPiece = Int(raw.count > 1 ? raw[1] % 64 : 7) + 1
    var i = 0
    while i < body.count {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        let n = 1 + Int((state >> 33) % UInt64(maxPiece))
        out.append(Array(body[i..<min(body.count, i + n)]))
        i += n
    }
    return out
}

struct FilterRun: Equatable {
    var out: [UInt8] = []
    var error: SSEFilterError?
    var usage: Usage?
    var done = false
}

func runFilter(_ chunks: [[UInt8]], drop: Bool, maxEvent: Int) -> FilterRun {
    var f = SSEEventFilter(secret: key, dropUsageChunk: drop, maxEventBytes: maxEvent)
    var r = FilterRun()
    do throws(SSEFilterError) {
        for c in chunks {
            var failure: SSEFilterError?
            c.withUnsafeBytes { b in
                do throws(SSEFilterError) { try f.process(b) { r.out.append(contentsOf: $0) } } catch { failure = error }
            }
            if let failure { throw failure }
        }
        try f.finish { r.out.append(contentsOf: $0) }
    } catch {
        r.error = error
    }
    r.usage = f.usage
    r.done = f.sawDone
    return r
}

/// What any client can make of a filtered stream: its bytes, each event's data (lines joined
/// with LF) with every JSON escape decoded, and every decoded string when the data is JSON.
func assertStreamKeyFree(_ out: [UInt8], _ what: String) {
    if contains(out, key) { fail("\(what): key in the bytes") }
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
    var data: [UInt8] = []
    var hasData = false
    func check() {
        guard hasData else { return }
        let plain = data.withUnsafeBufferPointer { jsonUnescapedEverywhere($0) }
        if contains(plain, key) { fail("\(what): key in unescaped data \(String(decoding: data, as: UTF8.self))") }
        if let v = try? JSONValue.parse(data) {
            var all: [String] = []
            strings(v, &all)
            for s in all where contains(Array(s.utf8), key) { fail("\(what): key in a decoded string") }
        }
        data = []; hasData = false
    }
    for l in lines {
        if l.isEmpty { check(); continue }
        guard l.count >= 4, Array(l[0..<4]) == Array("data".utf8) else { continue }
        var v = Array(l[4...])
        if let c = v.first {
            guard c == 0x3A else { continue }
            v.removeFirst()
            if v.first == 0x20 { v.removeFirst() }
        }
        if hasData { data.append(0x0A) }
        data += v
        hasData = true
    }
    check()
    for n in stride(from: key.count - 1, through: KeyRedactor.defaultMinimumRedactedPrefix, by: -1)
        where out.count >= n && Array(out.suffix(n)) == Array(key.prefix(n)) {
        fail("\(what): ends in \(n) bytes of the key")
    }
}

func fuzzEventFilter(_ body: [UInt8], raw: [UInt8], maxEvent: Int) {
    let drop = raw.count > 2 && raw[2] & 1 == 1
    let whole = runFilter([body], drop: drop, maxEvent: maxEvent)
    let split = runFilter(pieces(body, raw), drop: drop, maxEvent: maxEvent)
    if whole != split { fail("event filter depends on the chunking") }
    let bytewise = runFilter(body.map { [$0] }, drop: drop, maxEvent: maxEvent)
    if whole != bytewise { fail("event filter differs byte by byte") }
    assertStreamKeyFree(whole.out, "event filter")
    // The input itself when nothing needed changing (no key form, nothing dropped, no error,
    // and the input ends at an event boundary).
    let keyFree = !raw.dropFirst().contains { $0 >= 1 && $0 <= 5 }
    var f = SSEEventFilter(secret: key, dropUsageChunk: drop, maxEventBytes: maxEvent)
    _ = try? f.process(body)
    if keyFree, !contains(body, key), whole.error == nil, f.heldBytes == 0,
       f.droppedUsageChunks == 0, f.redactedEvents == 0, whole.out != body {
        fail("event filter changed a stream that needed no change")
    }
}

func fuzzCompressedStream(_ body: [UInt8], raw: [UInt8]) {
    let format: Deflate.Format = [.gzip, .zlib, .raw][Int(raw.count > 1 ? raw[1] % 3 : 0)]
    let coding: ContentCoding = format == .gzip ? .gzip : .deflate
    var compressed = Deflate.compress(body, format: format)
    let flip = raw.count > 3 && raw[2] & 2 == 2 && !compressed.isEmpty
    if flip { compressed[Int(raw[3]) % compressed.count] ^= (raw.count > 4 ? raw[4] : 0) | 1 }
    let inflater = Inflater(coding: coding, limits: InflateLimits(maxOutputBytes: 1 << 20))
    var filter = SSEEventFilter(secret: key)
    var out: [UInt8] = []
    var decoded: [UInt8] = []
    var failed = false
    for p in pieces(compressed, raw) {
        var failure: InflateError?
        p.withUnsafeBytes { b in
            do throws(InflateError) {
                try inflater.process(b) { d in
                    decoded.append(contentsOf: d)
                    do throws(SSEFilterError) { try filter.process(d) { out.append(contentsOf: $0) } } catch { failed = true }
                }
            } catch { failure = error }
        }
        if failure != nil { failed = true; break }
    }
    if !failed {
        do throws(InflateError) { try inflater.finish() } catch { failed = true }
    }
    if let tail = try? filter.finish() { out += tail }
    assertStreamKeyFree(out, "compressed stream")
    if inflater.totalOut > 1 << 20 { fail("inflate over its cap") }
    if !flip {
        if failed || decoded != body { fail("compressed stream did not round-trip") }
        if out != runFilter([body], drop: false, maxEvent: SSEEventFilter.defaultMaxEventBytes).out {
            fail("compressed stream filtered differently")
        }
    }
}

func fuzzInflate(_ data: [UInt8], raw: [UInt8]) {
    let coding: ContentCoding = [.gzip, .deflate, .identity][Int(raw.count > 1 ? raw[1] % 3 : 0)]
    let limits = InflateLimits(maxOutputBytes: 64 << 10, maxRatio: 50, ratioFloorBytes: 1 << 10)
    func run(_ chunks: [[UInt8]]) -> ([UInt8], InflateError?) {
        let i = Inflater(coding: coding, limits: limits)
        var out: [UInt8] = []
        for c in chunks {
            var failure: InflateError?
            c.withUnsafeBytes { b in
                do throws(InflateError) { try i.process(b) { out.append(contentsOf: $0) } } catch { failure = error }
            }
            if let failure { return (out, failure) }
        }
        do throws(InflateError) { try i.finish() } catch { return (out, error) }
        return (out, nil)
    }
    let a = run([data]), b = run(pieces(data, raw))
    if a.0.count > limits.maxOutputBytes || b.0.count > limits.maxOutputBytes { fail("inflate emitted past its cap") }
    if a.1 == nil && b.1 == nil && a.0 != b.0 { fail("inflate depends on the chunking") }
    _ = ContentCoding.parse(String(decoding: data.prefix(64), as: UTF8.self))
}

// MARK: - Member names

func foldedReference(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    for u in s.unicodeScalars {
        switch u.value {
        case 0x61...0x7A: out.append(UInt8(u.value) - 0x20)
        case 0x17F: out.append(0x53)
        case 0x212A: out.append(0x4B)
        default: out += Array(String(u).utf8)
        }
    }
    return out
}

func fuzzMemberNames(_ body: [UInt8]) {
    let reading: Set<String> = ["model", "stream", "stream_options"]
    var want: String?? = .none
    if case .object(let members)? = try? JSONValue.parse(body) {
        var seen = Set<[UInt8]>()
        let read = Dictionary(uniqueKeysWithValues: reading.map { (foldedReference($0), $0) })
        want = .some(nil)
        for m in members {
            let f = foldedReference(m.key)
            if !seen.insert(f).inserted || (read[f].map { $0 != m.key } ?? false) { want = .some(m.key); break }
        }
    }
    // `try?` would flatten "no ambiguity" and "invalid JSON" into one nil.
    let got: String??
    do { got = .some(try JSONParser.ambiguousTopLevelMember(body, reading: reading)) } catch { got = .none }
    if got != want { fail("ambiguous member: got \(String(describing: got)), reference \(String(describing: want))") }
    guard let r = try? ChatRequestInfo.askingUpstreamForUsage(body) else { return }
    guard case .object(let before)? = try? JSONValue.parse(body),
          case .object(let after)? = try? JSONValue.parse(r.body) else { fail("usage rewrite is not a JSON object") }
    guard let read = try? ChatRequestInfo.read(r.body), read.includeUsage else { fail("usage rewrite does not ask for usage") }
    if before.filter({ $0.key != "stream_options" }) != after.filter({ $0.key != "stream_options" }) {
        fail("usage rewrite changed another member")
    }
    if r.callerAskedForUsage && r.body != body { fail("usage rewrite changed a body that asked already") }
}

// MARK: - KeyRedactor end of stream

func fuzzKeyRedactorEnd(_ body: [UInt8], raw: [UInt8]) {
    var r = KeyRedactor(secret: key)
    var out: [UInt8] = []
    for p in pieces(body, raw) { out += r.process(p) }
    out += r.finish()
    if out != KeyRedactor.redact(body, secret: key) { fail("streaming redactor differs from one-shot at the end") }
    if contains(out, key) { fail("key in the redacted stream") }
    for n in stride(from: key.count - 1, through: KeyRedactor.defaultMinimumRedactedPrefix, by: -1)
        where out.count >= n && Array(out.suffix(n)) == Array(key.prefix(n)) {
        fail("redacted stream ends in \(n) bytes of the key")
    }
}
