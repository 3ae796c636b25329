/// Everything a chat stream (Server-Sent Events) goes through between the upstream and the
/// caller: the key redacted in clear and JSON-escaped, token usage and `[DONE]` read in passing,
/// and, optionally, the final usage-only chunk removed.
///
/// Framing. An event ends at a blank line; lines end at LF, CRLF or CR (HTML SSE spec, 9.2.5).
/// Every complete event is passed on byte for byte, as a slice of the input whenever it lies in
/// one chunk: a chunk made of complete events is emitted whole, in the same call, without a
/// copy. Only an incomplete trailing event is held (copied), since an SSE client dispatches
/// nothing before the blank line anyway. The held event is bounded by `maxEventBytes` (counted
/// from its first line: an LF completing the previous event's CRLF is not part of it): an event
/// over the limit (held or not, so the outcome does not depend on the chunking) stops the filter
/// with `SSEFilterError.eventTooLarge`, which the caller turns into a stream error; nothing of
/// that event is emitted.
///
/// The key in clear. The key holds no CR or LF, so it never spans two events: each event is
/// redacted as a whole, exactly as `KeyRedactor` would redact the stream (leftmost,
/// non-overlapping, `[redacted]`), a key split across chunks included (its event is held until
/// complete). The key search is part of the framing pass, not a second one.
///
/// Per event, on its `data:` field (its lines joined with LF, as a client joins them):
/// - `[DONE]` sets `sawDone`; a JSON object whose `usage` is an object sets `usage` (only events
///   with `"usage"` followed by `{` are parsed, so `"usage":null` costs nothing).
/// - With `dropUsageChunk`, the usage-only chunk (`choices` an empty array, `usage` an object)
///   is removed entirely, with its line ends; every other byte stays.
/// - The escaped key: only an event whose data holds a backslash is examined, and only when some
///   escape decodes to a byte that occurs in the key (`\n` or `\"` never do, for an alphanumeric
///   key) is the data unescaped and searched. Occurrences in clear are redacted anyway, so the key
///   can only hide in a decoded string with an escape inside it. When found, the event is
///   rewritten: its JSON re-encoded with the key replaced by `[redacted]` in every decoded
///   string, member names included (the client reads the rest of the chunk as before; other
///   fields kept, data on one `data:` line). Data that is not JSON but unescapes to the key is
///   dropped with its event: no client can parse it as a chat chunk anyway. `redactedEvents`
///   counts both.
///
/// End of stream (`finish`): an incomplete trailing event is dropped (clients discard it, and a
/// caller that appends an error event needs a clean line start; no prefix of a cut key can
/// leave), except a lone `data: [DONE]`, which is completed with its blank line. Usage and
/// `[DONE]` are still read from it.
///
/// Cost for an event without the key: one eight-bytes-a-step pass that stops at line ends,
/// backslashes, a rare byte of the key (`SSEKeySearch`) and `g` (the anchor of `"usage"`), where
/// `KeyRedactor` + `SSEUsageScanner` made three passes. Measured (`bench/sse-filter`, callgrind,
/// against the code before this filter): 1,627 instructions per 236-byte chunk against 1,850;
/// 1,805 against 10,069 when every chunk carries `"usage":null`. Allocation only for events split across chunks (the held copy) and
/// events that hold the key.
public struct SSEEventFilter: Sendable {
    public static let defaultMaxEventBytes = 1 << 20

    private var framer: SSEFramer

    /// - Parameters:
    ///   - secret: the shared upstream key (empty: no redaction).
    ///   - dropUsageChunk: remove the final usage-only chunk (the caller did not ask for
    ///     `stream_options.include_usage`, Veil did).
    ///   - maxEventBytes: the largest event, and so the most bytes held per stream.
    public init(secret: [UInt8], dropUsageChunk: Bool = false, maxEventBytes: Int = SSEEventFilter.defaultMaxEventBytes) {
        framer = SSEFramer(secret: secret, dropUsageChunk: dropUsageChunk, maxEventBytes: max(1, maxEventBytes))
    }

    /// Token usage from the last event that carried one.
    public var usage: Usage? { framer.usage }
    /// A `data: [DONE]` event went by.
    public var sawDone: Bool { framer.sawDone }
    /// Events rewritten or dropped because their decoded data held the key.
    public var redactedEvents: Int { framer.redactedEvents }
    /// Usage-only chunks removed (`dropUsageChunk`).
    public var droppedUsageChunks: Int { framer.droppedUsageChunks }
    /// `finish` dropped an incomplete trailing event.
    public var droppedIncompleteEvent: Bool { framer.droppedIncompleteEvent }
    /// Bytes of the incomplete event held now.
    public var heldBytes: Int { framer.held.count }

    /// Feeds one chunk as received; `emit` gets the bytes that are final, in order (pointers
    /// valid during the call only). After an error, every call throws it again.
    public mutating func process(_ input: UnsafeRawBufferPointer, emit: (UnsafeRawBufferPointer) -> Void) throws(SSEFilterError) {
        if let e = framer.failed { throw e }
        framer.frame(input, emit)
        if let e = framer.failed { throw e }
    }

    /// End of stream (see the type's comment).
    public mutating func finish(emit: (UnsafeRawBufferPointer) -> Void) throws(SSEFilterError) {
        if let e = framer.failed { throw e }
        framer.finishIncomplete(emit)
    }

    /// Convenience for `[UInt8]` chunks: the bytes that are final. On an error, the bytes the
    /// same call had made final are not returned (use the closure form to keep them).
    public mutating func process(_ chunk: [UInt8]) throws(SSEFilterError) -> [UInt8] {
        var out: [UInt8] = []
        var failure: SSEFilterError?
        chunk.withUnsafeBytes { b in
            do throws(SSEFilterError) { try process(b) { out.append(contentsOf: $0) } } catch { failure = error }
        }
        if let failure { throw failure }
        return out
    }

    public mutating func finish() throws(SSEFilterError) -> [UInt8] {
        var out: [UInt8] = []
        try finish { out.append(contentsOf: $0) }
        return out
    }
}

public enum SSEFilterError: Error, Sendable, Equatable {
    /// An event grew past `maxEventBytes` (the limit is given).
    case eventTooLarge(limit: Int)
}

/// Where the scan of the current event stands; offsets are relative to the event's first byte,
/// so they stay valid when an incomplete event moves from the input into the held copy.
struct SSEEventScan {
    var pos = 0
    var lineBegin = 0
    /// The byte before `lineBegin` was a CR: an LF right there completes that CRLF.
    var afterCR = false
    var lineHasBackslash = false
    var lineHasUsage = false
    /// Where the first line begins (1 when the event starts with the LF of a CRLF).
    var bodyStart = 0
    var dataLines = 0
    var firstData: Range<Int> = 0..<0
    var dataEscape = false
    var usageCandidate = false
    var done = false
    /// Offsets of the key's occurrences in clear (leftmost, non-overlapping).
    var keyHits: [Int] = []
    /// End of the last occurrence: a later one must start at or after it.
    var keyEnd = 0

    init(afterCR: Bool = false) { self.afterCR = afterCR }

    /// Scans from the event's saved position; the offset just past its blank line, or nil (the
    /// state then covers the bytes up to `count`, or stops at a candidate for the key or
    /// `"usage"` that needs bytes not there yet: the scan resumes there).
    mutating func scanEvent(_ base: UnsafePointer<UInt8>, count: Int, evStart: Int, key: SSEKeySearch) -> Int? {
        let rawBase = UnsafeRawPointer(base)
        var i = evStart + pos
        while true {
            guard let t = firstSSEStop(in: rawBase, from: i, count: count,
                                       backslash: !lineHasBackslash, key: key.anchorByte) else {
                pos = count - evStart
                return nil
            }
            let c = base[t]
            if c < 0x0E {
                guard c == 0x0A || c == 0x0D else { i = t + 1; continue }   // a tab, say
                let rel = t - evStart
                if c == 0x0A && afterCR && rel == lineBegin {
                    // The LF of a CRLF whose CR ended the previous line.
                    afterCR = false
                    lineBegin = rel + 1
                    if rel == 0 { bodyStart = 1 }
                    i = t + 1
                    continue
                }
                if rel == lineBegin {
                    // A blank line: the event is complete.
                    pos = rel + 1
                    return t + 1
                }
                classify(base, lo: evStart + lineBegin, hi: t, evStart: evStart)
                lineBegin = rel + 1
                afterCR = c == 0x0D
                lineHasBackslash = false
                lineHasUsage = false
                i = t + 1
                continue
            }
            if c == 0x5C { lineHasBackslash = true }
            if c == key.anchorByte, key.active {
                // The key would start `anchor` bytes before; it never spans a line end, so the
                // bytes before are in this event's buffer.
                let s = t - key.anchor
                if s >= evStart + lineBegin, s - evStart >= keyEnd {
                    switch key.match(base, at: s, count: count) {
                    case .yes:
                        keyHits.append(s - evStart)
                        keyEnd = s - evStart + key.bytes.count
                    case .no: break
                    case .needMore:
                        pos = t - evStart          // maybe the key: wait for the rest
                        return nil
                    }
                }
            }
            if c == 0x67 {
                switch usageKeyAt(g: t, base, lineStart: evStart + lineBegin, count: count) {
                case .yes: lineHasUsage = true
                case .no: break
                case .needMore:
                    pos = t - evStart
                    return nil
                }
            }
            i = t + 1
        }
    }


    /// Whether the `g` at `g` is that of `"usage"` followed by optional spaces, `:`, optional
    /// spaces and `{`, inside the current line.
    func usageKeyAt(g: Int, _ v: UnsafePointer<UInt8>, lineStart: Int, count: Int) -> Answer {
        let s = g - 4
        guard s >= lineStart else { return .no }
        guard g + 2 < count else { return .needMore }
        guard v[s] == 0x22, v[s + 1] == 0x75, v[s + 2] == 0x73, v[s + 3] == 0x61, v[s + 5] == 0x65, v[s + 6] == 0x22 else { return .no }
        var j = s + 7
        while j < count, v[j] == 0x20 || v[j] == 0x09 { j += 1 }
        guard j < count else { return .needMore }
        guard v[j] == 0x3A else { return .no }
        j += 1
        while j < count, v[j] == 0x20 || v[j] == 0x09 { j += 1 }
        guard j < count else { return .needMore }
        return v[j] == 0x7B ? .yes : .no
    }

    /// Notes what a complete line (without its line end) means for the event.
    mutating func classify(_ base: UnsafePointer<UInt8>, lo: Int, hi: Int, evStart: Int) {
        let n = hi - lo
        guard n >= 4, base[lo] == 0x64, base[lo + 1] == 0x61, base[lo + 2] == 0x74, base[lo + 3] == 0x61 else { return }
        var v = hi
        if n > 4 {
            guard base[lo + 4] == 0x3A else { return }
            v = lo + 5
            if v < hi, base[v] == 0x20 { v += 1 }
        }
        dataLines += 1
        if dataLines == 1 { firstData = (v - evStart)..<(hi - evStart) }
        if lineHasBackslash { dataEscape = true }
        if lineHasUsage { usageCandidate = true }
        if hi - v <= 16 && isDone(UnsafeBufferPointer(start: base + v, count: hi - v)) { done = true }
    }

    func isDone(_ v: UnsafeBufferPointer<UInt8>) -> Bool {
        var lo = 0, hi = v.count
        while lo < hi, isASCIISpace(v[lo]) { lo += 1 }
        while hi > lo, isASCIISpace(v[hi - 1]) { hi -= 1 }
        return hi - lo == 6 && v[lo] == 0x5B && v[lo + 1] == 0x44 && v[lo + 2] == 0x4F
            && v[lo + 3] == 0x4E && v[lo + 4] == 0x45 && v[lo + 5] == 0x5D
    }
}

enum Answer { case yes, no, needMore }

/// The key, searched by one of its bytes chosen to be rare in SSE JSON (an upper-case letter,
/// else a rare lower-case one, else a digit), so that the scan stops seldom: `s`, the first
/// byte of every `sk-` key, is one of the commonest bytes of a chat chunk.
struct SSEKeySearch {
    let bytes: UnsafeBufferPointer<UInt8>
    let anchor: Int
    let anchorByte: UInt8
    let active: Bool

    init(_ secret: UnsafeBufferPointer<UInt8>, anchor: Int) {
        bytes = secret
        active = !secret.isEmpty
        self.anchor = anchor
        // Without a secret the anchor repeats LF, which is a stop anyway.
        anchorByte = secret.isEmpty ? 0x0A : secret[anchor]
    }

    static func anchorIndex(_ s: UnsafeBufferPointer<UInt8>) -> Int {
        if let i = s.firstIndex(where: { $0 >= 0x41 && $0 <= 0x5A }) { return i }
        for rare in "zqxjkvbwyfpgmuh".utf8 { if let i = s.firstIndex(of: rare) { return i } }
        if let i = s.firstIndex(where: { $0 >= 0x30 && $0 <= 0x39 }) { return i }
        return 0
    }

    /// Whether the key starts at `s` (bytes up to `count` available).
    func match(_ base: UnsafePointer<UInt8>, at s: Int, count: Int) -> Answer {
        let n = bytes.count
        var k = 0
        while k < n, s + k < count {
            if base[s + k] != bytes[k] { return .no }
            k += 1
        }
        return k == n ? .yes : .needMore
    }
}

struct SSEFramer: Sendable {
    let secret: [UInt8]
    let dropUsageChunk: Bool
    let maxEventBytes: Int
    /// The index of the secret's byte the scan looks for (`SSEKeySearch.anchorIndex`).
    let keyAnchor: Int
    /// Which bytes occur in the secret (bit per byte value).
    let secretBytes: (UInt64, UInt64, UInt64, UInt64)
    var held: [UInt8] = []
    var scan = SSEEventScan()
    var failed: SSEFilterError?
    /// The last event was removed or rewritten and ended with a CR: an LF right after it is the
    /// rest of its CRLF and goes with it.
    var swallowLF = false
    var usage: Usage?
    var sawDone = false
    var redactedEvents = 0
    var droppedUsageChunks = 0
    var droppedIncompleteEvent = false

    init(secret: [UInt8], dropUsageChunk: Bool, maxEventBytes: Int) {
        self.secret = secret
        self.dropUsageChunk = dropUsageChunk
        self.maxEventBytes = maxEventBytes
        keyAnchor = secret.withUnsafeBufferPointer { SSEKeySearch.anchorIndex($0) }
        var s: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        for b in secret {
            let bit = UInt64(1) << UInt64(b & 63)
            switch b >> 6 {
            case 0: s.0 |= bit
            case 1: s.1 |= bit
            case 2: s.2 |= bit
            default: s.3 |= bit
            }
        }
        secretBytes = s
    }

    @inline(__always) func inSecret(_ b: UInt8) -> Bool {
        let bit = UInt64(1) << UInt64(b & 63)
        switch b >> 6 {
        case 0: return secretBytes.0 & bit != 0
        case 1: return secretBytes.1 & bit != 0
        case 2: return secretBytes.2 & bit != 0
        default: return secretBytes.3 & bit != 0
        }
    }

    enum Action { case pass, drop, replace([UInt8]) }

    mutating func fail(_ e: SSEFilterError) {
        failed = e
        held = []
    }

    /// The held event is over the limit: nothing of it goes out but a leading LF (the rest of
    /// the previous event's CRLF, which goes out whenever it arrives alone).
    mutating func failTooLarge(_ emit: (UnsafeRawBufferPointer) -> Void) {
        if scan.bodyStart > 0, held.count >= scan.bodyStart {
            held.withUnsafeBytes { emit(UnsafeRawBufferPointer(rebasing: $0[0..<scan.bodyStart])) }
        }
        fail(.eventTooLarge(limit: maxEventBytes))
    }

    // MARK: Framing

    mutating func frame(_ piece: UnsafeRawBufferPointer, _ emit: (UnsafeRawBufferPointer) -> Void) {
        guard failed == nil, let raw = piece.baseAddress, piece.count > 0 else { return }
        let sec = secret
        sec.withUnsafeBufferPointer { frame(piece, raw, SSEKeySearch($0, anchor: keyAnchor), emit) }
    }

    private mutating func frame(_ piece: UnsafeRawBufferPointer, _ raw: UnsafeRawPointer,
                                _ key: SSEKeySearch, _ emit: (UnsafeRawBufferPointer) -> Void) {
        let count = piece.count
        var start = 0
        if !held.isEmpty {
            // An event continues: complete it in the held copy, taking the piece in growing
            // steps so that an event ending early in a large piece copies little of it.
            let old = held.count
            var taken = 0
            var step = 256
            var end: Int?
            while end == nil, taken < count {
                let n = min(step, count - taken)
                held.append(contentsOf: UnsafeRawBufferPointer(rebasing: piece[taken..<(taken + n)]))
                taken += n
                step *= 2
                end = held.withUnsafeBufferPointer { scan.scanEvent($0.baseAddress!, count: $0.count, evStart: 0, key: key) }
                if end == nil, held.count - scan.bodyStart > maxEventBytes { return failTooLarge(emit) }
            }
            guard let e = end else { return }
            if e - scan.bodyStart > maxEventBytes { return failTooLarge(emit) }
            // Taken out of `held` (not copied) so that `decide` may change `self` meanwhile.
            var h: [UInt8] = []
            swap(&h, &held)
            h.withUnsafeBufferPointer { b in
                let ev = UnsafeBufferPointer(rebasing: b[0..<e])
                let lead = scan.bodyStart
                switch decide(ev) {
                case .pass: emitRedacted(ev, emit)
                case .drop:
                    if lead > 0 { emit(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: ev[0..<lead]))) }
                    swallowLF = b[e - 1] == 0x0D
                case .replace(let bytes):
                    bytes.withUnsafeBytes { emit($0) }
                    swallowLF = b[e - 1] == 0x0D
                }
                scan = SSEEventScan(afterCR: b[e - 1] == 0x0D)
            }
            if h.capacity <= 16 * 1024 {
                h.removeAll(keepingCapacity: true)
                held = h
            }
            start = e - old
        }
        let base = raw.assumingMemoryBound(to: UInt8.self)
        var pending = start
        var evStart = start
        while evStart < count {
            if swallowLF {
                // The LF of the CRLF that ended an event Veil removed or rewrote goes with it.
                swallowLF = false
                if base[evStart] == 0x0A {
                    if evStart > pending { emit(UnsafeRawBufferPointer(rebasing: piece[pending..<evStart])) }
                    evStart += 1
                    pending = evStart
                    scan = SSEEventScan()
                    continue
                }
            }
            guard let e = scan.scanEvent(base, count: count, evStart: evStart, key: key) else { break }
            if e - evStart - scan.bodyStart > maxEventBytes {
                let lead = evStart + scan.bodyStart
                if lead > pending { emit(UnsafeRawBufferPointer(rebasing: piece[pending..<lead])) }
                return fail(.eventTooLarge(limit: maxEventBytes))
            }
            if !scan.done && !scan.usageCandidate && !scan.dataEscape && scan.keyHits.isEmpty {
                // The usual event: it simply stays in the range emitted below.
                scan = SSEEventScan(afterCR: base[e - 1] == 0x0D)
                evStart = e
                continue
            }
            let lead = scan.bodyStart
            let ev = UnsafeBufferPointer(start: base + evStart, count: e - evStart)
            switch decide(ev) {
            case .pass:
                if !scan.keyHits.isEmpty {
                    if evStart > pending { emit(UnsafeRawBufferPointer(rebasing: piece[pending..<evStart])) }
                    emitRedacted(ev, emit)
                    pending = e
                }
            case .drop:
                // The leading LF (the previous event's CRLF) stays; the event goes.
                if evStart + lead > pending { emit(UnsafeRawBufferPointer(rebasing: piece[pending..<(evStart + lead)])) }
                pending = e
                swallowLF = base[e - 1] == 0x0D
            case .replace(let bytes):
                if evStart > pending { emit(UnsafeRawBufferPointer(rebasing: piece[pending..<evStart])) }
                bytes.withUnsafeBytes { emit($0) }
                pending = e
                swallowLF = base[e - 1] == 0x0D
            }
            scan = SSEEventScan(afterCR: base[e - 1] == 0x0D)
            evStart = e
        }
        if evStart < count, scan.bodyStart == count - evStart {
            // Only the LF completing the CRLF that ended the last event: nothing to hold.
            scan = SSEEventScan()
            evStart = count
        }
        if evStart > pending {
            emit(pending == 0 && evStart == count ? piece : UnsafeRawBufferPointer(rebasing: piece[pending..<evStart]))
        }
        if evStart < count {
            held.append(contentsOf: UnsafeRawBufferPointer(rebasing: piece[evStart..<count]))
            if held.count - scan.bodyStart > maxEventBytes { failTooLarge(emit) }
        }
    }

    /// A complete event with its occurrences of the key in clear (`scan.keyHits`) replaced.
    func emitRedacted(_ ev: UnsafeBufferPointer<UInt8>, _ emit: (UnsafeRawBufferPointer) -> Void) {
        var from = 0
        for hit in scan.keyHits {
            if hit > from { emit(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: ev[from..<hit]))) }
            KeyRedactor.defaultReplacement.withUnsafeBytes { emit($0) }
            from = hit + secret.count
        }
        if from < ev.count { emit(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: ev[from...]))) }
    }

    // MARK: Per event

    /// What to do with one complete event (`scan` describes it).
    mutating func decide(_ ev: UnsafeBufferPointer<UInt8>) -> Action {
        if scan.done { sawDone = true }
        guard scan.usageCandidate || (scan.dataEscape && !secret.isEmpty) else { return .pass }
        if scan.dataLines <= 1 { return decide(ev, data: UnsafeBufferPointer(rebasing: ev[scan.firstData])) }
        // Several `data:` lines: their values joined with LF, as a client joins them (rare).
        var joined: [UInt8] = []
        var first = true
        Self.forEachLine(ev, from: scan.bodyStart) { line in
            guard let v = Self.dataValue(ev, line) else { return }
            if !first { joined.append(0x0A) }
            first = false
            joined += ev[v]
        }
        return joined.withUnsafeBufferPointer { decide(ev, data: $0) }
    }

    mutating func decide(_ ev: UnsafeBufferPointer<UInt8>, data: UnsafeBufferPointer<UInt8>) -> Action {
        if scan.usageCandidate,
           let m = try? JSONParser.topLevelMembers(data, wanted: Self.usageAndChoices),
           // Chat chunks carry `usage` at the top; the Responses API in `response.completed`.
           let u = m["usage"].flatMap(Usage.init) ?? m["response"]?["usage"].flatMap(Usage.init) {
            usage = u
            if dropUsageChunk, case .array(let choices)? = m["choices"], choices.isEmpty {
                droppedUsageChunks += 1
                return .drop
            }
        }
        if scan.dataEscape, !secret.isEmpty, escapesMayFormSecret(data) {
            let plain = jsonUnescapedEverywhere(data)
            if plain.withUnsafeBufferPointer({ p in secret.withUnsafeBufferPointer { contains($0, in: p) } }) {
                redactedEvents += 1
                return rewrite(ev, data: data)
            }
        }
        return .pass
    }

    static let usageAndChoices: Set<String> = ["usage", "choices", "response"]

    /// Calls `body` with each line's range (line end excluded) of an event, from `from` up to
    /// its blank line.
    static func forEachLine(_ ev: UnsafeBufferPointer<UInt8>, from: Int, _ body: (Range<Int>) -> Void) {
        var i = from
        var begin = i
        while i < ev.count {
            let c = ev[i]
            if c == 0x0A || c == 0x0D {
                if i == begin { return }          // the blank line
                body(begin..<i)
                if c == 0x0D, i + 1 < ev.count, ev[i + 1] == 0x0A { i += 1 }
                begin = i + 1
            }
            i += 1
        }
        if begin < ev.count { body(begin..<ev.count) }
    }

    /// The value range of a `data` line, or nil for other lines.
    static func dataValue(_ ev: UnsafeBufferPointer<UInt8>, _ line: Range<Int>) -> Range<Int>? {
        let lo = line.lowerBound, n = line.count
        guard n >= 4, ev[lo] == 0x64, ev[lo + 1] == 0x61, ev[lo + 2] == 0x74, ev[lo + 3] == 0x61 else { return nil }
        if n == 4 { return line.upperBound..<line.upperBound }
        guard ev[lo + 4] == 0x3A else { return nil }
        var v = lo + 5
        if v < line.upperBound, ev[v] == 0x20 { v += 1 }
        return v..<line.upperBound
    }

    /// Whether any escape in `data` decodes to a byte of the secret (the only way the secret can
    /// hide in a decoded string once the bytes have been redacted in clear).
    func escapesMayFormSecret(_ data: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = data.baseAddress else { return false }
        let n = data.count
        var i = 0
        while let b = firstIndex(of: 0x5C, in: UnsafeRawPointer(base), from: i, count: n) {
            guard b + 1 < n else { return false }
            let e = data[b + 1]
            if e == 0x75 {
                guard b + 5 < n, let scalar = hex4(data, b + 2) else { i = b + 1; continue }
                if scalar < 0x80 ? inSecret(UInt8(scalar)) : secretHasNonASCII { return true }
                i = b + 6
            } else {
                if let d = simpleEscape(e), inSecret(d) { return true }
                i = b + 2
            }
        }
        return false
    }

    var secretHasNonASCII: Bool { secretBytes.2 != 0 || secretBytes.3 != 0 }

    /// The event with its data re-encoded, every decoded string redacted; dropped when the
    /// data is not JSON.
    func rewrite(_ ev: UnsafeBufferPointer<UInt8>, data: UnsafeBufferPointer<UInt8>) -> Action {
        guard let value = try? JSONValue.parse(Array(data)) else { return .drop }
        let clean = value.mappingStrings { s in
            String(decoding: KeyRedactor.redact(Array(s.utf8), secret: secret), as: UTF8.self)
        }
        var out: [UInt8] = Array(ev[0..<scan.bodyStart])
        Self.forEachLine(ev, from: scan.bodyStart) { line in
            guard Self.dataValue(ev, line) == nil else { return }
            out += ev[line]
            out.append(0x0A)
        }
        out += Array("data: ".utf8)
        clean.appendEncoded(to: &out)
        out += [0x0A, 0x0A]
        return .replace(KeyRedactor.redact(out, secret: secret))
    }

    // MARK: End of stream

    mutating func finishIncomplete(_ emit: (UnsafeRawBufferPointer) -> Void) {
        guard !held.isEmpty else { return }
        let h = held
        held = []
        h.withUnsafeBufferPointer { b in
            let base = b.baseAddress!
            if scan.lineBegin < b.count {
                // The last line has no line end; the scan may have stopped short of its end.
                scan.lineHasUsage = Self.hasUsageObject(UnsafeBufferPointer(rebasing: b[scan.lineBegin...]))
                scan.classify(base, lo: scan.lineBegin, hi: b.count, evStart: 0)
            }
            let action = decide(b)
            if scan.done, scan.dataLines == 1, case .pass = action {
                // A lone `data: [DONE]` without its blank line: completed (key redacted one-shot,
                // since the scan may not have reached the end).
                KeyRedactor.redact(Array(b), secret: secret).withUnsafeBytes { emit($0) }
                let end: [UInt8] = scan.lineBegin < b.count ? [0x0A, 0x0A] : [0x0A]
                end.withUnsafeBytes { emit($0) }
            } else {
                // Dropped; a leading LF (the rest of the previous event's CRLF) stays, as when
                // it arrives on its own.
                if scan.bodyStart > 0 { emit(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: b[0..<scan.bodyStart]))) }
                droppedIncompleteEvent = true
            }
        }
        scan = SSEEventScan()
    }

    /// `"usage"` followed by optional spaces, `:`, optional spaces and `{`, anywhere in `v`.
    static func hasUsageObject(_ v: UnsafeBufferPointer<UInt8>) -> Bool {
        guard v.count >= 8, let base = v.baseAddress else { return false }
        var from = 4
        while let g = firstIndex(of: 0x67, in: UnsafeRawPointer(base), from: from, count: v.count - 2) {
            let s = g - 4
            if v[s] == 0x22, v[s + 1] == 0x75, v[s + 2] == 0x73, v[s + 3] == 0x61, v[s + 5] == 0x65, v[s + 6] == 0x22 {
                var j = s + 7
                while j < v.count, isASCIISpace(v[j]) { j += 1 }
                if j < v.count, v[j] == 0x3A {
                    j += 1
                    while j < v.count, isASCIISpace(v[j]) { j += 1 }
                    if j < v.count, v[j] == 0x7B { return true }
                }
            }
            from = g + 1
        }
        return false
    }
}

@inline(__always) func simpleEscape(_ e: UInt8) -> UInt8? {
    switch e {
    case 0x22: return 0x22
    case 0x5C: return 0x5C
    case 0x2F: return 0x2F
    case 0x62: return 0x08
    case 0x66: return 0x0C
    case 0x6E: return 0x0A
    case 0x72: return 0x0D
    case 0x74: return 0x09
    default: return nil
    }
}

@inline(__always) func hex4(_ d: UnsafeBufferPointer<UInt8>, _ at: Int) -> UInt32? {
    guard at + 4 <= d.count else { return nil }
    var v: UInt32 = 0
    for k in 0..<4 {
        let c = d[at + k]
        let x: UInt8
        switch c {
        case 0x30...0x39: x = c - 0x30
        case 0x41...0x46: x = c - 0x41 + 10
        case 0x61...0x66: x = c - 0x61 + 10
        default: return nil
        }
        v = v << 4 | UInt32(x)
    }
    return v
}

/// `bytes` with every JSON escape decoded, wherever it stands (invalid escapes kept as they
/// are). A JSON string's decoded text is always a substring of this: outside strings valid JSON
/// has no backslash, so the decoding is in step at every string's opening quote. Surrogates
/// pair as in `JSONParser.parseString`; a lone one becomes U+FFFD.
func jsonUnescapedEverywhere(_ bytes: UnsafeBufferPointer<UInt8>) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var i = 0
    let n = bytes.count
    while i < n {
        let c = bytes[i]
        guard c == 0x5C, i + 1 < n else { out.append(c); i += 1; continue }
        let e = bytes[i + 1]
        if let d = simpleEscape(e) { out.append(d); i += 2; continue }
        guard e == 0x75, var scalar = hex4(bytes, i + 2) else { out.append(c); i += 1; continue }
        i += 6
        if scalar >= 0xD800 && scalar < 0xDC00 {
            if i + 6 <= n, bytes[i] == 0x5C, bytes[i + 1] == 0x75, let low = hex4(bytes, i + 2), low >= 0xDC00 && low < 0xE000 {
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                i += 6
            } else {
                scalar = 0xFFFD
            }
        } else if scalar >= 0xDC00 && scalar < 0xE000 {
            scalar = 0xFFFD
        }
        UTF8.encode(Unicode.Scalar(scalar) ?? "\u{FFFD}") { out.append($0) }
    }
    return out
}
