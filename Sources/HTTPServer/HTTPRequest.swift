import HTTPWire
import Reactor

/// A complete request as the server hands it to a handler: head plus the whole body
/// (bounded by the limit the handler gave at admission).
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

/// What a handler decides about a request whose head is in and whose body is not read yet.
public enum HTTPAdmission: Sendable, Equatable {
    /// Read the body (at most `bodyLimit` bytes; a declared length over it is a 413 at once),
    /// then call `handle`.
    case readBody(limit: Int)
    /// The handler answered through the responder (a refusal) or will answer without the body:
    /// the body is never buffered, `100 Continue` is never sent, `handle` is not called.
    case answered
}

/// Answers requests. Called on the connection's loop thread; may answer at once or later
/// (from a timer or an upstream callback on the same loop).
public protocol HTTPHandler: AnyObject {
    /// The head is in, no body byte was read: admit the request or answer it now.
    func admit(_ head: HTTPRequestHead, _ response: HTTPResponder, peer: String, loop: EventLoop) -> HTTPAdmission
    /// An admitted request, body included.
    func handle(_ request: HTTPRequest, _ response: HTTPResponder)
}

extension HTTPHandler {
    /// Handlers that decide nothing at head time admit every request up to the parser's limit.
    public func admit(_ head: HTTPRequestHead, _ response: HTTPResponder, peer: String, loop: EventLoop) -> HTTPAdmission {
        .readBody(limit: .max)
    }
}

/// Builds the body of responses the server itself makes (parse errors, timeouts, overload),
/// so they share the application's error envelope.
public typealias ErrorBodyMaker = @Sendable (_ status: Int, _ message: String) -> (contentType: String, body: [UInt8])
