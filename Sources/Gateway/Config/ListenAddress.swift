import Glibc

/// `listen: host:port` with a host name (`localhost:8080`): resolved once, when the
/// configuration is loaded (at start, and by `veil check-config`), to the numeric address the
/// listeners bind. IPv4 is preferred when a name has both (`localhost` → 127.0.0.1); Veil binds
/// one address. IP literals are returned as they are, without a lookup.
public enum ListenAddress {
    /// `host:port` with a numeric host, or a `ConfigError` naming `listen` (syntax, or a name
    /// that does not resolve).
    public static func resolve(_ listen: String) throws(ConfigError) -> String {
        guard let (host, port) = ConfigLoader.parseListen(listen) else {
            throw ConfigError("listen", "`\(listen)` is not host:port")
        }
        if isLiteral(host) { return listen }
        guard host.utf8.count <= 253, host.utf8.allSatisfy({ isHostByte($0) }) else {
            throw ConfigError("listen", "`\(host)` is neither an IP address nor a host name")
        }
        switch lookup(host) {
        case .success(let ip): return (ip.contains(":") ? "[\(ip)]" : ip) + ":\(port)"
        case .failure(let why): throw ConfigError("listen", "host `\(host)` does not resolve (\(why)); use an IP address such as 127.0.0.1 or 0.0.0.0")
        }
    }

    static func isLiteral(_ host: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    private static func isHostByte(_ b: UInt8) -> Bool {
        (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b == 45 || b == 46
    }

    enum Lookup { case success(String), failure(String) }

    /// getaddrinfo (files, then DNS as the system is set up); the first IPv4 answer, else the first IPv6.
    static func lookup(_ host: String) -> Lookup {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &res)
        guard rc == 0, let first = res else { return .failure(String(cString: gai_strerror(rc))) }
        defer { freeaddrinfo(first) }
        var v4: String?, v6: String?
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            var buf = [CChar](repeating: 0, count: 64)
            if ai.pointee.ai_family == AF_INET, v4 == nil, let sa = ai.pointee.ai_addr {
                sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { s in
                    var a = s.pointee.sin_addr
                    if inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count)) != nil { v4 = String(cString: buf) }
                }
            } else if ai.pointee.ai_family == AF_INET6, v6 == nil, let sa = ai.pointee.ai_addr {
                sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { s in
                    var a = s.pointee.sin6_addr
                    if inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count)) != nil { v6 = String(cString: buf) }
                }
            }
            p = ai.pointee.ai_next
        }
        if let ip = v4 ?? v6 { return .success(ip) }
        return .failure("no IPv4 or IPv6 address")
    }
}
