/// Small form parsers: multipart/form-data (RFC 7578) and application/x-www-form-urlencoded.
/// Just enough for the sandbox. Kept apart from the gateway's parser in `Translation` on purpose:
/// the stand-in must not share the code it is there to check.

struct FormPart {
    var name: String
    var filename: String?
    var contentType: String?
    var body: ArraySlice<UInt8>
}

enum Forms {
    /// The value of parameter `name` in a header value like `multipart/form-data; boundary=xyz`.
    static func headerParameter(_ value: String, _ name: String) -> String? {
        for piece in splitParams(value).dropFirst() {
            guard let eq = piece.firstIndex(of: "=") else { continue }
            let key = piece[..<eq].trimmingASCIISpacesLocal().lowercased()
            guard key == name.lowercased() else { continue }
            return unquote(piece[piece.index(after: eq)...].trimmingASCIISpacesLocal())
        }
        return nil
    }

    /// Splits on `;` outside quoted strings.
    static func splitParams(_ value: String) -> [String] {
        var out: [String] = []
        var cur = ""
        var inQuotes = false
        var escaped = false
        for ch in value {
            if escaped { cur.append(ch); escaped = false; continue }
            if inQuotes && ch == "\\" { cur.append(ch); escaped = true; continue }
            if ch == "\"" { inQuotes.toggle() }
            if ch == ";" && !inQuotes { out.append(cur); cur = ""; continue }
            cur.append(ch)
        }
        out.append(cur)
        return out
    }

    static func unquote(_ s: String) -> String {
        guard s.count >= 2, s.first == "\"", s.last == "\"" else { return s }
        var out = ""
        var escaped = false
        for ch in s.dropFirst().dropLast() {
            if escaped { out.append(ch); escaped = false; continue }
            if ch == "\\" { escaped = true; continue }
            out.append(ch)
        }
        return out
    }

    static func isMultipart(_ contentType: String?) -> Bool {
        guard let ct = contentType else { return false }
        return ct.trimmingASCIISpacesLocal().lowercased().hasPrefix("multipart/form-data")
    }

    static func isURLEncoded(_ contentType: String?) -> Bool {
        guard let ct = contentType else { return false }
        return ct.trimmingASCIISpacesLocal().lowercased().hasPrefix("application/x-www-form-urlencoded")
    }

    /// Parses a multipart/form-data body. nil when the framing is broken (no opening or closing
    /// delimiter, a part without its header section end).
    static func parseMultipart(_ body: [UInt8], boundary: String) -> [FormPart]? {
        guard !boundary.isEmpty else { return nil }
        let delim = Array(("--" + boundary).utf8)
        let crlfDelim = [13, 10] + delim
        // The first delimiter: at the very start, or after a preamble ending with CRLF.
        var pos: Int
        if starts(body, delim, at: 0) {
            pos = delim.count
        } else if let i = find(body, crlfDelim, from: 0) {
            pos = i + crlfDelim.count
        } else {
            return nil
        }
        var parts: [FormPart] = []
        while true {
            // After a delimiter: `--` closes, else transport padding then CRLF.
            if starts(body, [45, 45], at: pos) { return parts }
            while pos < body.count, body[pos] == 32 || body[pos] == 9 { pos += 1 }
            guard starts(body, [13, 10], at: pos) else { return nil }
            pos += 2
            let headEnd: Int
            if starts(body, [13, 10], at: pos) {
                headEnd = pos - 2  // no header fields at all
            } else if let e = find(body, [13, 10, 13, 10], from: pos) {
                headEnd = e
            } else {
                return nil
            }
            let headerText = String(decoding: body[pos..<max(pos, headEnd)], as: UTF8.self)
            let bodyStart = headEnd + 4
            guard let next = find(body, crlfDelim, from: bodyStart) else { return nil }
            var part = FormPart(name: "", filename: nil, contentType: nil, body: body[bodyStart..<next])
            for line in headerText.split(separator: "\r\n", omittingEmptySubsequences: true) {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let name = line[..<colon].trimmingASCIISpacesLocal().lowercased()
                let value = String(line[line.index(after: colon)...]).trimmingASCIISpacesLocal()
                if name == "content-disposition" {
                    part.name = headerParameter(value, "name") ?? ""
                    part.filename = headerParameter(value, "filename")
                } else if name == "content-type" {
                    part.contentType = value
                }
            }
            parts.append(part)
            pos = next + crlfDelim.count
        }
    }

    static func parseURLEncoded(_ body: [UInt8]) -> [(String, String)] {
        let text = String(decoding: body, as: UTF8.self)
        return parseQuery(Substring(text), plusIsSpace: true)
    }

    static func parseQuery(_ query: Substring, plusIsSpace: Bool = false) -> [(String, String)] {
        var out: [(String, String)] = []
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let k = percentDecode(kv[0], plusIsSpace: plusIsSpace)
            let v = kv.count > 1 ? percentDecode(kv[1], plusIsSpace: plusIsSpace) : ""
            out.append((k, v))
        }
        return out
    }

    static func percentDecode<S: StringProtocol>(_ s: S, plusIsSpace: Bool = false) -> String {
        var bytes: [UInt8] = []
        let u = Array(s.utf8)
        var i = 0
        while i < u.count {
            let c = u[i]
            if c == 37, i + 2 < u.count, let h = hexValue(u[i + 1]), let l = hexValue(u[i + 2]) {
                bytes.append(h << 4 | l)
                i += 3
                continue
            }
            bytes.append(plusIsSpace && c == 43 ? 32 : c)
            i += 1
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Percent-encodes everything but RFC 3986 unreserved characters.
    static func percentEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            switch b {
            case 48...57, 65...90, 97...122, 45, 46, 95, 126: out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b & 15)]))
            }
        }
        return out
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 65...70: return c - 55
        case 97...102: return c - 87
        default: return nil
        }
    }

    static func starts(_ hay: [UInt8], _ needle: [UInt8], at pos: Int) -> Bool {
        guard pos >= 0, pos + needle.count <= hay.count else { return false }
        for j in 0..<needle.count where hay[pos + j] != needle[j] { return false }
        return true
    }

    static func find(_ hay: [UInt8], _ needle: [UInt8], from: Int) -> Int? {
        guard !needle.isEmpty, hay.count >= needle.count else { return nil }
        let first = needle[0]
        let last = hay.count - needle.count
        var i = max(from, 0)
        return hay.withUnsafeBufferPointer { h -> Int? in
            while i <= last {
                if h[i] == first {
                    var j = 1
                    while j < needle.count && h[i + j] == needle[j] { j += 1 }
                    if j == needle.count { return i }
                }
                i += 1
            }
            return nil
        }
    }
}

extension StringProtocol {
    /// The form parsers' own trimmer and percent-decoder (above), like the parsers themselves
    /// apart from the gateway's on purpose: one shared bug would agree with itself in tests.
    func trimmingASCIISpacesLocal() -> String {
        let u = Array(self.utf8)
        var s = 0, e = u.count
        while s < e, u[s] == 0x20 || u[s] == 0x09 { s += 1 }
        while e > s, u[e - 1] == 0x20 || u[e - 1] == 0x09 { e -= 1 }
        return String(decoding: u[s..<e], as: UTF8.self)
    }
}
