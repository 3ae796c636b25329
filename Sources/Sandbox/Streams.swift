import HTTPServer
import HTTPWire
import Reactor

/// A deterministic chat answer derived from the last user message.
struct ChatReply {
    let id: String
    let model: String
    let created: Int64
    /// The content, in the pieces a stream sends (one SSE event each).
    let pieces: [String]
    let promptTokens: Int

    init(model: String, messages: [JSONValue], id: String) {
        self.id = id
        self.model = model
        self.created = Clock.unixSeconds()
        var lastUser = ""
        var promptChars = 0
        for m in messages {
            let text = ChatReply.text(of: m["content"])
            promptChars += text.utf8.count
            if m["role"]?.stringValue == "user" { lastUser = text }
        }
        let words = lastUser.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" })
        var pieces = ["Sandbox", " reply", " to:"]
        if words.isEmpty {
            pieces.append(" (nothing)")
        } else {
            pieces += words.prefix(16).map { " " + $0 }
            if words.count > 16 { pieces.append(" …") }
        }
        self.pieces = pieces
        self.promptTokens = max(1, promptChars / 4) + 3 * messages.count
    }

    /// A message's text: a string, or the text parts of an array of content parts.
    static func text(of content: JSONValue?) -> String {
        switch content {
        case .string(let s)?: return s
        case .array(let parts)?:
            return parts.compactMap { $0["type"]?.stringValue == "text" ? $0["text"]?.stringValue : nil }.joined(separator: " ")
        default: return ""
        }
    }

    var text: String { pieces.joined() }
    var completionTokens: Int { pieces.count }

    var usage: JSONOut {
        .object([("prompt_tokens", .int(promptTokens)), ("completion_tokens", .int(completionTokens)),
                 ("total_tokens", .int(promptTokens + completionTokens))])
    }

    func completionObject() -> [(String, JSONOut)] {
        [("id", .string(id)), ("object", .string("chat.completion")), ("created", .int(created)), ("model", .string(model)),
         ("choices", .array([.object([
            ("index", .int(0)),
            ("message", .object([("role", .string("assistant")), ("content", .string(text))])),
            ("finish_reason", .string("stop")),
         ])])),
         ("usage", usage)]
    }

    /// Role chunk, one chunk per piece, the finish chunk, the usage chunk, `[DONE]`.
    var eventCount: Int { pieces.count + 4 }

    /// SSE event `i` (`data: …\n\n`), stamped with the time it is made.
    func event(_ i: Int) -> String {
        if i == eventCount - 1 { return "data: [DONE]\n\n" }
        let head: [(String, JSONOut)] = [("id", .string(id)), ("object", .string("chat.completion.chunk")),
                                         ("created", .int(created)), ("model", .string(model))]
        var obj = head
        func choice(_ delta: [(String, JSONOut)], _ finish: JSONOut) -> JSONOut {
            .array([.object([("index", .int(0)), ("delta", .object(delta)), ("finish_reason", finish)])])
        }
        if i == 0 {
            obj.append(("choices", choice([("role", .string("assistant")), ("content", .string(""))], .null)))
        } else if i <= pieces.count {
            obj.append(("choices", choice([("content", .string(pieces[i - 1]))], .null)))
        } else if i == pieces.count + 1 {
            obj.append(("choices", choice([], .string("stop"))))
        } else {
            obj.append(("choices", .array([])))
            obj.append(("usage", usage))
        }
        obj.append(("sent_at_us", .int(Clock.unixMicros())))
        return "data: " + JSONOut.object(obj).rendered + "\n\n"
    }
}

/// Sends a `ChatReply` as SSE, one event every `delay` ms on loop timers. Loop-confined
/// (`@unchecked Sendable` only so closures may hold it); kept alive by its timer and the
/// responder's callbacks, which the responder drops when it ends.
final class ChatStream: @unchecked Sendable {
    let reply: ChatReply
    let res: HTTPResponder
    unowned let loop: EventLoop
    let delay: Int
    let cutAfter: Int?
    let clientLeft: () -> Void
    let finished: () -> Void
    var index = 0
    var timer: LoopTimer?

    init(reply: ChatReply, res: HTTPResponder, loop: EventLoop, delay: Int, cutAfter: Int?,
         clientLeft: @escaping () -> Void, finished: @escaping () -> Void) {
        self.reply = reply; self.res = res; self.loop = loop; self.delay = delay; self.cutAfter = cutAfter
        self.clientLeft = clientLeft; self.finished = finished
    }

    func start() {
        res.onClose = { [self] in
            // The client left: stop producing.
            timer?.cancel()
            timer = nil
            clientLeft()
        }
        sendNext()
    }

    private func sendNext() {
        timer = nil
        guard res.isOpen else { finished(); return }
        res.write(Array(reply.event(index).utf8))
        index += 1
        if let cut = cutAfter, index >= cut {
            finished()
            res.abort()
            return
        }
        if index >= reply.eventCount {
            finished()
            res.end()
            return
        }
        timer = loop.schedule(afterMillis: delay) { [self] in sendNext() }
    }
}

/// Writes a body of `count` bytes produced piecewise, honouring back-pressure (`isWritable` /
/// `onWritable`). Loop-confined; kept alive by the responder's callbacks until it ends.
final class BodyStreamer {
    let res: HTTPResponder
    let count: Int
    let abortAfter: Int?
    let fill: (inout [UInt8], Int) -> Void
    let clientLeft: () -> Void
    let finished: () -> Void
    var produced = 0
    var buf = [UInt8](repeating: 0, count: 64 * 1024)
    var pumping = false

    init(res: HTTPResponder, count: Int, abortAfter: Int?, fill: @escaping (inout [UInt8], Int) -> Void,
         clientLeft: @escaping () -> Void, finished: @escaping () -> Void) {
        self.res = res; self.count = count; self.abortAfter = abortAfter; self.fill = fill
        self.clientLeft = clientLeft; self.finished = finished
    }

    func start() {
        res.onClose = { [self] in clientLeft() }
        res.onWritable = { [self] in pump() }
        pump()
    }

    private func pump() {
        if pumping { return }
        pumping = true
        defer { pumping = false }
        while produced < count {
            guard res.isOpen else { finished(); return }
            guard res.isWritable else { return }  // onWritable resumes
            let n = min(buf.count, count - produced)
            if n < buf.count { buf = [UInt8](repeating: 0, count: n) }
            fill(&buf, produced)
            res.write(buf)
            produced += n
            if let cut = abortAfter, produced >= cut {
                finished()
                res.abort()
                return
            }
        }
        finished()
        res.end()
    }
}

/// A `Range: bytes=…` header against a resource of `total` bytes (one range; others ignored).
enum ByteRange: Equatable {
    case ignore
    case unsatisfiable
    case range(Range<Int>)

    static func parse(_ header: String, total: Int) -> ByteRange {
        let h = header.trimmingASCIISpaces()
        guard h.lowercased().hasPrefix("bytes=") else { return .ignore }
        let spec = h.dropFirst(6).trimmingASCIISpaces()
        if spec.contains(",") { return .ignore }  // multiple ranges: answer the whole file
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return .ignore }
        let a = parts[0].trimmingASCIISpaces(), b = parts[1].trimmingASCIISpaces()
        if a.isEmpty {
            guard let n = Int(b), n >= 0 else { return .ignore }
            if n == 0 || total == 0 { return .unsatisfiable }
            return .range(max(0, total - n)..<total)
        }
        guard let start = Int(a), start >= 0 else { return .ignore }
        var end = total - 1
        if !b.isEmpty {
            guard let e = Int(b), e >= start else { return .ignore }
            end = min(e, total - 1)
        }
        if start >= total { return .unsatisfiable }
        return .range(start..<(end + 1))
    }
}
