/// Token counts from an OpenAI `usage` object.
public struct Usage: Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var totalTokens: Int
    public init(promptTokens: Int, completionTokens: Int, totalTokens: Int) {
        self.promptTokens = promptTokens; self.completionTokens = completionTokens; self.totalTokens = totalTokens
    }

    /// From a `usage` value: nil unless it is an object with at least one of the three counts.
    /// Missing counts are 0; a missing total is prompt + completion (saturating). Negative → 0.
    public init?(_ v: JSONValue) {
        guard case .object = v else { return nil }
        let p = v["prompt_tokens"]?.lenientInt, c = v["completion_tokens"]?.lenientInt, t = v["total_tokens"]?.lenientInt
        guard p != nil || c != nil || t != nil else { return nil }
        promptTokens = max(p ?? 0, 0)
        completionTokens = max(c ?? 0, 0)
        let sum = promptTokens.addingReportingOverflow(completionTokens)
        totalTokens = max(t ?? (sum.overflow ? Int.max : sum.partialValue), 0)
    }
}

public enum ChatRequestInfo {
    private static let wanted: Set<String> = ["model", "stream"]

    /// `model` and `stream` of a chat completions body, without materialising the messages.
    /// Throws unless the body is a JSON object. `model` is nil unless a string; `stream` is true
    /// only for JSON `true` (what the upstream's Go decoder accepts; anything else would be an
    /// upstream error, which then isn't a stream either).
    public static func parse(_ body: [UInt8]) throws(TranslationError) -> (model: String?, stream: Bool) {
        let m = try JSONParser.topLevelMembers(body, wanted: wanted)
        return (m["model"]?.stringValue, m["stream"]?.boolValue ?? false)
    }
}

/// The top-level `usage` of a whole chat answer (nil when it has none), read in the pass that
/// validates it. Throws unless the document is a JSON object.
public func extractUsage(fromJSON bytes: [UInt8]) throws(TranslationError) -> Usage? {
    try JSONParser.topLevelMembers(bytes, wanted: usageMember)["usage"].flatMap(Usage.init)
}
private let usageMember: Set<String> = ["usage"]

/// Watches an SSE stream for token usage while the bytes go by.
///
/// Feed every chunk as received (any split). Complete lines are examined in place; only the
/// current incomplete line is copied, up to `maxLineBytes` (a longer line is skipped up to its
/// end: usage chunks are small). Only `data:` lines containing `"usage"` are parsed, and only
/// their top-level `usage` is materialised. Lines end at LF, CR or CRLF. Each `data:` line is
/// read on its own (the upstream never splits one JSON over several `data:` lines).
public struct SSEUsageScanner: Sendable {
    public private(set) var usage: Usage?
    public private(set) var sawDone = false
    public let maxLineBytes: Int
    private var line: [UInt8] = []
    private var skipping = false

    public init(maxLineBytes: Int = 64 * 1024) { self.maxLineBytes = maxLineBytes }

    public mutating func feed(_ chunk: UnsafeRawBufferPointer) {
        guard let base = chunk.baseAddress else { return }
        let bytes = UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt8.self), count: chunk.count)
        var start = 0
        // Line ends found eight bytes at a time (this runs over every byte of every stream).
        while let i = firstLineEnd(in: UnsafeRawPointer(base), from: start, count: bytes.count) {
            if skipping {
                skipping = false
            } else if line.isEmpty {
                examine(UnsafeBufferPointer(rebasing: bytes[start..<i]))
            } else {
                appendToLine(UnsafeBufferPointer(rebasing: bytes[start..<i]))
                if !skipping {
                    let l = line
                    l.withUnsafeBufferPointer { examine($0) }
                }
                skipping = false
                line.removeAll(keepingCapacity: line.capacity <= 4096)
            }
            start = i + 1
        }
        if start < bytes.count, !skipping { appendToLine(UnsafeBufferPointer(rebasing: bytes[start...])) }
    }

    public mutating func feed(_ chunk: [UInt8]) {
        chunk.withUnsafeBytes { feed($0) }
    }

    /// End of stream: examines a last line that had no line end.
    public mutating func finish() {
        if !skipping, !line.isEmpty {
            let l = line
            l.withUnsafeBufferPointer { examine($0) }
        }
        line.removeAll()
        skipping = false
    }

    private mutating func appendToLine(_ b: UnsafeBufferPointer<UInt8>) {
        if line.count + b.count > maxLineBytes {
            line.removeAll()
            skipping = true
        } else {
            line.append(contentsOf: b)
        }
    }

    private mutating func examine(_ l: UnsafeBufferPointer<UInt8>) {
        // "data:" then one optional space.
        guard l.count >= 5, l.count <= maxLineBytes, l[0] == 0x64, l[1] == 0x61, l[2] == 0x74, l[3] == 0x61, l[4] == 0x3A else { return }
        var p = 5
        if p < l.count, l[p] == 0x20 { p += 1 }
        let payload = UnsafeBufferPointer(rebasing: l[p...])
        var lo = 0, hi = payload.count
        while lo < hi, isASCIISpace(payload[lo]) { lo += 1 }
        while hi > lo, isASCIISpace(payload[hi - 1]) { hi -= 1 }
        if hi - lo == 6, payload[lo..<hi].elementsEqual("[DONE]".utf8) { sawDone = true; return }
        // Anchored on the key's `g` (index 4), much rarer in JSON than its quote.
        guard Self.usageKey.withUnsafeBufferPointer({ contains($0, in: payload, anchor: 4) }) else { return }
        if let m = try? JSONParser.topLevelMembers(payload, wanted: usageMember), let u = m["usage"], let usage = Usage(u) {
            self.usage = usage
        }
    }

    private static let usageKey: [UInt8] = Array("\"usage\"".utf8)
}
