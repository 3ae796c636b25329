import Glibc

/// Wall-clock helpers (the sandbox needs Unix times, a UTC+8 local time and ISO 8601 instants).
enum Clock {
    static func unixMicros() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec / 1000)
    }

    static func unixSeconds() -> Int64 { unixMicros() / 1_000_000 }

    private static func fields(_ t: Int64) -> tm {
        var tt = time_t(t)
        var out = tm()
        gmtime_r(&tt, &out)
        return out
    }

    private static func pad(_ v: Int32, _ width: Int = 2) -> String {
        let s = String(v)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }

    /// `YYYY-MM-DD HH:MM:SS` in Asia/Shanghai (UTC+8, no daylight saving), as new-api prints it.
    static func shanghaiLocal(_ unix: Int64) -> String {
        let f = fields(unix + 8 * 3600)
        return "\(pad(f.tm_year + 1900, 4))-\(pad(f.tm_mon + 1))-\(pad(f.tm_mday)) \(pad(f.tm_hour)):\(pad(f.tm_min)):\(pad(f.tm_sec))"
    }

    /// `YYYY-MM-DDTHH:MM:SSZ`.
    static func iso8601(_ unix: Int64) -> String {
        let f = fields(unix)
        return "\(pad(f.tm_year + 1900, 4))-\(pad(f.tm_mon + 1))-\(pad(f.tm_mday))T\(pad(f.tm_hour)):\(pad(f.tm_min)):\(pad(f.tm_sec))Z"
    }

    /// Parses `YYYY-MM-DDTHH:MM:SSZ` (the only form the sandbox issues).
    static func parseISO8601(_ s: String) -> Int64? {
        let u = Array(s.utf8)
        guard u.count == 20, u[4] == 45, u[7] == 45, u[10] == 84, u[13] == 58, u[16] == 58, u[19] == 90 else { return nil }
        func num(_ a: Int, _ n: Int) -> Int32? {
            var v: Int32 = 0
            for i in a..<(a + n) {
                guard u[i] >= 48 && u[i] <= 57 else { return nil }
                v = v * 10 + Int32(u[i] - 48)
            }
            return v
        }
        guard let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2), let h = num(11, 2), let mi = num(14, 2), let se = num(17, 2),
              (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, se < 61 else { return nil }
        var f = tm()
        f.tm_year = y - 1900; f.tm_mon = mo - 1; f.tm_mday = d
        f.tm_hour = h; f.tm_min = mi; f.tm_sec = se
        return Int64(timegm(&f))
    }
}

/// A keyed 128-bit FNV-1a digest, hex. Not cryptographic: it only has to make URLs the sandbox
/// did not sign fail, deterministically.
enum Digest {
    static func fnv64(_ bytes: some Sequence<UInt8>, seed: UInt64) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        // Final avalanche (splitmix64).
        h ^= h >> 30; h = h &* 0xbf58_476d_1ce4_e5b9
        h ^= h >> 27; h = h &* 0x94d0_49bb_1331_11eb
        h ^= h >> 31
        return h
    }

    static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    static func keyed(_ message: String, key: String) -> String {
        let m = Array(key.utf8) + [0] + Array(message.utf8)
        return hex(fnv64(m, seed: 0x5bd1_e995)) + hex(fnv64(m, seed: 0x9e37_79b9_7f4a_7c15))
    }
}

/// The bytes of the generated video files: an MP4 `ftyp` box, an `mdat` box header, then a
/// repeating pattern derived from the video id and the variant (clean and watermarked differ).
public enum SandboxVideoFile {
    static let patternLength = 4093  // prime, so the pattern never lines up with chunk sizes

    static func seed(videoID: String, variant: String) -> UInt64 {
        Digest.fnv64(Array("\(videoID)/\(variant)".utf8), seed: 7)
    }

    static func pattern(seed: UInt64) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: patternLength)
        var x = seed | 1
        for i in 0..<patternLength {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            out[i] = UInt8(truncatingIfNeeded: x >> 24)
        }
        return out
    }

    static func header(total: Int) -> [UInt8] {
        var h: [UInt8] = [0, 0, 0, 32]
        h += Array("ftypisom".utf8) + [0, 0, 2, 0] + Array("isomiso2avc1mp41".utf8)
        let mdat = UInt32(truncatingIfNeeded: max(total - 32, 0))
        h += [UInt8(mdat >> 24), UInt8(truncatingIfNeeded: mdat >> 16), UInt8(truncatingIfNeeded: mdat >> 8), UInt8(truncatingIfNeeded: mdat)]
        h += Array("mdat".utf8)
        return h  // 40 bytes
    }

    /// Writes bytes `[offset, offset + out.count)` of the file into `out`.
    static func fill(_ out: inout [UInt8], offset: Int, total: Int, header: [UInt8], pattern: [UInt8]) {
        var i = 0
        var pos = offset
        while i < out.count && pos < header.count && pos < total {
            out[i] = header[pos]; i += 1; pos += 1
        }
        var p = (pos - header.count) % patternLength
        out.withUnsafeMutableBufferPointer { o in
            pattern.withUnsafeBufferPointer { pat in
                while i < o.count {
                    o[i] = pat[p]
                    i += 1
                    p += 1
                    if p == patternLength { p = 0 }
                }
            }
        }
    }

    /// The bytes of file `variant` (`clean` or `wm`) of video `videoID`, `range` of a file of
    /// `total` bytes. Tests compare downloads with this.
    public static func bytes(videoID: String, variant: String, total: Int, range: Range<Int>? = nil) -> [UInt8] {
        let r = range ?? 0..<total
        var out = [UInt8](repeating: 0, count: r.count)
        fill(&out, offset: r.lowerBound, total: total, header: header(total: total), pattern: pattern(seed: seed(videoID: videoID, variant: variant)))
        return out
    }
}
