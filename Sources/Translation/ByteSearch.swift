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

/// First offset >= `from` holding a CR or an LF (both patterns' flags OR-ed: the lowest flagged
/// byte is still a true hit of one of them).
@inline(__always)
func firstLineEnd(in base: UnsafeRawPointer, from: Int, count: Int) -> Int? {
    var i = from
    let ones: UInt64 = 0x0101_0101_0101_0101
    let highs: UInt64 = 0x8080_8080_8080_8080
    let lf: UInt64 = 0x0A * ones, cr: UInt64 = 0x0D * ones
    while i + 8 <= count {
        let w = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
        let a = w ^ lf, b = w ^ cr
        let t = ((a &- ones) & ~a & highs) | ((b &- ones) & ~b & highs)
        if t != 0 { return i + (t.trailingZeroBitCount >> 3) }
        i += 8
    }
    while i < count {
        let c = base.load(fromByteOffset: i, as: UInt8.self)
        if c == 0x0A || c == 0x0D { return i }
        i += 1
    }
    return nil
}
