import HTTPWire
import Upstream

/// An `http://` or `https://` URL split the way the client needs it: the origin (where to
/// connect, what to send as Host) and the request target. Pure; no allocation beyond the
/// origin's own strings (the target is a range of the URL's bytes).
///
/// Accepted: `scheme "://" host [":" port] [path] ["?" query] ["#" fragment]`, scheme `http` or
/// `https` (any case). Refused (nil): userinfo (`user@`), an empty host, a port that is not
/// 1...65535 digits, a host with characters outside RFC 3986's reg-name / IP-literal, and any
/// byte in the target that is a control, SP or DEL (they would change the request line). Bytes
/// ≥ 0x80 in the target are sent percent-encoded (`RequestHeadWriter`). The fragment is dropped.
public struct UpstreamURL: Sendable, Equatable {
    public var scheme: Scheme
    /// The host as written, lowercased, without brackets for IPv6 literals.
    public var host: String
    public var port: UInt16
    /// `Host` field value: the authority as written (`host[:port]`, brackets kept).
    public var authority: String
    /// The bytes of the URL that start the origin (`scheme://authority`): every URL with the same
    /// prefix has the same origin.
    public var originLength: Int
    /// The request target: `originLength..<targetEnd` of the URL's UTF-8 (empty means `/`).
    public var targetEnd: Int

    public enum Scheme: String, Sendable { case http, https }

    public var isTLS: Bool { scheme == .https }
    /// The host is an IP literal (no DNS, no SNI).
    public var hostIsIP: Bool { AddressPolicy.parseIP(host) != nil }
    /// `scheme://host:port`, lowercased: what connections are pooled by.
    public var originKey: String { "\(scheme.rawValue)://\(host.contains(":") ? "[\(host)]" : host):\(port)" }

    public static func parse(_ url: String) -> UpstreamURL? {
        var u = url
        return u.withUTF8 { parse(bytes: $0) }
    }

    /// Where the origin of `url` ends (the index of the first `/`, `?` or `#` after `://`, or the
    /// end), without validating anything: the key of the client's origin cache.
    public static func originLength(_ b: UnsafeBufferPointer<UInt8>) -> Int? {
        var i = 0
        while i < b.count, b[i] != 0x3A { i += 1 }                        // ':'
        guard i + 2 < b.count, b[i + 1] == 0x2F, b[i + 2] == 0x2F else { return nil }
        var j = i + 3
        while j < b.count, b[j] != 0x2F, b[j] != 0x3F, b[j] != 0x23 { j += 1 }
        return j
    }

    public static func parse(bytes b: UnsafeBufferPointer<UInt8>) -> UpstreamURL? {
        guard let originEnd = originLength(b) else { return nil }
        var colon = 0
        while b[colon] != 0x3A { colon += 1 }
        let schemeBytes = UnsafeBufferPointer(rebasing: b[0..<colon])
        let scheme: Scheme
        if asciiCaseInsensitiveEqualBytes(schemeBytes, staticBytes("http")) { scheme = .http }
        else if asciiCaseInsensitiveEqualBytes(schemeBytes, staticBytes("https")) { scheme = .https }
        else { return nil }
        let authStart = colon + 3
        guard originEnd > authStart else { return nil }
        // host [":" port]; IPv6 literals in brackets.
        var hostStart = authStart, hostEnd: Int, portStart: Int?
        if b[authStart] == 0x5B {                                          // '['
            var k = authStart + 1
            while k < originEnd, b[k] != 0x5D { k += 1 }                   // ']'
            guard k < originEnd, k > authStart + 1 else { return nil }
            hostStart = authStart + 1
            hostEnd = k
            for i in hostStart..<hostEnd {
                let c = b[i]
                guard isHexDigit(c) || c == 0x3A || c == 0x2E else { return nil }   // hex, ':', '.' (no zone ids)
            }
            if k + 1 == originEnd { portStart = nil }
            else if b[k + 1] == 0x3A { portStart = k + 2 }
            else { return nil }
        } else {
            var k = authStart
            while k < originEnd, b[k] != 0x3A { k += 1 }
            hostEnd = k
            portStart = k < originEnd ? k + 1 : nil
            guard hostEnd > hostStart else { return nil }
            for i in hostStart..<hostEnd where !isRegNameChar(b[i]) { return nil }   // '@' (userinfo) refused here
        }
        var port: UInt16 = scheme == .https ? 443 : 80
        if let ps = portStart {
            guard ps < originEnd, originEnd - ps <= 5 else { return nil }
            var v = 0
            for i in ps..<originEnd {
                guard b[i] >= 0x30 && b[i] <= 0x39 else { return nil }
                v = v * 10 + Int(b[i] - 0x30)
            }
            guard v >= 1 && v <= 65535 else { return nil }
            port = UInt16(v)
        }
        guard let targetEnd = targetEnd(b, from: originEnd) else { return nil }
        var host = String(decoding: UnsafeBufferPointer(rebasing: b[hostStart..<hostEnd]), as: UTF8.self)
        host = host.lowercased()
        let authority = String(decoding: UnsafeBufferPointer(rebasing: b[authStart..<originEnd]), as: UTF8.self)
        return UpstreamURL(scheme: scheme, host: host, port: port, authority: authority,
                           originLength: originEnd, targetEnd: targetEnd)
    }

    /// Where the request target that starts at `start` ends (at `#` or the end); nil when it
    /// holds a control, SP or DEL.
    public static func targetEnd(_ b: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        var i = start
        while i < b.count {
            let c = b[i]
            if c == 0x23 { break }                                          // '#' ends the target
            if c <= 0x20 || c == 0x7F { return nil }
            i += 1
        }
        return i
    }

    private static func staticBytes(_ s: StaticString) -> UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount)
    }

    @inline(__always) static func isHexDigit(_ c: UInt8) -> Bool {
        (c >= 0x30 && c <= 0x39) || ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x66)
    }

    /// reg-name = *( unreserved / pct-encoded / sub-delims ).
    @inline(__always) static func isRegNameChar(_ c: UInt8) -> Bool {
        if c >= 0x61 && c <= 0x7A || c >= 0x41 && c <= 0x5A || c >= 0x30 && c <= 0x39 { return true }
        switch c {
        case 0x2D, 0x2E, 0x5F, 0x7E, 0x25, 0x21, 0x24, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x3B, 0x3D: return true
        default: return false
        }
    }
}
