import Glibc
import Logging
import Translation
import Synchronization

/// Veil's two outputs for operators: the access log (one JSON line per request on stdout, `ts`
/// in ISO 8601 UTC with milliseconds) and the operational log (swift-log, stderr; text or JSON
/// per `log.format`, see `VeilLogHandler`). Both pass through the key redactor: whatever an
/// upstream message echoed, the key never reaches a log line. Tokens and prompts are never
/// logged (prompts only with `log.prompts: true`).
public final class GatewayLog: Sendable {
    public let logger: Logger
    private let secret: Mutex<[UInt8]>
    /// The key's length: text shorter than it cannot hold it (no lock taken for it).
    private let secretLength: Atomic<Int>
    private let accessEnabled: Bool
    /// Where access lines go when they are not buffered per loop (tests capture them); nil:
    /// stdout, through each loop's `AccessLogBuffer`.
    private let sink: (@Sendable (String) -> Void)?

    public init(upstreamKey: String, accessLog: Bool, level: Logger.Level = .info,
                sink: (@Sendable (String) -> Void)? = nil) {
        var l = Logger(label: "veil")
        l.logLevel = level
        logger = l
        secret = Mutex(Array(upstreamKey.utf8))
        secretLength = Atomic(upstreamKey.utf8.count)
        accessEnabled = accessLog
        self.sink = sink
    }

    /// Whether access lines are gathered per loop (stdout) rather than handed to a sink.
    var buffersAccessLines: Bool { sink == nil }

    /// Writes `bytes` to stdout whole (retrying short writes).
    static func writeOut(_ bytes: UnsafeRawBufferPointer) {
        var off = 0
        while off < bytes.count {
            let n = Glibc.write(1, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return }
            off += n
        }
    }

    public func redact(_ s: String) -> String {
        let n = secretLength.load(ordering: .relaxed)
        if n == 0 || s.utf8.count < n { return s }
        let key = secret.withLock { $0 }
        guard !key.isEmpty, s.utf8.count >= key.count else { return s }
        return String(decoding: KeyRedactor.redact(Array(s.utf8), secret: key), as: UTF8.self)
    }

    public func updateKey(_ key: String) {
        secret.withLock { $0 = Array(key.utf8) }
        secretLength.store(key.utf8.count, ordering: .relaxed)
    }

    /// The exchange's access line: handed to the sink, or appended (with its newline) to `buffer`.
    func access(_ x: Exchange, durationMillis: Int, into buffer: inout [UInt8]) {
        guard accessEnabled else { return }
        var w = JSONObjectWriter(reserving: 320)
        w.string("ts", LogClock.iso8601(unixMillis: LogClock.nowMillis()))
        w.string("request_id", x.requestID)
        w.string("method", x.request.method)
        w.string("path", String(x.request.path.prefix(256)))
        w.string("team", x.team?.name)
        w.int("status", x.status)
        w.int("duration_ms", durationMillis)
        if let m = x.model { w.string("model", String(m.prefix(128))) }
        if let u = x.upstreamLatencyMillis { w.int("upstream_ms", u) }
        w.int("bytes_in", x.bytesIn)
        w.int("bytes_out", x.bytesOut)
        if let u = x.usage {
            w.int("prompt_tokens", u.promptTokens)
            w.int("completion_tokens", u.completionTokens)
            w.int("total_tokens", u.totalTokens)
        }
        if let e = x.errorCode { w.string("error", e) }
        if x.snapshot.config.log.prompts, let p = x.prompt { w.string("prompt", String(p.prefix(2000))) }
        w.string("remote", x.clientAddress)
        let line = w.finish()
        let key = secret.withLock { $0 }
        let clean = key.isEmpty ? line : KeyRedactor.redact(line, secret: key)
        if let sink { return sink(String(decoding: clean, as: UTF8.self)) }
        buffer.append(contentsOf: clean)
        buffer.append(0x0A)
    }
}
