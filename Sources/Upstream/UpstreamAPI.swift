import HTTPWire
import Reactor

// The contract between the gateway and an upstream client, protocol-neutral: the gateway's
// engine (`UpstreamEngine`) talks only to this. The implementation is `HTTPUpstreamClient`
// (Sources/UpstreamHTTP): one per event loop, HTTP/1.1 or HTTP/2, plain or TLS.

/// One request to send upstream. The body is sent as is (the gateway builds JSON/multipart).
public struct UpstreamRequest: Sendable {
    public var method: String
    public var url: String
    /// This request's own fields; `sharedHeaders` follows them.
    public var headers: HTTPHeaders
    /// Fields many requests send alike (the upstream's Authorization), encoded once by the
    /// client and sent behind `headers` instead of copied per request.
    public var sharedHeaders: UpstreamHeaderBlock? = nil
    public var body: [UInt8]
    /// Connect phase (DNS + TCP + TLS).
    public var connectTimeoutMillis: Int = 5_000
    /// Whole transfer, first byte to last → `.timeout`.
    public var timeoutMillis: Int = 600_000
    /// Abort when no byte moved (either way) for this long (0 = no stall check) → `.timeout`.
    /// Time spent paused by `pause()` does not count.
    public var stallTimeoutMillis: Int = 0
    /// Abort with `.tooLarge` once the response body passes this many bytes (nil = unbounded).
    public var maxResponseBytes: Int? = nil
    /// For fetching caller-supplied URLs: refuse loopback, private, link-local, multicast and
    /// unspecified addresses (checked on the address actually connected, after DNS) unless the
    /// literal address or host is in `addressAllowList`.
    public var refusePrivateAddresses: Bool = false
    public var addressAllowList: [String] = []
    /// Allowed URL schemes ("http", "https").
    public var allowedSchemes: [String] = ["http", "https"]
    /// The client's read size for this transfer, 1 KiB…512 KiB (nil = the client's setting,
    /// 16 KiB). It is held for the whole transfer: small for long-lived streams (memory per
    /// stream), large for bulk downloads (fewer reads and callbacks).
    public var receiveBufferBytes: Int? = nil

    public init(method: String, url: String, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []) {
        self.method = method; self.url = url; self.headers = headers; self.body = body
    }

    /// The defaults above, for callers that fill in their own only where a request kept them.
    public static let defaults = UpstreamRequest(method: "GET", url: "")
}

/// The final (non-1xx) status line and header fields of an upstream response.
public struct UpstreamResponseHead: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    /// 1 for HTTP/1.x, 2 for HTTP/2.
    public var httpVersion: Int
    public init(status: Int, headers: HTTPHeaders, httpVersion: Int) {
        self.status = status; self.headers = headers; self.httpVersion = httpVersion
    }
    public func header(_ name: String) -> String? { headers[name] }
}

public enum UpstreamError: Error, Sendable, Equatable {
    /// DNS, refused, reset before a response, TLS failure.
    case connect(String)
    case timeout(String)
    /// Response body passed `maxResponseBytes`.
    case tooLarge
    /// The address connected to is not allowed (`refusePrivateAddresses`) or the scheme is not.
    case refused(String)
    /// The response was cut or malformed after it started.
    case broken(String)
    /// `cancel()` was called.
    case cancelled
}

/// Receives a transfer's events, on the loop thread that started it, in this order:
/// head (once), data (zero or more), finish (exactly once; also after cancel).
public protocol UpstreamDelegate: AnyObject {
    func upstreamDidReceiveHead(_ head: UpstreamResponseHead)
    /// Body bytes as they arrive (valid only during the call). Always consumed; to slow the
    /// producer, call `pause()` on the transfer.
    func upstreamDidReceive(_ bytes: UnsafeRawBufferPointer)
    /// nil on success.
    func upstreamDidFinish(_ error: UpstreamError?)
}

/// A running transfer. Loop-thread only. All three calls are safe from inside any delegate
/// callback, and are no-ops after the transfer finished. The transfer keeps its delegate alive
/// until it finishes.
public protocol UpstreamTransfer: AnyObject {
    /// Stops receiving body data until `resume()` (back-pressure from a slow client). No
    /// `upstreamDidReceive` arrives after `pause()` returns (bytes in the call in progress are
    /// still consumed by the delegate).
    func pause()
    /// Data flows again from the next loop iteration (never re-entrantly from inside `resume()`).
    func resume()
    /// Aborts at once; the delegate gets `upstreamDidFinish(.cancelled)`... unless it already finished.
    /// Delivered before `cancel()` returns, or, when called from inside that delegate's own
    /// callback, right after the callback returns (never nested). Nothing else follows it.
    func cancel()
}

/// An upstream client bound to one event loop.
public protocol UpstreamClientProtocol: AnyObject {
    func start(_ request: UpstreamRequest, delegate: UpstreamDelegate) -> UpstreamTransfer
    /// Transfers running now (metrics, tests).
    var activeTransfers: Int { get }
}
