/// Token counts from an OpenAI `usage` object.
public struct Usage: Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var totalTokens: Int
    public init(promptTokens: Int, completionTokens: Int, totalTokens: Int) {
        self.promptTokens = promptTokens; self.completionTokens = completionTokens; self.totalTokens = totalTokens
    }

    /// From a `usage` value: nil unless it is an object with at least one of the three counts
    /// (chat's `prompt_tokens`/`completion_tokens`, or the Responses and image APIs'
    /// `input_tokens`/`output_tokens`). Missing counts are 0; a missing total is prompt +
    /// completion (saturating). Negative → 0.
    public init?(_ v: JSONValue) {
        guard case .object = v else { return nil }
        let p = v["prompt_tokens"]?.lenientInt ?? v["input_tokens"]?.lenientInt
        let c = v["completion_tokens"]?.lenientInt ?? v["output_tokens"]?.lenientInt
        let t = v["total_tokens"]?.lenientInt
        guard p != nil || c != nil || t != nil else { return nil }
        promptTokens = max(p ?? 0, 0)
        completionTokens = max(c ?? 0, 0)
        let sum = promptTokens.addingReportingOverflow(completionTokens)
        totalTokens = max(t ?? (sum.overflow ? Int.max : sum.partialValue), 0)
    }
}

public enum ChatRequestInfo {
    private static let wanted: Set<String> = ["model", "stream"]

    /// `model` and `stream` of a chat completions body, without materialising the messages.
    /// Throws unless the body is a JSON object. `model` is nil unless a string; `stream` is true
    /// only for JSON `true` (what the upstream's Go decoder accepts; anything else would be an
    /// upstream error, which then isn't a stream either).
    public static func parse(_ body: [UInt8]) throws(TranslationError) -> (model: String?, stream: Bool) {
        let m = try JSONParser.topLevelMembers(body, wanted: wanted)
        return (m["model"]?.stringValue, m["stream"]?.boolValue ?? false)
    }
}

/// The top-level `usage` of a whole chat answer (nil when it has none), read in the pass that
/// validates it. Throws unless the document is a JSON object.
public func extractUsage(fromJSON bytes: [UInt8]) throws(TranslationError) -> Usage? {
    try JSONParser.topLevelMembers(bytes, wanted: usageMember)["usage"].flatMap(Usage.init)
}
private let usageMember: Set<String> = ["usage"]
