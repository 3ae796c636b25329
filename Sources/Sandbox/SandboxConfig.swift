import HTTPWire

/// Settings of the stand-in upstream. Every knob exists to make a behaviour deterministic and fast
/// in tests; the defaults suit `veil serve --sandbox` (a frontend developer's free upstream).
public struct SandboxConfig: Sendable {
    /// The one upstream key: accepted as `Authorization: Bearer <apiKey>` and expected, verbatim,
    /// in the `size` form field of `POST /v1/videos` (the upstream's quirk).
    public var apiKey: String
    public var host = "127.0.0.1"
    /// 0 = an ephemeral port (see `Sandbox.start()`'s result).
    public var port: UInt16 = 0
    /// Polls mode: `GET /v1/videos/{id}` answers `processing` for the first N-1 polls and the
    /// final state from the Nth on (N <= 1: the first poll already sees the final state).
    public var videoPollsToComplete = 3
    /// Time mode (overrides polls mode when set): the video completes this long after creation.
    public var videoMillisToComplete: Int? = nil
    /// List calls (`GET /v1/characters`) that still show a new character with status 0; the next
    /// list shows 999 (or -1 when its `instruction_value` contains `fail`). 0 = ready at once.
    public var characterListsToReady = 1
    /// Gap between two SSE events of a streamed chat completion (loop timers, never blocking).
    public var sseChunkDelayMillis = 50
    /// Gap between two events of a stream whose model is the cue `sandbox-slow-stream`.
    public var slowStreamGapMillis = 2_000
    /// Delay before answering a chat whose model ends with `-slow`.
    public var slowModelDelayMillis = 2_000
    /// Size of each generated video file (the clean and the watermarked one).
    public var videoFileBytes = 1_048_576
    /// Lifetime of the signed file URLs handed out when a video completes.
    public var fileURLTTLSeconds = 3_600
    /// Base of the signed file URLs; defaults to `http://host:port`.
    public var publicBaseURL: String? = nil
    /// Requests kept for introspection (oldest dropped first); 0 disables recording.
    public var maxRecordedRequests = 10_000

    public init(apiKey: String) { self.apiKey = apiKey }
}

/// A misbehaviour injected into the answer to a request (see `Sandbox.inject`).
public enum SandboxFault: Sendable, Equatable {
    /// Answer with this status and body (JSON content type when the body starts with `{`).
    case status(Int, body: String)
    /// Read the request, then close the connection without a byte of answer.
    case reset
    /// Send the head (with a Content-Length) and part of the body, then close.
    case resetMidBody
    /// Accept the request and never answer; the connection stays open until the client leaves
    /// (or the sandbox stops).
    case stall
    /// 200 with a truncated, unparsable JSON body (correctly framed).
    case invalidJSON
    /// 200 with a JSON-looking body of exactly n bytes, streamed with back-pressure.
    case hugeBody(Int)
    /// Streamed chat: the role chunk and one content chunk, then the connection closes without the
    /// finish chunk, the usage chunk or `[DONE]`. On other requests: same as `.resetMidBody`.
    case cutStream
    /// 401 whose body and `X-Debug-Authorization` header echo the presented key.
    case echoKey
    /// Exactly this answer: status, fields and body bytes (a compressed body, a stream with the key
    /// escaped inside an event, a file host echoing the key in its headers). With `cutAfter`, the
    /// head declares the whole body but only that many bytes are sent before the connection closes.
    case raw(status: Int, headers: HTTPHeaders, body: [UInt8], cutAfter: Int? = nil)
}

/// A file part of a recorded form.
public struct RecordedFile: Sendable, Equatable {
    public var filename: String?
    public var contentType: String?
    public var byteCount: Int
}

/// One request as the sandbox received it.
public struct RecordedRequest: Sendable {
    public var method: String
    /// Path and query, as sent.
    public var target: String
    /// Path only.
    public var path: String
    public var headers: HTTPHeaders
    public var body: [UInt8]
    /// Text fields of a multipart or urlencoded form (name → value; the last one wins).
    public var form: [String: String]
    /// File parts of a multipart form (name → file).
    public var files: [String: RecordedFile]
    /// Wall-clock time of arrival, Unix microseconds.
    public var unixMicros: Int64

    public var bodyText: String { String(decoding: body, as: UTF8.self) }
    public func header(_ name: String) -> String? { headers[name] }
}
