import HTTPWire
import Reactor

/// A complete request as the server hands it to a handler: head plus the whole body
/// (bounded by `HTTPLimits.maxBodyBytes`).
public struct HTTPRequest: @unchecked Sendable {
    public var head: HTTPRequestHead
    public var body: [UInt8]
    public var remoteAddress: String
    /// The loop that owns the connection; the handler runs on it and must answer on it.
    public unowned let loop: EventLoop

    public init(head: HTTPRequestHead, body: [UInt8], remoteAddress: String, loop: EventLoop) {
        self.head = head; self.body = body; self.remoteAddress = remoteAddress; self.loop = loop
    }

    public var method: String { head.method }
    public var path: Substring { head.path }
    public var headers: HTTPHeaders { head.headers }
}

/// Answers requests. Called on the connection's loop thread; may answer at once or later
/// (from a timer or an upstream callback on the same loop).
public protocol HTTPHandler: AnyObject {
    func handle(_ request: HTTPRequest, _ response: HTTPResponder)
}

/// Builds the body of responses the server itself makes (parse errors, timeouts, overload),
/// so they share the application's error envelope.
public typealias ErrorBodyMaker = @Sendable (_ status: Int, _ message: String) -> (contentType: String, body: [UInt8])
