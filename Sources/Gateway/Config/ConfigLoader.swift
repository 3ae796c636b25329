import Store
import Translation

/// A configuration problem, naming the key and what is wrong with it.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public let key: String
    public let problem: String
    public init(_ key: String, _ problem: String) { self.key = key; self.problem = problem }
    public var description: String { key.isEmpty ? problem : "config key `\(key)`: \(problem)" }
}

/// Reads `veil.yaml` into a checked `GatewayConfig`: `${VAR}` interpolated from the environment,
/// unknown keys refused (a typo must not become a silent default), then the environment
/// overrides (`VEIL_LISTEN`, `VEIL_UPSTREAM_URL`, `VEIL_UPSTREAM_KEY`, `VEIL_STORE_URL`).
public enum ConfigLoader {
    /// `requireUpstreamKey: false` (commands that never call the upstream: `veil usage`,
    /// `veil teams`) leaves `upstream.api_key` unread and unchecked.
    public static func load(yaml text: String, environment: [String: String], requireUpstreamKey: Bool = true) throws(ConfigError) -> GatewayConfig {
        let root: Any?
        do { root = try YAMLTree.load(text) } catch { throw ConfigError("", "not valid YAML: \(error)") }
        let doc: [String: Any]
        if root == nil || root is YAMLTree.Null { doc = [:] } else if let d = root as? [String: Any] { doc = d } else {
            throw ConfigError("", "the top level must be a mapping")
        }
        // Every unset variable at once, before any value is read (one run, one list).
        try ConfigEnvironment.requireSet(doc, environment, skipping: requireUpstreamKey ? [] : ["upstream.api_key"])
        let r = Reader(environment: environment)
        var c = GatewayConfig()
        let top = try r.mapping(doc, "", allowed: ["listen", "workers", "upstream", "limits", "store", "videos", "characters",
                                                   "teams", "log", "cors", "metrics", "shutdown_grace_ms", "trusted_proxies",
                                                   "webhooks"])
        c.listen = try r.string(top, "listen") ?? c.listen
        c.workers = try r.int(top, "workers", min: 0, max: 256) ?? c.workers
        c.shutdownGraceMillis = try r.int(top, "shutdown_grace_ms", min: 0, max: 3_600_000) ?? c.shutdownGraceMillis

        if let u = try r.section(top, "upstream", allowed: ["base_url", "api_key", "connect_timeout_ms", "request_timeout_ms",
                                                             "stall_timeout_ms", "max_response_bytes", "key_in_size_field", "model_suffixes",
                                                             "passthrough", "ca_file", "tls_verify", "http2", "max_idle_connections"]) {
            c.upstream.baseURL = try r.string(u, "upstream.base_url") ?? c.upstream.baseURL
            if requireUpstreamKey { c.upstream.apiKey = try r.string(u, "upstream.api_key") ?? c.upstream.apiKey }
            c.upstream.connectTimeoutMillis = try r.int(u, "upstream.connect_timeout_ms", min: 1, max: 600_000) ?? c.upstream.connectTimeoutMillis
            c.upstream.requestTimeoutMillis = try r.int(u, "upstream.request_timeout_ms", min: 1, max: 86_400_000) ?? c.upstream.requestTimeoutMillis
            c.upstream.stallTimeoutMillis = try r.int(u, "upstream.stall_timeout_ms", min: 0, max: 86_400_000) ?? c.upstream.stallTimeoutMillis
            c.upstream.maxResponseBytes = try r.int(u, "upstream.max_response_bytes", min: 1024, max: 1 << 34) ?? c.upstream.maxResponseBytes
            c.upstream.keyInSizeField = try r.bool(u, "upstream.key_in_size_field") ?? c.upstream.keyInSizeField
            c.upstream.modelSuffixes = try r.strings(u, "upstream.model_suffixes") ?? c.upstream.modelSuffixes
            if c.upstream.modelSuffixes.contains(where: { $0.isEmpty || $0.utf8.count > 64 }) {
                throw ConfigError("upstream.model_suffixes", "suffixes must be 1 to 64 characters")
            }
            c.upstream.passthrough = try r.strings(u, "upstream.passthrough") ?? c.upstream.passthrough
            c.upstream.caFile = try r.string(u, "upstream.ca_file") ?? c.upstream.caFile
            c.upstream.tlsVerify = try r.bool(u, "upstream.tls_verify") ?? c.upstream.tlsVerify
            c.upstream.http2 = try r.string(u, "upstream.http2") ?? c.upstream.http2
            guard ["auto", "off"].contains(c.upstream.http2) else { throw ConfigError("upstream.http2", "must be `auto` or `off`") }
            c.upstream.maxIdleConnections = try r.int(u, "upstream.max_idle_connections", min: 0, max: 100_000) ?? c.upstream.maxIdleConnections
            for p in c.upstream.passthrough where !Passthrough.supported.contains(p) {
                throw ConfigError("upstream.passthrough", "`\(p)` is not an endpoint Veil can pass through (one of \(Passthrough.supported.joined(separator: ", ")))")
            }
        }
        if let l = try r.section(top, "limits", allowed: ["request_line_bytes", "header_bytes", "header_count", "body_bytes",
                                                           "header_timeout_ms", "body_timeout_ms", "idle_timeout_ms",
                                                           "max_connections", "write_high_water_bytes", "send_timeout_ms",
                                                           "lingering_time_ms", "lingering_timeout_ms", "lingering_bytes"]) {
            c.limits.requestLineBytes = try r.int(l, "limits.request_line_bytes", min: 64, max: 1 << 20) ?? c.limits.requestLineBytes
            c.limits.headerBytes = try r.int(l, "limits.header_bytes", min: 256, max: 1 << 22) ?? c.limits.headerBytes
            c.limits.headerCount = try r.int(l, "limits.header_count", min: 4, max: 10_000) ?? c.limits.headerCount
            c.limits.bodyBytes = try r.int(l, "limits.body_bytes", min: 0, max: 1 << 31) ?? c.limits.bodyBytes
            c.limits.headerTimeoutMillis = try r.int(l, "limits.header_timeout_ms", min: 10, max: 3_600_000) ?? c.limits.headerTimeoutMillis
            c.limits.bodyTimeoutMillis = try r.int(l, "limits.body_timeout_ms", min: 10, max: 3_600_000) ?? c.limits.bodyTimeoutMillis
            c.limits.idleTimeoutMillis = try r.int(l, "limits.idle_timeout_ms", min: 10, max: 86_400_000) ?? c.limits.idleTimeoutMillis
            c.limits.maxConnections = try r.int(l, "limits.max_connections", min: 1, max: 10_000_000) ?? c.limits.maxConnections
            c.limits.writeHighWaterBytes = try r.int(l, "limits.write_high_water_bytes", min: 4096, max: 1 << 30) ?? c.limits.writeHighWaterBytes
            c.limits.sendTimeoutMillis = try r.int(l, "limits.send_timeout_ms", min: 10, max: 3_600_000) ?? c.limits.sendTimeoutMillis
            c.limits.lingeringTimeMillis = try r.int(l, "limits.lingering_time_ms", min: 0, max: 3_600_000) ?? c.limits.lingeringTimeMillis
            c.limits.lingeringTimeoutMillis = try r.int(l, "limits.lingering_timeout_ms", min: 0, max: 3_600_000) ?? c.limits.lingeringTimeoutMillis
            c.limits.lingeringBytes = try r.int(l, "limits.lingering_bytes", min: 0, max: 1 << 40) ?? c.limits.lingeringBytes
        }
        if let s = try r.section(top, "store", allowed: ["path", "url", "pool_size", "connect_timeout_ms", "statement_timeout_ms",
                                                          "timeout_ms", "heartbeat_ms", "usage_buffer_records"]) {
            let path = try r.string(s, "store.path")
            c.store.url = try r.string(s, "store.url")
            if path != nil && c.store.url != nil {
                throw ConfigError("store.url", "set either store.url (PostgreSQL, shared by replicas) or store.path (SQLite, one box), not both")
            }
            c.store.path = path ?? c.store.path
            if c.store.path.isEmpty { throw ConfigError("store.path", "must not be empty") }
            c.store.poolSize = try r.int(s, "store.pool_size", min: 1, max: 64) ?? c.store.poolSize
            c.store.connectTimeoutMillis = try r.int(s, "store.connect_timeout_ms", min: 100, max: 60_000) ?? c.store.connectTimeoutMillis
            c.store.statementTimeoutMillis = try r.int(s, "store.statement_timeout_ms", min: 0, max: 3_600_000) ?? c.store.statementTimeoutMillis
            c.store.timeoutMillis = try r.int(s, "store.timeout_ms", min: 50, max: 600_000) ?? c.store.timeoutMillis
            c.store.heartbeatMillis = try r.int(s, "store.heartbeat_ms", min: 100, max: 60_000) ?? c.store.heartbeatMillis
            c.store.usageBufferRecords = try r.int(s, "store.usage_buffer_records", min: 1_000, max: 10_000_000) ?? c.store.usageBufferRecords
        }
        if let v = try r.section(top, "videos", allowed: ["models", "sizes", "seconds", "default_model", "default_size", "default_seconds",
                                                           "max_prompt_chars", "max_image_bytes", "poll_cache_ms", "poll_after_ms", "image_fetch",
                                                           "in_flight_max_age_s", "watch", "watch_max_s", "watch_max_interval_ms",
                                                           "watch_max_videos", "watch_rescan_ms", "events_heartbeat_ms"]) {
            c.videos.models = try r.strings(v, "videos.models") ?? c.videos.models
            c.videos.sizes = try r.strings(v, "videos.sizes") ?? c.videos.sizes
            c.videos.seconds = try r.strings(v, "videos.seconds") ?? c.videos.seconds
            c.videos.defaultModel = try r.string(v, "videos.default_model") ?? c.videos.defaultModel
            c.videos.defaultSize = try r.string(v, "videos.default_size") ?? c.videos.defaultSize
            c.videos.defaultSeconds = try r.string(v, "videos.default_seconds") ?? c.videos.defaultSeconds
            c.videos.maxPromptChars = try r.int(v, "videos.max_prompt_chars", min: 1, max: 1_000_000) ?? c.videos.maxPromptChars
            c.videos.maxImageBytes = try r.int(v, "videos.max_image_bytes", min: 1024, max: 1 << 30) ?? c.videos.maxImageBytes
            c.videos.pollCacheMillis = try r.int(v, "videos.poll_cache_ms", min: 0, max: 600_000) ?? c.videos.pollCacheMillis
            c.videos.pollAfterMillis = try r.int(v, "videos.poll_after_ms", min: 0, max: 600_000) ?? c.videos.pollAfterMillis
            c.videos.inFlightMaxAgeSeconds = try r.int(v, "videos.in_flight_max_age_s", min: 60, max: 7 * 86_400) ?? c.videos.inFlightMaxAgeSeconds
            c.videos.watch = try r.bool(v, "videos.watch") ?? c.videos.watch
            c.videos.watchMaxSeconds = try r.int(v, "videos.watch_max_s", min: 60, max: 7 * 86_400) ?? c.videos.watchMaxSeconds
            c.videos.watchMaxIntervalMillis = try r.int(v, "videos.watch_max_interval_ms", min: 100, max: 3_600_000) ?? c.videos.watchMaxIntervalMillis
            c.videos.watchMaxVideos = try r.int(v, "videos.watch_max_videos", min: 1, max: 10_000_000) ?? c.videos.watchMaxVideos
            c.videos.watchRescanMillis = try r.int(v, "videos.watch_rescan_ms", min: 100, max: 86_400_000) ?? c.videos.watchRescanMillis
            c.videos.eventsHeartbeatMillis = try r.int(v, "videos.events_heartbeat_ms", min: 100, max: 600_000) ?? c.videos.eventsHeartbeatMillis
            if let f = try r.section(v, "image_fetch", allowed: ["allow_http", "allow_private", "timeout_ms"], prefix: "videos.") {
                c.videos.imageFetch.allowHTTP = try r.bool(f, "videos.image_fetch.allow_http") ?? false
                c.videos.imageFetch.allowPrivate = try r.strings(f, "videos.image_fetch.allow_private") ?? []
                c.videos.imageFetch.timeoutMillis = try r.int(f, "videos.image_fetch.timeout_ms", min: 100, max: 600_000) ?? c.videos.imageFetch.timeoutMillis
            }
            for (key, value, list) in [("videos.default_model", c.videos.defaultModel, c.videos.models),
                                       ("videos.default_size", c.videos.defaultSize, c.videos.sizes),
                                       ("videos.default_seconds", c.videos.defaultSeconds, c.videos.seconds)] where !list.contains(value) {
                throw ConfigError(key, "`\(value)` is not among the allowed values \(list)")
            }
        }
        if let ch = try r.section(top, "characters", allowed: ["time_zone"]) {
            c.characters.timeZone = try r.string(ch, "characters.time_zone") ?? c.characters.timeZone
            guard timeZoneOffsetSeconds(identifier: c.characters.timeZone) != nil else {
                throw ConfigError("characters.time_zone", "`\(c.characters.timeZone)` is not a zone Veil can read: use a fixed-offset zone such as Asia/Shanghai or UTC, or ±HH:MM")
            }
        }
        if let lg = try r.section(top, "log", allowed: ["level", "prompts", "access", "format", "buffer_bytes", "flush_ms"]) {
            c.log.bufferBytes = try r.int(lg, "log.buffer_bytes", min: 0, max: 16 << 20) ?? c.log.bufferBytes
            c.log.flushMillis = try r.int(lg, "log.flush_ms", min: 1, max: 60_000) ?? c.log.flushMillis
            c.log.level = try r.string(lg, "log.level") ?? c.log.level
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(c.log.level) else {
                throw ConfigError("log.level", "must be one of trace, debug, info, notice, warning, error, critical")
            }
            c.log.prompts = try r.bool(lg, "log.prompts") ?? c.log.prompts
            c.log.access = try r.bool(lg, "log.access") ?? c.log.access
            if let f = try r.string(lg, "log.format") {
                guard let format = LogFormat(rawValue: f) else { throw ConfigError("log.format", "must be text or json (or absent: text on a terminal, else json)") }
                c.log.format = format
            }
        }
        if let co = try r.section(top, "cors", allowed: ["allowed_origins", "max_age_seconds", "allow_query_token"]) {
            c.cors.allowedOrigins = try r.strings(co, "cors.allowed_origins") ?? []
            c.cors.maxAgeSeconds = try r.int(co, "cors.max_age_seconds", min: 0, max: 86_400) ?? c.cors.maxAgeSeconds
            c.cors.allowQueryToken = try r.bool(co, "cors.allow_query_token") ?? c.cors.allowQueryToken
            for o in c.cors.allowedOrigins where o != "*" && !(o.hasPrefix("http://") || o.hasPrefix("https://")) {
                throw ConfigError("cors.allowed_origins", "`\(o)` is not an origin (scheme://host[:port]) nor `*`")
            }
        }
        if let m = try r.section(top, "metrics", allowed: ["enabled", "token_sha256"]) {
            c.metrics.enabled = try r.bool(m, "metrics.enabled") ?? c.metrics.enabled
            if let t = try r.string(m, "metrics.token_sha256") { c.metrics.tokenSHA256 = try r.digest(t, "metrics.token_sha256") }
        }
        if let w = try r.section(top, "webhooks", allowed: ["allow_http", "allow_private", "timeout_ms", "retry_for_s", "backoff_initial_ms",
                                                             "backoff_max_ms", "max_concurrent_per_endpoint", "poll_ms", "keep_delivered_s"]) {
            c.webhooks.allowHTTP = try r.bool(w, "webhooks.allow_http") ?? c.webhooks.allowHTTP
            c.webhooks.allowPrivate = try r.strings(w, "webhooks.allow_private") ?? c.webhooks.allowPrivate
            c.webhooks.timeoutMillis = try r.int(w, "webhooks.timeout_ms", min: 100, max: 600_000) ?? c.webhooks.timeoutMillis
            c.webhooks.retryForSeconds = try r.int(w, "webhooks.retry_for_s", min: 0, max: 30 * 86_400) ?? c.webhooks.retryForSeconds
            c.webhooks.backoffInitialMillis = try r.int(w, "webhooks.backoff_initial_ms", min: 10, max: 86_400_000) ?? c.webhooks.backoffInitialMillis
            c.webhooks.backoffMaxMillis = try r.int(w, "webhooks.backoff_max_ms", min: 10, max: 86_400_000) ?? c.webhooks.backoffMaxMillis
            c.webhooks.maxConcurrentPerEndpoint = try r.int(w, "webhooks.max_concurrent_per_endpoint", min: 1, max: 1_000) ?? c.webhooks.maxConcurrentPerEndpoint
            c.webhooks.pollMillis = try r.int(w, "webhooks.poll_ms", min: 10, max: 600_000) ?? c.webhooks.pollMillis
            c.webhooks.keepDeliveredSeconds = try r.int(w, "webhooks.keep_delivered_s", min: 0, max: 366 * 86_400) ?? c.webhooks.keepDeliveredSeconds
            if c.webhooks.backoffMaxMillis < c.webhooks.backoffInitialMillis {
                throw ConfigError("webhooks.backoff_max_ms", "must not be below webhooks.backoff_initial_ms (\(c.webhooks.backoffInitialMillis))")
            }
        }
        c.teams = try r.teams(top["teams"])
        c.trustedProxies = try r.strings(top, "trusted_proxies") ?? []
        for (i, p) in c.trustedProxies.enumerated() where CIDR(p) == nil {
            throw ConfigError("trusted_proxies[\(i)]", "`\(p)` is not an IP address or CIDR (e.g. 10.0.0.0/8, fd00::/8)")
        }

        // Environment overrides, applied last.
        if let v = environment["VEIL_LISTEN"], !v.isEmpty { c.listen = v }
        if let v = environment["VEIL_UPSTREAM_URL"], !v.isEmpty { c.upstream.baseURL = v }
        if requireUpstreamKey, let v = environment["VEIL_UPSTREAM_KEY"], !v.isEmpty { c.upstream.apiKey = v }
        // An override chooses the backend: with it, the file's store.path is not used.
        if let v = environment["VEIL_STORE_URL"], !v.isEmpty { c.store.url = v }
        try validate(c, requireUpstreamKey: requireUpstreamKey)
        // A host name is resolved here, once: the listeners bind the address it names now.
        c.listen = try ListenAddress.resolve(c.listen)
        return c
    }

    /// Checks that hold whichever way a value arrived (file, interpolation or override).
    public static func validate(_ c: GatewayConfig, requireUpstreamKey: Bool = true) throws(ConfigError) {
        guard parseListen(c.listen) != nil else { throw ConfigError("listen", "`\(c.listen)` is not host:port") }
        let u = c.upstream.baseURL
        let rest = u.hasPrefix("https://") ? u.dropFirst(8) : (u.hasPrefix("http://") ? u.dropFirst(7) : nil)
        guard let rest, let host = rest.split(separator: "/", omittingEmptySubsequences: false).first, !host.isEmpty else {
            throw ConfigError("upstream.base_url", "must be http:// or https:// followed by a host")
        }
        guard !rest.contains("?"), !rest.contains("#"), !rest.contains("@") else {
            throw ConfigError("upstream.base_url", "must not carry credentials, a query or a fragment")
        }
        if let url = c.store.url {
            guard StoreURL.isPostgres(url) else {
                throw ConfigError("store.url", "must be a PostgreSQL URI: postgres://user@host:5432/database (libpq's key=value form is not accepted)")
            }
        }
        if c.store.statementTimeoutMillis > c.store.timeoutMillis {
            throw ConfigError("store.statement_timeout_ms", "must not exceed store.timeout_ms (\(c.store.timeoutMillis)): the server would keep running statements Veil gave up on")
        }
        if requireUpstreamKey && c.upstream.apiKey.isEmpty { throw ConfigError("upstream.api_key", "is empty (set VEIL_UPSTREAM_KEY or upstream.api_key)") }
        if requireUpstreamKey && c.upstream.apiKey.utf8.contains(where: { $0 < 0x21 || $0 > 0x7E }) {
            throw ConfigError("upstream.api_key", "contains spaces or control characters")
        }
        var names = Set<String>()
        var digests = Set<String>()
        for (i, t) in c.teams.enumerated() {
            if let w = t.webhook, let problem = WebhookEndpoint.urlProblem(w.url, allowHTTP: c.webhooks.allowHTTP) {
                throw ConfigError("teams[\(i)].webhook.url", problem)
            }
            if !names.insert(t.name).inserted { throw ConfigError("teams[\(i)].name", "`\(t.name)` appears twice") }
            for tok in t.tokens where !digests.insert(tok.sha256).inserted {
                throw ConfigError("teams[\(i)].tokens_sha256", "a token digest is used twice")
            }
        }
    }

    /// `host:port` → (host, port); `:8080` binds every address.
    public static func parseListen(_ s: String) -> (host: String, port: UInt16)? {
        guard let colon = s.lastIndex(of: ":") else { return nil }
        var host = String(s[..<colon])
        guard let port = UInt16(s[s.index(after: colon)...]) else { return nil }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        return (host, port)
    }
}

/// Typed access to the parsed YAML tree; every error names the full key.
private struct Reader {
    let environment: [String: String]

    func mapping(_ any: Any, _ key: String, allowed: Set<String>) throws(ConfigError) -> [String: Any] {
        guard let m = any as? [String: Any] else { throw ConfigError(key, "must be a mapping") }
        for k in m.keys where !allowed.contains(k) {
            throw ConfigError(key.isEmpty ? k : "\(key).\(k)", "unknown key (allowed: \(allowed.sorted().joined(separator: ", ")))")
        }
        return m
    }

    func section(_ parent: [String: Any], _ name: String, allowed: Set<String>, prefix: String = "") throws(ConfigError) -> [String: Any]? {
        guard let v = parent[name], !(v is YAMLTree.Null) else { return nil }
        return try mapping(v, prefix + name, allowed: allowed)
    }

    func interpolate(_ s: String, _ key: String) throws(ConfigError) -> String {
        guard s.contains("${") else { return s }
        var out = ""
        var rest = Substring(s)
        while let start = rest.range(of: "${") {
            out += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else { throw ConfigError(key, "unterminated ${ in `\(s)`") }
            let name = String(rest[start.upperBound..<end])
            guard !name.isEmpty, name.allSatisfy({ $0 == "_" || $0.isLetter || $0.isNumber }) else {
                throw ConfigError(key, "bad variable name `${\(name)}`")
            }
            guard let value = environment[name] else { throw ConfigError(key, "environment variable \(name) is not set") }
            out += value
            rest = rest[rest.index(after: end)...]
        }
        return out + rest
    }

    func string(_ m: [String: Any], _ key: String) throws(ConfigError) -> String? {
        guard let v = m[leaf(key)] else { return nil }
        if v is YAMLTree.Null { return nil }
        if let s = v as? String { return try interpolate(s, key) }
        if let i = v as? Int { return String(i) }
        if let d = v as? Double { return String(d) }
        throw ConfigError(key, "must be a string")
    }

    func int(_ m: [String: Any], _ key: String, min: Int, max: Int) throws(ConfigError) -> Int? {
        guard let v = m[leaf(key)] else { return nil }
        let value: Int
        if let i = v as? Int { value = i }
        else if let s = v as? String, let i = Int(try interpolate(s, key)) { value = i }
        else { throw ConfigError(key, "must be an integer") }
        guard value >= min && value <= max else { throw ConfigError(key, "must be between \(min) and \(max), got \(value)") }
        return value
    }

    func bool(_ m: [String: Any], _ key: String) throws(ConfigError) -> Bool? {
        guard let v = m[leaf(key)] else { return nil }
        if let b = v as? Bool { return b }
        if let s = v as? String {
            switch try interpolate(s, key).lowercased() {
            case "true", "yes", "on", "1": return true
            case "false", "no", "off", "0": return false
            default: break
            }
        }
        throw ConfigError(key, "must be true or false")
    }

    func strings(_ m: [String: Any], _ key: String) throws(ConfigError) -> [String]? {
        guard let v = m[leaf(key)] else { return nil }
        guard let list = v as? [Any] else { throw ConfigError(key, "must be a list of strings") }
        var out: [String] = []
        for (i, item) in list.enumerated() {
            if let s = item as? String { out.append(try interpolate(s, "\(key)[\(i)]")) }
            else if let n = item as? Int { out.append(String(n)) }
            else { throw ConfigError("\(key)[\(i)]", "must be a string") }
        }
        return out
    }

    func digest(_ s: String, _ key: String) throws(ConfigError) -> String {
        let d = s.lowercased()
        guard d.utf8.count == 64, d.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else {
            throw ConfigError(key, "must be 64 hex characters (a SHA-256 digest; `veil hash-token TOKEN` prints it)")
        }
        return d
    }

    func teams(_ any: Any?) throws(ConfigError) -> [GatewayConfig.Team] {
        guard let any, !(any is YAMLTree.Null) else { return [] }
        guard let list = any as? [Any] else { throw ConfigError("teams", "must be a list") }
        var out: [GatewayConfig.Team] = []
        for (i, item) in list.enumerated() {
            let key = "teams[\(i)]"
            let m = try mapping(item, key, allowed: ["name", "tokens_sha256", "tokens", "models", "requests_per_minute",
                                                     "max_concurrent_streams", "max_videos_in_flight", "videos_per_day", "webhook"])
            guard let name = try string(m, "\(key).name"), !name.isEmpty else { throw ConfigError("\(key).name", "is required") }
            guard name.utf8.count <= 64, name.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 || $0 == 46 }) else {
                throw ConfigError("\(key).name", "use letters, digits, `-`, `_`, `.` (at most 64)")
            }
            var tokens: [GatewayConfig.TeamToken] = []
            for (j, d) in (try strings(m, "\(key).tokens_sha256") ?? []).enumerated() {
                tokens.append(.init(sha256: try digest(d, "\(key).tokens_sha256[\(j)]"), expiresAt: nil))
            }
            if let tl = m["tokens"] {
                guard let arr = tl as? [Any] else { throw ConfigError("\(key).tokens", "must be a list of {sha256, expires_at}") }
                for (j, t) in arr.enumerated() {
                    let tk = "\(key).tokens[\(j)]"
                    let tm = try mapping(t, tk, allowed: ["sha256", "expires_at"])
                    guard let d = try string(tm, "\(tk).sha256") else { throw ConfigError("\(tk).sha256", "is required") }
                    let exp = try int(tm, "\(tk).expires_at", min: 0, max: Int(Int32.max) * 4)
                    tokens.append(.init(sha256: try digest(d, "\(tk).sha256"), expiresAt: exp))
                }
            }
            if tokens.isEmpty { throw ConfigError("\(key).tokens_sha256", "team `\(name)` has no token") }
            var webhook: GatewayConfig.TeamWebhook?
            if let wv = m["webhook"], !(wv is YAMLTree.Null) {
                let wk = "\(key).webhook"
                let wm = try mapping(wv, wk, allowed: ["url", "secret"])
                guard let url = try string(wm, "\(wk).url"), !url.isEmpty else { throw ConfigError("\(wk).url", "is required") }
                guard let secret = try string(wm, "\(wk).secret"), !secret.isEmpty else { throw ConfigError("\(wk).secret", "is required") }
                guard let k = WebhookSecret.key(secret) else {
                    throw ConfigError("\(wk).secret", "must be `whsec_` followed by the base64 of \(WebhookSecret.minKeyBytes) to \(WebhookSecret.maxKeyBytes) random bytes (as OpenAI and Standard Webhooks shape it)")
                }
                webhook = GatewayConfig.TeamWebhook(url: url, key: k)
            }
            out.append(GatewayConfig.Team(
                name: name, tokens: tokens,
                models: try strings(m, "\(key).models"),
                requestsPerMinute: try int(m, "\(key).requests_per_minute", min: 1, max: 10_000_000),
                maxConcurrentStreams: try int(m, "\(key).max_concurrent_streams", min: 1, max: 10_000_000),
                maxVideosInFlight: try int(m, "\(key).max_videos_in_flight", min: 1, max: 10_000_000),
                videosPerDay: try int(m, "\(key).videos_per_day", min: 0, max: 10_000_000),
                webhook: webhook))
        }
        return out
    }

    private func leaf(_ key: String) -> String {
        if let dot = key.lastIndex(of: ".") { return String(key[key.index(after: dot)...]) }
        return key
    }
}

