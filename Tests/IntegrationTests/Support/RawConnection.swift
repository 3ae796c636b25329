import Glibc

/// Everything one connection answered to a byte sequence sent in one go: the responses, in
/// order, and whether Veil closed the connection afterwards (EOF) rather than leaving it open.
struct RawExchange {
    var responses: [RawResponse]
    /// True when the server closed the connection (EOF/reset) after the last response.
    var closedByServer: Bool
    var statuses: [Int] { responses.map(\.status) }
}

extension RawHTTPClient {
    /// Sends `bytes` (possibly several pipelined requests) and reads responses until the server
    /// closes the connection or stays silent for `quietMillis`.
    static func exchange(port: UInt16, bytes: [UInt8], quietMillis: Int = 1_500) throws -> RawExchange {
        let fd = try connect(port: port, timeoutMillis: quietMillis)
        defer { close(fd) }
        sendAll(fd, bytes)
        var reader = Reader(fd: fd)
        var out = RawExchange(responses: [], closedByServer: false)
        while true {
            do {
                out.responses.append(try reader.readResponse(isHead: false))
            } catch RawHTTPError.closedBeforeHead {
                out.closedByServer = true
                return out
            } catch RawHTTPError.timedOut {
                return out
            }
            if reader.eof && reader.buf.isEmpty { out.closedByServer = true; return out }
        }
    }
}
