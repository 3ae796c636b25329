import HTTPWire

/// CORS for browser frontends (config `cors`). Pure decisions, built once per configuration
/// snapshot: exact origins only, `*` only when configured, nothing at all for other origins.
public struct CORSPolicy: Sendable {
    public let allowedOrigins: Set<String>
    public let allowAny: Bool
    public let maxAgeSeconds: Int

    /// Headers a page may read from Veil's answers (rate limits, request id, video polling hint).
    public static let exposedHeaders = "x-request-id, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests, retry-after, openai-poll-after-ms"
    public static let allowedMethods = "GET, POST, DELETE, OPTIONS"
    /// Request headers a page may send. `x-stainless-*` (the OpenAI SDKs' telemetry headers) and
    /// `openai-*` are allowed by prefix; CORS has no wildcard for them, so the preflight echoes
    /// the ones the browser asks for.
    static let allowedHeaderNames: Set<String> = ["authorization", "content-type", "accept", "x-request-id", "idempotency-key", "user-agent"]
    static let allowedHeaderPrefixes = ["x-stainless-", "openai-"]
    static let defaultAllowedHeaders = "authorization, content-type, accept, x-request-id"

    public init(_ settings: GatewayConfig.CORSSettings) {
        var set = Set<String>()
        var any = false
        for o in settings.allowedOrigins {
            if o == "*" { any = true; continue }
            var n = o.lowercased()
            while n.hasSuffix("/") { n.removeLast() }
            set.insert(n)
        }
        allowedOrigins = set
        allowAny = any
        maxAgeSeconds = settings.maxAgeSeconds
    }

    /// Whether any CORS answer can be given at all (no `Vary` noise when CORS is off).
    public var enabled: Bool { allowAny || !allowedOrigins.isEmpty }

    /// The `Access-Control-Allow-Origin` value for this origin, or nil when it is not allowed.
    public func allowOrigin(_ origin: String?) -> String? {
        guard let origin, !origin.isEmpty else { return nil }
        if allowAny { return "*" }
        return allowedOrigins.contains(origin.lowercased()) ? origin : nil
    }

    /// `OPTIONS` with `Origin` and `Access-Control-Request-Method`: a browser's preflight.
    public static func isPreflight(method: String, headers: HTTPHeaders) -> Bool {
        method == "OPTIONS" && headers["origin"] != nil && headers["access-control-request-method"] != nil
    }

    /// Headers for an ordinary answer to a page from `origin` (empty when not allowed).
    public func responseHeaders(origin: String?) -> HTTPHeaders {
        var h = HTTPHeaders()
        guard enabled else { return h }
        if !allowAny { h.add("vary", "Origin") }
        guard let allow = allowOrigin(origin) else { return h }
        h.add("access-control-allow-origin", allow)
        h.add("access-control-expose-headers", CORSPolicy.exposedHeaders)
        return h
    }

    /// The answer to a preflight: nil = refused (no CORS header at all), else the headers of a 204.
    public func preflight(origin: String?, requestMethod: String?, requestHeaders: String?) -> HTTPHeaders? {
        guard let allow = allowOrigin(origin) else { return nil }
        guard let m = requestMethod?.uppercased(), ["GET", "POST", "DELETE", "HEAD", "OPTIONS"].contains(m) else { return nil }
        var h = HTTPHeaders()
        if !allowAny { h.add("vary", "Origin") }
        h.add("access-control-allow-origin", allow)
        h.add("access-control-allow-methods", CORSPolicy.allowedMethods)
        h.add("access-control-allow-headers", CORSPolicy.allowHeaders(requested: requestHeaders))
        h.add("access-control-max-age", String(maxAgeSeconds))
        return h
    }

    /// The requested headers that are allowed, plus the ones every client needs.
    static func allowHeaders(requested: String?) -> String {
        var out = defaultAllowedHeaders.split(separator: ",").map { $0.trimmingCharacters(in: " ") }
        var seen = Set(out)
        for raw in (requested ?? "").split(separator: ",") {
            let name = raw.trimmingCharacters(in: " \t").lowercased()
            guard !name.isEmpty, name.utf8.count <= 64, !seen.contains(name) else { continue }
            guard name.utf8.allSatisfy({ ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 95 }) else { continue }
            if allowedHeaderNames.contains(name) || allowedHeaderPrefixes.contains(where: { name.hasPrefix($0) }) {
                out.append(name)
                seen.insert(name)
            }
        }
        return out.joined(separator: ", ")
    }
}
