import Synchronization

/// A relaxed atomic counter, safe to bump from any loop (metrics, gauges).
public final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    public init() {}
    @inline(__always) public func add(_ n: Int) { value.add(n, ordering: .relaxed) }
    @inline(__always) public func sub(_ n: Int) { value.subtract(n, ordering: .relaxed) }
    public var current: Int { value.load(ordering: .relaxed) }
}
