/// `veil teams`: the configured teams, their limits and their tokens' expiries, as tables.
/// Token digests are shown by their first 12 hex digits (enough to tell them apart, not a secret:
/// a digest does not reveal its token).
public enum TeamsReport {
    public static func render(_ teams: [GatewayConfig.Team], now: Int) -> String {
        guard !teams.isEmpty else { return "no teams configured (teams: is empty): every /v1 request gets 401\n" }
        func limit(_ v: Int?) -> String { v.map(String.init) ?? "unlimited" }
        let limits = [["TEAM", "MODELS", "REQUESTS/MIN", "STREAMS", "VIDEOS_IN_FLIGHT", "VIDEOS/DAY"]] + teams.map { t in
            [t.name, t.models.map { $0.isEmpty ? "(none)" : $0.joined(separator: ",") } ?? "all",
             limit(t.requestsPerMinute), limit(t.maxConcurrentStreams), limit(t.maxVideosInFlight), limit(t.videosPerDay)]
        }
        var tokens = [["TEAM", "TOKEN_SHA256", "EXPIRES"]]
        for t in teams {
            for tok in t.tokens {
                tokens.append([t.name, String(tok.sha256.prefix(12)) + "…", expiry(tok.expiresAt, now: now)])
            }
        }
        var out = table(limits) + "\n" + table(tokens)
        let hooks = teams.compactMap { t in t.webhook.map { [t.name, webhookShown($0.url)] } }
        if !hooks.isEmpty { out += "\n" + table([["TEAM", "WEBHOOK"]] + hooks) }
        return out
    }

    /// A webhook URL without what may be a credential (user info, query, fragment); the secret
    /// is never shown.
    public static func webhookShown(_ url: String) -> String {
        var u = Substring(url)
        if let q = u.firstIndex(where: { $0 == "?" || $0 == "#" }) { u = u[..<q] }
        if let scheme = u.range(of: "://") {
            let rest = u[scheme.upperBound...]
            let hostEnd = rest.firstIndex(of: "/") ?? rest.endIndex
            if let at = rest[..<hostEnd].lastIndex(of: "@") {
                u = u[..<scheme.upperBound] + rest[rest.index(after: at)...]
            }
        }
        return String(u)
    }

    /// `never`, or the time and how far it is (`in 29d`, `expired 2h ago`).
    public static func expiry(_ at: Int?, now: Int) -> String {
        guard let at else { return "never" }
        let when = LogClock.iso8601(unixSeconds: at)
        let d = at - now
        return d > 0 ? "\(when) (in \(span(d)))" : "\(when) (expired \(span(-d)) ago)"
    }

    static func span(_ s: Int) -> String {
        if s >= 86_400 { return "\(s / 86_400)d" }
        if s >= 3_600 { return "\(s / 3_600)h" }
        if s >= 60 { return "\(s / 60)m" }
        return "\(s)s"
    }

    static func table(_ rows: [[String]]) -> String {
        var widths = [Int](repeating: 0, count: rows.map(\.count).max() ?? 0)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        return rows.map { r in
            r.enumerated().map { i, c in i == r.count - 1 ? c : c + String(repeating: " ", count: widths[i] - c.count) }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }
}
