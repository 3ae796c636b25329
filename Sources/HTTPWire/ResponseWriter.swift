/// Serialises responses. Pure: appends bytes to a buffer.
///
/// Header injection guard: a field whose name is empty or not a token (RFC 9110 §5.6.2) is dropped
/// entirely; in values, CR, LF, NUL and every other control byte except HTAB (and DEL) is replaced by
/// a space, so a value can never start a new line. Values are otherwise written as their UTF-8 bytes.
public enum HTTPResponseWriter {
    /// Appends `HTTP/1.1 <status> <reason>\r\n<fields>\r\n\r\n`.
    public static func head(_ head: HTTPResponseHead, into out: inout [UInt8]) {
        out.append(contentsOf: "HTTP/1.1 ".utf8)
        appendDecimal(head.status, into: &out)
        out.append(sp)
        out.append(contentsOf: reasonPhrase(head.status).utf8)
        out.append(cr)
        out.append(lf)
        for field in head.headers.fields {
            guard isValidFieldName(field.name) else { continue }
            out.append(contentsOf: field.name.utf8)
            out.append(colon)
            out.append(sp)
            appendFieldValue(field.value, into: &out)
            out.append(cr)
            out.append(lf)
        }
        out.append(cr)
        out.append(lf)
    }

    /// Appends one chunk in chunked transfer coding (`<hex>\r\n<bytes>\r\n`); nothing for empty input.
    public static func chunk(_ bytes: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        if bytes.isEmpty { return }
        appendHex(bytes.count, into: &out)
        out.append(cr)
        out.append(lf)
        out.append(contentsOf: bytes)
        out.append(cr)
        out.append(lf)
    }

    /// The last chunk with no trailers: `0\r\n\r\n`.
    public static let lastChunk: [UInt8] = Array("0\r\n\r\n".utf8)

    public static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 101: return "Switching Protocols"
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 204: return "No Content"
        case 206: return "Partial Content"
        case 301: return "Moved Permanently"
        case 302: return "Found"
        case 303: return "See Other"
        case 304: return "Not Modified"
        case 307: return "Temporary Redirect"
        case 308: return "Permanent Redirect"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 406: return "Not Acceptable"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 410: return "Gone"
        case 411: return "Length Required"
        case 412: return "Precondition Failed"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 415: return "Unsupported Media Type"
        case 416: return "Range Not Satisfiable"
        case 417: return "Expectation Failed"
        case 422: return "Unprocessable Content"
        case 426: return "Upgrade Required"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        case 505: return "HTTP Version Not Supported"
        default: return "Unknown"
        }
    }

    // MARK: helpers

    static func isValidFieldName(_ name: String) -> Bool {
        if name.isEmpty { return false }
        for c in name.utf8 where !isTchar(c) { return false }
        return true
    }

    static func appendFieldValue(_ value: String, into out: inout [UInt8]) {
        var clean = true
        for c in value.utf8 where (c < 0x20 && c != htab) || c == 0x7F { clean = false; break }
        if clean {
            out.append(contentsOf: value.utf8)
        } else {
            for c in value.utf8 {
                out.append((c < 0x20 && c != htab) || c == 0x7F ? sp : c)
            }
        }
    }

    static func appendDecimal(_ value: Int, into out: inout [UInt8]) {
        if value < 0 {
            out.append(0x2D)
            appendDecimal(0 - value, into: &out)
            return
        }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var v = value
        var count = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[count] = UInt8(v % 10) + 0x30
                v /= 10
                count += 1
            } while v > 0
            for i in stride(from: count - 1, through: 0, by: -1) { out.append(d[i]) }
        }
    }

    static func appendHex(_ value: Int, into out: inout [UInt8]) {
        let hex: StaticString = "0123456789abcdef"
        var shift = (Int.bitWidth - value.leadingZeroBitCount + 3) / 4 * 4 - 4
        if shift < 0 { shift = 0 }
        while shift >= 0 {
            out.append(hex.utf8Start[(value >> shift) & 0xF])
            shift -= 4
        }
    }
}
