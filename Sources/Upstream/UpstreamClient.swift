import Reactor
// STUB until the libcurl implementation lands.
public final class UpstreamClient: UpstreamClientProtocol {
    public init(loop: EventLoop) {}
    public func start(_ request: UpstreamRequest, delegate: UpstreamDelegate) -> UpstreamTransfer { fatalError("stub") }
    public var activeTransfers: Int { 0 }
}
