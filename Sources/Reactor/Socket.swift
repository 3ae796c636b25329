import CSystem
import Glibc

/// Small helpers over POSIX sockets. Every socket Veil opens is non-blocking and close-on-exec.
public enum Socket {
    public struct Failure: Error, CustomStringConvertible {
        public let operation: String
        public let code: Int32
        public var description: String { "\(operation): \(String(cString: strerror(code)))" }
    }

    /// A listening socket with SO_REUSEADDR and SO_REUSEPORT, so each loop can own one.
    public static func listen(host: String, port: UInt16, backlog: Int32 = 4096) throws(Failure) -> Int32 {
        let isV6 = host.contains(":")
        let fd = socket(isV6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(operation: "socket", code: veil_errno()) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        var rc: Int32
        if isV6 {
            var addr = sockaddr_in6()
            addr.sin6_family = sa_family_t(AF_INET6)
            addr.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, host, &addr.sin6_addr) == 1 else { close(fd); throw Failure(operation: "inet_pton(\(host))", code: EINVAL) }
            rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        } else {
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { close(fd); throw Failure(operation: "inet_pton(\(host))", code: EINVAL) }
            rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        guard rc == 0 else { let e = veil_errno(); close(fd); throw Failure(operation: "bind \(host):\(port)", code: e) }
        guard Glibc.listen(fd, backlog) == 0 else { let e = veil_errno(); close(fd); throw Failure(operation: "listen", code: e) }
        return fd
    }

    /// Refuses (EADDRINUSE, naming the port) when something already listens on `host:port`.
    ///
    /// Why: the per-loop listeners set SO_REUSEPORT, and Linux lets a second process (same user)
    /// bind the same port that way too — a second `veil serve` would start silently and the kernel
    /// would split connections between two processes with separate stores. This probe binds once
    /// *without* SO_REUSEPORT (SO_REUSEADDR only, so a predecessor's TIME_WAIT connections don't
    /// count), which fails while any socket listens there, then closes. Call it before the
    /// listeners (a listener of our own would make it fail). Port 0 needs no probe.
    public static func ensurePortFree(host: String, port: UInt16) throws(Failure) {
        guard port != 0 else { return }
        let isV6 = host.contains(":")
        let fd = socket(isV6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(operation: "socket", code: veil_errno()) }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var rc: Int32
        if isV6 {
            var addr = sockaddr_in6()
            addr.sin6_family = sa_family_t(AF_INET6)
            addr.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, host, &addr.sin6_addr) == 1 else { throw Failure(operation: "inet_pton(\(host))", code: EINVAL) }
            rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        } else {
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = port.bigEndian
            guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { throw Failure(operation: "inet_pton(\(host))", code: EINVAL) }
            rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        guard rc == 0 else {
            let e = veil_errno()
            throw Failure(operation: e == EADDRINUSE ? "port \(port) is already in use by another process (bind \(host):\(port))" : "bind \(host):\(port)", code: e)
        }
    }

    /// The port a bound socket ended up on.
    public static func localPort(_ fd: Int32) -> UInt16 {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        let family = Int32(storage.ss_family)
        return withUnsafePointer(to: &storage) { p -> UInt16 in
            if family == AF_INET6 {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
    }

    public enum Accepted {
        case accepted(fd: Int32, peer: String)
        /// Nothing waiting (EAGAIN).
        case none
        /// A client gave up before it was accepted, or a signal: try the next one.
        case retry
        /// Out of descriptors or kernel memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).
        case exhausted
    }

    /// Accepts one connection (non-blocking, close-on-exec, TCP_NODELAY).
    public static func accept(_ listener: Int32) -> Accepted {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                veil_accept4(listener, $0, &len, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            }
        }
        guard fd >= 0 else {
            switch veil_errno() {
            case EMFILE, ENFILE, ENOBUFS, ENOMEM: return .exhausted
            case EINTR, ECONNABORTED, EPROTO, EPERM: return .retry
            default: return .none
            }
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return .accepted(fd: fd, peer: peerString(&storage))
    }

    static func peerString(_ storage: inout sockaddr_storage) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        let family = Int32(storage.ss_family)
        return withUnsafePointer(to: &storage) { p -> String in
            if family == AF_INET6 {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { a in
                    var addr = a.pointee.sin6_addr
                    inet_ntop(AF_INET6, &addr, &buf, socklen_t(buf.count))
                    return String(cString: buf)
                }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { a in
                var addr = a.pointee.sin_addr
                inet_ntop(AF_INET, &addr, &buf, socklen_t(buf.count))
                return String(cString: buf)
            }
        }
    }

    /// Raises the soft open-file limit to the hard one (10k streams need 20k descriptors).
    public static func raiseFileLimit() {
        var rl = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 else { return }
        rl.rlim_cur = rl.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
    }
}

/// Starts a detached-from-Swift-concurrency OS thread. Entry points must not be closures written
/// in top-level code (Swift 6 would infer them @MainActor and trap on another thread).
public func startThread(name: String, _ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(&tid, nil, { arg in
        let b = Unmanaged<AnyObject>.fromOpaque(arg!).takeRetainedValue() as! Box
        b.body()
        return nil
    }, box)
    precondition(rc == 0, "pthread_create failed")
    pthread_detach(tid)
    _ = name
}
