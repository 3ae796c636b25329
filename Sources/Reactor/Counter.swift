import Synchronization

/// A relaxed atomic counter, safe to bump from any loop (metrics, gauges).
public final class Counter: Sendable {
    private let value = Atomic<Int>(0)
    public init() {}
    @inline(__always) public func add(_ n: Int) { value.add(n, ordering: .relaxed) }
    @inline(__always) public func sub(_ n: Int) { value.subtract(n, ordering: .relaxed) }
    public var current: Int { value.load(ordering: .relaxed) }
}

/// The largest value ever reported, lock-free.
public final class MaxGauge: Sendable {
    private let value = Atomic<Int>(0)
    public init() {}
    @inline(__always) public func observe(_ n: Int) {
        var current = value.load(ordering: .relaxed)
        while n > current {
            let (done, seen) = value.compareExchange(expected: current, desired: n, ordering: .relaxed)
            if done { return }
            current = seen
        }
    }
    public var current: Int { value.load(ordering: .relaxed) }
}
