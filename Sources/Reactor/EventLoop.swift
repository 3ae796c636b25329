import CSystem
import Glibc
import Synchronization

/// Readiness reported by epoll (level-triggered).
public struct IOEvents: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let readable = IOEvents(rawValue: EPOLLIN.rawValue)
    public static let writable = IOEvents(rawValue: EPOLLOUT.rawValue)
    /// Error or hang-up; always reported by epoll whether asked for or not.
    public static let hangup = IOEvents(rawValue: EPOLLERR.rawValue | EPOLLHUP.rawValue)
    /// The peer shut down its sending side (EPOLLRDHUP). Opt-in: level-triggered, it would spin
    /// for a watcher that does not read (a client watching a socket for writes only).
    public static let peerClosed = IOEvents(rawValue: EPOLLRDHUP.rawValue)
}

/// Something that owns a file descriptor registered with a loop.
public protocol IOHandler: AnyObject {
    func ioReady(_ events: IOEvents)
}

/// Something with output batched during one callback (an HTTP connection's write buffer): the
/// loop calls `flushDeferred()` as soon as the callback that queued it returns — before any other
/// handler, timer or task runs — so batching adds no latency, only fewer syscalls.
public protocol DeferredFlush: AnyObject {
    func flushDeferred()
}

/// Work a loop runs "soon": after the events and timers of the current iteration, never nested
/// inside the code that asked for it (see `EventLoop.runSoon`).
public protocol LoopTask: AnyObject {
    func runLoopTask()
}

/// What a target-based timer calls when it fires (see `EventLoop.schedule(afterMillis:target:)`).
public protocol TimerTarget: AnyObject {
    func timerFired(_ timer: LoopTimer)
}

/// A one-shot timer. Cancelling is O(1) (lazy removal from the heap).
public final class LoopTimer {
    public let deadline: UInt64
    fileprivate var callback: (() -> Void)?
    /// Not weak, not retained: a weak reference gives the target a side table (an allocation, and
    /// every retain of the target then takes the slow path), and a closure capturing it weakly
    /// is a second allocation per arm. The target's contract: cancel before it is freed.
    fileprivate unowned(unsafe) var target: (any TimerTarget)?
    fileprivate init(deadline: UInt64, callback: (() -> Void)?, target: (any TimerTarget)?) {
        self.deadline = deadline; self.callback = callback; self.target = target
    }
    public var isPending: Bool { callback != nil || target != nil }
    public func cancel() { callback = nil; target = nil }
}

/// One epoll event loop, run by one thread. Everything registered with it (sockets, timers,
/// upstream transfers) is touched only from that thread, so nothing on the hot path takes a lock.
/// `execute(_:)` is the one thread-safe entry point (an eventfd wake-up).
public final class EventLoop: @unchecked Sendable {
    public let id: Int
    private let epfd: Int32
    private let wakeFD: Int32
    private var handlers: [IOHandler?] = []
    private var timers = TimerHeap()
    private let inbox = Mutex<[@Sendable () -> Void]>([])
    private let stopping = Atomic<Bool>(false)
    private var loopThread: pthread_t?
    private var pendingFlushes: [DeferredFlush] = []
    private var soonTasks: [LoopTask] = []
    private var runningSoon: [LoopTask] = []
    /// Monotonic milliseconds, refreshed once per iteration.
    public private(set) var now: UInt64

    public init(id: Int = 0) {
        self.id = id
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        precondition(epfd >= 0, "epoll_create1 failed: errno \(veil_errno())")
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        precondition(wakeFD >= 0, "eventfd failed")
        now = EventLoop.monotonicMillis()
        var ev = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(fd: wakeFD))
        _ = epoll_ctl(epfd, EPOLL_CTL_ADD, wakeFD, &ev)
    }

    deinit {
        close(epfd)
        close(wakeFD)
    }

    public static func monotonicMillis() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    public var inLoopThread: Bool {
        guard let t = loopThread else { return false }
        return pthread_equal(t, pthread_self()) != 0
    }

    // MARK: file descriptors

    /// The events each fd is registered for (meaningful while it has a handler): a `watch` that
    /// changes nothing makes no syscall.
    private var interests: [UInt32] = []
    /// `epoll_ctl` calls made (for tests and benchmarks: the syscalls saved are the point).
    public private(set) var epollCtlCalls = 0

    /// Registers `fd` for `events`, or changes the events of an fd already registered. Free when
    /// `fd` is already registered with exactly these events and this handler.
    public func watch(_ fd: Int32, _ events: IOEvents, _ handler: IOHandler) {
        let idx = Int(fd)
        if idx >= handlers.count {
            let grow = max(idx + 1 - handlers.count, 64)
            handlers.append(contentsOf: repeatElement(nil, count: grow))
            interests.append(contentsOf: repeatElement(0, count: grow))
        }
        if handlers[idx] === handler && interests[idx] == events.rawValue { return }
        let op = handlers[idx] == nil ? EPOLL_CTL_ADD : EPOLL_CTL_MOD
        handlers[idx] = handler
        interests[idx] = events.rawValue
        var ev = epoll_event(events: events.rawValue, data: epoll_data_t(fd: fd))
        epollCtlCalls += 1
        if epoll_ctl(epfd, op, fd, &ev) != 0 {
            // Out of step with the kernel (an fd closed and reused behind our back): say it again.
            let e = veil_errno()
            epollCtlCalls += 1
            if e == EEXIST { _ = epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) }
            if e == ENOENT { _ = epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) }
        }
    }

    /// Forgets `fd`. Call before closing it.
    public func unwatch(_ fd: Int32) {
        guard isWatching(fd) else { return }
        handlers[Int(fd)] = nil
        var ev = epoll_event()
        epollCtlCalls += 1
        _ = epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev)
    }

    /// Forgets `fd` without a syscall, for an fd about to be closed (closing the last descriptor
    /// of a socket takes it out of epoll by itself).
    public func forgetClosing(_ fd: Int32) {
        if isWatching(fd) { handlers[Int(fd)] = nil }
    }

    /// Whether `fd` is registered.
    public func isWatching(_ fd: Int32) -> Bool {
        let idx = Int(fd)
        return idx >= 0 && idx < handlers.count && handlers[idx] != nil
    }

    // MARK: timers

    @discardableResult
    public func schedule(afterMillis ms: Int, _ callback: @escaping () -> Void) -> LoopTimer {
        let t = LoopTimer(deadline: EventLoop.monotonicMillis() + UInt64(max(ms, 0)), callback: callback, target: nil)
        timers.push(t)
        return t
    }

    /// A timer that calls `target.timerFired(_:)`: one allocation per arm, no closure, no weak
    /// reference. The target must cancel it (at the latest in its deinit, on this loop's thread)
    /// before it is freed: the timer does not keep it alive.
    public func schedule(afterMillis ms: Int, target: any TimerTarget) -> LoopTimer {
        let t = LoopTimer(deadline: EventLoop.monotonicMillis() + UInt64(max(ms, 0)), callback: nil, target: target)
        timers.push(t)
        return t
    }

    // MARK: deferred flushes

    /// Asks for `f.flushDeferred()` once the current callback returns (loop thread only). Callers
    /// keep their own "already asked" flag so each is queued at most once per callback.
    public func flushAfterCallback(_ f: DeferredFlush) {
        pendingFlushes.append(f)
    }

    @inline(__always)
    private func runPendingFlushes() {
        if pendingFlushes.isEmpty { return }
        var i = 0
        while i < pendingFlushes.count {      // a flush may queue another (index-based on purpose)
            pendingFlushes[i].flushDeferred()
            i += 1
        }
        pendingFlushes.removeAll(keepingCapacity: true)
    }

    // MARK: soon

    /// Runs `task.runLoopTask()` at the end of this iteration (loop thread only): after the
    /// current callback has unwound, so it never runs inside the caller's own stack. Tasks queued
    /// while these run wait for the next iteration (a task that keeps re-queueing itself cannot
    /// starve sockets and timers). Callers keep their own "already queued" flag.
    public func runSoon(_ task: LoopTask) {
        soonTasks.append(task)
    }

    private func runSoonTasks() {
        if soonTasks.isEmpty { return }
        swap(&soonTasks, &runningSoon)
        for t in runningSoon {
            t.runLoopTask()
            runPendingFlushes()
        }
        runningSoon.removeAll(keepingCapacity: true)
    }

    // MARK: cross-thread

    /// Runs `task` on the loop thread soon. Safe from any thread.
    public func execute(_ task: @escaping @Sendable () -> Void) {
        inbox.withLock { $0.append(task) }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// Asks the loop to return from `run()` after the current iteration. Safe from any thread.
    public func stop() {
        stopping.store(true, ordering: .releasing)
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    // MARK: running

    /// Runs the loop on the calling thread until `stop()`.
    public func run() {
        loopThread = pthread_self()
        var events = [epoll_event](repeating: epoll_event(), count: 512)
        while !stopping.load(ordering: .acquiring) {
            now = EventLoop.monotonicMillis()
            var timeout: Int32 = 1000
            if let next = timers.peekDeadline() {
                timeout = next <= now ? 0 : Int32(min(next - now, 1000))
            }
            if !soonTasks.isEmpty { timeout = 0 }
            let n = events.withUnsafeMutableBufferPointer { epoll_wait(epfd, $0.baseAddress, Int32($0.count), timeout) }
            now = EventLoop.monotonicMillis()
            if n > 0 {
                for i in 0..<Int(n) {
                    let fd = events[i].data.fd
                    if fd == wakeFD { drainInbox(); continue }
                    let idx = Int(fd)
                    guard idx < handlers.count, let h = handlers[idx] else { continue }
                    h.ioReady(IOEvents(rawValue: events[i].events))
                    runPendingFlushes()
                }
            }
            runExpiredTimers()
            runSoonTasks()
        }
        drainInbox()
    }

    private func runExpiredTimers() {
        while let t = timers.popExpired(now: now) {
            if let cb = t.callback {
                t.callback = nil
                cb()
                runPendingFlushes()
            } else if let target = t.target {
                t.target = nil
                target.timerFired(t)
                runPendingFlushes()
            }
        }
    }

    private func drainInbox() {
        var counter: UInt64 = 0
        _ = read(wakeFD, &counter, 8)
        let tasks = inbox.withLock { box -> [@Sendable () -> Void] in
            let t = box
            box.removeAll(keepingCapacity: true)
            return t
        }
        for task in tasks {
            task()
            runPendingFlushes()
        }
    }
}

/// Binary min-heap of timers by deadline; cancelled timers are dropped when they surface.
struct TimerHeap {
    private var items: [LoopTimer] = []
    /// Timers still pending after the last sweep: the heap is swept again once it holds twice
    /// that many (plus slack), so cancelled timers cost amortised O(1) and never pile up.
    private var liveAfterSweep = 0

    var count: Int { items.count }

    mutating func push(_ t: LoopTimer) {
        if items.count >= 2 * liveAfterSweep + 4096 { sweep() }
        items.append(t)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if items[p].deadline <= items[i].deadline { break }
            items.swapAt(p, i)
            i = p
        }
    }

    /// Drops cancelled timers and restores the heap order (Floyd's heapify, O(n)). Cancelled
    /// timers otherwise stay until their deadline surfaces: connection deadlines are re-armed or
    /// cancelled per request, with deadlines minutes away, so at a few
    /// thousand requests a second the heap held hundreds of thousands of dead timers.
    mutating func sweep() {
        items.removeAll { !$0.isPending }
        liveAfterSweep = items.count
        var i = items.count / 2 - 1
        while i >= 0 {
            siftDown(i)
            i -= 1
        }
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && items[l].deadline < items[m].deadline { m = l }
            if r < items.count && items[r].deadline < items[m].deadline { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
    }

    mutating func peekDeadline() -> UInt64? {
        while let first = items.first, !first.isPending { _ = popFirst() }
        return items.first?.deadline
    }

    mutating func popExpired(now: UInt64) -> LoopTimer? {
        guard let d = peekDeadline(), d <= now else { return nil }
        return popFirst()
    }

    private mutating func popFirst() -> LoopTimer? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        siftDown(0)
        return top
    }
}
