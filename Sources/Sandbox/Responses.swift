/// A deterministic answer of OpenAI's Responses API (`POST /v1/responses`): one assistant
/// message ("Sandbox reply to: …" from the input's last user text) or, for the `sandbox-tools`
/// cue, one function call. Streamed, it plays OpenAI's typed events, each as `event: <type>` and
/// `data: <json>` with a growing `sequence_number`, ending with `response.completed` (which
/// carries `usage`; the Responses API has no `[DONE]`):
///
/// text: `response.created`, `response.in_progress`, `response.output_item.added`,
/// `response.content_part.added`, one `response.output_text.delta` per piece,
/// `response.output_text.done`, `response.content_part.done`, `response.output_item.done`,
/// `response.completed`.
///
/// function call: `response.created`, `response.in_progress`, `response.output_item.added`, one
/// `response.function_call_arguments.delta` per piece, `response.function_call_arguments.done`,
/// `response.output_item.done`, `response.completed`.
struct ResponsesReply: SSEEvents {
    let id: String
    let itemID: String
    let model: String
    let createdAt: Int64
    let pieces: [String]
    let toolCall: SandboxToolCall?
    let inputTokens: Int
    /// Echoed request fields (OpenAI echoes the request's settings in the response object).
    let instructions: JSONOut
    let tools: [JSONOut]

    init(body: JSONValue, model: String, counter: Int, callTool: Bool) {
        id = "resp_sandbox" + Digest.hex(Digest.fnv64(Array("resp/\(counter)".utf8), seed: 5))
        self.model = model
        createdAt = Clock.unixSeconds()
        let (lastUser, inputChars) = ResponsesReply.inputText(body["input"])
        let instructionText = body["instructions"]?.stringValue
        instructions = instructionText.map { .string($0) } ?? .null
        inputTokens = max(1, (inputChars + (instructionText?.utf8.count ?? 0)) / 4)
        if callTool {
            let call = SandboxToolCall(tools: body["tools"]?.arrayValue, userText: lastUser, id: id)
            toolCall = call
            pieces = call.argumentPieces
            itemID = "fc_" + Digest.hex(Digest.fnv64(Array(id.utf8), seed: 12))
        } else {
            toolCall = nil
            pieces = ChatReply.replyPieces(to: lastUser)
            itemID = "msg_" + Digest.hex(Digest.fnv64(Array(id.utf8), seed: 13))
        }
        tools = (body["tools"]?.arrayValue ?? []).compactMap { t in
            guard t["type"]?.stringValue == "function", let name = t["name"]?.stringValue else { return nil }
            return .object([("type", .string("function")), ("name", .string(name)), ("description", t["description"].map(JSONOut.init) ?? .null),
                            ("parameters", t["parameters"].map(JSONOut.init) ?? .null), ("strict", .bool(t["strict"]?.boolValue ?? true))])
        }
    }

    /// The last user text of `input` (a string, or a list of items whose content is a string or
    /// `input_text` parts) and the total characters of text in it.
    static func inputText(_ input: JSONValue?) -> (String, Int) {
        switch input {
        case .string(let s)?: return (s, s.utf8.count)
        case .array(let items)?:
            var last = "", chars = 0
            for item in items {
                var text = ""
                switch item["content"] {
                case .string(let s)?: text = s
                case .array(let parts)?:
                    text = parts.compactMap { p -> String? in
                        let t = p["type"]?.stringValue
                        return t == "input_text" || t == "text" ? p["text"]?.stringValue : nil
                    }.joined(separator: " ")
                default: break
                }
                chars += text.utf8.count
                if item["role"]?.stringValue == "user" { last = text }
            }
            return (last, chars)
        default: return ("", 0)
        }
    }

    var text: String { pieces.joined() }
    var outputTokens: Int { pieces.count }

    var usage: JSONOut {
        .object([
            ("input_tokens", .int(inputTokens)),
            ("input_tokens_details", .object([("cached_tokens", .int(0)), ("cache_write_tokens", .int(0))])),
            ("output_tokens", .int(outputTokens)),
            ("output_tokens_details", .object([("reasoning_tokens", .int(0))])),
            ("total_tokens", .int(inputTokens + outputTokens)),
        ])
    }

    /// The output item, finished or (streams) just opened.
    func item(done: Bool) -> JSONOut {
        let status = JSONOut.string(done ? "completed" : "in_progress")
        if let call = toolCall {
            return .object([("id", .string(itemID)), ("type", .string("function_call")), ("status", status),
                            ("arguments", .string(done ? call.arguments : "")), ("call_id", .string(call.callID)),
                            ("name", .string(call.name))])
        }
        return .object([("id", .string(itemID)), ("type", .string("message")), ("status", status),
                        ("content", .array(done ? [part(text: text)] : [])), ("role", .string("assistant"))])
    }

    func part(text: String) -> JSONOut {
        .object([("type", .string("output_text")), ("annotations", .array([])), ("logprobs", .array([])), ("text", .string(text))])
    }

    /// The response object: `done` = completed with its output and usage, else in progress.
    func responseObject(done: Bool) -> JSONOut {
        .object([
            ("id", .string(id)), ("object", .string("response")), ("created_at", .int(createdAt)),
            ("status", .string(done ? "completed" : "in_progress")), ("background", .bool(false)),
            ("completed_at", done ? .int(createdAt) : .null),
            ("error", .null), ("incomplete_details", .null), ("instructions", instructions),
            ("max_output_tokens", .null), ("model", .string(model)),
            ("output", .array(done ? [item(done: true)] : [])),
            ("parallel_tool_calls", .bool(true)), ("previous_response_id", .null),
            ("reasoning", .object([("effort", .null), ("summary", .null)])),
            ("store", .bool(true)), ("temperature", .number("1.0")),
            ("text", .object([("format", .object([("type", .string("text"))]))])),
            ("tool_choice", .string("auto")), ("tools", .array(tools)), ("top_p", .number("1.0")),
            ("truncation", .string("disabled")), ("usage", done ? usage : .null), ("user", .null),
            ("metadata", .object([])),
        ])
    }

    var eventCount: Int { pieces.count + (toolCall == nil ? 8 : 6) }

    func event(_ i: Int) -> String {
        let n = pieces.count
        var fields: [(String, JSONOut)]
        let type: String
        let at: [(String, JSONOut)] = [("item_id", .string(itemID)), ("output_index", .int(0))]
        switch i {
        case 0: type = "response.created"; fields = [("response", responseObject(done: false))]
        case 1: type = "response.in_progress"; fields = [("response", responseObject(done: false))]
        case 2: type = "response.output_item.added"; fields = [("output_index", .int(0)), ("item", item(done: false))]
        case _ where i == eventCount - 1: type = "response.completed"; fields = [("response", responseObject(done: true))]
        case _ where i == eventCount - 2: type = "response.output_item.done"; fields = [("output_index", .int(0)), ("item", item(done: true))]
        default:
            if let call = toolCall {
                if i - 3 < n {
                    type = "response.function_call_arguments.delta"; fields = at + [("delta", .string(pieces[i - 3]))]
                } else {
                    type = "response.function_call_arguments.done"; fields = at + [("name", .string(call.name)), ("arguments", .string(call.arguments))]
                }
            } else if i == 3 {
                type = "response.content_part.added"; fields = at + [("content_index", .int(0)), ("part", part(text: ""))]
            } else if i - 4 < n {
                type = "response.output_text.delta"
                fields = at + [("content_index", .int(0)), ("delta", .string(pieces[i - 4])), ("logprobs", .array([]))]
            } else if i - 4 == n {
                type = "response.output_text.done"
                fields = at + [("content_index", .int(0)), ("text", .string(text)), ("logprobs", .array([]))]
            } else {
                type = "response.content_part.done"; fields = at + [("content_index", .int(0)), ("part", part(text: text))]
            }
        }
        let obj = JSONOut.object([("type", .string(type))] + fields + [("sequence_number", .int(i))])
        return "event: \(type)\ndata: \(obj.rendered)\n\n"
    }
}
