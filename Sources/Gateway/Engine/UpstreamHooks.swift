import HTTPWire
import Translation
import Upstream

/// An endpoint's part of one upstream exchange, in the shape of nginx's upstream module hooks
/// (`create_request`, `process_header`, `input_filter`, `finalize_request`). The hooks are pure:
/// they see values (the request, the upstream's head, bytes, the whole body) and return decisions;
/// the engine (`UpstreamEngine`) does all the I/O, timing, back-pressure, cancellation, redaction
/// and error mapping around them. So each endpoint's logic is tested without a socket.
protocol UpstreamHooks {
    /// What a buffered exchange hands to the flow that started it (`UpstreamEngine.fetch`);
    /// `Never` for exchanges that answer the caller themselves (`UpstreamEngine.proxy`).
    associatedtype Value = Never

    /// The request to send upstream, or the refusal the caller gets instead (nothing is sent).
    func makeRequest() -> Result<UpstreamRequest, APIError>

    /// The upstream's head arrived: stream the body through, read it whole, or fail.
    mutating func onHead(_ head: UpstreamResponseHead) -> HeadDecision

    /// Streamed body bytes on their way to the caller (decoded, and redacted unless
    /// `redactsStream`): pass them to `emit`, changed or not. False stops the stream (the filter
    /// refused what came: `streamEnded` is then told `.broken`). The default passes them through.
    mutating func filter(_ bytes: UnsafeRawBufferPointer, emit: (UnsafeRawBufferPointer) -> Void) -> Bool

    /// True when `filter` redacts the key itself (the SSE event filter, which also catches it
    /// JSON-escaped inside an event): the engine's byte-level redactor then stays out of the way.
    var redactsStream: Bool { get }

    /// A stream ended: the filter's last bytes (what it held back), before `streamEnded`.
    mutating func flush(emit: (UnsafeRawBufferPointer) -> Void)

    /// A stream ended, cleanly (`nil`) or not: how its answer ends.
    mutating func streamEnded(_ error: UpstreamError?) -> StreamEnding

    /// A buffered body is complete: the answer, or the value for the flow.
    mutating func finish(_ answer: UpstreamAnswer) -> Outcome<Value>

    /// Token counts the answer carried (read by `finish` or while streaming), for the usage log.
    var usage: Usage? { get }

    /// Whether the client leaving cancels the transfer (default). A poll shared with other
    /// callers, or a creation the upstream would carry out anyway, runs to its end.
    var cancelWhenClientLeaves: Bool { get }

    /// How a transport failure is told (default: `APIError.upstream(_:)`). Image fetching says it
    /// in terms of the caller's URL instead.
    func failure(_ error: UpstreamError) -> APIError
}

/// A whole buffered upstream answer.
struct UpstreamAnswer {
    var head: UpstreamResponseHead
    var body: [UInt8]
}

enum HeadDecision {
    /// Relay the body as it arrives, with this status and these headers (already the caller's:
    /// built by the hooks from an allow-list; the engine redacts their values).
    case stream(status: Int, headers: HTTPHeaders)
    /// Read the body whole, at most `limit` bytes (nil: `upstream.max_response_bytes`).
    case buffer(limit: Int?)
    /// Stop the transfer; the caller gets this error.
    case fail(APIError, headers: HTTPHeaders = HTTPHeaders())
}

enum StreamEnding {
    /// The body is complete: end the answer properly.
    case end
    /// Append these bytes (an error event the SDKs raise), then end properly; `code` goes to the
    /// access log.
    case endWith([UInt8], code: String)
    /// Cut the answer (the client sees a truncated message, never a complete-looking one).
    case abort(reason: String)
}

enum Outcome<Value> {
    /// A JSON answer (redacted by the engine on its way out).
    case json(status: Int, body: [UInt8], headers: HTTPHeaders = HTTPHeaders())
    /// A non-JSON answer.
    case raw(status: Int, body: [UInt8], contentType: String, headers: HTTPHeaders = HTTPHeaders())
    case fail(APIError, headers: HTTPHeaders = HTTPHeaders())
    /// The value the flow continues with (`UpstreamEngine.fetch`).
    case value(Value)
}

extension UpstreamHooks {
    mutating func filter(_ bytes: UnsafeRawBufferPointer, emit: (UnsafeRawBufferPointer) -> Void) -> Bool {
        emit(bytes)
        return true
    }

    var redactsStream: Bool { false }

    mutating func flush(emit: (UnsafeRawBufferPointer) -> Void) {}

    mutating func streamEnded(_ error: UpstreamError?) -> StreamEnding {
        guard let error else { return .end }
        return .abort(reason: error == .cancelled ? "client_closed" : "upstream_cut")
    }

    func failure(_ error: UpstreamError) -> APIError { .upstream(error) }

    var usage: Usage? { nil }

    var cancelWhenClientLeaves: Bool { true }
}
