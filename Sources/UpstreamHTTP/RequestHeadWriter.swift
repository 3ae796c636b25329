import HTTPWire
import Upstream

/// Serialises an HTTP/1.1 request head into a caller's buffer (the connection's, reused: no
/// allocation once it has grown). Pure.
///
/// What is sent, in order: `METHOD target HTTP/1.1`, `Host` (unless the caller gave one), the
/// request's own fields, the shared block's fields (serialised once per block, see
/// `sharedBlockBytes`), `Content-Length` when there is a body or the method is POST, PUT or PATCH.
/// Nothing else: no `Accept`, no `Expect` (the body follows the head at once), no `User-Agent`.
///
/// Sanitising (a caller's value can never start a new line): CR, LF and NUL in values become SP
/// and values are trimmed; a field whose name is not a token after trimming is dropped.
/// Fields the client owns are dropped from the caller's list: `Content-Length` and
/// `Transfer-Encoding` (framing is the client's: the body is sent with a length), and the
/// connection-specific `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Upgrade`, `Expect`.
/// The method is sent in upper case and must be a token; target bytes ≥ 0x80 are percent-encoded.
public enum RequestHeadWriter {
    /// Appends the head. False when the method is not a token (nothing useful was written).
    @discardableResult
    /// `target`: the range of `url`'s UTF-8 that is the request target (`UpstreamURL`);
    /// `authority`: the `Host` value.
    public static func write(method: String, url: String, target: Range<Int>, authority: String,
                             headers: HTTPHeaders,
                             shared: [UInt8]?, bodyCount: Int, into out: inout [UInt8]) -> Bool {
        out.removeAll(keepingCapacity: true)
        var ok = true
        var m = method
        m.withUTF8 { mb in
            if mb.isEmpty { ok = false; return }
            for c in mb {
                if !isToken(c) { ok = false; return }
                out.append(c >= 0x61 && c <= 0x7A ? c - 0x20 : c)
            }
        }
        guard ok else { return false }
        out.append(0x20)
        var u = url
        u.withUTF8 { ub in
            if target.isEmpty || ub[target.lowerBound] != 0x2F { out.append(0x2F) }   // "" or "?q" → "/…"
            for i in target {
                let c = ub[i]
                if c >= 0x80 {
                    out.append(0x25); out.append(hex(c >> 4)); out.append(hex(c & 15))
                } else {
                    out.append(c)
                }
            }
        }
        append(&out, " HTTP/1.1\r\n")
        var callerHost = false
        for h in headers where asciiCaseInsensitiveEquals(h.name.trimmingASCIISpacesIfNeeded, "host") { callerHost = true }
        if !callerHost {
            append(&out, "Host: ")
            var a = authority
            a.withUTF8 { out.append(contentsOf: $0) }
            append(&out, "\r\n")
        }
        for f in headers { appendField(f.name, f.value, into: &out) }
        if let shared { out.append(contentsOf: shared) }
        let wantsLength = bodyCount > 0 || methodIs(out, "POST ") || methodIs(out, "PUT ") || methodIs(out, "PATCH ")
        if wantsLength {
            append(&out, "Content-Length: ")
            appendDecimal(bodyCount, into: &out)
            append(&out, "\r\n")
        }
        append(&out, "\r\n")
        return true
    }

    /// The wire form of a shared block's fields (`Name: value\r\n` each, sanitised and filtered
    /// like a request's own fields).
    public static func sharedBlockBytes(_ fields: HTTPHeaders) -> [UInt8] {
        var out: [UInt8] = []
        for f in fields { appendField(f.name, f.value, into: &out) }
        return out
    }

    /// `name: value\r\n`, sanitised, unless the field is dropped.
    static func appendField(_ name: String, _ value: String, into out: inout [UInt8]) {
        var n = name, v = value
        n.withUTF8 { nb in
            var s = 0, e = nb.count
            while s < e, nb[s] == 0x20 || nb[s] == 0x09 { s += 1 }
            while e > s, nb[e - 1] == 0x20 || nb[e - 1] == 0x09 { e -= 1 }
            guard e > s else { return }
            for i in s..<e where !isToken(nb[i]) { return }
            let nameBytes = UnsafeBufferPointer(rebasing: nb[s..<e])
            if isOwnedByClient(nameBytes) { return }
            out.append(contentsOf: nameBytes)
            out.append(0x3A); out.append(0x20)
            v.withUTF8 { vb in
                var vs = 0, ve = vb.count
                @inline(__always) func blank(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0D || c == 0x0A || c == 0 }
                while vs < ve, blank(vb[vs]) { vs += 1 }
                while ve > vs, blank(vb[ve - 1]) { ve -= 1 }
                for i in vs..<ve {
                    let c = vb[i]
                    out.append(c == 0x0D || c == 0x0A || c == 0 ? 0x20 : c)
                }
            }
            out.append(0x0D); out.append(0x0A)
        }
    }

    private static let clientOwned: [StaticString] = [
        "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "upgrade", "expect",
    ]

    static func isOwnedByClient(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        for s in clientOwned where s.utf8CodeUnitCount == name.count {
            if asciiCaseInsensitiveEqualBytes(name, UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount)) { return true }
        }
        return false
    }

    /// tchar (RFC 9110 §5.6.2).
    @inline(__always) static func isToken(_ c: UInt8) -> Bool {
        if c >= 0x61 && c <= 0x7A || c >= 0x41 && c <= 0x5A || c >= 0x30 && c <= 0x39 { return true }
        switch c {
        case 0x21, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E, 0x5F, 0x60, 0x7C, 0x7E: return true
        default: return false
        }
    }

    /// Whether the head in `out` starts with `prefix` (the method and its SP).
    @inline(__always) private static func methodIs(_ out: [UInt8], _ prefix: StaticString) -> Bool {
        let n = prefix.utf8CodeUnitCount
        guard out.count >= n else { return false }
        for i in 0..<n where out[i] != prefix.utf8Start[i] { return false }
        return true
    }

    @inline(__always) private static func hex(_ v: UInt8) -> UInt8 { v < 10 ? 0x30 + v : 0x41 + v - 10 }

    @inline(__always) static func append(_ out: inout [UInt8], _ s: StaticString) {
        out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    static func appendDecimal(_ v: Int, into out: inout [UInt8]) {
        if v == 0 { out.append(0x30); return }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = v, count = 0
        withUnsafeMutableBytes(of: &digits) { d in
            while n > 0 { d[count] = UInt8(0x30 + n % 10); n /= 10; count += 1 }
            while count > 0 { count -= 1; out.append(d[count]) }
        }
    }
}

extension String {
    /// Self when it has no leading/trailing SP/HTAB (the usual case: no copy), else trimmed.
    var trimmingASCIISpacesIfNeeded: String {
        guard let f = utf8.first, let l = utf8.last else { return self }
        if f == 0x20 || f == 0x09 || l == 0x20 || l == 0x09 { return trimmingASCIISpaces() }
        return self
    }
}
