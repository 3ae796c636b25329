import CSystem
import Glibc
import Reactor
import Synchronization
import Upstream

/// One address to connect to, as `connect(2)` takes it.
public struct SocketAddress: Sendable {
    public var storage: sockaddr_storage
    public var length: socklen_t

    public init(storage: sockaddr_storage, length: socklen_t) { self.storage = storage; self.length = length }

    /// An IPv4 or IPv6 literal and a port (no DNS).
    public init?(ip text: String, port: UInt16) {
        var st = sockaddr_storage()
        var h = Substring(text)
        if h.hasPrefix("[") && h.hasSuffix("]") { h = h.dropFirst().dropLast() }
        let s = String(h)
        var len: socklen_t = 0
        let ok = withUnsafeMutablePointer(to: &st) { p -> Bool in
            var a4 = in_addr()
            if inet_pton(AF_INET, s, &a4) == 1 {
                p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    $0.pointee.sin_family = sa_family_t(AF_INET)
                    $0.pointee.sin_port = port.bigEndian
                    $0.pointee.sin_addr = a4
                }
                len = socklen_t(MemoryLayout<sockaddr_in>.size)
                return true
            }
            var a6 = in6_addr()
            if inet_pton(AF_INET6, s, &a6) == 1 {
                p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    $0.pointee.sin6_family = sa_family_t(AF_INET6)
                    $0.pointee.sin6_port = port.bigEndian
                    $0.pointee.sin6_addr = a6
                }
                len = socklen_t(MemoryLayout<sockaddr_in6>.size)
                return true
            }
            return false
        }
        guard ok else { return nil }
        storage = st
        length = len
    }

    public var family: Int32 { Int32(storage.ss_family) }

    /// The address's 4 or 16 bytes in network order (for `AddressPolicy`).
    public var ipBytes: [UInt8] {
        var st = storage
        return withUnsafeBytes(of: &st) { raw -> [UInt8] in
            if family == AF_INET6 {
                let off = MemoryLayout<sockaddr_in6>.offset(of: \sockaddr_in6.sin6_addr)!
                return Array(raw[off..<(off + 16)])
            }
            let off = MemoryLayout<sockaddr_in>.offset(of: \sockaddr_in.sin_addr)!
            return Array(raw[off..<(off + 4)])
        }
    }

    /// `1.2.3.4:80` / `[::1]:80`.
    public var description: String {
        var st = storage
        let port = withUnsafeBytes(of: &st) { raw -> UInt16 in
            let off = family == AF_INET6 ? MemoryLayout<sockaddr_in6>.offset(of: \sockaddr_in6.sin6_port)!
                                         : MemoryLayout<sockaddr_in>.offset(of: \sockaddr_in.sin_port)!
            return UInt16(raw[off]) << 8 | UInt16(raw[off + 1])
        }
        let ip = AddressPolicy.format(ipBytes)
        return family == AF_INET6 ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}

/// `getaddrinfo` off the event loops: it blocks (for seconds, when a DNS server is slow), so it
/// runs on a few resolver threads shared by the process, and each answer is posted back to the
/// loop that asked with `loop.execute`. Callers cache answers (per origin, `dnsCacheMillis`) and
/// coalesce concurrent lookups of one host, so this sees about one lookup per host per TTL.
final class Resolver: @unchecked Sendable {
    typealias Answer = Result<[SocketAddress], ResolveFailure>
    struct ResolveFailure: Error { let message: String }

    private struct Job {
        let host: String
        let port: UInt16
        let loop: EventLoop
        let done: @Sendable (Answer) -> Void
    }

    /// Threads started on first use. Two: one slow lookup (a caller's image host whose DNS
    /// hangs) does not hold up the upstream's.
    static let shared = Resolver(threads: 2)

    private let jobs = Mutex<[Job]>([])
    private let signal: UnsafeMutablePointer<sem_t>
    private let threadCount: Int
    private let started = Atomic<Bool>(false)

    /// The blocking lookup (`Resolver.lookup`; tests give their own).
    private let lookupFunction: @Sendable (String, UInt16) -> Answer

    init(threads: Int, lookup: @escaping @Sendable (String, UInt16) -> Answer = Resolver.lookup) {
        threadCount = max(1, threads)
        lookupFunction = lookup
        signal = .allocate(capacity: 1)
        sem_init(signal, 0, 0)
    }

    /// Resolves `host` (a name; literals never come here) on a resolver thread; `done` runs on
    /// `loop`'s thread.
    func resolve(_ host: String, port: UInt16, on loop: EventLoop, _ done: @escaping @Sendable (Answer) -> Void) {
        startThreadsOnce()
        jobs.withLock { $0.append(Job(host: host, port: port, loop: loop, done: done)) }
        sem_post(signal)
    }

    private func startThreadsOnce() {
        guard !started.load(ordering: .acquiring) else { return }
        guard started.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        for _ in 0..<threadCount {
            startThread(name: "veil-resolver") { [self] in self.work() }
        }
    }

    private func work() {
        while true {
            while sem_wait(signal) != 0 {}
            guard let job = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
            let answer = lookupFunction(job.host, job.port)
            let done = job.done
            job.loop.execute { done(answer) }
        }
    }

    /// Blocking `getaddrinfo`, TCP addresses in the order the system prefers (RFC 6724).
    static func lookup(_ host: String, port: UInt16) -> Answer {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_ADDRCONFIG
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &res)
        guard rc == 0, let first = res else {
            return .failure(ResolveFailure(message: "could not resolve host \(host): \(String(cString: gai_strerror(rc)))"))
        }
        defer { freeaddrinfo(first) }
        var out: [SocketAddress] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            if let sa = ai.pointee.ai_addr, ai.pointee.ai_family == AF_INET || ai.pointee.ai_family == AF_INET6 {
                var st = sockaddr_storage()
                let len = ai.pointee.ai_addrlen
                withUnsafeMutableBytes(of: &st) { dst in
                    dst.copyMemory(from: UnsafeRawBufferPointer(start: sa, count: Int(len)))
                }
                out.append(SocketAddress(storage: st, length: len))
            }
            p = ai.pointee.ai_next
        }
        if out.isEmpty { return .failure(ResolveFailure(message: "could not resolve host \(host): no addresses")) }
        return .success(out)
    }
}
