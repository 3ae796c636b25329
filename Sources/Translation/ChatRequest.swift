/// What Veil decides on in a chat completions body.
public struct ChatRequest: Sendable, Equatable {
    /// `model` when it is a string.
    public var model: String?
    /// True only for JSON `true` (what the upstream's Go decoder accepts as a stream).
    public var stream: Bool
    /// `stream_options.include_usage` is JSON `true`: the caller wants the final usage chunk.
    public var includeUsage: Bool

    public init(model: String?, stream: Bool, includeUsage: Bool) {
        self.model = model; self.stream = stream; self.includeUsage = includeUsage
    }
}

extension ChatRequestInfo {
    /// The top-level members Veil decides on: refused when given twice or spelled otherwise.
    public static let decisionMembers: Set<String> = ["model", "stream", "stream_options"]
    private static let readMembers: Set<String> = ["model", "stream", "stream_options"]
    /// Folded once, not per request.
    private static let decisionCheck = MemberNameCheck(reading: decisionMembers)
    private static let includeUsageMember: Set<String> = ["include_usage"]
    private static let streamOptionsMember: Set<String> = ["stream_options"]

    /// `model`, `stream` and `stream_options.include_usage` of a chat body, in one pass that
    /// validates the whole body and skips the messages. Throws `ambiguousMember` (with `param`)
    /// when a top-level name is ambiguous or a name in `decisionMembers` is spelled otherwise,
    /// and likewise for `include_usage` inside `stream_options`; `invalidJSON`/`unexpectedShape`
    /// unless the body is a JSON object.
    public static func read(_ body: [UInt8]) throws(TranslationError) -> ChatRequest {
        let m = try JSONParser.unambiguousTopLevelMembers(body, wanted: readMembers, check: decisionCheck)
        var includeUsage = false
        if let options = m["stream_options"], case .object(let members) = options {
            if let name = ambiguousMember(in: members, reading: includeUsageMember) {
                throw TranslationError.ambiguous("stream_options." + name)
            }
            includeUsage = options["include_usage"]?.boolValue == true
        }
        return ChatRequest(model: m["model"]?.stringValue, stream: m["stream"]?.boolValue ?? false,
                           includeUsage: includeUsage)
    }

    /// For a streamed chat body: whether the caller asked for the usage chunk, and the body to
    /// send upstream, which always asks for it (Veil needs the token counts). Only the
    /// `stream_options` member changes: added at the end of the object when absent,
    /// `include_usage` set to `true` (added, or its `false`/`null` value replaced) when present;
    /// every other byte stays as the caller sent it. When the caller already asked, the very
    /// same array comes back. Throws `ambiguousMember` like `read`, and `unexpectedShape` (with
    /// `param`) when `stream_options` is neither an object nor null, or `include_usage` is
    /// neither a boolean nor null. Call it only for `stream: true` (OpenAI refuses
    /// `stream_options` otherwise).
    public static func askingUpstreamForUsage(_ body: [UInt8]) throws(TranslationError) -> (callerAskedForUsage: Bool, body: [UInt8]) {
        let scan = try body.withUnsafeBufferPointer { (b) throws(TranslationError) in
            try JSONParser.scanTopLevel(b, wanted: streamOptionsMember, names: decisionCheck, ranges: true, maxDepth: 64)
        }
        if let name = scan.ambiguous { throw TranslationError.ambiguous(name) }
        guard let options = scan.members["stream_options"], let range = scan.valueRanges["stream_options"] else {
            let member = Array("\"stream_options\":{\"include_usage\":true}".utf8)
            return (false, insert(member, into: body, before: scan.closingBrace))
        }
        switch options {
        case .null:
            return (false, replace(range, in: body, with: Array("{\"include_usage\":true}".utf8)))
        case .object(let members):
            if let name = ambiguousMember(in: members, reading: includeUsageMember) {
                throw TranslationError.ambiguous("stream_options." + name)
            }
            let inner = try body.withUnsafeBufferPointer { (b) throws(TranslationError) in
                try JSONParser.scanTopLevel(UnsafeBufferPointer(rebasing: b[range]), wanted: includeUsageMember, names: nil, ranges: true, maxDepth: 63)
            }
            switch inner.members["include_usage"] {
            case .bool(true)?:
                return (true, body)
            case .bool(false)?, .null?:
                let r = inner.valueRanges["include_usage"]!
                return (false, replace((range.lowerBound + r.lowerBound)..<(range.lowerBound + r.upperBound), in: body, with: Array("true".utf8)))
            case nil:
                return (false, insert(Array("\"include_usage\":true".utf8), into: body, before: range.lowerBound + inner.closingBrace))
            default:
                throw TranslationError(.unexpectedShape, "`stream_options.include_usage` must be a boolean.",
                                       param: "stream_options.include_usage")
            }
        default:
            throw TranslationError(.unexpectedShape, "`stream_options` must be an object.", param: "stream_options")
        }
    }

    /// The first member of an object (already parsed) whose name is ambiguous, as
    /// `JSONParser.ambiguousTopLevelMember` defines it.
    static func ambiguousMember(in members: [JSONMember], reading: Set<String>) -> String? {
        let check = MemberNameCheck(reading: reading)
        var seen = Set<[UInt8]>()
        for m in members {
            let folded = foldMemberName(Array(m.key.utf8))
            if !seen.insert(folded).inserted || check.isVariant(m.key, folded: folded) { return m.key }
        }
        return nil
    }

    /// `member` inserted as the last member of the object whose closing brace is at `brace`.
    private static func insert(_ member: [UInt8], into body: [UInt8], before brace: Int) -> [UInt8] {
        var j = brace - 1
        while j >= 0, isASCIISpace(body[j]) { j -= 1 }
        let empty = j >= 0 && body[j] == UInt8(ascii: "{")
        var out: [UInt8] = []
        out.reserveCapacity(body.count + member.count + 1)
        out += body[..<brace]
        if !empty { out.append(UInt8(ascii: ",")) }
        out += member
        out += body[brace...]
        return out
    }

    private static func replace(_ range: Range<Int>, in body: [UInt8], with bytes: [UInt8]) -> [UInt8] {
        var out = body
        out.replaceSubrange(range, with: bytes)
        return out
    }
}
