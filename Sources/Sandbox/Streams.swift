import HTTPServer
import HTTPWire
import Reactor

/// A server-sent event stream the stand-in can play: `eventCount` events, each complete
/// (`data: …\n\n`, with an `event:` line where the API has one).
protocol SSEEvents {
    var eventCount: Int { get }
    func event(_ i: Int) -> String
}

/// A deterministic chat answer derived from the last user message: text, or (model cue
/// `sandbox-tools`) one function call whose arguments stream in pieces.
struct ChatReply: SSEEvents {
    let id: String
    let model: String
    let created: Int64
    /// The content (or the tool call's arguments), in the pieces a stream sends (one event each).
    let pieces: [String]
    let promptTokens: Int
    let toolCall: SandboxToolCall?

    init(model: String, messages: [JSONValue], id: String, tools: [JSONValue]? = nil, callTool: Bool = false) {
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
        if callTool {
            let call = SandboxToolCall(tools: tools, userText: lastUser, id: id)
            toolCall = call
            pieces = call.argumentPieces
        } else {
            toolCall = nil
            pieces = ChatReply.replyPieces(to: lastUser)
        }
        self.promptTokens = max(1, promptChars / 4) + 3 * messages.count
    }

    /// "Sandbox reply to: <up to 16 words of the text>", one piece per word.
    static func replyPieces(to text: String) -> [String] {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" })
        var pieces = ["Sandbox", " reply", " to:"]
        if words.isEmpty {
            pieces.append(" (nothing)")
        } else {
            pieces += words.prefix(16).map { " " + $0 }
            if words.count > 16 { pieces.append(" …") }
        }
        return pieces
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

    private var finishReason: String { toolCall == nil ? "stop" : "tool_calls" }

    func completionObject() -> [(String, JSONOut)] {
        var message: [(String, JSONOut)] = [("role", .string("assistant"))]
        if let call = toolCall {
            message.append(("content", .null))
            message.append(("tool_calls", .array([.object([
                ("id", .string(call.callID)), ("type", .string("function")),
                ("function", .object([("name", .string(call.name)), ("arguments", .string(call.arguments))])),
            ])])))
        } else {
            message.append(("content", .string(text)))
        }
        return [("id", .string(id)), ("object", .string("chat.completion")), ("created", .int(created)), ("model", .string(model)),
                ("choices", .array([.object([
                    ("index", .int(0)), ("message", .object(message)), ("logprobs", .null), ("finish_reason", .string(finishReason)),
                ])])),
                ("usage", usage)]
    }

    /// Role chunk, one chunk per piece, the finish chunk, the usage chunk, `[DONE]`. The usage
    /// chunk comes whether or not the caller asked (`stream_options.include_usage`): the real
    /// upstream always sends it.
    var eventCount: Int { pieces.count + 4 }

    /// SSE event `i` (`data: …\n\n`), stamped with the time it is made (`sent_at_us`).
    func event(_ i: Int) -> String {
        if i == eventCount - 1 { return "data: [DONE]\n\n" }
        let head: [(String, JSONOut)] = [("id", .string(id)), ("object", .string("chat.completion.chunk")),
                                         ("created", .int(created)), ("model", .string(model))]
        var obj = head
        func choice(_ delta: [(String, JSONOut)], _ finish: JSONOut) -> JSONOut {
            .array([.object([("index", .int(0)), ("delta", .object(delta)), ("logprobs", .null), ("finish_reason", finish)])])
        }
        if i == 0 {
            if let call = toolCall {
                // OpenAI's first tool-call chunk: id, type and name, empty arguments.
                obj.append(("choices", choice([("role", .string("assistant")), ("content", .null), ("tool_calls", .array([.object([
                    ("index", .int(0)), ("id", .string(call.callID)), ("type", .string("function")),
                    ("function", .object([("name", .string(call.name)), ("arguments", .string(""))])),
                ])]))], .null)))
            } else {
                obj.append(("choices", choice([("role", .string("assistant")), ("content", .string(""))], .null)))
            }
        } else if i <= pieces.count {
            if toolCall != nil {
                obj.append(("choices", choice([("tool_calls", .array([.object([
                    ("index", .int(0)), ("function", .object([("arguments", .string(pieces[i - 1]))])),
                ])]))], .null)))
            } else {
                obj.append(("choices", choice([("content", .string(pieces[i - 1]))], .null)))
            }
        } else if i == pieces.count + 1 {
            obj.append(("choices", choice([], .string(finishReason))))
        } else {
            obj.append(("choices", .array([])))
            obj.append(("usage", usage))
        }
        obj.append(("sent_at_us", .int(Clock.unixMicros())))
        return "data: " + JSONOut.object(obj).rendered + "\n\n"
    }
}

/// The function call the stand-in makes for the `sandbox-tools` cue: the first function tool of
/// the request (chat's `{"type":"function","function":{…}}` or the Responses API's flat
/// `{"type":"function","name":…}`), else `get_weather`; its first required (else first) string
/// parameter gets the user's text.
struct SandboxToolCall {
    let callID: String
    let name: String
    let arguments: String
    /// `arguments` cut into the fragments a stream sends.
    let argumentPieces: [String]

    init(tools: [JSONValue]?, userText: String, id: String) {
        var name = "get_weather"
        var key = "location"
        if let tool = tools?.first(where: { $0["type"]?.stringValue == "function" }) {
            let fn = tool["function"] ?? tool
            if let n = fn["name"]?.stringValue, !n.isEmpty { name = n }
            let params = fn["parameters"]
            if let first = params?["required"]?.arrayValue?.first?.stringValue {
                key = first
            } else if case .object(let props)? = params?["properties"], let first = props.keys.sorted().first {
                key = first
            }
        }
        self.name = name
        self.callID = "call_" + Digest.hex(Digest.fnv64(Array(id.utf8), seed: 11))
        let value = userText.isEmpty ? "Paris" : String(userText.prefix(200))
        arguments = JSONOut.object([(key, .string(value))]).rendered
        var pieces: [String] = []
        var cur = ""
        for ch in arguments {
            cur.append(ch)
            if cur.count >= 6 { pieces.append(cur); cur = "" }
        }
        if !cur.isEmpty { pieces.append(cur) }
        argumentPieces = pieces
    }
}

/// Plays `SSEEvents` to a client, one event every `delay` ms on loop timers. Loop-confined
/// (`@unchecked Sendable` only so closures may hold it); kept alive by its timer and the
/// responder's callbacks, which the responder drops when it ends.
final class SSEStream: @unchecked Sendable {
    let reply: any SSEEvents
    let res: HTTPResponder
    unowned let loop: EventLoop
    let delay: Int
    let cutAfter: Int?
    let clientLeft: () -> Void
    let finished: () -> Void
    var index = 0
    var timer: LoopTimer?

    init(reply: any SSEEvents, res: HTTPResponder, loop: EventLoop, delay: Int, cutAfter: Int?,
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
