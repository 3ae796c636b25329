/// Percent-decoding (RFC 3986 §2.1), the one used for query strings, form bodies, RFC 8187
/// `filename*` values and signed-URL parameters. Pure.
public enum PercentDecoding {
    /// `s` with every `%XX` replaced by its byte (and `+` by a space when `plusIsSpace`, as in
    /// `application/x-www-form-urlencoded`). Nil on a malformed escape or when the bytes are not
    /// UTF-8: a caller never works with a half-decoded value.
    public static func decode<S: StringProtocol>(_ s: S, plusIsSpace: Bool = false) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        var it = s.utf8.makeIterator()
        while let c = it.next() {
            switch c {
            case UInt8(ascii: "%"):
                guard let a = it.next(), let b = it.next(), let h = hexDigit(a), let l = hexDigit(b) else { return nil }
                out.append(h << 4 | l)
            case UInt8(ascii: "+") where plusIsSpace:
                out.append(0x20)
            default:
                out.append(c)
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    @inline(__always) static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
}
