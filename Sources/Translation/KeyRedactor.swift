/// Replaces every occurrence of a secret (the shared upstream key) in a byte stream, including
/// occurrences split across chunks, so the key can never reach a caller in a response body.
///
/// Semantics: exactly those of a one-shot, leftmost, non-overlapping "replace all" over the
/// concatenation of every chunk, whatever the chunking.
///
/// Latency: of each chunk, only the longest suffix that is a proper prefix of the secret is held
/// back (at most `secret.count - 1` bytes); everything before it is emitted at once. So, provided
/// the secret contains no LF (API keys never do), a chunk ending in "\n\n" (a complete SSE event)
/// is always emitted entirely: no suffix ending in LF can be a prefix of the secret.
///
/// Cost: when a chunk needs no change and nothing is held, `emit` gets the input range itself
/// (no copy, no allocation). The search jumps between occurrences of the secret's first byte
/// eight bytes at a time (SWAR), like memchr, and compares only at candidates.
///
/// End of stream (`finish`): the held bytes are a proper prefix of the secret that the stream
/// ended inside. They are replaced by `replacement` when they are `minimumRedactedPrefix` bytes
/// or longer (default 8), and released otherwise. So a stream cut inside the key gives away at
/// most 7 of its bytes (for `sk-…` keys, 3 public ones and 4 of ~48 random ones), while a body
/// that merely ends like the key begins (`…s`, `…sk-`: 1 in 256 binary files ends in `s`, and
/// log lines end in `s` all the time) is not mangled. This is the one place where the output
/// differs from a plain "replace all".
public struct KeyRedactor: Sendable {
    public let secret: [UInt8]
    public let replacement: [UInt8]
    /// Held-back bytes at least this long are redacted at `finish`, never released.
    public let minimumRedactedPrefix: Int
    /// Bytes held back from earlier chunks: always a proper prefix of `secret` (or empty).
    public private(set) var held: [UInt8] = []

    /// Shared by every redactor (one per open stream): no allocation per stream.
    public static let defaultReplacement: [UInt8] = Array("[redacted]".utf8)
    /// See the type's comment: longer cut prefixes are redacted, shorter ones released.
    public static let defaultMinimumRedactedPrefix = 8

    public init(secret: [UInt8], replacement: [UInt8] = KeyRedactor.defaultReplacement,
                minimumRedactedPrefix: Int = KeyRedactor.defaultMinimumRedactedPrefix) {
        self.secret = secret
        self.replacement = replacement
        self.minimumRedactedPrefix = max(1, minimumRedactedPrefix)
    }

    public init(secret: String, replacement: String = "[redacted]") {
        self.init(secret: Array(secret.utf8), replacement: Array(replacement.utf8))
    }

    /// Feeds one chunk; `emit` is called zero or more times with the bytes that are final.
    /// The pointers passed to `emit` are valid only during that call.
    public mutating func process(_ input: UnsafeRawBufferPointer, emit: (UnsafeRawBufferPointer) -> Void) {
        let n = secret.count
        guard n > 0 else {
            if !input.isEmpty { emit(input) }
            return
        }
        var start = 0
        if !held.isEmpty {
            let h = held
            held = []
            let total = h.count + input.count
            var resolved = false
            for p in 0..<h.count {
                var k = 0
                var mismatch = false
                while k < n, p + k < total {
                    let idx = p + k
                    let b = idx < h.count ? h[idx] : input[idx - h.count]
                    if b != secret[k] { mismatch = true; break }
                    k += 1
                }
                if mismatch { continue }
                if p > 0 { h.withUnsafeBytes { emit(UnsafeRawBufferPointer(rebasing: $0[0..<p])) } }
                if k == n {
                    // Full match starting in the held bytes and ending inside this chunk.
                    replacement.withUnsafeBytes { if !$0.isEmpty { emit($0) } }
                    start = p + n - h.count
                    resolved = true
                    break
                } else {
                    // Still only a prefix: hold it (plus this whole, short, chunk).
                    held = Array(h[p...]) + Array(input)
                    return
                }
            }
            if !resolved {
                h.withUnsafeBytes { emit($0) }
            }
        }
        scan(input, from: start, emit: emit)
    }

    private mutating func scan(_ input: UnsafeRawBufferPointer, from start: Int,
                               emit: (UnsafeRawBufferPointer) -> Void) {
        let n = secret.count
        let count = input.count
        guard let base = input.baseAddress, start < count else { return }
        let first = secret[0]
        var segStart = start
        var i = start
        secret.withUnsafeBytes { sec in
            while i < count {
                guard let c = firstIndex(of: first, in: base, from: i, count: count) else { break }
                let m = min(n, count - c)
                var equal = true
                var k = 1
                while k < m {
                    if base.load(fromByteOffset: c + k, as: UInt8.self) != sec[k] { equal = false; break }
                    k += 1
                }
                if equal {
                    if c > segStart { emit(UnsafeRawBufferPointer(rebasing: input[segStart..<c])) }
                    if m == n {
                        replacement.withUnsafeBytes { if !$0.isEmpty { emit($0) } }
                        i = c + n
                        segStart = i
                        continue
                    }
                    held = Array(UnsafeRawBufferPointer(rebasing: input[c..<count]))
                    segStart = count
                    return
                }
                i = c + 1
            }
        }
        if segStart < count {
            emit(segStart == 0 ? input : UnsafeRawBufferPointer(rebasing: input[segStart..<count]))
        }
    }

    /// End of stream: the held-back bytes (a proper prefix of the secret) are redacted when at
    /// least `minimumRedactedPrefix` long, released otherwise (see the type's comment).
    public mutating func finish(emit: (UnsafeRawBufferPointer) -> Void) {
        guard !held.isEmpty else { return }
        let h = held
        held = []
        if h.count >= minimumRedactedPrefix {
            replacement.withUnsafeBytes { if !$0.isEmpty { emit($0) } }
        } else {
            h.withUnsafeBytes { emit($0) }
        }
    }

    /// Convenience for `[UInt8]` chunks: returns the bytes that are final.
    public mutating func process(_ chunk: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(chunk.count)
        chunk.withUnsafeBytes { process($0) { out.append(contentsOf: $0) } }
        return out
    }

    public mutating func finish() -> [UInt8] {
        var out: [UInt8] = []
        finish { out.append(contentsOf: $0) }
        return out
    }

    /// One-shot redaction of a complete buffer.
    public static func redact(_ bytes: [UInt8], secret: [UInt8],
                              replacement: [UInt8] = KeyRedactor.defaultReplacement) -> [UInt8] {
        // The usual case — no key in the body, and no long key prefix at its end — returns the
        // same array: no copy, no allocation.
        if secret.isEmpty || (!contains(secret, in: bytes)
            && longestSuffixPrefix(of: bytes, secret: secret) < defaultMinimumRedactedPrefix) {
            return bytes
        }
        var r = KeyRedactor(secret: secret, replacement: replacement)
        var out = r.process(bytes)
        out += r.finish()
        return out
    }

    /// The length of the longest suffix of `bytes` that is a proper prefix of `secret` (what a
    /// streaming redactor would hold at the end when `bytes` holds no occurrence of `secret`).
    static func longestSuffixPrefix(of bytes: [UInt8], secret: [UInt8]) -> Int {
        guard secret.count > 1, !bytes.isEmpty else { return 0 }
        var p = max(0, bytes.count - (secret.count - 1))
        while p < bytes.count {
            if bytes[p] == secret[0] {
                var k = 1
                while p + k < bytes.count, bytes[p + k] == secret[k] { k += 1 }
                if p + k == bytes.count { return k }
            }
            p += 1
        }
        return 0
    }

    /// Whether `secret` (non-empty) occurs in `bytes`.
    public static func contains(_ secret: [UInt8], in bytes: [UInt8]) -> Bool {
        secret.withUnsafeBufferPointer { k in bytes.withUnsafeBufferPointer { Translation.contains(k, in: $0) } }
    }

    /// One-shot redaction of a string (for log lines and error messages).
    public static func redact(_ text: String, secret: String, replacement: String = "[redacted]") -> String {
        guard !secret.isEmpty else { return text }
        return String(decoding: redact(Array(text.utf8), secret: Array(secret.utf8),
                                       replacement: Array(replacement.utf8)), as: UTF8.self)
    }
}
