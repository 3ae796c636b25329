import Gateway
import Logging
import Synchronization
import Testing

@Suite struct LogFormatTests {
    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00.000Z"),
        (1_762_418_837_123, "2025-11-06T08:47:17.123Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),        // leap day of a 400-year leap year
        (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),      // 2100 is not a leap year
        (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (253_402_300_799_000, "9999-12-31T23:59:59.000Z"),
    ])
    func iso8601(_ millis: Int64, _ text: String) {
        #expect(LogClock.iso8601(unixMillis: millis) == text)
    }

    @Test func formatDefaultsFollowTheTerminal() {
        #expect(LogFormat.resolve(nil, stderrIsTerminal: true) == .text)
        #expect(LogFormat.resolve(nil, stderrIsTerminal: false) == .json)
        #expect(LogFormat.resolve(.json, stderrIsTerminal: true) == .json)
        #expect(LogFormat.resolve(.text, stderrIsTerminal: false) == .text)
    }

    @Test func linesInBothFormats() {
        let meta = [("port", "8080"), ("listen", "0.0.0.0:8080"), ("problem", "a \"quoted\" thing\nnext"), ("empty", "")]
        let json = LogLine.render(.json, unixMillis: 0, level: .info, message: "veil listening", metadata: meta)
        #expect(json == #"{"ts":"1970-01-01T00:00:00.000Z","level":"info","msg":"veil listening","empty":"","listen":"0.0.0.0:8080","port":"8080","problem":"a \"quoted\" thing\nnext"}"#)
        let text = LogLine.render(.text, unixMillis: 0, level: .warning, message: "two\nlines", metadata: meta)
        #expect(text == #"1970-01-01T00:00:00.000Z warning two\nlines empty="" listen=0.0.0.0:8080 port=8080 problem="a \"quoted\" thing\nnext""#)
        #expect(!text.contains("\n"))
        // Metadata can't overwrite the line's own fields in JSON.
        let clash = LogLine.render(.json, unixMillis: 0, level: .error, message: "m", metadata: [("msg", "x"), ("level", "debug")])
        #expect(clash == #"{"ts":"1970-01-01T00:00:00.000Z","level":"error","msg":"m"}"#)
    }

    @Test func handlerWritesOneLinePerEvent() {
        let lines = Mutex<[String]>([])
        var logger = Logger(label: "veil") { VeilLogHandler(label: $0, sink: { l in lines.withLock { $0.append(l) } }) }
        logger.logLevel = .info
        VeilLogHandler.select(.json)
        logger.info("configuration reloaded", metadata: ["teams": "3"])
        logger.debug("not shown")
        VeilLogHandler.select(.text)
        logger.notice("stopped")
        let got = lines.withLock { $0 }
        #expect(got.count == 2)
        #expect(got[0].hasPrefix(#"{"ts":""#) && got[0].hasSuffix(#""level":"info","msg":"configuration reloaded","teams":"3"}"#))
        #expect(got[1].hasSuffix("Z notice stopped"))
    }

    @Test func startupLineShowsNoSecrets() {
        let m = StartupLine.metadata(version: "1.2.3", configPath: "/etc/veil/veil.yaml", listen: "0.0.0.0:8080", port: 8080, loops: 2,
                                     upstreamBaseURL: "https://ai.yijiarj.cn/v1/secret-path?token=abc", storePath: "/var/lib/veil/veil.sqlite3",
                                     teams: 3, sandbox: false)
        #expect(m["upstream"] == .string("https://ai.yijiarj.cn"))
        #expect(m["version"] == .string("1.2.3") && m["teams"] == .string("3") && m["sandbox"] == .string("off") && m["port"] == .string("8080"))
        #expect(m["config"] == .string("/etc/veil/veil.yaml") && m["store"] == .string("/var/lib/veil/veil.sqlite3") && m["loops"] == .string("2"))
        #expect(!m.values.contains { $0.description.contains("secret") || $0.description.contains("token") })
    }

    @Test(arguments: [
        ("https://ai.yijiarj.cn", "https://ai.yijiarj.cn"),
        ("HTTP://Up.Example:8443/base/", "http://up.example:8443"),
        ("https://user:pw@up.example/x", "https://up.example"),
        ("http://127.0.0.1:9?k=v#f", "http://127.0.0.1:9"),
        ("nonsense", "(invalid)"),
    ])
    func origins(_ url: String, _ origin: String) {
        #expect(StartupLine.origin(url) == origin)
    }
}
