import Glibc
import Store

/// `veil usage`: the per-team table operators read (requests, errors, tokens, videos), from the
/// usage log in the store.
public enum UsageReport {
    /// `24h`, `7d`, `30m`, `90s`, `2w` → seconds; nil when not understood.
    public static func parseDuration(_ text: String) -> Int? {
        let t = text.trimmingASCIISpaces().lowercased()
        guard let unit = t.last, let n = Int(t.dropLast()), n >= 0 else { return nil }
        let seconds: Int
        switch unit {
        case "s": seconds = 1
        case "m": seconds = 60
        case "h": seconds = 3_600
        case "d": seconds = 86_400
        case "w": seconds = 604_800
        default: return nil
        }
        let (v, overflow) = n.multipliedReportingOverflow(by: seconds)
        return overflow ? nil : v
    }

    /// A fixed-width table, one row per team, then a total row when there are several teams.
    public static func render(_ rows: [UsageSummary], sinceLabel: String) -> String {
        let header = ["TEAM", "REQUESTS", "ERRORS", "PROMPT_TOKENS", "COMPLETION_TOKENS", "TOTAL_TOKENS", "VIDEOS"]
        var table: [[String]] = rows.map {
            [$0.team, String($0.requests), String($0.errors), String($0.promptTokens), String($0.completionTokens), String($0.totalTokens), String($0.videos)]
        }
        if rows.count > 1 {
            table.append(["(all)", String(rows.reduce(0) { $0 + $1.requests }), String(rows.reduce(0) { $0 + $1.errors }),
                          String(rows.reduce(0) { $0 + $1.promptTokens }), String(rows.reduce(0) { $0 + $1.completionTokens }),
                          String(rows.reduce(0) { $0 + $1.totalTokens }), String(rows.reduce(0) { $0 + $1.videos })])
        }
        var widths = header.map(\.count)
        for r in table { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ r: [String]) -> String {
            r.enumerated().map { i, c in
                let pad = String(repeating: " ", count: widths[i] - c.count)
                return i == 0 ? c + pad : pad + c
            }.joined(separator: "  ")
        }
        var out = "Usage since \(sinceLabel)\n" + line(header) + "\n"
        if table.isEmpty { out += "(no requests)\n" }
        for r in table { out += line(r) + "\n" }
        return out
    }

    /// Opens the store at `storePath`, reads the summary and closes it.
    public static func run(storePath: String, team: String?, sinceSeconds: Int, now: Int = Int(time(nil))) throws -> String {
        let store = try SQLiteStore(path: storePath, usageFlushIntervalMillis: 0)
        defer { store.close() }
        let rows = try store.usageSummary(team: team, since: now - sinceSeconds)
        return render(rows, sinceLabel: utcTime(now - sinceSeconds))
    }

    /// The same from PostgreSQL: every replica's usage, in one table.
    public static func run(postgres settings: PostgresSettings, team: String?, sinceSeconds: Int, now: Int = Int(time(nil))) throws -> String {
        var s = settings
        s.usageFlushIntervalMillis = 0          // reads only: no writer thread
        let store = try PostgresStore(settings: s)
        defer { store.close() }
        let rows = try store.usageSummary(team: team, since: now - sinceSeconds)
        return render(rows, sinceLabel: utcTime(now - sinceSeconds))
    }

    public static func utcTime(_ t: Int) -> String {
        var tt = time_t(t)
        var tmv = tm()
        gmtime_r(&tt, &tmv)
        var buf = [CChar](repeating: 0, count: 64)
        let n = strftime(&buf, buf.count, "%Y-%m-%d %H:%M:%S UTC", &tmv)
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
