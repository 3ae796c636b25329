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

    /// `authorization` is the whole value (`Bearer <key>`, `ConfigSnapshot.upstreamAuthorization`).
    static func upstreamHeaders(from caller: HTTPHeaders, authorization: String, requestID: String) -> [(name: String, value: String)] {
        var out: [(name: String, value: String)] = [("authorization", authorization)]
        out.reserveCapacity(8)
        for f in caller {
            // The lower-case spelling from the allow-list itself: no lowercased copy per field.
            guard let name = forwardedRequestNames.first(where: { asciiCaseInsensitiveEquals($0, f.name) }) else { continue }
            out.append((name, f.value))
        }
        out.append(("x-request-id", requestID))
        // An empty Accept-Encoding would still let curl ask for nothing; we need identity bodies to redact.
        out.append(("accept-encoding", "identity"))
        return out
    }

    /// `forwardedRequestFields` but `x-request-id`, which is always Veil's (the caller's, if it
    /// was plain, already became the exchange's id).
    static let forwardedRequestNames: [String] = forwardedRequestFields.filter { $0 != "x-request-id" }.sorted()

    static let forwardedResponseNames: [String] = forwardedResponseFields.sorted()

    static func callerHeaders(from upstream: [(name: String, value: String)], redact: (String) -> String) -> HTTPHeaders {
        var h = HTTPHeaders()
        for (name, value) in upstream {
            guard let lower = forwardedResponseNames.first(where: { asciiCaseInsensitiveEquals($0, name) }) else { continue }
            h.add(lower, redact(value))
        }
        return h
    }
}
