import HTTPWire

/// Connection-level settings. Every limit has a name and a default, documented in the README.
public struct ServerConfig: Sendable {
    public var host: String = "0.0.0.0"
    public var port: UInt16 = 8080
    /// Event loops (threads). 0 = one per core.
    public var workers: Int = 0
    /// What the request parser accepts (line, header and body sizes).
    public var limits = HTTPLimits()
    /// Timeouts, back-pressure marks and lingering close of each connection.
    public var connection = ConnectionLimits()
    /// Open client connections across all loops; past it new ones get a 503 and are closed.
    public var maxConnections: Int = 20_000
    /// After the process runs out of descriptors (EMFILE/ENFILE), a loop stops accepting for this
    /// long (as nginx disables its accept events) instead of spinning on a readable listener.
    public var acceptBackoffMillis: Int = 250
    /// Connections accepted per wake-up of a listener, to stay fair to existing connections.
    public var acceptBatch: Int = 64
    /// Pipelined requests one connection may dispatch per loop iteration; the rest wait for the
    /// next iteration, so one client's pipeline cannot monopolise its loop.
    public var dispatchesPerTurn: Int = 16
    public var errorBody: ErrorBodyMaker = { status, message in
        ("text/plain; charset=utf-8", Array("\(message)\n".utf8))
    }
    public init() {}
}
