import HTTPWire

/// Header fields shared by many requests (the upstream's `Authorization` and `Accept-Encoding`),
/// built once per configuration and sent behind each request's own fields. A class: a client
/// keys the wire form it encodes once by the block's identity, not by comparing fields.
public final class UpstreamHeaderBlock: Sendable {
    public let fields: HTTPHeaders
    public init(_ fields: HTTPHeaders) { self.fields = fields }
}
