/// Bounds for `Multipart.parse`: a form with thousands of parts or huge header blocks is an
/// attack, not an upload (the body size itself is capped by the HTTP layer).
public struct MultipartLimits: Sendable, Equatable {
    public var maxParts: Int
    /// Bytes in one part's header block, including line ends.
    public var maxHeaderBytesPerPart: Int
    public var maxHeadersPerPart: Int

    public init(maxParts: Int = 32, maxHeaderBytesPerPart: Int = 8 * 1024, maxHeadersPerPart: Int = 16) {
        self.maxParts = maxParts
        self.maxHeaderBytesPerPart = maxHeaderBytesPerPart
        self.maxHeadersPerPart = maxHeadersPerPart
    }

    public static let `default` = MultipartLimits()
}

/// One part of a multipart/form-data body. `data` is a zero-copy view into the parsed body
/// (indices are the body's: use `range`, or `Array(part.data)` for a 0-based copy).
public struct MultipartPart: Sendable, Equatable {
    public var name: String
    public var filename: String?
    public var contentType: String?
    public var range: Range<Int>
    public var data: ArraySlice<UInt8>

    public init(name: String, filename: String?, contentType: String?, range: Range<Int>, data: ArraySlice<UInt8>) {
        self.name = name
        self.filename = filename
        self.contentType = contentType
        self.range = range
        self.data = data
    }

    /// The data as UTF-8 text (invalid sequences become U+FFFD).
    public var text: String { String(decoding: data, as: UTF8.self) }
}

public enum Multipart {
    /// The `boundary` parameter of a `multipart/…` Content-Type, quoted or not; nil when the
    /// type is not multipart or the boundary is missing, empty, over 200 bytes or contains
    /// control characters.
    public static func boundary(fromContentType contentType: String) -> String? {
        let params = splitParameters(Array(contentType.utf8))
        guard let type = params.first?.lowercased(), type.hasPrefix("multipart/") else { return nil }
        for p in params.dropFirst() {
            guard let (k, v) = parseParameter(p), k == "boundary" else { continue }
            return isAcceptableBoundary(v) ? v : nil
        }
        return nil
    }

    static func isAcceptableBoundary(_ b: String) -> Bool {
        let u = b.utf8
        return !u.isEmpty && u.count <= 200 && !u.contains { $0 < 0x20 || $0 == 0x7F }
    }

    /// Parses a multipart/form-data body (RFC 7578 / RFC 2046 §5.1).
    ///
    /// Line ends: CRLF as the RFC says; a body whose first delimiter line ends in a bare LF is
    /// read in LF mode throughout (some hand-written clients). A delimiter is only a delimiter
    /// when followed by `--`, optional spaces and a line end: data that merely contains
    /// `--boundary` followed by other bytes stays data. Preamble and epilogue are ignored.
    /// Parts without a `Content-Disposition: form-data; name=…` are rejected.
    public static func parse(_ body: [UInt8], boundary: String,
                             limits: MultipartLimits = .default) throws(TranslationError) -> [MultipartPart] {
        guard isAcceptableBoundary(boundary) else { throw malformed("invalid boundary") }
        let dash: [UInt8] = Array("--".utf8) + Array(boundary.utf8)

        // First delimiter: at the very start, or after a preamble line.
        var pos: Int
        if hasPrefix(body, at: 0, dash) {
            pos = dash.count
        } else if let f = find(body, [0x0A] + dash, from: 0) {
            pos = f + 1 + dash.count
        } else {
            throw malformed("no opening boundary")
        }
        if hasPrefix(body, at: pos, [0x2D, 0x2D]) { return [] }
        pos = skipPadding(body, pos)
        let crlf: Bool
        if hasPrefix(body, at: pos, [0x0D, 0x0A]) { crlf = true; pos += 2 }
        else if hasPrefix(body, at: pos, [0x0A]) { crlf = false; pos += 1 }
        else { throw malformed("boundary line not terminated") }
        let delimiter: [UInt8] = (crlf ? [0x0D, 0x0A] : [0x0A]) + dash

        var parts: [MultipartPart] = []
        while true {
            guard parts.count < limits.maxParts else {
                throw TranslationError(.limitExceeded, "more than \(limits.maxParts) parts")
            }
            // Header block.
            var name: String?
            var filename: String?
            var contentType: String?
            var headerCount = 0
            let headerStart = pos
            while true {
                guard let lf = find(body, [0x0A], from: pos) else { throw malformed("unterminated part headers") }
                if lf + 1 - headerStart > limits.maxHeaderBytesPerPart {
                    throw TranslationError(.limitExceeded, "part headers over \(limits.maxHeaderBytesPerPart) bytes")
                }
                var end = lf
                if end > pos, body[end - 1] == 0x0D { end -= 1 }
                let line = body[pos..<end]
                pos = lf + 1
                if line.isEmpty { break }
                headerCount += 1
                guard headerCount <= limits.maxHeadersPerPart else {
                    throw TranslationError(.limitExceeded, "more than \(limits.maxHeadersPerPart) headers in a part")
                }
                guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
                    throw malformed("part header without a colon")
                }
                let hname = String(decoding: body[line.startIndex..<colon], as: UTF8.self).lowercased()
                let value = Array(body[(colon + 1)..<line.endIndex])
                switch hname {
                case "content-disposition":
                    let params = splitParameters(value)
                    guard params.first?.lowercased() == "form-data" else {
                        throw malformed("part disposition is not form-data")
                    }
                    var plainFilename: String?
                    var extFilename: String?
                    for p in params.dropFirst() {
                        guard let (k, v) = parseParameter(p) else { continue }
                        switch k {
                        case "name": name = v
                        case "filename": plainFilename = v
                        case "filename*": extFilename = decodeExtValue(v)
                        default: break
                        }
                    }
                    filename = extFilename ?? plainFilename
                case "content-type":
                    contentType = String(decoding: value, as: UTF8.self).trimmingASCIIWhitespace()
                default:
                    break
                }
            }
            guard let partName = name else { throw malformed("part without a form-data name") }

            // Data, up to the next real delimiter.
            let dataStart = pos
            var search = pos
            while true {
                guard let d = find(body, delimiter, from: search) else { throw malformed("missing closing boundary") }
                var after = d + delimiter.count
                if hasPrefix(body, at: after, [0x2D, 0x2D]) {
                    parts.append(MultipartPart(name: partName, filename: filename, contentType: contentType,
                                               range: dataStart..<d, data: body[dataStart..<d]))
                    return parts
                }
                after = skipPadding(body, after)
                if crlf, hasPrefix(body, at: after, [0x0D, 0x0A]) { pos = after + 2 }
                else if !crlf, hasPrefix(body, at: after, [0x0A]) { pos = after + 1 }
                else { search = d + 1; continue }  // "--boundaryXYZ" inside the data: not a delimiter
                parts.append(MultipartPart(name: partName, filename: filename, contentType: contentType,
                                           range: dataStart..<d, data: body[dataStart..<d]))
                break
            }
        }
    }

    // MARK: - Helpers

    static func malformed(_ m: String) -> TranslationError { TranslationError(.malformedMultipart, m) }

    static func hasPrefix(_ b: [UInt8], at i: Int, _ p: [UInt8]) -> Bool {
        guard i >= 0, b.count - i >= p.count else { return false }
        for k in 0..<p.count where b[i + k] != p[k] { return false }
        return true
    }

    static func skipPadding(_ b: [UInt8], _ i: Int) -> Int {
        var j = i
        while j < b.count, b[j] == 0x20 || b[j] == 0x09 { j += 1 }
        return j
    }

    /// First offset >= `from` where `needle` (non-empty) starts.
    static func find(_ hay: [UInt8], _ needle: [UInt8], from: Int) -> Int? {
        guard let first = needle.first, from >= 0 else { return nil }
        return hay.withUnsafeBytes { (h: UnsafeRawBufferPointer) -> Int? in
            guard let base = h.baseAddress else { return nil }
            var i = from
            while i <= h.count - needle.count {
                guard let c = firstIndex(of: first, in: base, from: i, count: h.count) else { return nil }
                guard c <= h.count - needle.count else { return nil }
                var ok = true
                for k in 1..<needle.count where h[c + k] != needle[k] { ok = false; break }
                if ok { return c }
                i = c + 1
            }
            return nil
        }
    }

    /// Splits `type; a=b; c="d;e"` at semicolons outside quotes, trimming each piece.
    static func splitParameters(_ v: [UInt8]) -> [String] {
        var out: [String] = []
        var cur: [UInt8] = []
        var inQuotes = false
        var escaped = false
        for b in v {
            if inQuotes {
                cur.append(b)
                if escaped { escaped = false }
                else if b == UInt8(ascii: "\\") { escaped = true }
                else if b == UInt8(ascii: "\"") { inQuotes = false }
                continue
            }
            if b == UInt8(ascii: ";") {
                out.append(String(decoding: cur, as: UTF8.self).trimmingASCIIWhitespace())
                cur.removeAll(keepingCapacity: true)
                continue
            }
            if b == UInt8(ascii: "\"") { inQuotes = true }
            cur.append(b)
        }
        out.append(String(decoding: cur, as: UTF8.self).trimmingASCIIWhitespace())
        return out
    }

    /// `key=value` or `key="quoted \" value"` → (lowercased key, unquoted value).
    static func parseParameter(_ p: String) -> (String, String)? {
        let u = Array(p.utf8)
        guard let eq = u.firstIndex(of: UInt8(ascii: "=")) else { return nil }
        let key = String(decoding: u[..<eq], as: UTF8.self).trimmingASCIIWhitespace().lowercased()
        let raw = Array(String(decoding: u[(eq + 1)...], as: UTF8.self).trimmingASCIIWhitespace().utf8)
        guard raw.first == UInt8(ascii: "\"") else { return (key, String(decoding: raw, as: UTF8.self)) }
        var out: [UInt8] = []
        var i = 1
        while i < raw.count {
            let b = raw[i]
            if b == UInt8(ascii: "\\"), i + 1 < raw.count { out.append(raw[i + 1]); i += 2; continue }
            if b == UInt8(ascii: "\"") { break }
            out.append(b)
            i += 1
        }
        return (key, String(decoding: out, as: UTF8.self))
    }

    /// RFC 5987 `UTF-8''%E4%B8%AD.jpg` → "中.jpg"; nil if not UTF-8 or badly encoded.
    static func decodeExtValue(_ v: String) -> String? {
        let parts = v.split(separator: "'", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].lowercased() == "utf-8" else { return nil }
        return PercentDecoding.decode(parts[2])
    }
}

/// Builds a multipart/form-data body, e.g. the one Veil sends upstream to create a video.
///
/// The boundary is "VeilFormBoundary" + 24 random alphanumerics (~143 bits), so it can't be
/// predicted and planted in an uploaded file; pass a seed only in tests. Names and filenames are
/// quoted with backslash escapes for `"` and `\` (what Go's mime parser, the upstream's, reads),
/// and CR/LF become %0D/%0A so a value can never inject a header line.
public struct MultipartEncoder: Sendable {
    public let boundary: String
    public private(set) var body: [UInt8] = []

    public init(boundary: String) {
        self.boundary = boundary
    }

    public init<G: RandomNumberGenerator>(using rng: inout G) {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)
        var s: [UInt8] = Array("VeilFormBoundary".utf8)
        for _ in 0..<24 { s.append(alphabet[Int(rng.next() % UInt64(alphabet.count))]) }
        self.init(boundary: String(decoding: s, as: UTF8.self))
    }

    /// Reproducible boundary (tests).
    public init(seed: UInt64) {
        var g = SeededGenerator(seed: seed)
        self.init(using: &g)
    }

    /// Boundary from the system's secure generator.
    public init() {
        var g = SystemRandomNumberGenerator()
        self.init(using: &g)
    }

    public var contentType: String { "multipart/form-data; boundary=\(boundary)" }

    public mutating func addField(name: String, value: String) {
        addField(name: name, value: Array(value.utf8))
    }

    public mutating func addField(name: String, value: some Collection<UInt8>) {
        openPart(name: name, filename: nil, contentType: nil)
        body.append(contentsOf: value)
        body.append(contentsOf: [0x0D, 0x0A])
    }

    public mutating func addFile(name: String, filename: String, contentType: String = "application/octet-stream",
                                 data: some Collection<UInt8>) {
        openPart(name: name, filename: filename, contentType: contentType)
        body.append(contentsOf: data)
        body.append(contentsOf: [0x0D, 0x0A])
    }

    /// The finished body and its Content-Type header value.
    public func finish() -> (body: [UInt8], contentType: String) {
        (body + Array("--\(boundary)--\r\n".utf8), contentType)
    }

    private mutating func openPart(name: String, filename: String?, contentType: String?) {
        body.append(contentsOf: "--\(boundary)\r\nContent-Disposition: form-data; name=\"".utf8)
        Self.appendQuotedContent(name, &body)
        body.append(UInt8(ascii: "\""))
        if let filename {
            body.append(contentsOf: "; filename=\"".utf8)
            Self.appendQuotedContent(filename, &body)
            body.append(UInt8(ascii: "\""))
        }
        body.append(contentsOf: [0x0D, 0x0A])
        if let contentType {
            body.append(contentsOf: "Content-Type: ".utf8)
            body.append(contentsOf: contentType.utf8.filter { $0 >= 0x20 && $0 != 0x7F })
            body.append(contentsOf: [0x0D, 0x0A])
        }
        body.append(contentsOf: [0x0D, 0x0A])
    }

    static func appendQuotedContent(_ s: String, _ out: inout [UInt8]) {
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\")); out.append(b)
            case 0x0D: out.append(contentsOf: "%0D".utf8)
            case 0x0A: out.append(contentsOf: "%0A".utf8)
            case 0x00..<0x20, 0x7F: break
            default: out.append(b)
            }
        }
    }
}

/// SplitMix64: tiny, deterministic; for reproducible boundaries only, never for secrets.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
