import HTTPWire

/// Connection-level settings. Every limit has a name and a default, documented in the README.
public struct ServerConfig: Sendable {
    public var host: String = "0.0.0.0"
    public var port: UInt16 = 8080
    /// Event loops (threads). 0 = one per core.
    public var workers: Int = 0
    public var limits = HTTPLimits()
    /// Time allowed to receive a whole request head (slowloris guard) → 408.
    public var headerTimeoutMillis: Int = 10_000
    /// Longest wait between two body reads → 408.
    public var bodyTimeoutMillis: Int = 30_000
    /// How long an idle keep-alive connection is kept.
    public var idleTimeoutMillis: Int = 75_000
    /// Bytes queued for a client past which producers are asked to pause (back-pressure).
    public var writeHighWaterBytes: Int = 256 * 1024
    /// Queued bytes under which paused producers are resumed.
    public var writeLowWaterBytes: Int = 64 * 1024
    /// Open client connections across all loops; past it new ones get a 503 and are closed.
    public var maxConnections: Int = 20_000
    /// Pipelined bytes read ahead while a response is in progress, before reading pauses.
    public var maxPipelinedBytes: Int = 64 * 1024
    public var errorBody: ErrorBodyMaker = { status, message in
        ("text/plain; charset=utf-8", Array("\(message)\n".utf8))
    }
    public init() {}
}
