import CCurl
import Glibc
import HTTPWire
import Reactor

/// Knobs of one `UpstreamClient` (one libcurl multi handle).
public struct UpstreamClientSettings: Sendable {
    /// Connections per host (0 = unlimited). Extra transfers queue inside libcurl.
    public var maxHostConnections: Int = 0
    /// Connections in total (0 = unlimited).
    public var maxTotalConnections: Int = 0
    /// Idle connections kept for reuse.
    public var maxCachedConnections: Int = 256
    /// libcurl receive buffer size.
    public var bufferSize: Int = 16 * 1024
    /// TCP keep-alive probes on upstream connections (seconds idle before the first probe).
    public var tcpKeepAliveIdleSeconds: Int = 60
    /// Honour `http_proxy`/`https_proxy`/`no_proxy` from the environment. Off by default: the
    /// gateway talks to its upstreams directly (and `refusePrivateAddresses` would otherwise be
    /// judging the proxy's address).
    public var useEnvironmentProxy: Bool = false
    /// CA bundle path (nil = libcurl's default).
    public var caInfoPath: String? = nil
    /// libcurl's verbose trace on stderr (debugging).
    public var verbose: Bool = false
    public init() {}
}

/// `curl_global_init` exactly once per process (Swift globals are initialised under swift_once).
private let curlGlobalInitDone: Bool = {
    curl_global_init(Int(CURL_GLOBAL_ALL)) == CURLE_OK
}()

/// One libcurl multi handle driven by an `EventLoop` through the multi-socket API: upstream sockets
/// live in the loop's epoll next to client sockets, and libcurl's timeout is one `LoopTimer`.
///
/// Loop-thread only: create it, use it and drop it on its loop's thread. `@unchecked Sendable` only
/// so it can be created inside `loop.execute { }`; nothing in here is synchronised.
///
/// Re-entrancy: libcurl forbids multi calls from inside its callbacks, and delegates are called from
/// inside them. Work that would need such a call (adding, removing a handle) is queued and run as
/// soon as the outermost libcurl call returns, still in the same loop iteration.
public final class UpstreamClient: UpstreamClientProtocol, @unchecked Sendable {
    public let loop: EventLoop
    public let settings: UpstreamClientSettings
    private var multi: UnsafeMutableRawPointer?
    /// Every transfer whose easy handle exists, keyed by that handle.
    private var transfers: [UnsafeMutableRawPointer: CurlTransfer] = [:]
    private var sockets: [Int32: CurlSocketWatcher] = [:]
    private var timer: LoopTimer?
    /// > 0 while a libcurl call that may run callbacks is on the stack.
    fileprivate var curlDepth = 0
    private var deferred: [() -> Void] = []
    /// Where transfers build their header lines (loop thread only; reused, never shrunk).
    fileprivate var headerLineScratch: [UInt8] = []
    /// Transfers whose response head has arrived: their error buffers are dropped once outside
    /// libcurl (see `CurlTransfer.dropErrorBuffer`).
    private var headsArrived: [CurlTransfer] = []
    private var settling = false
    private var running: Int32 = 0
    /// Reset easy handles kept for the next transfers: `curl_easy_init` and the buffers libcurl
    /// allocates on a handle's first transfer (receive and upload buffers, ~80 KB) cost more
    /// than a small proxied request itself. Bounded; loop-thread only like everything here.
    /// Kept apart by receive-buffer size: libcurl allocates a handle's buffer once, at the
    /// size set for its first transfer, so a handle only ever serves transfers of that size.
    private var idleEasy: [(bufferSize: Int, handles: [UnsafeMutableRawPointer])] = []
    private var idleEasyCount = 0
    private let maxIdleEasy = 64

    public var activeTransfers: Int { transfers.count }

    /// The connection sockets libcurl opened and has not closed yet, idle or busy (its open and
    /// close callbacks keep it). A separate object: close callbacks still run inside
    /// `curl_multi_cleanup`, when the client is going away.
    fileprivate final class SocketBook {
        var open: Set<Int32> = []
        weak var client: UpstreamClient?
    }
    fileprivate let socketBook = SocketBook()

    /// Connections in libcurl's cache that no transfer holds. Over HTTP/1.1 each running transfer
    /// holds one connection, so this is `open − running`.
    var idleConnectionEstimate: Int { socketBook.open.count - transfers.count }

    /// Upstream sockets libcurl has stopped watching but which stay registered with the loop
    /// (tests).
    var parkedSockets: Int { sockets.values.reduce(0) { $0 + ($1.parked ? 1 : 0) } }

    /// `scheme://authority` → (scheme, host) as libcurl parses them: every request to the
    /// upstream shares one prefix, and `curl_url` parsing is not free. Bounded (image URLs are
    /// arbitrary): cleared when full.
    private var originCache: [Substring: (scheme: String, host: String)] = [:]

    fileprivate func urlParts(_ url: String) -> (scheme: String, host: String)? {
        guard let origin = CurlTransfer.origin(of: url) else { return CurlTransfer.parseURL(url) }
        if let hit = originCache[origin] { return hit }
        guard let parts = CurlTransfer.parseURL(url) else { return nil }
        if originCache.count >= 64 { originCache.removeAll(keepingCapacity: true) }
        originCache[origin] = parts
        return parts
    }

    /// The `proto` list given to libcurl for a scheme list, as a C string (one entry: the list
    /// never varies). Kept as C strings: a Swift string passed as `const char *` is copied when it
    /// is small (under 16 bytes) and was, measured, for the chat URL too.
    private var protocolsKey: [String] = []
    private var protocolsValue: ContiguousArray<CChar> = [0]
    fileprivate func protocolList(_ schemes: [String]) -> ContiguousArray<CChar> {
        if schemes != protocolsKey {
            protocolsKey = schemes
            protocolsValue = schemes.map { $0.lowercased() }.joined(separator: ",").utf8CString
        }
        return protocolsValue
    }

    /// The last URL as a C string: nearly every request goes to the same few URLs (one entry).
    private var lastURL = ""
    private var lastURLC: ContiguousArray<CChar> = [0]
    fileprivate func urlCString(_ url: String) -> ContiguousArray<CChar> {
        if url != lastURL {
            lastURL = url
            lastURLC = url.utf8CString
        }
        return lastURLC
    }

    fileprivate func takeEasy(bufferSize: Int) -> UnsafeMutableRawPointer? {
        // A linear scan of a handful of sizes, mutated in place (a dictionary of arrays copied
        // the pool's array on each take).
        if let i = idleEasy.firstIndex(where: { $0.bufferSize == bufferSize }), let h = idleEasy[i].handles.popLast() {
            idleEasyCount -= 1
            return h
        }
        return curl_easy_init()
    }

    /// Takes back a handle that is in no multi: reset (options, callbacks and pointers cleared)
    /// and kept, or cleaned up when the pool is full.
    fileprivate func recycleEasy(_ h: UnsafeMutableRawPointer, bufferSize: Int) {
        if idleEasyCount < maxIdleEasy && multi != nil {
            curl_easy_reset(h)
            if let i = idleEasy.firstIndex(where: { $0.bufferSize == bufferSize }) {
                idleEasy[i].handles.append(h)
            } else {
                idleEasy.append((bufferSize, [h]))
            }
            idleEasyCount += 1
        } else {
            curl_easy_cleanup(h)
        }
    }

    public init(loop: EventLoop, settings: UpstreamClientSettings = UpstreamClientSettings()) {
        precondition(curlGlobalInitDone, "curl_global_init failed")
        self.loop = loop
        self.settings = settings
        guard let m = curl_multi_init() else { fatalError("curl_multi_init failed") }
        multi = m
        socketBook.client = self
        let me = Unmanaged.passUnretained(self).toOpaque()
        _ = veil_multi_setopt_socketcb(m) { _, fd, what, userp, _ in
            guard let userp else { return 0 }
            Unmanaged<UpstreamClient>.fromOpaque(userp).takeUnretainedValue().curlWantsSocket(fd, what)
            return 0
        }
        _ = veil_multi_setopt_pointer(m, CURLMOPT_SOCKETDATA, me)
        _ = veil_multi_setopt_timercb(m) { _, ms, userp in
            guard let userp else { return 0 }
            Unmanaged<UpstreamClient>.fromOpaque(userp).takeUnretainedValue().curlWantsTimer(ms)
            return 0
        }
        _ = veil_multi_setopt_pointer(m, CURLMOPT_TIMERDATA, me)
        _ = veil_multi_setopt_long(m, CURLMOPT_PIPELINING, veil_curlpipe_multiplex())
        _ = veil_multi_setopt_long(m, CURLMOPT_MAX_HOST_CONNECTIONS, max(0, settings.maxHostConnections))
        _ = veil_multi_setopt_long(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, max(0, settings.maxTotalConnections))
        _ = veil_multi_setopt_long(m, CURLMOPT_MAXCONNECTS, max(1, settings.maxCachedConnections))
        cachedLimit = max(1, settings.maxCachedConnections)
    }

    deinit {
        timer?.cancel()
        guard let m = multi else { return }
        // No callbacks into a deinitialising object.
        _ = veil_multi_setopt_socketcb(m, nil)
        _ = veil_multi_setopt_timercb(m, nil)
        for t in Array(transfers.values) {
            if let easy = t.easy, t.added { curl_multi_remove_handle(m, easy) }
            t.releaseCurl()
            t.finish(.cancelled)
        }
        transfers.removeAll()
        for fd in sockets.keys { loop.unwatch(fd) }
        sockets.removeAll()
        for pool in idleEasy { for h in pool.handles { curl_easy_cleanup(h) } }
        idleEasy.removeAll()
        curl_multi_cleanup(m)
    }

    // MARK: starting

    public func start(_ request: UpstreamRequest, delegate: UpstreamDelegate) -> UpstreamTransfer {
        let t = CurlTransfer(client: self, request: request, delegate: delegate)
        if let failure = t.configure(request, settings) {
            t.releaseCurl()
            // Never call the delegate before the caller holds the transfer.
            loop.schedule(afterMillis: 0) { [t] in t.finish(failure) }
            return t
        }
        transfers[t.easy!] = t
        if curlDepth == 0 { add(t) } else { deferred.append { [weak self] in self?.add(t) } }
        return t
    }

    private func add(_ t: CurlTransfer) {
        guard let m = multi, let easy = t.easy, !t.added else { return }
        if t.isFinished { remove(t); return }
        let rc = curl_multi_add_handle(m, easy)
        if rc != CURLM_OK {
            remove(t)
            t.finish(.connect("curl_multi_add_handle: \(String(cString: curl_multi_strerror(rc)))"))
            return
        }
        t.added = true
        t.armStallTimer()
        updateConnectionLimit()
    }

    /// libcurl's MAXCONNECTS counts busy connections too, and once it is exceeded every transfer
    /// that ends makes libcurl walk all of them (busy ones included) for the oldest idle one to
    /// close: O(n²) at thousands of streams. The limit is kept at "running transfers + the idle
    /// connections we keep", so that walk only happens when there really are too many idle ones;
    /// over plain HTTP transfers beyond the idle cap do not keep their connection at all (see
    /// `configure`), like nginx's `keepalive N`.
    private var cachedLimit = 0
    private func updateConnectionLimit() {
        guard let m = multi else { return }
        let want = transfers.count + max(1, settings.maxCachedConnections)
        if want != cachedLimit {
            cachedLimit = want
            _ = veil_multi_setopt_long(m, CURLMOPT_MAXCONNECTS, want)
        }
    }

    // MARK: removing

    /// Removes `t` from the multi and frees its libcurl state, now or (inside libcurl) right after.
    fileprivate func detach(_ t: CurlTransfer) {
        if curlDepth == 0 { remove(t) } else { deferred.append { [weak self] in self?.remove(t) } }
    }

    private func remove(_ t: CurlTransfer) {
        guard let easy = t.easy, transfers[easy] === t else { return }
        if t.added, let m = multi {
            curl_multi_remove_handle(m, easy)
            t.added = false
        }
        t.releaseCurl()
        transfers[easy] = nil
        updateConnectionLimit()
    }

    // MARK: libcurl → loop

    /// libcurl says REMOVE when a transfer ends and IN when the next one starts on the same kept-
    /// alive connection: two `epoll_ctl` per proxied request. A connection socket that was only
    /// being read is parked instead: it stays registered, and IN on it again costs nothing. If
    /// the upstream closes a parked connection, the one wake-up it causes unregisters it (libcurl
    /// finds the connection dead when it next looks); when libcurl closes it, it is forgotten.
    private func curlWantsSocket(_ fd: curl_socket_t, _ what: Int32) {
        if what == veil_curl_poll_remove() {
            guard let w = sockets[fd] else { return }
            if w.events == .readable && socketBook.open.contains(fd) {
                w.parked = true
            } else {
                sockets[fd] = nil
                loop.unwatch(fd)
            }
            return
        }
        var events: IOEvents = []
        if what == veil_curl_poll_in() || what == veil_curl_poll_inout() { events.insert(.readable) }
        if what == veil_curl_poll_out() || what == veil_curl_poll_inout() { events.insert(.writable) }
        let watcher: CurlSocketWatcher
        if let w = sockets[fd] { watcher = w } else {
            watcher = CurlSocketWatcher(fd: fd, client: self)
            sockets[fd] = watcher
        }
        watcher.parked = false
        watcher.events = events
        loop.watch(fd, events, watcher)
    }

    /// An event on a parked socket: the upstream closed (or wrote to) an idle connection.
    fileprivate func parkedSocketWoke(_ fd: Int32) {
        sockets[fd] = nil
        loop.unwatch(fd)
    }

    /// libcurl is closing one of its connection sockets.
    fileprivate func connectionSocketClosing(_ fd: Int32) {
        if sockets.removeValue(forKey: fd) != nil { loop.forgetClosing(fd) }
    }

    /// When libcurl wants `socket_action(TIMEOUT)` (nil: never). It moves several times per
    /// transfer (set, cancelled, set again); the loop timer is only replaced when the new time is
    /// earlier than the one pending. A timer that fires early for a deadline that moved later
    /// re-arms itself, so each move costs no allocation.
    private var curlDeadline: UInt64?

    private func curlWantsTimer(_ ms: Int) {
        guard ms >= 0 else { curlDeadline = nil; return }
        let due = EventLoop.monotonicMillis() + UInt64(ms)
        curlDeadline = due
        if let t = timer, t.isPending, t.deadline <= due { return }
        timer?.cancel()
        armCurlTimer(at: due)
    }

    private func armCurlTimer(at due: UInt64) {
        let now = EventLoop.monotonicMillis()
        // Even for 0: never call socket_action from inside this callback; the loop runs it next.
        timer = loop.schedule(afterMillis: due > now ? Int(due - now) : 0) { [weak self] in
            guard let self else { return }
            self.timer = nil
            guard let due = self.curlDeadline else { return }
            if due > EventLoop.monotonicMillis() { self.armCurlTimer(at: due); return }
            self.curlDeadline = nil
            self.socketAction(veil_curl_socket_timeout(), 0)
        }
    }

    fileprivate func socketReady(_ fd: Int32, _ events: IOEvents) {
        var flags: Int32 = 0
        let raw = events.rawValue
        let rdhup: UInt32 = 0x2000, err: UInt32 = 0x008, hup: UInt32 = 0x010   // EPOLLRDHUP, EPOLLERR, EPOLLHUP
        if events.contains(.readable) || raw & (rdhup | hup) != 0 { flags |= veil_curl_cselect_in() }
        if events.contains(.writable) { flags |= veil_curl_cselect_out() }
        if raw & err != 0 {
            // ERR alone makes libcurl fail without looking; with IN/OUT it reads the real error.
            flags |= veil_curl_cselect_err() | veil_curl_cselect_in() | veil_curl_cselect_out()
        }
        socketAction(fd, flags)
    }

    private func socketAction(_ fd: curl_socket_t, _ flags: Int32) {
        guard let m = multi else { return }
        curlDepth += 1
        _ = curl_multi_socket_action(m, fd, flags, &running)
        curlDepth -= 1
        settle()
    }

    /// Runs libcurl calls that `f` makes with callbacks possible, then settles.
    fileprivate func insideCurl(_ f: () -> Void) {
        curlDepth += 1
        f()
        curlDepth -= 1
        settle()
    }

    fileprivate func headArrived(_ t: CurlTransfer) {
        if curlDepth == 0 { t.dropErrorBuffer() } else { headsArrived.append(t) }
    }

    fileprivate func whenOutsideCurl(_ op: @escaping () -> Void) {
        if curlDepth == 0 { op() } else { deferred.append(op) }
    }

    /// After the outermost libcurl call: run queued work and finish completed transfers.
    private func settle() {
        guard curlDepth == 0, !settling else { return }
        settling = true
        defer { settling = false }
        repeat {
            if !headsArrived.isEmpty {
                for t in headsArrived { t.dropErrorBuffer() }
                headsArrived.removeAll(keepingCapacity: true)
            }
            while !deferred.isEmpty {
                let ops = deferred
                deferred.removeAll()
                for op in ops { op() }
            }
            drainMessages()
        } while !deferred.isEmpty
    }

    private func drainMessages() {
        guard let m = multi else { return }
        var left: Int32 = 0
        while let msg = curl_multi_info_read(m, &left) {
            guard veil_curlmsg_is_done(msg) != 0, let easy = veil_curlmsg_easy(msg) else { continue }
            let code = veil_curlmsg_result(msg)
            guard let t = transfers[easy] else { continue }
            let outcome = t.outcome(code)
            if outcome == nil && !t.isFinished { t.deliverHeadIfNeeded() }
            remove(t)
            t.finish(outcome)
        }
    }
}

/// One upstream socket registered with the loop on libcurl's behalf.
final class CurlSocketWatcher: IOHandler {
    let fd: Int32
    /// Not weak: a weak reference gives the client a side table, and then every retain of it takes
    /// the slow path, once per upstream read. Safe because the client unregisters every watcher
    /// (parked ones included) in its deinit, on the loop thread, so none is ever called after it.
    unowned(unsafe) let client: UpstreamClient
    /// What libcurl last asked for.
    var events: IOEvents = []
    /// libcurl no longer watches it, but it stays registered (see `curlWantsSocket`).
    var parked = false
    init(fd: Int32, client: UpstreamClient) { self.fd = fd; self.client = client }
    func ioReady(_ events: IOEvents) {
        if parked { client.parkedSocketWoke(fd) } else { client.socketReady(fd, events) }
    }
}

/// One request: an easy handle plus its header list, and the delegate's state machine.
/// Loop-thread only (`@unchecked Sendable` for the same reason as the client).
final class CurlTransfer: UpstreamTransfer, TimerTarget, @unchecked Sendable {
    weak var client: UpstreamClient?
    /// The client's loop (it outlives every transfer): read per chunk without a weak load.
    let loop: EventLoop
    private var delegate: UpstreamDelegate?
    private(set) var easy: UnsafeMutableRawPointer?
    private var headers = CurlHeaderList()
    private var errorBuffer: UnsafeMutablePointer<CChar>?
    var added = false

    private let maxBytes: Int?
    private let stallMillis: Int
    private var lastActivity: UInt64 = 0
    private var uploaded: Int64 = 0
    private var stallTimer: LoopTimer?
    private var received = 0
    private let urlParts: (scheme: String, host: String)?
    /// libcurl's receive buffer for this transfer (the request's, else the client's setting).
    let bufferSize: Int
    private let allowList: [String]

    // response head being collected
    private var blockStatus: Int?
    private var blockFields: [(name: String, value: String)] = []
    private var headDelivered = false

    // delegate state
    private(set) var isFinished = false           // no more head/data; finish sent or queued
    private var finishSent = false
    private var inDelegate = false
    private var queuedFinish: UpstreamError?? = nil
    private var abortReason: UpstreamError?
    private var refusedReason: String?

    // pause state
    private var wantPaused = false
    private var curlPaused = false
    private var inOwnCallback = false
    private var resumeTimer: LoopTimer?

    init(client: UpstreamClient, request: UpstreamRequest, delegate: UpstreamDelegate) {
        self.client = client
        self.loop = client.loop
        self.delegate = delegate
        maxBytes = request.maxResponseBytes
        stallMillis = max(0, request.stallTimeoutMillis)
        allowList = request.addressAllowList
        urlParts = client.urlParts(request.url)
        let wanted: Int = request.receiveBufferBytes ?? client.settings.bufferSize
        bufferSize = Swift.min(Swift.max(wanted, 1_024), 524_288)
    }

    // MARK: configuration

    /// Creates and configures the easy handle; an error when the request can't be sent at all.
    func configure(_ r: UpstreamRequest, _ s: UpstreamClientSettings) -> UpstreamError? {
        guard let parts = urlParts else { return .refused("malformed URL") }   // parsed once, in init
        guard r.allowedSchemes.contains(where: { asciiCaseInsensitiveEquals($0, parts.scheme) }) else {
            return .refused("scheme \(parts.scheme) not allowed")
        }
        guard let h = client?.takeEasy(bufferSize: bufferSize) ?? curl_easy_init() else { return .connect("curl_easy_init failed") }
        easy = h
        let me = Unmanaged.passUnretained(self).toOpaque()
        func long(_ o: CURLoption, _ v: Int) -> Bool { veil_easy_setopt_long(h, o, v) == CURLE_OK }
        func str(_ o: CURLoption, _ v: String) -> Bool { veil_easy_setopt_string(h, o, v) == CURLE_OK }

        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer!.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        _ = veil_easy_setopt_pointer(h, CURLOPT_ERRORBUFFER, errorBuffer)

        func cstr(_ o: CURLoption, _ v: ContiguousArray<CChar>) -> Bool {
            v.withUnsafeBufferPointer { veil_easy_setopt_string(h, o, $0.baseAddress) } == CURLE_OK
        }
        guard cstr(CURLOPT_URL, client?.urlCString(r.url) ?? r.url.utf8CString) else { return .refused("URL rejected by libcurl") }
        let proto = client?.protocolList(r.allowedSchemes) ?? r.allowedSchemes.map { $0.lowercased() }.joined(separator: ",").utf8CString
        guard cstr(CURLOPT_PROTOCOLS_STR, proto), cstr(CURLOPT_REDIR_PROTOCOLS_STR, proto) else {
            return .refused("unsupported scheme list \(r.allowedSchemes.joined(separator: ","))")
        }
        _ = long(CURLOPT_NOSIGNAL, 1)
        _ = long(CURLOPT_FOLLOWLOCATION, 0)
        if let client {
            // Count connections: SOCKOPT runs for every socket libcurl creates (whoever opens
            // it); CLOSESOCKET is kept by the connection and replaces libcurl's close().
            let cp = Unmanaged.passUnretained(client.socketBook).toOpaque()
            _ = veil_easy_setopt_sockoptcb(h) { clientp, fd, _ in
                if let clientp { Unmanaged<UpstreamClient.SocketBook>.fromOpaque(clientp).takeUnretainedValue().open.insert(fd) }
                return veil_curl_sockopt_ok()
            }
            _ = veil_easy_setopt_pointer(h, CURLOPT_SOCKOPTDATA, cp)
            _ = veil_easy_setopt_closesocketcb(h) { clientp, fd in
                if let clientp {
                    let book = Unmanaged<UpstreamClient.SocketBook>.fromOpaque(clientp).takeUnretainedValue()
                    book.open.remove(fd)
                    book.client?.connectionSocketClosing(fd)
                }
                return Glibc.close(fd)
            }
            _ = veil_easy_setopt_pointer(h, CURLOPT_CLOSESOCKETDATA, cp)
            // libcurl looks for a reusable connection by walking every connection to the host,
            // busy ones included: O(connections) per request, so 10,000 concurrent streams cost
            // O(n²) (1.7 s median time to first byte). Over plain HTTP (HTTP/1.1: a busy
            // connection is never shared) with no idle connection left, there is nothing to
            // find: skip the search and connect at once. Over https (h2 multiplexes) it stays.
            if parts.scheme == "http" && client.idleConnectionEstimate <= 0 {
                _ = long(CURLOPT_FRESH_CONNECT, 1)
            }
            // Idle connections kept: at most `maxCachedConnections`. A transfer starting while that
            // many already run will find its connection surplus when it ends: close it then
            // instead of caching it (HTTP/1.1 only; an h2 connection is shared).
            if parts.scheme == "http" && client.activeTransfers >= max(1, s.maxCachedConnections) {
                _ = long(CURLOPT_FORBID_REUSE, 1)
            }
        }
        _ = long(CURLOPT_TCP_NODELAY, 1)
        _ = long(CURLOPT_TCP_KEEPALIVE, 1)
        _ = long(CURLOPT_TCP_KEEPIDLE, max(1, s.tcpKeepAliveIdleSeconds))
        _ = long(CURLOPT_TCP_KEEPINTVL, max(1, s.tcpKeepAliveIdleSeconds / 2))
        _ = long(CURLOPT_BUFFERSIZE, bufferSize)
        _ = long(CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_2TLS))
        if parts.scheme == "https" { _ = long(CURLOPT_PIPEWAIT, 1) }   // wait to multiplex over h2
        if !s.useEnvironmentProxy { _ = str(CURLOPT_PROXY, "") }
        if let ca = s.caInfoPath { _ = str(CURLOPT_CAINFO, ca) }
        if s.verbose { _ = long(CURLOPT_VERBOSE, 1) }
        _ = long(CURLOPT_CONNECTTIMEOUT_MS, max(1, r.connectTimeoutMillis))
        _ = long(CURLOPT_TIMEOUT_MS, max(0, r.timeoutMillis))
        if r.stallTimeoutMillis > 0 {
            // Not CURLOPT_LOW_SPEED_*: libcurl averages speed over a window of seconds, so it
            // misses a stall right after a burst and kills streams whose keep-alive pings are
            // sparser than 1 byte/s. Our own timer measures the time since the last byte moved;
            // the progress callback reports upload progress.
            _ = long(CURLOPT_NOPROGRESS, 0)
            _ = veil_easy_setopt_xferinfocb(h) { clientp, _, _, _, ulnow in
                guard let clientp else { return 0 }
                Unmanaged<CurlTransfer>.fromOpaque(clientp).takeUnretainedValue().uploadProgress(ulnow)
                return 0
            }
            _ = veil_easy_setopt_pointer(h, CURLOPT_XFERINFODATA, me)
        }
        if let cap = r.maxResponseBytes {
            _ = veil_easy_setopt_off(h, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(max(0, cap)))
        }
        if r.refusePrivateAddresses {
            _ = veil_easy_setopt_opensocketcb(h) { clientp, _, address in
                guard let clientp, let address else { return veil_curl_socket_bad() }
                return Unmanaged<CurlTransfer>.fromOpaque(clientp).takeUnretainedValue().openSocket(address)
            }
            _ = veil_easy_setopt_pointer(h, CURLOPT_OPENSOCKETDATA, me)
            // A cached connection was checked for another request: never share them.
            _ = long(CURLOPT_FRESH_CONNECT, 1)
            _ = long(CURLOPT_FORBID_REUSE, 1)
        }

        // Method and body.
        let method = r.method.uppercased()
        switch method {
        case "GET" where r.body.isEmpty:
            _ = long(CURLOPT_HTTPGET, 1)
        case "HEAD" where r.body.isEmpty:
            _ = long(CURLOPT_NOBODY, 1)
        default:
            if method == "POST" || method == "PUT" || method == "PATCH" || !r.body.isEmpty {
                _ = veil_easy_setopt_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(r.body.count))
                // libcurl copies the bytes: the caller's array need not outlive this call.
                let rc = r.body.withUnsafeBufferPointer { b -> CURLcode in
                    if let base = b.baseAddress, b.count > 0 {
                        return veil_easy_setopt_pointer(h, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: base))
                    }
                    return veil_easy_setopt_string(h, CURLOPT_COPYPOSTFIELDS, "")
                }
                guard rc == CURLE_OK else { return .connect("cannot set request body") }
            }
            if method != "POST" { _ = str(CURLOPT_CUSTOMREQUEST, method) }
        }

        // Headers: the request's own lines, then the shared block's (linked, not copied), then
        // the lines that suppress libcurl's own Accept, Expect and form Content-Type.
        if let client {
            headers = CurlHeaderList(r.headers, shared: r.sharedHeaders, scratch: &client.headerLineScratch)
        } else {
            headers = CurlHeaderList(r.headers, shared: r.sharedHeaders)
        }
        _ = veil_easy_setopt_slist(h, CURLOPT_HTTPHEADER, headers.list)

        _ = veil_easy_setopt_datacb(h, CURLOPT_HEADERFUNCTION) { p, size, n, ud in
            guard let ud else { return 0 }
            return Unmanaged<CurlTransfer>.fromOpaque(ud).takeUnretainedValue().onHeader(p, size * n)
        }
        _ = veil_easy_setopt_pointer(h, CURLOPT_HEADERDATA, me)
        _ = veil_easy_setopt_datacb(h, CURLOPT_WRITEFUNCTION) { p, size, n, ud in
            guard let ud else { return 0 }
            return Unmanaged<CurlTransfer>.fromOpaque(ud).takeUnretainedValue().onData(p, size * n)
        }
        _ = veil_easy_setopt_pointer(h, CURLOPT_WRITEDATA, me)
        return nil
    }

    /// Scheme (lowercased) and host (no brackets) as libcurl parses them.
    static func parseURL(_ url: String) -> (scheme: String, host: String)? {
        guard let u = curl_url() else { return nil }
        defer { curl_url_cleanup(u) }
        guard curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK else { return nil }
        func get(_ part: CURLUPart) -> String? {
            var out: UnsafeMutablePointer<CChar>?
            guard curl_url_get(u, part, &out, 0) == CURLUE_OK, let out else { return nil }
            defer { curl_free(out) }
            return String(cString: out)
        }
        guard let scheme = get(CURLUPART_SCHEME), let host = get(CURLUPART_HOST) else { return nil }
        return (scheme.lowercased(), AddressPolicy.normalizeHost(host))
    }

    /// `scheme://authority` of a URL (nil when it has no `://`).
    static func origin(of url: String) -> Substring? {
        let u = url.utf8
        var i = u.startIndex, colon: String.Index?
        while i != u.endIndex {
            let c = u[i]
            if c == 58 { colon = i; break }                       // ':'
            if c == 47 || c == 63 || c == 35 { return nil }      // '/', '?', '#' before any ':'
            i = u.index(after: i)
        }
        guard let colon else { return nil }
        var j = u.index(after: colon)
        for _ in 0..<2 {
            guard j != u.endIndex, u[j] == 47 else { return nil }
            j = u.index(after: j)
        }
        while j != u.endIndex, u[j] != 47, u[j] != 63, u[j] != 35 { j = u.index(after: j) }
        return url[url.startIndex..<j]
    }

    func releaseCurl() {
        if let h = easy {
            // Never in a multi here (remove() takes it out first; configure failures never add it).
            if let client { client.recycleEasy(h, bufferSize: bufferSize) } else { curl_easy_cleanup(h) }
        }
        easy = nil
        headers.free()
        errorBuffer?.deallocate()
        errorBuffer = nil
        resumeTimer?.cancel()
        resumeTimer = nil
        stallTimer?.cancel()
        stallTimer = nil
    }

    deinit { releaseCurl() }

    // MARK: stall detection

    private func touch() {
        if stallMillis > 0 { lastActivity = loop.now }
    }

    fileprivate func uploadProgress(_ ulnow: curl_off_t) {
        if Int64(ulnow) != uploaded { uploaded = Int64(ulnow); touch() }
    }

    /// Starts the stall clock (when the transfer enters the multi).
    func armStallTimer() {
        guard stallMillis > 0, client != nil else { return }
        lastActivity = EventLoop.monotonicMillis()
        scheduleStallCheck(after: stallMillis, loop)
    }

    private func scheduleStallCheck(after ms: Int, _ loop: EventLoop) {
        stallTimer = loop.schedule(afterMillis: ms, target: self)   // cancelled by releaseCurl (deinit)
    }

    func timerFired(_ fired: LoopTimer) {
        guard fired === stallTimer else { return }
        stallTimer = nil
        guard !isFinished, client != nil else { return }
        let now = EventLoop.monotonicMillis()
        if wantPaused || curlPaused { lastActivity = now }   // our own back-pressure is no stall
        let due = lastActivity + UInt64(stallMillis)
        if now >= due {
            abort(.timeout("no data moved for \(stallMillis) ms"))
        } else {
            scheduleStallCheck(after: Int(due - now), loop)
        }
    }

    /// Ends the transfer from outside libcurl's callbacks with `reason`.
    private func abort(_ reason: UpstreamError) {
        guard !isFinished else { return }
        isFinished = true
        abortReason = reason
        client?.detach(self)
        finish(reason)
    }

    // MARK: libcurl callbacks (inside curl_multi_socket_action / curl_easy_pause)

    private func openSocket(_ address: UnsafeMutablePointer<curl_sockaddr>) -> curl_socket_t {
        var bytes = [UInt8](repeating: 0, count: 16)
        let n = Int(veil_curl_sockaddr_ip(address, &bytes))
        let ip = Array(bytes.prefix(n))
        if n == 0 {
            refusedReason = "unsupported address family \(address.pointee.family)"
            return veil_curl_socket_bad()
        }
        if let why = AddressPolicy.refusal(address: ip, host: urlParts?.host ?? "", allowList: allowList) {
            refusedReason = why
            return veil_curl_socket_bad()
        }
        return veil_curl_open_socket(address)
    }

    /// One response header line, read as bytes: only names and values become Strings.
    private func onHeader(_ p: UnsafeMutablePointer<CChar>?, _ len: Int) -> Int {
        if isFinished { return 0 }                 // cancelled: abort the transfer
        touch()
        if headDelivered { return len }           // trailers: not forwarded
        guard let p else { return len }
        let line = UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: len)
        var end = line.count
        while end > 0, line[end - 1] == 13 || line[end - 1] == 10 { end -= 1 }
        if end == 0 {
            // End of a header block. 1xx interim responses are skipped.
            if let s = blockStatus, s >= 100 && s < 200 && s != 101 {
                blockStatus = nil
                blockFields.removeAll()
                return len
            }
            inOwnCallback = true
            deliverHeadIfNeeded()
            inOwnCallback = false
            if isFinished { return 0 }
            applyPauseInsideCallback()
            return len
        }
        let text = UnsafeBufferPointer(rebasing: line[0..<end])
        if let status = Self.statusLine(text) {
            blockStatus = status
            blockFields.removeAll()
        } else if text[0] == 32 || text[0] == 9 {
            // Obsolete line folding: part of the previous value.
            if !blockFields.isEmpty {
                blockFields[blockFields.count - 1].value += " " + Self.string(Self.trimmed(text))
            }
        } else if let colon = text.firstIndex(of: 58) {
            let name = Self.trimmed(UnsafeBufferPointer(rebasing: text[..<colon]))
            let value = Self.trimmed(UnsafeBufferPointer(rebasing: text[(colon + 1)...]))
            if blockFields.isEmpty { blockFields.reserveCapacity(8) }   // one allocation, not one per doubling
            blockFields.append((Self.string(name), Self.string(value)))
        }
        return len
    }

    /// The status code of an `HTTP/x[.y] NNN ...` line (nil when the line is not one): 0 when
    /// the code is not three digits (libcurl's own reading is asked for later).
    static func statusLine(_ t: UnsafeBufferPointer<UInt8>) -> Int? {
        guard t.count >= 5, t[0] == 72, t[1] == 84, t[2] == 84, t[3] == 80, t[4] == 47 else { return nil }   // "HTTP/"
        var i = 5
        while i < t.count, t[i] != 32 { i += 1 }
        while i < t.count, t[i] == 32 { i += 1 }
        guard t.count - i >= 3 else { return 0 }
        var code = 0
        for k in i..<(i + 3) {
            let d = t[k]
            guard d >= 48, d <= 57 else { return 0 }
            code = code * 10 + Int(d - 48)
        }
        if i + 3 < t.count, t[i + 3] != 32 { return 0 }
        return code
    }

    @inline(__always)
    static func trimmed(_ b: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        var lo = 0, hi = b.count
        while lo < hi, b[lo] == 32 || b[lo] == 9 { lo += 1 }
        while hi > lo, b[hi - 1] == 32 || b[hi - 1] == 9 { hi -= 1 }
        return UnsafeBufferPointer(rebasing: b[lo..<hi])
    }

    @inline(__always)
    static func string(_ b: UnsafeBufferPointer<UInt8>) -> String { String(decoding: b, as: UTF8.self) }

    private func onData(_ p: UnsafeMutablePointer<CChar>?, _ len: Int) -> Int {
        if isFinished { return 0 }                 // cancelled: abort (CURLE_WRITE_ERROR)
        if wantPaused {
            // Paused from outside libcurl before it noticed: let libcurl keep these bytes.
            curlPaused = true
            return veil_curl_writefunc_pause()
        }
        touch()
        inOwnCallback = true
        defer { inOwnCallback = false }
        deliverHeadIfNeeded()
        if isFinished { return 0 }
        if let cap = maxBytes, received + len > cap {
            abortReason = .tooLarge
            return 0
        }
        received += len
        if len > 0 {
            callDelegate { $0.upstreamDidReceive(UnsafeRawBufferPointer(start: p, count: len)) }
        }
        if isFinished { return 0 }
        inOwnCallback = false
        applyPauseInsideCallback()
        return len
    }

    /// pause() was called during one of this transfer's callbacks: pausing from there is allowed.
    private func applyPauseInsideCallback() {
        if wantPaused && !curlPaused, let h = easy {
            curlPaused = true
            _ = curl_easy_pause(h, veil_curlpause_recv())
        }
    }

    // MARK: delegate

    func deliverHeadIfNeeded() {
        guard !headDelivered, !isFinished, let h = easy else { return }
        headDelivered = true
        var version = 0
        _ = veil_easy_getinfo_long(h, CURLINFO_HTTP_VERSION, &version)
        var status = blockStatus ?? 0
        if status == 0 { _ = veil_easy_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status) }
        let head = UpstreamResponseHead(status: status, headers: blockFields,
                                        httpVersion: version >= Int(CURL_HTTP_VERSION_2_0) ? 2 : 1)
        blockFields.removeAll()
        client?.headArrived(self)
        callDelegate { $0.upstreamDidReceiveHead(head) }
    }

    /// libcurl's error buffer (257 bytes) is worth its detail while connecting ("Failed to
    /// connect to … after 3 ms: Connection refused"); once the head has arrived an error can
    /// only be a cut or a timeout, which `curl_easy_strerror` names well enough. A stream holds
    /// its transfer for minutes: the buffer is dropped here (outside libcurl's callbacks).
    func dropErrorBuffer() {
        guard let b = errorBuffer else { return }
        if let h = easy { _ = veil_easy_setopt_pointer(h, CURLOPT_ERRORBUFFER, nil) }
        b.deallocate()
        errorBuffer = nil
    }

    /// Whether the transfer still holds libcurl's error buffer (tests).
    var holdsErrorBuffer: Bool { errorBuffer != nil }

    private func callDelegate(_ body: (UpstreamDelegate) -> Void) {
        guard !isFinished, let d = delegate else { return }
        inDelegate = true
        body(d)
        inDelegate = false
        if let queued = queuedFinish {
            queuedFinish = nil
            finish(queued)
        }
    }

    /// Sends the final event once. Inside one of this delegate's callbacks it is sent right after
    /// that callback returns (no nested delegate calls).
    func finish(_ error: UpstreamError?) {
        isFinished = true
        guard !finishSent else { return }
        if inDelegate {
            if queuedFinish == nil { queuedFinish = .some(error) }
            return
        }
        finishSent = true
        let d = delegate
        delegate = nil
        resumeTimer?.cancel()
        resumeTimer = nil
        stallTimer?.cancel()
        stallTimer = nil
        d?.upstreamDidFinish(error)
    }

    /// The delegate's outcome for a completed transfer.
    func outcome(_ code: CURLcode) -> UpstreamError? {
        if let r = abortReason { return r }
        if code == CURLE_OK { return nil }
        // opensocket refusing every address makes libcurl report COULDNT_CONNECT.
        if let r = refusedReason, code == CURLE_COULDNT_CONNECT, !headDelivered { return .refused(r) }
        var detail = String(cString: curl_easy_strerror(code))
        if let b = errorBuffer, b.pointee != 0 { detail += ": " + String(cString: b) }
        switch code {
        case CURLE_OPERATION_TIMEDOUT:
            return .timeout(detail)
        case CURLE_FILESIZE_EXCEEDED:
            return .tooLarge
        case CURLE_UNSUPPORTED_PROTOCOL:
            return .refused(detail)
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY,
             CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM,
             CURLE_SSL_CIPHER, CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR,
             CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS, CURLE_GOT_NOTHING,
             CURLE_URL_MALFORMAT:
            return .connect(detail)
        case CURLE_WEIRD_SERVER_REPLY, CURLE_PARTIAL_FILE, CURLE_BAD_CONTENT_ENCODING:
            return .broken(detail)
        default:
            // RECV_ERROR, SEND_ERROR, HTTP2, HTTP2_STREAM, WRITE_ERROR …
            return headDelivered ? .broken(detail) : .connect(detail)
        }
    }

    // MARK: UpstreamTransfer

    func pause() {
        guard !isFinished, !wantPaused else { return }
        wantPaused = true
        resumeTimer?.cancel()
        resumeTimer = nil
        guard let client, added, !curlPaused else { return }   // not running yet: onData pauses
        if inOwnCallback { return }                           // applied when the callback returns
        client.whenOutsideCurl { [weak self, weak client] in
            guard let self, let client, self.wantPaused, !self.curlPaused, !self.isFinished, let h = self.easy else { return }
            self.curlPaused = true
            client.insideCurl { _ = curl_easy_pause(h, veil_curlpause_recv()) }
        }
    }

    /// Unpausing makes libcurl hand over what it held back at once, through the write callback;
    /// that happens on the next loop tick so the delegate is not re-entered from `resume()`.
    func resume() {
        guard !isFinished, wantPaused else { return }
        wantPaused = false
        guard resumeTimer == nil, let client else { return }
        resumeTimer = client.loop.schedule(afterMillis: 0) { [weak self] in
            guard let self else { return }
            self.resumeTimer = nil
            self.client?.whenOutsideCurl { [weak self] in self?.unpauseNow() }
        }
    }

    private func unpauseNow() {
        guard !isFinished, !wantPaused, curlPaused, let h = easy, let client else { return }
        curlPaused = false
        client.insideCurl { _ = curl_easy_pause(h, veil_curlpause_cont()) }
    }

    func cancel() { abort(.cancelled) }
}
