// libFuzzer target for the schema translators (Sources/Translation): upstream bytes -> Veil's
// objects, as the gateway runs them. Built by `fuzz/run translation <seconds>`.
//
// Byte 0 picks the path; the rest is the upstream's body. To let the fuzzer place the shared key
// anywhere cheaply, byte 0x01 in the body stands for the key and 0x02 for the key written with a
// JSON escape (`sk-\u0046UZZKEY…`, which decodes to the key). Invariants (a violation traps):
// - nothing traps (Swift runtime errors are crashes under libFuzzer);
// - translated objects are valid JSON, and after the gateway's redaction neither their bytes nor
//   any decoded string contains the key;
// - characters: `api_key`, `token_id`, `username`, `gen_id` never reach Veil's object (the key is
//   in the output only if a whitelisted field carried it);
// - upstream error messages: the extracted message never contains the key once decoded;
// - streams (SSE): the streaming redactor, fed in fuzzer-chosen pieces, emits exactly what the
//   one-shot redactor does and never the key; the usage scanner never traps.

let key = Array("sk-FUZZKEY-0123456789abcdef".utf8)
let escapedKey = Array("sk-\\u0046UZZKEY-0123456789abcdef".utf8)

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
    let mode = ptr[0] % 6
    var body: [UInt8] = []
    body.reserveCapacity(size + 64)
    for i in 1..<size {
        switch ptr[i] {
        case 1: body += key
        case 2: body += escapedKey
        default: body.append(ptr[i])
        }
    }
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
        var r = KeyRedactor(secret: key)
        var out: [UInt8] = []
        var scanner = SSEUsageScanner(maxLineBytes: mode == 4 ? 64 : 64 * 1024)
        var start = 0
        for i in 0...body.count where i == body.count || body[i] < 0x20 {
            let piece = Array(body[start..<min(i + 1, body.count)])
            out += r.process(piece)
            scanner.feed(piece)
            start = min(i + 1, body.count)
        }
        out += r.finish()
        scanner.finish()
        if out != KeyRedactor.redact(body, secret: key) { fail("streaming redactor differs from one-shot") }
        if contains(out, key) { fail("key in the stream") }
        _ = extractUsage(fromJSON: body)
        _ = try? ChatRequestInfo.parse(body)
    default:
        break
    }
    return 0
}
