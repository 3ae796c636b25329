/// The content coding of an upstream answer, from its `Content-Encoding` header.
///
/// Veil asks the upstream for `identity`, but an upstream may compress anyway; compressed bytes
/// would pass the key redactor unchecked and reach a caller who can decompress them. So an answer
/// is either decoded (`Inflater`) before redaction or refused: never relayed encoded.
public enum ContentCoding: Sendable, Equatable {
    case identity
    /// `gzip` or `x-gzip` (RFC 1952; several members in a row allowed).
    case gzip
    /// `deflate`: the zlib format (RFC 1950) as RFC 9110 defines it, or raw deflate (RFC 1951),
    /// which some servers send under that name; told apart by the first two bytes.
    case deflate

    /// Parses the header's value (several `Content-Encoding` fields joined with `,`). Absent,
    /// empty and `identity` tokens mean identity. Compared case-insensitively, spaces around
    /// tokens ignored. Anything else, and more than one coding (stacked codings), is
    /// `InflateError.unsupportedCoding`: the gateway answers 502.
    public static func parse(_ value: String?) -> Result<ContentCoding, InflateError> {
        guard let value else { return .success(.identity) }
        var found: ContentCoding = .identity
        var count = 0
        for raw in value.split(separator: ",", omittingEmptySubsequences: false) {
            let token = trimmedLowercasedASCII(raw)
            let coding: ContentCoding
            switch token {
            case "", "identity": continue
            case "gzip", "x-gzip": coding = .gzip
            case "deflate": coding = .deflate
            default: return .failure(.unsupportedCoding(String(token.prefix(40))))
            }
            count += 1
            if count > 1 { return .failure(.unsupportedCoding(String(value.prefix(80)))) }
            found = coding
        }
        return .success(found)
    }

    private static func trimmedLowercasedASCII(_ s: Substring) -> String {
        var u = Array(s.utf8)
        while let f = u.first, f == 0x20 || f == 0x09 { u.removeFirst() }
        while let l = u.last, l == 0x20 || l == 0x09 { u.removeLast() }
        return String(decoding: u.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 }, as: UTF8.self)
    }
}

/// Why a compressed answer could not be decoded (the gateway answers 502 for each).
public enum InflateError: Error, Sendable, Equatable {
    /// A coding Veil does not decode (`br`, `zstd`, `compress`, …) or stacked codings.
    case unsupportedCoding(String)
    /// The data is not valid for its coding (zlib's own message).
    case corrupt(String)
    /// The answer ended inside the compressed data.
    case truncated
    /// Bytes after the end of the compressed data (other than further gzip members).
    case trailingData
    /// The decoded answer would exceed `InflateLimits.maxOutputBytes`.
    case outputTooLarge(limit: Int)
    /// Past `InflateLimits.ratioFloorBytes`, the output grew beyond `maxRatio` times the input.
    case ratioTooHigh(limit: Int)
}

/// Bounds on what one answer may decode to (a decompression bomb is refused, not buffered).
public struct InflateLimits: Sendable, Equatable {
    /// Decoded bytes at most (default 64 MiB; buffered answers are also held to the gateway's
    /// `upstream.max_response_bytes` after decoding).
    public var maxOutputBytes: Int
    /// Decoded bytes per compressed byte at most, once `ratioFloorBytes` have been decoded
    /// (default 200: chat SSE streams gzip 28–47 times, JSON answers less; deflate reaches
    /// about 1,030 on a bomb).
    public var maxRatio: Int
    /// Output below this is never refused for its ratio (default 1 MiB: small, very
    /// compressible answers are harmless).
    public var ratioFloorBytes: Int

    public static let defaultMaxOutputBytes = 64 << 20
    public static let defaultMaxRatio = 200
    public static let defaultRatioFloorBytes = 1 << 20

    public init(maxOutputBytes: Int = InflateLimits.defaultMaxOutputBytes,
                maxRatio: Int = InflateLimits.defaultMaxRatio,
                ratioFloorBytes: Int = InflateLimits.defaultRatioFloorBytes) {
        self.maxOutputBytes = maxOutputBytes
        self.maxRatio = maxRatio
        self.ratioFloorBytes = ratioFloorBytes
    }
}
