/// Incremental, strict HTTP/1.1 request parser (RFC 9112). Sans-I/O: bytes in, events out.
/// STUB — the implementation is being written.
public struct HTTPRequestParser: Sendable {
    public let limits: HTTPLimits
    public init(limits: HTTPLimits = HTTPLimits()) { self.limits = limits }

    /// Parses from the start of `input` (the connection's unconsumed bytes).
    /// Returns how many bytes of `input` were consumed (the caller drops them) and the event found,
    /// or a nil event when more bytes are needed. Bytes not consumed must be offered again, followed
    /// by whatever arrives next. After `.end` the parser is ready for the next request.
    /// Throws only `HTTPError` (status + message); the connection must then be closed.
    /// (Untyped `throws`: Swift 6.3 crashes lowering typed throws through `withUnsafeBytes`.)
    public mutating func next(_ input: UnsafeRawBufferPointer) throws -> (consumed: Int, event: HTTPParserEvent?) {
        throw HTTPError(500, "parser not implemented")
    }
}
