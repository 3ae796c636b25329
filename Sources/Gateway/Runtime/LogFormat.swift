import Glibc
import Logging
import Synchronization
import Translation

/// The operations log's format (`log.format`).
public enum LogFormat: String, Sendable {
    /// `2025-11-06T08:27:24.123Z info veil listening listen=0.0.0.0:8080 port=8080`: for people.
    case text
    /// `{"ts":"2025-11-06T08:27:24.123Z","level":"info","msg":"veil listening","listen":"…"}`: for collectors.
    case json

    /// The configured format, or (none configured) text when stderr is a terminal, else JSON.
    public static func resolve(_ configured: LogFormat?, stderrIsTerminal: Bool) -> LogFormat {
        configured ?? (stderrIsTerminal ? .text : .json)
    }

    /// `resolve` for this process's stderr.
    public static func resolveForStderr(_ configured: LogFormat?) -> LogFormat {
        resolve(configured, stderrIsTerminal: isatty(2) == 1)
    }
}

/// Wall-clock times as the logs print them.
public enum LogClock {
    public static func nowMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec / 1_000_000)
    }

    /// ISO 8601 in UTC to the second: `2025-11-06T08:27:24Z`.
    public static func iso8601(unixSeconds: Int) -> String {
        String(iso8601(unixMillis: Int64(unixSeconds) * 1000).dropLast(5)) + "Z"
    }

    /// ISO 8601 in UTC with milliseconds: `2025-11-06T08:27:24.123Z`. Pure (civil-from-days, no
    /// libc time zone state); years 0000-9999.
    public static func iso8601(unixMillis: Int64) -> String {
        let ms = Int(((unixMillis % 1000) + 1000) % 1000)
        let secs = (unixMillis - Int64(ms)) / 1000
        var days = Int(secs >= 0 ? secs / 86_400 : (secs - 86_399) / 86_400)
        let rem = Int(secs - Int64(days) * 86_400)
        // Howard Hinnant's civil_from_days.
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let doe = days - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        var out = ""
        out.reserveCapacity(24)
        func pad(_ v: Int, _ w: Int) {
            let s = String(v)
            if s.count < w { out += String(repeating: "0", count: w - s.count) }
            out += s
        }
        pad(y, 4); out += "-"; pad(m, 2); out += "-"; pad(d, 2); out += "T"
        pad(rem / 3600, 2); out += ":"; pad(rem / 60 % 60, 2); out += ":"; pad(rem % 60, 2); out += "."
        pad(ms, 3); out += "Z"
        return out
    }
}

/// One operations-log line in either format. Pure: the handler below supplies time and output.
public enum LogLine {
    /// Metadata keys sorted; values rendered as text. Text format: `key=value`, the value quoted
    /// (JSON string rules) when it is empty or holds a space, `"`, `=` or a control character,
    /// so one line stays one line and splits unambiguously.
    public static func render(_ format: LogFormat, unixMillis: Int64, level: Logger.Level, message: String,
                              metadata: [(String, String)]) -> String {
        let fields = metadata.sorted { $0.0 < $1.0 }
        switch format {
        case .json:
            var w = JSONObjectWriter(reserving: 96 + message.utf8.count)
            w.string("ts", LogClock.iso8601(unixMillis: unixMillis))
            w.string("level", level.rawValue)
            w.string("msg", message)
            for (k, v) in fields where !["ts", "level", "msg"].contains(k) { w.string(k, v) }
            return String(decoding: w.finish(), as: UTF8.self)
        case .text:
            var out = LogClock.iso8601(unixMillis: unixMillis) + " " + level.rawValue + " " + oneLine(message)
            for (k, v) in fields { out += " " + k + "=" + textValue(v) }
            return out
        }
    }

    static func textValue(_ v: String) -> String {
        let plain = !v.isEmpty && v.utf8.allSatisfy { $0 > 0x20 && $0 != 0x22 && $0 != 0x3D && $0 != 0x7F }
        return plain ? v : String(decoding: JSONEscaping.quoted(v), as: UTF8.self)
    }

    /// A message on one line (newlines and other controls escaped).
    static func oneLine(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else { return s }
        let q = String(decoding: JSONEscaping.quoted(s), as: UTF8.self)
        return String(q.dropFirst().dropLast())
    }

    /// swift-log metadata flattened to text values (nested values in swift-log's own rendering).
    public static func flatten(_ metadata: Logger.Metadata) -> [(String, String)] {
        metadata.map { ($0.key, $0.value.description) }
    }
}

/// Veil's swift-log handler: one line per event on stderr, in the process-wide format (set once
/// the configuration is read: `select`; until then text on a terminal, else JSON). Lines are
/// written with one `write(2)` each, so lines from several threads never interleave.
public struct VeilLogHandler: LogHandler {
    private static let format = Atomic<UInt8>(LogFormat.resolveForStderr(nil) == .json ? 1 : 0)

    public static func select(_ f: LogFormat) { format.store(f == .json ? 1 : 0, ordering: .relaxed) }
    public static var selected: LogFormat { format.load(ordering: .relaxed) == 1 ? .json : .text }

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let sink: @Sendable (String) -> Void

    /// `sink` receives each line without its newline (tests); default: stderr.
    public init(label: String, sink: (@Sendable (String) -> Void)? = nil) {
        self.label = label
        self.sink = sink ?? { line in VeilLogHandler.writeStderr(line) }
    }

    /// For `LoggingSystem.bootstrap(VeilLogHandler.make)`.
    public static func make(label: String) -> any LogHandler { VeilLogHandler(label: label) }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let p = metadataProvider { all.merge(p.get()) { $1 } }
        if let m = event.metadata { all.merge(m) { $1 } }
        sink(LogLine.render(VeilLogHandler.selected, unixMillis: LogClock.nowMillis(), level: event.level,
                            message: event.message.description, metadata: LogLine.flatten(all)))
    }

    static func writeStderr(_ line: String) {
        var bytes = Array(line.utf8)
        bytes.append(10)
        bytes.withUnsafeBytes { p in
            var off = 0
            while off < p.count {
                let n = Glibc.write(2, p.baseAddress! + off, p.count - off)
                if n <= 0 { break }
                off += n
            }
        }
    }
}

/// The one start-up line (`veil started`): what runs, where, against what. Nothing secret: the
/// upstream appears as its origin only (scheme, host, port; never a path, query or the key).
public enum StartupLine {
    public static let message = "veil listening"

    public static func metadata(version: String, configPath: String?, listen: String, port: UInt16, loops: Int,
                                upstreamBaseURL: String, storePath: String, teams: Int, sandbox: Bool) -> Logger.Metadata {
        [
            "version": .string(version),
            "config": .string(configPath ?? "(built in)"),
            "listen": .string(listen),
            "port": .string(String(port)),
            "loops": .string(String(loops)),
            "upstream": .string(origin(upstreamBaseURL)),
            "store": .string(storePath),
            "teams": .string(String(teams)),
            "sandbox": .string(sandbox ? "on" : "off"),
        ]
    }

    /// `scheme://host[:port]` of a base URL: path, query, fragment and user info dropped.
    public static func origin(_ url: String) -> String {
        guard let sep = url.range(of: "://") else { return "(invalid)" }
        let scheme = url[..<sep.lowerBound].lowercased()
        var rest = url[sep.upperBound...]
        if let end = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) { rest = rest[..<end] }
        if let at = rest.lastIndex(of: "@") { rest = rest[rest.index(after: at)...] }
        return scheme + "://" + rest.lowercased()
    }
}
