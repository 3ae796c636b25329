/// The one error type this module throws: a machine-readable kind plus a human message that is
/// safe to show a caller (it never quotes more than a short excerpt of the input).
public struct TranslationError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        case invalidJSON, unexpectedShape, missingField
        case malformedMultipart, limitExceeded
        case invalidTimestamps
        /// The upstream answered with an explicit failure (`success:false`).
        case upstreamFailure
        /// Two members whose names the upstream's decoder would take for one (`param` names it).
        case ambiguousMember
    }

    public var kind: Kind
    public var message: String
    /// The request member at fault, when there is one (the OpenAI envelope's `param`).
    public var param: String?

    public init(_ kind: Kind, _ message: String, param: String? = nil) {
        self.kind = kind
        self.message = message
        self.param = param
    }

    public var description: String { "\(kind.rawValue): \(message)" }
}
