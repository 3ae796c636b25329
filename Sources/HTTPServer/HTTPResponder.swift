import HTTPWire
import Reactor

/// The response side of one request. Owned by the connection's loop; every call must come from it.
/// Calls made after the response ended or the client left are ignored, so producers (upstream
/// transfers, timers) never write into a connection that has moved on to another request.
public final class HTTPResponder {
    /// Unowned: the connection may be freed while a producer still holds this responder (the
    /// client left). Every access is therefore behind `ended` first — the connection sets it
    /// (`clientGone`) before it goes, and a responder that ended never touches it again.
    unowned let connection: HTTPConnection
    let generation: Int
    let isHead: Bool
    let requestKeepAlive: Bool
    let versionMinor: Int
    var headSent = false
    var chunked = false
    var ended = false
    /// `closeConnectionAfterResponse()` was called before the head went out.
    var wantsClose = false
    /// Called once if the client disconnects (or the connection fails) before `end()`.
    public var onClose: (() -> Void)?
    /// Called when queued bytes fall under the low-water mark after `isWritable` was false.
    public var onWritable: (() -> Void)?
    /// Set once a producer was told to slow down; cleared when `onWritable` fires.
    var wantsWritable = false
    /// The handler's state for this request, from admission to dispatch (let go when the
    /// response ends or the client leaves, so it never outlives the request).
    public var attachment: AnyObject?

    init(connection: HTTPConnection, generation: Int, head: HTTPRequestHead) {
        self.connection = connection
        self.generation = generation
        self.isHead = head.method == "HEAD"
        self.requestKeepAlive = head.keepAlive
        self.versionMinor = head.versionMinor
    }

    var isCurrent: Bool { !ended && connection.generation == generation && !connection.closed }

    /// The client is still there and this response is still open.
    public var isOpen: Bool { isCurrent }

    /// Bytes queued for the client and not yet accepted by the kernel.
    public var bufferedBytes: Int { isCurrent ? connection.pendingWriteBytes : 0 }

    /// False when the client is slow: the producer should pause and wait for `onWritable`.
    public var isWritable: Bool {
        // After the client left there is nothing to wait for (and the connection may be gone).
        guard isCurrent else { return true }
        let ok = connection.pendingWriteBytes < connection.server.config.connection.writeHighWaterBytes
        if !ok { wantsWritable = true }
        return ok
    }

    /// Sends the status line and headers. Without `content-length`, HTTP/1.1 responses use chunked
    /// transfer coding (HTTP/1.0 ones end with the connection). Hop-by-hop framing is Veil's own.
    public func sendHead(_ head: consuming HTTPResponseHead) {
        guard isCurrent, !headSent else { return }
        headSent = true
        var h = consume head
        h.headers.fields.reserveCapacity(h.headers.count + 3)     // one copy for the fields added below
        // One pass over the fields (by length first): framing and hop-by-hop fields are Veil's own.
        var hasLength = false, hasDate = false, hopByHop = false
        for f in h.headers.fields {
            switch f.name.utf8.count {
            case 4: hasDate = hasDate || asciiCaseInsensitiveEquals(f.name, "date")
            case 10: hopByHop = hopByHop || asciiCaseInsensitiveEquals(f.name, "connection") || asciiCaseInsensitiveEquals(f.name, "keep-alive")
            case 14: hasLength = hasLength || asciiCaseInsensitiveEquals(f.name, "content-length")
            case 17: hopByHop = hopByHop || asciiCaseInsensitiveEquals(f.name, "transfer-encoding")
            default: break
            }
        }
        if hopByHop {
            h.headers.remove("transfer-encoding")
            h.headers.remove("connection")
            h.headers.remove("keep-alive")
        }
        let bodyless = isHead || h.status == 204 || h.status == 304 || (100...199).contains(h.status)
        var closeDelimited = false
        if !hasLength && !bodyless {
            if versionMinor >= 1 { chunked = true; h.headers.add("transfer-encoding", "chunked") }
            else { closeDelimited = true }
            connection.releaseReadBufferIfEmpty()     // an open-ended body: likely a long stream
        }
        // The connection's state machine decides whether the connection ends after this answer
        // (asked for, draining, a request not wholly read); then the head must say so.
        if connection.responseStarting(wantsClose: wantsClose || closeDelimited || !requestKeepAlive) {
            h.headers.add("connection", "close")
        }
        if !hasDate { h.headers.add("date", connection.server.httpDate(connection.loop.now)) }
        // Sent when the current callback returns, with any body written in it (one send).
        connection.queueDeferred { HTTPResponseWriter.head(h, into: &$0) }
    }

    /// Sends body bytes (framed as a chunk when chunked). They reach the socket when the current
    /// loop callback returns (with whatever else was written during it), before anything else runs.
    public func write(_ bytes: UnsafeRawBufferPointer) {
        guard isCurrent, headSent, !isHead, bytes.count > 0 else { return }
        if chunked {
            connection.queueDeferred { HTTPResponseWriter.chunk(bytes, into: &$0) }
        } else {
            connection.queueDeferred { $0.append(contentsOf: bytes) }
        }
    }

    public func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    /// Ends the response. The connection then serves the next request or closes.
    public func end() {
        guard isCurrent else { return }
        if !headSent { sendHead(HTTPResponseHead(status: 200, headers: ["content-length": "0"])) }
        // Each send may find the client gone and close (and free) the connection: check again.
        guard isCurrent else { return }
        if chunked && !isHead { connection.queue { $0.append(contentsOf: HTTPResponseWriter.lastChunk) } }
        guard isCurrent else { return }
        ended = true
        onClose = nil
        onWritable = nil
        attachment = nil
        connection.responseEnded()
    }

    /// Ends a response whose head is already out without a proper ending (the producer failed
    /// mid-body): the connection is closed so the client sees a truncated message, never a
    /// complete-looking one.
    public func abort() {
        guard isCurrent else { return }
        ended = true
        onClose = nil
        onWritable = nil
        attachment = nil
        connection.responseAborted()
    }

    /// Convenience: a whole response with a body.
    /// `consuming` (here and below): the caller's fields move through without a copy per step.
    public func respond(status: Int, headers: consuming HTTPHeaders = HTTPHeaders(), body: [UInt8]) {
        var h = headers
        h.replace("content-length", String(body.count))
        sendHead(HTTPResponseHead(status: status, headers: consume h))
        write(body)
        end()
    }

    /// Marks the connection to close once this response is done (before its head is sent).
    public func closeConnectionAfterResponse() {
        guard isCurrent, !headSent else { return }
        wantsClose = true
    }

    func clientGone() {
        guard !ended else { return }
        ended = true
        let cb = onClose
        onClose = nil
        onWritable = nil
        attachment = nil
        cb?()
    }

    func drained() {
        guard isCurrent, wantsWritable else { return }
        wantsWritable = false
        onWritable?()
    }
}
