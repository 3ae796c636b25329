import HTTPWire
import Upstream

/// Which header fields cross the boundary. Allow-lists in both directions: the caller's
/// `Authorization`, cookies, hop-by-hop fields (RFC 9110 §7.6.1) and anything unknown stay on
/// their side; Veil adds the upstream key itself.
enum HeaderPolicy {
    /// Caller → upstream (besides Veil's own `authorization` and framing).
    static let forwardedRequestFields: Set<String> = ["content-type", "accept", "user-agent", "openai-beta", "x-request-id"]
    /// Upstream → caller (values redacted).
    static let forwardedResponseFields: Set<String> = ["content-type", "cache-control", "openai-processing-ms",
                                                       "openai-version", "retry-after"]

    /// The fields every upstream request carries alike, per configuration: the key's
    /// `Authorization` value (`Bearer <key>`) and `Accept-Encoding: identity` (an empty one would
    /// say nothing; bodies should arrive as identity, and are decoded when they do not).
    static func sharedUpstreamHeaders(authorization: String, json: Bool = false) -> UpstreamHeaderBlock {
        var fields: HTTPHeaders = ["authorization": authorization, "accept-encoding": "identity"]
        if json { fields.add("content-type", "application/json") }
        return UpstreamHeaderBlock(fields)
    }

    /// A request's own fields: the caller's allowed ones, then Veil's `x-request-id`.
    static func upstreamHeaders(from caller: HTTPHeaders, requestID: String, omitting omitted: String? = nil) -> HTTPHeaders {
        var out = HTTPHeaders()
        out.reserveCapacity(4)
        for f in caller {
            // The lower-case spelling from the allow-list itself: no lowercased copy per field;
            // lengths first (most fields are none of these).
            let n = f.name.utf8.count
            guard let name = forwardedRequestNames.first(where: { $0.utf8.count == n && asciiCaseInsensitiveEquals($0, f.name) }),
                  name != omitted else { continue }
            out.add(name, f.value)
        }
        out.add("x-request-id", requestID)
        return out
    }

    /// A request to the upstream as Veil sends it: `upstreamHeaders` plus `extra` as its own
    /// fields, and the configuration's shared block (the key) behind them.
    /// `json`: the body is JSON Veil has parsed, so it is sent as `application/json` whatever
    /// the caller said, from the shared block (one line less per request, held by every stream).
    static func upstreamRequest(_ snapshot: ConfigSnapshot, requestID: String, _ method: String, _ url: String,
                                forwarding caller: HTTPHeaders = HTTPHeaders(), extra: HTTPHeaders = HTTPHeaders(),
                                body: [UInt8] = [], json: Bool = false) -> UpstreamRequest {
        var own = upstreamHeaders(from: caller, requestID: requestID, omitting: json ? "content-type" : nil)
        own.add(contentsOf: extra)
        var r = UpstreamRequest(method: method, url: url, headers: own, body: body)
        r.sharedHeaders = json ? snapshot.upstreamJSONHeaders : snapshot.upstreamHeaders
        return r
    }

    /// The same, for an exchange.
    static func upstreamRequest(_ x: Exchange, _ method: String, _ url: String, extra: HTTPHeaders = HTTPHeaders(),
                                body: [UInt8] = [], json: Bool = false) -> UpstreamRequest {
        upstreamRequest(x.snapshot, requestID: x.requestID, method, url, extra: extra, body: body, json: json)
    }

    /// `forwardedRequestFields` but `x-request-id`, which is always Veil's (the caller's, if it
    /// was plain, already became the exchange's id).
    static let forwardedRequestNames: [String] = forwardedRequestFields.filter { $0 != "x-request-id" }.sorted()

    static let forwardedResponseNames: [String] = forwardedResponseFields.sorted()

    /// The upstream's fields a caller may see (allow-list, lower-case names). Values are redacted
    /// where answers go out (`UpstreamEngine` for streams, `Exchange` for whole answers).
    static func callerHeaders(from upstream: HTTPHeaders) -> HTTPHeaders {
        var h = HTTPHeaders()
        for f in upstream {
            let n = f.name.utf8.count
            guard let lower = forwardedResponseNames.first(where: { $0.utf8.count == n && asciiCaseInsensitiveEquals($0, f.name) }) else { continue }
            h.add(lower, f.value)
        }
        return h
    }
}
