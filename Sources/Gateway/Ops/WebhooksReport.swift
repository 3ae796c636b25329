import Glibc
import Store

/// `veil webhooks list` and `veil webhooks replay`: the outbox as operators read it, from the
/// store (SQLite or PostgreSQL; no upstream key needed, nothing is sent from the command line: a
/// replayed event goes with the running Veil's next claim).
public enum WebhooksReport {
    /// A fixed-width table, newest first.
    public static func render(_ rows: [WebhookDelivery]) -> String {
        let header = ["EVENT", "TEAM", "TYPE", "VIDEO", "STATUS", "ATTEMPTS", "CREATED", "LAST"]
        let table: [[String]] = rows.map { d in
            var last = d.lastStatus.map { "HTTP \($0)" } ?? ""
            if let e = d.lastError, d.status != .delivered { last = String(e.prefix(80)) }
            if d.status == .delivered, let at = d.deliveredAt { last = "delivered \(UsageReport.utcTime(at))" + (last.isEmpty ? "" : " (\(last))") }
            return [d.id, d.team, d.type, d.videoID, d.status.rawValue, String(d.attempts), UsageReport.utcTime(d.createdAt), last]
        }
        var widths = header.map(\.count)
        for r in table { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ r: [String]) -> String {
            r.enumerated().map { i, c in
                i == r.count - 1 ? c : c + String(repeating: " ", count: widths[i] - c.count)
            }.joined(separator: "  ")
        }
        var out = line(header) + "\n"
        if table.isEmpty { out += "(no webhook events)\n" }
        for r in table { out += line(r) + "\n" }
        return out
    }

    /// Opens the store, runs `body`, closes it.
    public static func withStore<T>(_ settings: GatewayConfig.StoreSettings, _ body: (any StoreBackend) throws -> T) throws -> T {
        if let url = settings.url {
            var s = VeilRuntime.postgresSettings(settings, url: url)
            s.usageFlushIntervalMillis = 0
            let store = try PostgresStore(settings: s)
            defer { store.close() }
            return try body(store)
        }
        let store = try SQLiteStore(path: settings.path, usageFlushIntervalMillis: 0)
        defer { store.close() }
        return try body(store)
    }

    public static func list(_ settings: GatewayConfig.StoreSettings, status: WebhookDeliveryStatus?, limit: Int) throws -> String {
        try withStore(settings) { db in render(try db.webhookDeliveries(status: status, limit: limit)) }
    }

    /// Pending again and due now, or why not (unknown, or an attempt in flight).
    public static func replay(_ settings: GatewayConfig.StoreSettings, id: String, now: Int = Int(time(nil))) throws -> WebhookReplay {
        try withStore(settings) { db in try db.replayWebhookDelivery(id: id, now: now) }
    }
}
