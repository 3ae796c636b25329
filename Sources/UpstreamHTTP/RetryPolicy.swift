/// When a request that failed on a kept-alive connection may be sent again (RFC 9110 §9.2.2).
/// Pure; the transfer asks it once per failure.
///
/// A kept-alive connection can be closed by the upstream at any moment; a request written into
/// one that was already closing fails with a reset or an end of stream before any response byte.
/// That request is sent again, once, on a fresh connection when either
/// - its method is idempotent (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE), or
/// - not one byte of it reached the socket (it certainly was not processed).
/// Never otherwise: a POST that may have reached the upstream is not replayed (a chat completion
/// would be run, and billed, twice). Never for a fresh connection (the upstream itself is failing,
/// not a stale connection), never after a response byte, never twice (§9.2.2: a client SHOULD NOT
/// retry a failed automatic retry).
public enum RetryPolicy {
    public static func isIdempotent(_ method: String) -> Bool {
        switch method {
        case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE": return true
        default:
            switch method.uppercased() {
            case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE": return true
            default: return false
            }
        }
    }

    public static func mayRetry(method: String, reusedConnection: Bool, requestBytesSent: Int,
                                responseBytesReceived: Int, retriesSoFar: Int) -> Bool {
        guard reusedConnection, responseBytesReceived == 0, retriesSoFar == 0 else { return false }
        return requestBytesSent == 0 || isIdempotent(method)
    }
}
