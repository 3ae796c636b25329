/// Bounded names for routes, used as metric labels and as the usage log's `endpoint`:
/// ids become `{id}`, anything unknown becomes `other`, so a caller can't mint label values.
public enum RouteTemplate {
    static let resources: Set<String> = ["models", "videos", "characters"]
    static let subresources: Set<String> = ["content", "remix"]
    static let fixed: Set<String> = ["/healthz", "/readyz", "/metrics", "/v1/chat/completions", "/v1/models", "/v1/videos", "/v1/characters"]

    /// `/v1/videos/video_123/content` → `/v1/videos/{id}/content`.
    public static func route(_ path: Substring) -> String {
        let p = String(path)
        if fixed.contains(p) { return p }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        // "", "v1", resource, id[, sub]
        guard parts.count == 4 || parts.count == 5, parts[0].isEmpty, parts[1] == "v1",
              resources.contains(String(parts[2])), !parts[3].isEmpty else { return "other" }
        if parts.count == 4 { return "/v1/\(parts[2])/{id}" }
        guard subresources.contains(String(parts[4])) else { return "other" }
        return "/v1/\(parts[2])/{id}/\(parts[4])"
    }

    static let methods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    /// Known methods as they are, anything else `OTHER`.
    public static func method(_ m: String) -> String { methods.contains(m) ? m : "OTHER" }

    /// The usage log's endpoint: `POST /v1/videos`, `GET /v1/videos/{id}`.
    public static func endpoint(method: String, path: Substring) -> String {
        "\(self.method(method)) \(route(path))"
    }
}
