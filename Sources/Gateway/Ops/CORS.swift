import HTTPWire

/// CORS for browser frontends (config `cors`). Pure decisions, built once per configuration
/// snapshot: exact origins only, `*` only when configured, nothing at all for other origins.
public struct CORSPolicy: Sendable {
    public let allowedOrigins: Set<String>
    public let allowAny: Bool
    public let maxAgeSeconds: Int

    /// Headers a page may read from Veil's answers beyond the CORS-safelisted ones (content-type,
    /// content-length, cache-control, …): every non-safelisted field Veil itself sets or forwards —
    /// the request id, the team's rate-limit state (`x-ratelimit-*-requests`: the only ones Veil
    /// sends), `retry-after`, the video polling hint, ranges of video content (`content-range`,
    /// `accept-ranges`, `etag`), the upstream's `openai-*` timing fields and `x-veil-stale`.
    public static let exposedHeaderNames = [
        "x-request-id", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
        "retry-after", "openai-poll-after-ms", "content-range", "accept-ranges", "etag",
        "openai-processing-ms", "openai-version", "x-veil-stale",
    ]
    public static let exposedHeaders = exposedHeaderNames.joined(separator: ", ")
    public static let allowedMethods = "GET, POST, DELETE, OPTIONS"
    /// Methods a preflight may ask for (HEAD is allowed without being listed: it is CORS-safelisted).
    static let allowedMethodSet: Set<String> = ["GET", "POST", "DELETE", "HEAD", "OPTIONS"]
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

    /// The answer to a preflight: nil = refused (see `evaluatePreflight` for why), else the
    /// headers of a 204.
    public func preflight(origin: String?, requestMethod: String?, requestHeaders: String?) -> HTTPHeaders? {
        if case .allowed(let h) = evaluatePreflight(origin: origin, requestMethod: requestMethod, requestHeaders: requestHeaders) { return h }
        return nil
    }

    /// A preflight's outcome: the 204's headers, or a refusal saying why.
    public enum PreflightDecision: Sendable {
        case allowed(HTTPHeaders)
        case refused(PreflightRefusal)
    }

    /// Why a preflight is refused, for the gateway's 403 (`APIError(refusal.status, refusal.message,
    /// code: refusal.code)`, sent with `refusal.headers`).
    public struct PreflightRefusal: Sendable, Equatable {
        public let status: Int
        public let code: String
        public let message: String
        /// For an allowed origin asking a method Veil doesn't serve: `Access-Control-Allow-Origin`
        /// and `-Allow-Methods`, so the browser's console shows what is allowed. None for an
        /// origin that is not allowed (nothing about the policy is told to it).
        public let headers: HTTPHeaders
    }

    public func evaluatePreflight(origin: String?, requestMethod: String?, requestHeaders: String?) -> PreflightDecision {
        guard let allow = allowOrigin(origin) else {
            return .refused(PreflightRefusal(status: 403, code: "cors_origin_not_allowed",
                                             message: "This origin is not allowed to call Veil from a browser (config `cors.allowed_origins`).",
                                             headers: HTTPHeaders()))
        }
        var h = HTTPHeaders()
        if !allowAny { h.add("vary", "Origin") }
        h.add("access-control-allow-origin", allow)
        h.add("access-control-allow-methods", CORSPolicy.allowedMethods)
        let asked = (requestMethod ?? "").trimmingASCIISpaces()
        guard CORSPolicy.allowedMethodSet.contains(asked.uppercased()) else {
            let shown = asked.isEmpty ? "(none)" : String(asked.prefix(32))
            return .refused(PreflightRefusal(status: 403, code: "cors_method_not_allowed",
                                             message: "The method `\(shown)` is not allowed from a browser; Veil answers \(CORSPolicy.allowedMethods) (and HEAD).",
                                             headers: h))
        }
        h.add("access-control-allow-headers", CORSPolicy.allowHeaders(requested: requestHeaders))
        h.add("access-control-max-age", String(maxAgeSeconds))
        return .allowed(h)
    }

    /// The requested headers that are allowed, plus the ones every client needs.
    static func allowHeaders(requested: String?) -> String {
        var out = defaultAllowedHeaders.split(separator: ",").map { $0.trimmingASCIISpaces() }
        var seen = Set(out)
        for raw in (requested ?? "").split(separator: ",") {
            let name = raw.trimmingASCIISpaces().lowercased()
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
