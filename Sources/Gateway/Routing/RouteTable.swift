import HTTPWire

/// Every route Veil serves, in one table: method, path template, who may call it, how much body
/// it reads, its handler, its metric label and usage endpoint (`METHOD template`), and the `Allow`
/// list of its path. Routing, metrics, the usage log, 404s and 405s all read this table and
/// nothing else.
struct Route: Sendable {
    enum Access: Sendable {
        /// No token (health, readiness; `/metrics` checks its own optional token).
        case open
        /// A team token (`Authorization: Bearer …`).
        case team
    }

    enum Body: Sendable {
        /// No body is expected; a small one (some clients send one with GET) is read and ignored.
        case none
        /// Up to `limits.body_bytes`.
        case configured
        /// Up to this many bytes (small JSON bodies).
        case atMost(Int)
        /// The route is answered at admission, from the head: its body is never read.
        case answeredAtHead
    }

    let method: String
    let template: String
    let access: Access
    let body: Body
    /// Runs once the body is in (or at admission for `.answeredAtHead`).
    let handler: @Sendable (Exchange, Gateway) -> Void
    /// Template segments, split once.
    let segments: [Substring]
    /// `METHOD template`: the usage log's endpoint and the key of per-route counters.
    let endpoint: String
    /// The team token may come as `?token=` when `cors.allow_query_token` is on (a browser's
    /// `EventSource` can't set headers). Only routes that need it say so.
    let acceptsQueryToken: Bool

    init(_ method: String, _ template: String, access: Access = .team, body: Body = .none, queryToken: Bool = false,
         _ handler: @escaping @Sendable (Exchange, Gateway) -> Void) {
        self.method = method
        self.template = template
        self.access = access
        self.body = body
        self.acceptsQueryToken = queryToken
        self.handler = handler
        segments = template.split(separator: "/", omittingEmptySubsequences: false)
        endpoint = "\(method) \(template)"
    }

    var metricLabel: String { template }

    /// A method as a bounded label: known methods as they are, anything else `OTHER` (a caller
    /// can't mint metric label values).
    static func methodLabel(_ m: String) -> String {
        switch m {
        case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS": return m
        default: return "OTHER"
        }
    }
}

/// What the path and method of a request resolve to.
enum RouteMatch {
    /// The route, and the values of its `{…}` segments in order.
    case found(Route, params: [Substring])
    /// The path exists for other methods (`Allow` lists them).
    case methodNotAllowed(allow: String)
    case notFound
}

struct RouteTable: Sendable {
    let routes: [Route]
    /// Exact paths (no parameter) → their routes, for the common case in one lookup.
    private let exact: [String: [Route]]
    private let templated: [Route]

    /// A body Veil reads and ignores on routes that take none (bounded: `Route.Body.none`).
    static let ignoredBodyLimit = 64 * 1024

    init(_ routes: [Route]) {
        self.routes = routes
        var exact: [String: [Route]] = [:]
        var templated: [Route] = []
        for r in routes {
            if r.template.contains("{") { templated.append(r) } else { exact[r.template, default: []].append(r) }
        }
        self.exact = exact
        self.templated = templated
    }

    /// Exact templates win over parameterised ones (`/v1/videos/edits` before `/v1/videos/{id}`).
    /// HEAD is served by a GET route. Pure.
    func match(method: String, path: Substring) -> RouteMatch {
        let effective = method == "HEAD" ? "GET" : method
        if let candidates = exact[String(path)] {
            if let r = candidates.first(where: { $0.method == effective }) { return .found(r, params: []) }
            return .methodNotAllowed(allow: Self.allow(candidates))
        }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        var sameShape: [Route] = []
        for r in templated where r.segments.count == parts.count {
            var params: [Substring] = []
            var ok = true
            for (t, p) in zip(r.segments, parts) {
                if t.first == "{" {
                    if p.isEmpty { ok = false; break }
                    params.append(p)
                } else if t != p {
                    ok = false; break
                }
            }
            guard ok else { continue }
            if r.method == effective { return .found(r, params: params) }
            sameShape.append(r)
        }
        if !sameShape.isEmpty { return .methodNotAllowed(allow: Self.allow(sameShape)) }
        return .notFound
    }

    /// `GET, HEAD, POST`: the methods of `routes`, HEAD wherever GET is.
    static func allow(_ routes: [Route]) -> String {
        var methods: [String] = []
        for r in routes where !methods.contains(r.method) {
            methods.append(r.method)
            if r.method == "GET" { methods.append("HEAD") }
        }
        return methods.joined(separator: ", ")
    }

    /// The routes a team can call, for the 404 message of an unknown `/v1` path (`disabled`:
    /// templates switched off by configuration).
    func servedSummary(disabled: Set<String> = []) -> String {
        var seen: [String] = []
        for r in routes where r.access == .team && r.template.hasPrefix("/v1/") && !disabled.contains(r.template) && !seen.contains(r.endpoint) {
            seen.append(r.endpoint)
        }
        return seen.joined(separator: ", ")
    }
}

extension Route.Access: Equatable {}
