import CCurl
import Glibc

/// Header fields shared by many requests (the upstream's `Authorization`, say), turned into
/// libcurl's list once instead of once per request: each line of a `curl_slist` is two mallocs,
/// held for the whole transfer (minutes, for a stream). A request's own lines are linked in
/// front of the block (`CurlHeaderList`); libcurl only reads the list, so the block is immutable
/// and shared by every loop.
public final class UpstreamHeaderBlock: @unchecked Sendable {
    /// The fields as given (what was sent, for tests and logs).
    public let fields: [(name: String, value: String)]
    /// The block's own lines, then `CurlHeaderList.suppressors` (never freed).
    let list: UnsafeMutablePointer<curl_slist>
    /// The block's last own line (nil when it has none): unlinked from the suppressors before
    /// the block's lines are freed.
    private let lastOwn: UnsafeMutablePointer<curl_slist>?

    public init(_ fields: [(name: String, value: String)]) {
        self.fields = fields
        var chain = CurlHeaderList.Chain()
        var line: [UInt8] = []
        for (name, value) in fields { chain.append(name, value, scratch: &line) }
        lastOwn = chain.tail
        list = chain.link(to: CurlHeaderList.suppressors)
    }

    deinit {
        if let lastOwn {
            lastOwn.pointee.next = nil
            curl_slist_free_all(list)
        }
    }
}

/// libcurl's `CURLOPT_HTTPHEADER` list for one transfer: the request's own lines (allocated
/// here, freed by `free()`), then the shared block's, then the suppressors.
struct CurlHeaderList {
    /// Lines that stop libcurl from adding fields of its own: `Accept: */*`, `Expect:
    /// 100-continue` (a round trip for bodies over 1 MiB) and, for a POST without a type, an
    /// `x-www-form-urlencoded` Content-Type. An empty `Name:` line is never sent itself; it only
    /// suppresses libcurl's field, and a caller's own `Accept`/`Content-Type` line earlier in the
    /// list is still sent. Built once for the process, never freed.
    nonisolated(unsafe) static let suppressors: UnsafeMutablePointer<curl_slist> = {
        var l: UnsafeMutablePointer<curl_slist>?
        for s in ["Accept:", "Expect:", "Content-Type:"] { l = curl_slist_append(l, s) }
        return l!
    }()

    /// A run of lines built front to back in O(1) per line (`curl_slist_append` walks the list).
    struct Chain {
        private(set) var head: UnsafeMutablePointer<curl_slist>?
        private(set) var tail: UnsafeMutablePointer<curl_slist>?

        mutating func append(_ name: String, _ value: String, scratch line: inout [UInt8]) {
            guard CurlHeaderList.headerLine(name, value, into: &line) else { return }
            let node = line.withUnsafeBufferPointer {
                curl_slist_append(nil, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self))
            }
            guard let node else { return }
            if let tail { tail.pointee.next = node } else { head = node }
            tail = node
        }

        /// The whole list: these lines, then `rest`.
        func link(to rest: UnsafeMutablePointer<curl_slist>) -> UnsafeMutablePointer<curl_slist> {
            guard let head, let tail else { return rest }
            tail.pointee.next = rest
            return head
        }
    }

    private var own = Chain()
    private var shared: UpstreamHeaderBlock?
    /// What to hand libcurl (valid while this value and its block live): the own lines, then
    /// the block's, then the suppressors. Nil before `configure` and after `free`.
    private(set) var list: UnsafeMutablePointer<curl_slist>?

    /// No list yet (a transfer before `configure`).
    init() {}

    init(_ fields: [(name: String, value: String)], shared: UpstreamHeaderBlock?) {
        var line: [UInt8] = []
        self.init(fields, shared: shared, scratch: &line)
    }

    /// `scratch`: a buffer the caller keeps (the client's, one per loop) for building lines, so a
    /// request allocates none.
    init(_ fields: [(name: String, value: String)], shared: UpstreamHeaderBlock?, scratch line: inout [UInt8]) {
        for (name, value) in fields { own.append(name, value, scratch: &line) }
        self.shared = shared
        list = own.link(to: shared?.list ?? CurlHeaderList.suppressors)
    }

    /// Frees this transfer's own lines; the shared block and the suppressors stay.
    mutating func free() {
        if let head = own.head, let tail = own.tail {
            tail.pointee.next = nil
            curl_slist_free_all(head)
        }
        own = Chain()
        shared = nil
        list = nil
    }

    /// `Name: value` NUL-terminated into `out` for libcurl's list, as bytes: CR, LF and NUL
    /// become spaces (no header injection), both sides trimmed; `Name;` for an empty value
    /// (libcurl's syntax for one). False for an empty name or one containing a colon.
    static func headerLine(_ name: String, _ value: String, into out: inout [UInt8]) -> Bool {
        out.removeAll(keepingCapacity: true)
        func put(_ s: String) {
            let start = out.count
            for var c in s.utf8 {
                if c == 13 || c == 10 || c == 0 { c = 32 }
                if out.count == start && (c == 32 || c == 9) { continue }      // leading blanks
                out.append(c)
            }
            while out.count > start, out[out.count - 1] == 32 || out[out.count - 1] == 9 { out.removeLast() }
        }
        put(name)
        guard !out.isEmpty, !out.contains(58) else { return false }
        let nameEnd = out.count
        out.append(58); out.append(32)
        put(value)
        if out.count == nameEnd + 2 { out.removeLast(2); out.append(59) }   // "Name;"
        out.append(0)
        return true
    }

    /// The lines of a libcurl list, in order (tests).
    static func lines(_ list: UnsafeMutablePointer<curl_slist>?) -> [String] {
        var out: [String] = []
        var p = list
        while let n = p {
            if let d = n.pointee.data { out.append(String(cString: d)) }
            p = n.pointee.next
        }
        return out
    }
}
