import HTTPWire

/// Which header fields cross the boundary. Allow-lists in both directions: the caller's
/// `Authorization`, cookies, hop-by-hop fields (RFC 9110 §7.6.1) and anything unknown stay on
/// their side; Veil adds the upstream key itself.
enum HeaderPolicy {
    /// Caller → upstream (besides Veil's own `authorization` and framing).
    static let forwardedRequestFields: Set<String> = ["content-type", "accept", "user-agent", "openai-beta", "x-request-id"]
    /// Upstream → caller (values redacted).
    static let forwardedResponseFields: Set<String> = ["content-type", "cache-control", "openai-processing-ms",
                                                       "openai-version", "retry-after"]

    static func upstreamHeaders(from caller: HTTPHeaders, apiKey: String, requestID: String) -> [(name: String, value: String)] {
        var out: [(name: String, value: String)] = [("authorization", "Bearer \(apiKey)")]
        for f in caller where forwardedRequestFields.contains(f.name.lowercased()) && f.name.lowercased() != "x-request-id" {
            out.append((f.name.lowercased(), f.value))
        }
        out.append(("x-request-id", requestID))
        // An empty Accept-Encoding would still let curl ask for nothing; we need identity bodies to redact.
        out.append(("accept-encoding", "identity"))
        return out
    }

    static func callerHeaders(from upstream: [(name: String, value: String)], redact: (String) -> String) -> HTTPHeaders {
        var h = HTTPHeaders()
        for (name, value) in upstream where forwardedResponseFields.contains(name.lowercased()) {
            h.add(name.lowercased(), redact(value))
        }
        return h
    }
}
