// Byte searches eight bytes per step, for scanners that run over every byte of every stream.

/// First offset >= `from` holding `byte`, eight bytes per step (the "has zero byte" trick on
/// `word ^ pattern`); the lowest flagged byte is always a true hit.
@inline(__always)
func firstIndex(of byte: UInt8, in base: UnsafeRawPointer, from: Int, count: Int) -> Int? {
    var i = from
    let ones: UInt64 = 0x0101_0101_0101_0101
    let highs: UInt64 = 0x8080_8080_8080_8080
    let pattern = UInt64(byte) &* ones
    while i + 8 <= count {
        let w = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt64.self)) ^ pattern
        let t = (w &- ones) & ~w & highs
        if t != 0 { return i + (t.trailingZeroBitCount >> 3) }
        i += 8
    }
    while i < count {
        if base.load(fromByteOffset: i, as: UInt8.self) == byte { return i }
        i += 1
    }
    return nil
}

/// Whether `needle` (non-empty) occurs in `hay`. Candidates are found eight bytes at a time by
/// the needle's byte at `anchor` (pick a byte that is rare in the haystack), then compared whole.
func contains(_ needle: UnsafeBufferPointer<UInt8>, in hay: UnsafeBufferPointer<UInt8>, anchor: Int = 0) -> Bool {
    guard needle.count > 0, anchor < needle.count, hay.count >= needle.count, let base = hay.baseAddress else { return false }
    // The anchor's last possible offset keeps the whole needle inside the haystack.
    let end = hay.count - (needle.count - 1 - anchor)
    var from = anchor
    while let c = firstIndex(of: needle[anchor], in: UnsafeRawPointer(base), from: from, count: end) {
        let s = c - anchor
        var k = 0
        while k < needle.count && hay[s + k] == needle[k] { k += 1 }
        if k == needle.count { return true }
        from = c + 1
    }
    return false
}

/// The SSE event filter's one pass: the first offset >= `from` holding a byte below 0x0E (CR,
/// LF and a few other controls, which the caller skips: they are rare in SSE and JSON), a
/// backslash (when `backslash`), a `g` (the anchor of `"usage"`) or `key` (the secret's first
/// byte). "Below n" is one pattern, `(w - n…) & ~w`, where CR and LF alone would be two; the
/// flags are OR-ed before the high bits are kept. The lowest flagged byte is always a true hit
/// (borrows only run upwards).
@inline(__always)
func firstSSEStop(in base: UnsafeRawPointer, from: Int, count: Int, backslash: Bool, key: UInt8) -> Int? {
    var i = from
    let ones: UInt64 = 0x0101_0101_0101_0101
    let highs: UInt64 = 0x8080_8080_8080_8080
    let below: UInt64 = 0x0E &* ones
    let bs: UInt64 = (backslash ? 0x5C : 0x0A) &* ones
    let g: UInt64 = 0x67 &* ones
    let k: UInt64 = UInt64(key) &* ones
    while i + 8 <= count {
        let w = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
        let a = w ^ bs, b = w ^ g, c = w ^ k
        let t = (((w &- below) & ~w) | ((a &- ones) & ~a) | ((b &- ones) & ~b) | ((c &- ones) & ~c)) & highs
        if t != 0 { return i + (t.trailingZeroBitCount >> 3) }
        i += 8
    }
    while i < count {
        let c = base.load(fromByteOffset: i, as: UInt8.self)
        if c < 0x0E || (backslash && c == 0x5C) || c == 0x67 || c == key { return i }
        i += 1
    }
    return nil
}
