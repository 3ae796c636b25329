/// Serialises responses. Pure: appends bytes to a buffer.
/// STUB — being written.
public enum HTTPResponseWriter {
    /// Appends `HTTP/1.1 <status> <reason>\r\n<fields>\r\n\r\n`.
    public static func head(_ head: HTTPResponseHead, into out: inout [UInt8]) {}
    /// Appends one chunk in chunked transfer coding (`<hex>\r\n<bytes>\r\n`); nothing for empty input.
    public static func chunk(_ bytes: UnsafeRawBufferPointer, into out: inout [UInt8]) {}
    /// The last chunk with no trailers: `0\r\n\r\n`.
    public static let lastChunk: [UInt8] = Array("0\r\n\r\n".utf8)
    public static func reasonPhrase(_ status: Int) -> String { "" }
}
