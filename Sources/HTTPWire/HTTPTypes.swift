/// One header field as received or to be sent. Names keep their original case; lookups ignore it.
public struct HTTPField: Sendable, Equatable {
    public var name: String
    public var value: String
    public init(name: String, value: String) { self.name = name; self.value = value }
}

/// An ordered list of header fields with case-insensitive lookup (RFC 9110 §5.1).
public struct HTTPHeaders: Sendable, Equatable, Sequence, ExpressibleByDictionaryLiteral, ExpressibleByArrayLiteral {
    public var fields: [HTTPField]

    public init(_ fields: [HTTPField] = []) { self.fields = fields }
    /// `["accept": "*/*"]`; repeated names are kept, in order.
    public init(dictionaryLiteral elements: (String, String)...) {
        fields = elements.map { HTTPField(name: $0.0, value: $0.1) }
    }
    /// `[("accept", "*/*")]`: the same, for lists that read better as pairs.
    public init(arrayLiteral elements: (String, String)...) {
        fields = elements.map { HTTPField(name: $0.0, value: $0.1) }
    }

    public func makeIterator() -> IndexingIterator<[HTTPField]> { fields.makeIterator() }
    public var count: Int { fields.count }

    /// The first value of `name`, or nil. Lengths first: most fields are another length.
    public subscript(_ name: String) -> String? {
        let n = name.utf8.count
        for f in fields where f.name.utf8.count == n && asciiCaseInsensitiveEquals(f.name, name) { return f.value }
        return nil
    }

    public func values(_ name: String) -> [String] {
        fields.filter { asciiCaseInsensitiveEquals($0.name, name) }.map(\.value)
    }

    public func contains(_ name: String) -> Bool { self[name] != nil }

    public mutating func add(_ name: String, _ value: String) {
        fields.append(HTTPField(name: name, value: value))
    }

    public mutating func add(contentsOf other: HTTPHeaders) { fields.append(contentsOf: other.fields) }

    public mutating func reserveCapacity(_ n: Int) { fields.reserveCapacity(n) }

    public var isEmpty: Bool { fields.isEmpty }

    /// Removes every `name` field. Absent: no mutation at all (a shared copy stays shared).
    public mutating func remove(_ name: String) {
        guard fields.contains(where: { asciiCaseInsensitiveEquals($0.name, name) }) else { return }
        fields.removeAll { asciiCaseInsensitiveEquals($0.name, name) }
    }

    /// Removes every `name` field and adds one with `value` (at the end).
    public mutating func replace(_ name: String, _ value: String) {
        remove(name)
        add(name, value)
    }
}

/// ASCII case-insensitive equality (header names, schemes, tokens). `@inlinable`: called from
/// every module on per-request paths, and a generic function that is not gets no specialization
/// across modules — each call went through protocol witnesses for every byte (5 % of a proxied
/// request's CPU). Contiguous strings (native, small, substrings of them) compare as bytes,
/// lengths first.
@inlinable
public func asciiCaseInsensitiveEquals<A: StringProtocol, B: StringProtocol>(_ a: A, _ b: B) -> Bool {
    // Most lookups meet names of another length: O(1) for native strings, decided before any
    // storage is reached.
    if a.utf8.count != b.utf8.count { return false }
    let fast = a.utf8.withContiguousStorageIfAvailable { pa in
        b.utf8.withContiguousStorageIfAvailable { pb in asciiCaseInsensitiveEqualBytes(pa, pb) }
    }
    if let fast, let fast { return fast }
    var ia = a.utf8.makeIterator()
    var ib = b.utf8.makeIterator()
    while true {
        switch (ia.next(), ib.next()) {
        case (nil, nil): return true
        case let (x?, y?):
            if x != y && asciiLower(x) != asciiLower(y) { return false }
        default: return false
        }
    }
}

@inlinable
public func asciiCaseInsensitiveEqualBytes(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
    guard a.count == b.count else { return false }
    var i = 0
    while i < a.count {
        let x = a[i], y = b[i]
        if x != y && asciiLower(x) != asciiLower(y) { return false }
        i += 1
    }
    return true
}

@inlinable
public func asciiLower(_ c: UInt8) -> UInt8 { (c >= 65 && c <= 90) ? c | 0x20 : c }

/// A parsed request line and header section.
public struct HTTPRequestHead: Sendable, Equatable {
    public var method: String
    /// The request target in origin-form (`/path?query`), absolute-form already reduced to it.
    public var target: String
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var versionMinor: Int
    public var headers: HTTPHeaders

    public init(method: String, target: String, versionMinor: Int = 1, headers: HTTPHeaders = HTTPHeaders()) {
        self.method = method; self.target = target; self.versionMinor = versionMinor; self.headers = headers
    }

    /// The target's path, without the query.
    public var path: Substring {
        if let q = queryMark { return target[..<q] }
        return target[...]
    }

    /// The raw query string (after `?`), or nil.
    public var query: Substring? {
        guard let q = queryMark else { return nil }
        return target[target.utf8.index(after: q)...]
    }

    /// The `?` that starts the query, found in the target's bytes (the generic `firstIndex(of:)`
    /// over a UTF-8 view walks index by index, and `path` is read several times per request).
    private var queryMark: String.Index? {
        var t = target
        let offset = t.withUTF8 { $0.firstIndex(of: 0x3F) }           // '?', as bytes
        return offset.map { target.utf8.index(target.utf8.startIndex, offsetBy: $0) }
    }

    /// Whether the connection may stay open after this exchange (RFC 9112 §9.3).
    public var keepAlive: Bool {
        var close = false, keepAlive = false
        for f in headers.fields where asciiCaseInsensitiveEquals(f.name, "connection") {
            forEachToken(f.value) { t in
                if asciiCaseInsensitiveEquals(t, "close") { close = true }
                else if asciiCaseInsensitiveEquals(t, "keep-alive") { keepAlive = true }
            }
        }
        if close { return false }
        return versionMinor >= 1 || keepAlive
    }

    /// `Expect: 100-continue` was sent (RFC 9110 §10.1.1).
    public var expectsContinue: Bool {
        guard let e = headers["expect"] else { return false }
        return asciiCaseInsensitiveEquals(e.trimmingASCIISpaces(), "100-continue")
    }
}

/// Calls `body` with each comma-separated element of a list header, trimmed of spaces and tabs
/// (RFC 9110 §5.6.1); empty elements are skipped.
func forEachToken(_ value: String, _ body: (Substring) -> Void) {
    let u = value.utf8
    var start = u.startIndex
    while true {
        let end = u[start...].firstIndex(of: 0x2C) ?? u.endIndex
        var lo = start, hi = end
        while lo < hi, u[lo] == 0x20 || u[lo] == 0x09 { lo = u.index(after: lo) }
        while hi > lo, u[u.index(before: hi)] == 0x20 || u[u.index(before: hi)] == 0x09 { hi = u.index(before: hi) }
        if lo < hi { body(value[lo..<hi]) }
        if end == u.endIndex { return }
        start = u.index(after: end)
    }
}

extension StringProtocol {
    /// `self` without leading and trailing spaces and horizontal tabs (optional whitespace,
    /// RFC 9110 §5.6.3), as a slice: nothing is copied.
    public func trimmingOWS() -> SubSequence {
        let u = utf8
        var lo = u.startIndex, hi = u.endIndex
        while lo < hi, u[lo] == 0x20 || u[lo] == 0x09 { lo = u.index(after: lo) }
        // Forward to the last other byte (the generic UTF-8 view is only a `Collection`).
        var i = lo
        hi = lo
        while i < u.endIndex {
            let c = u[i]
            i = u.index(after: i)
            if c != 0x20 && c != 0x09 { hi = i }
        }
        return self[lo..<hi]
    }

    /// The same, as a `String`.
    public func trimmingASCIISpaces() -> String { String(trimmingOWS()) }
}

/// A response status line and header section.
public struct HTTPResponseHead: Sendable, Equatable {
    public var status: Int
    public var headers: HTTPHeaders
    public init(status: Int, headers: HTTPHeaders = HTTPHeaders()) {
        self.status = status; self.headers = headers
    }
}

/// Limits the parser enforces; every one has a documented default (config `limits:`).
public struct HTTPLimits: Sendable, Equatable {
    /// Longest request line, CRLF excluded → 414 past it.
    public var maxRequestLineBytes: Int = 8 * 1024
    /// Largest header section (all field lines, CRLFs included) → 431.
    public var maxHeaderBytes: Int = 32 * 1024
    /// Most header fields → 431.
    public var maxHeaderCount: Int = 100
    /// Largest request body (Content-Length or the sum of chunks) → 413.
    public var maxBodyBytes: Int = 32 * 1024 * 1024
    /// Longest chunk-size line, extensions included → 400.
    public var maxChunkLineBytes: Int = 1024
    /// Largest trailer section → 431.
    public var maxTrailerBytes: Int = 8 * 1024
    public init() {}
}

/// A request Veil refuses while parsing. The connection is always closed after the error response:
/// once framing is in doubt, nothing that follows on the connection can be trusted (RFC 9112 §11).
public struct HTTPError: Error, Sendable, Equatable {
    public var status: Int
    public var message: String
    public init(_ status: Int, _ message: String) { self.status = status; self.message = message }
}

/// What the parser found in the bytes it was given.
public enum HTTPParserEvent: Sendable, Equatable {
    /// A complete request head. Body events follow (possibly none), then `.end`.
    case head(HTTPRequestHead)
    /// Body bytes: a range of the buffer passed to `next(_:)` (already de-chunked).
    case body(Range<Int>)
    /// The request, body included, is complete. The parser is ready for the next (pipelined) request.
    case end
}
