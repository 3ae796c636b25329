// STUB until the translation module lands.
public struct KeyRedactor {
    public init(secret: [UInt8], replacement: [UInt8] = Array("[redacted]".utf8)) {}
    public mutating func process(_ input: UnsafeRawBufferPointer, emit: (UnsafeRawBufferPointer) -> Void) { emit(input) }
    public mutating func finish(emit: (UnsafeRawBufferPointer) -> Void) {}
    public static func redact(_ bytes: [UInt8], secret: [UInt8]) -> [UInt8] { bytes }
}
public struct Usage { public var promptTokens = 0, completionTokens = 0, totalTokens = 0 }
public struct SSEUsageScanner {
    public init() {}
    public mutating func feed(_ b: UnsafeRawBufferPointer) {}
    public var usage: Usage? { nil }
    public var sawDone: Bool { true }
}
public func extractUsage(fromJSON: [UInt8]) -> Usage? { nil }
public enum ChatRequestInfo { public static func parse(_ body: [UInt8]) throws -> (model: String?, stream: Bool) { (nil, false) } }
