import Glibc

/// Small, deterministic media the stand-in hands out: PNG images (images API), WAV/PCM/MP3 audio
/// (speech), base64 and float formatting (embeddings). Real files a browser or player accepts,
/// made without a codec library.
enum Media {
    // MARK: base64

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func base64(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 2 < bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            for shift in [18, 12, 6, 0] { out.append(alphabet[Int((n >> UInt32(shift)) & 63)]) }
            i += 3
        }
        let rest = bytes.count - i
        if rest > 0 {
            var n = UInt32(bytes[i]) << 16
            if rest == 2 { n |= UInt32(bytes[i + 1]) << 8 }
            out.append(alphabet[Int((n >> 18) & 63)])
            out.append(alphabet[Int((n >> 12) & 63)])
            out.append(rest == 2 ? alphabet[Int((n >> 6) & 63)] : UInt8(ascii: "="))
            out.append(UInt8(ascii: "="))
        }
        return String(decoding: out, as: UTF8.self)
    }

    // MARK: numbers

    /// A finite float as JSON number text (shortest round-trip form).
    static func jsonNumber(_ v: Float) -> String {
        v.isFinite ? "\(v)" : "0"
    }

    /// `count` floats in [-1, 1) derived from `seed`, scaled to unit length (as embeddings are).
    static func unitVector(seed: UInt64, count: Int) -> [Float] {
        var x = seed | 1
        var v = [Float](repeating: 0, count: count)
        var norm: Float = 0
        for i in 0..<count {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            let f = Float(Int64(bitPattern: x) >> 40) / Float(1 << 23)
            v[i] = f
            norm += f * f
        }
        let scale = norm > 0 ? 1 / norm.squareRoot() : 0
        return v.map { $0 * scale }
    }

    /// Little-endian float32 bytes (OpenAI's `encoding_format: base64` embeddings).
    static func float32LE(_ v: [Float]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(v.count * 4)
        for f in v {
            let b = f.bitPattern
            out += [UInt8(truncatingIfNeeded: b), UInt8(truncatingIfNeeded: b >> 8), UInt8(truncatingIfNeeded: b >> 16), UInt8(truncatingIfNeeded: b >> 24)]
        }
        return out
    }

    // MARK: PNG

    private static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    private static func be32(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)]
    }

    private static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let td = Array(type.utf8) + data
        return be32(UInt32(data.count)) + td + be32(crc32(td))
    }

    /// zlib stream of stored (uncompressed) deflate blocks.
    private static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        var i = 0
        repeat {
            let n = min(65_535, data.count - i)
            let final: UInt8 = i + n == data.count ? 1 : 0
            out += [final, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[i..<(i + n)]
            i += n
        } while i < data.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in data { a = (a + UInt32(byte)) % 65_521; b = (b + a) % 65_521 }
        return out + be32(b << 16 | a)
    }

    /// A `side`×`side` RGB PNG: a gradient whose colours come from `seed` (same prompt, same image).
    static func png(seed: UInt64, side: Int = 64) -> [UInt8] {
        let r0 = UInt8(truncatingIfNeeded: seed), g0 = UInt8(truncatingIfNeeded: seed >> 8), b0 = UInt8(truncatingIfNeeded: seed >> 16)
        var raw = [UInt8]()
        raw.reserveCapacity(side * (side * 3 + 1))
        for y in 0..<side {
            raw.append(0)  // filter: none
            for x in 0..<side {
                raw.append(r0 &+ UInt8(truncatingIfNeeded: x * 4))
                raw.append(g0 &+ UInt8(truncatingIfNeeded: y * 4))
                raw.append(b0 &+ UInt8(truncatingIfNeeded: (x + y) * 2))
            }
        }
        let ihdr = be32(UInt32(side)) + be32(UInt32(side)) + [8, 2, 0, 0, 0]
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr) + chunk("IDAT", zlibStored(raw)) + chunk("IEND", [])
    }

    // MARK: audio

    /// OpenAI's `pcm`: 24 kHz, 16-bit signed little-endian, mono. A quiet 440 Hz tone.
    static let pcmSampleRate = 24_000

    static func pcm(millis: Int) -> [UInt8] {
        let n = pcmSampleRate * millis / 1000
        var out = [UInt8]()
        out.reserveCapacity(n * 2)
        for i in 0..<n {
            let s = Int16(sin(Double(i) * 2 * Double.pi * 440 / Double(pcmSampleRate)) * 2_000)
            out.append(UInt8(truncatingIfNeeded: s))
            out.append(UInt8(truncatingIfNeeded: s >> 8))
        }
        return out
    }

    static func wav(millis: Int) -> [UInt8] {
        let data = pcm(millis: millis)
        func le32(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8((v >> 24) & 0xFF)] }
        func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
        let rate = pcmSampleRate
        var h = Array("RIFF".utf8) + le32(36 + data.count) + Array("WAVEfmt ".utf8)
        h += le32(16) + le16(1) + le16(1) + le32(rate) + le32(rate * 2) + le16(2) + le16(16)
        h += Array("data".utf8) + le32(data.count)
        return h + data
    }

    /// Silent MPEG-1 Layer III frames (32 kbit/s, 44.1 kHz, mono; 1152 samples ≈ 26 ms each): the
    /// header, then zero side information and data, which every decoder plays as silence.
    static func mp3(millis: Int) -> [UInt8] {
        let frameBytes = 104  // 144 * 32000 / 44100, without padding
        let frames = max(1, millis * 44_100 / 1152 / 1000)
        var frame = [UInt8](repeating: 0, count: frameBytes)
        frame[0] = 0xFF; frame[1] = 0xFB; frame[2] = 0x10; frame[3] = 0xC0
        var out = [UInt8]()
        out.reserveCapacity(frames * frameBytes)
        for _ in 0..<frames { out += frame }
        return out
    }
}
