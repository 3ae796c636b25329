import CSystem
import Glibc
import HTTPWire
import Reactor
import Synchronization

/// The HTTP/1.1 server: N event loops, each with its own SO_REUSEPORT listener and connections.
/// The kernel spreads accepts across the listeners; a connection never changes loops.
public final class HTTPServer: @unchecked Sendable {
    public let config: ServerConfig
    public let handler: HTTPHandler
    public private(set) var workers: [Worker] = []
    public private(set) var port: UInt16 = 0
    // Gauges and counters read by /metrics.
    public let openConnections = Counter()
    public let bytesIn = Counter()
    public let bytesOut = Counter()
    public let timeouts = Counter()
    public let refusedOverCapacity = Counter()
    /// Times a loop ran out of descriptors while accepting (EMFILE/ENFILE) and backed off.
    public let acceptExhausted = Counter()
    /// The most bytes ever queued for one client (back-pressure keeps it near the high-water mark).
    public let peakQueuedBytes = MaxGauge()


    /// Binds the listeners on `loops` (one worker per loop). With port 0 the first listener picks
    /// an ephemeral port and the others join it.
    public init(config: ServerConfig, handler: HTTPHandler, loops: [EventLoop]) throws {
        self.config = config
        self.handler = handler
        var port = config.port
        for loop in loops {
            let fd = try Socket.listen(host: config.host, port: port)
            if port == 0 { port = Socket.localPort(fd) }
            workers.append(Worker(server: self, loop: loop, listenFD: fd))
        }
        self.port = port
    }

    /// Registers the listeners with their loops (thread-safe: runs on each loop).
    public func start() {
        for w in workers { w.loop.execute { w.startListening() } }
    }

    /// Graceful shutdown, step one: stop accepting, close idle connections; connections with a
    /// response in progress finish it and close.
    public func beginDrain() {
        for w in workers { w.loop.execute { w.drain() } }
    }

    private let dateCache = Mutex<(UInt64, String)>((0, ""))

    /// IMF-fixdate for the `date` header, recomputed at most once a second.
    func httpDate(_ nowMillis: UInt64) -> String {
        let sec = nowMillis / 1000
        if let cached = dateCache.withLock({ $0.0 == sec ? $0.1 : nil }) { return cached }
        var t = time(nil)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        var buf = [CChar](repeating: 0, count: 64)
        let n = strftime(&buf, buf.count, "%a, %d %b %Y %H:%M:%S GMT", &tmv)
        let s = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        dateCache.withLock { $0 = (sec, s) }
        return s
    }

    /// A loop's share of the server: its listener and its connections.
    public final class Worker: IOHandler, TimerTarget, @unchecked Sendable {
        unowned let server: HTTPServer
        public let loop: EventLoop
        var listenFD: Int32
        var connections: [ObjectIdentifier: HTTPConnection] = [:]
        var trimTimer: LoopTimer?
        /// A descriptor held in reserve (`/dev/null`): when the process runs out, it is closed to
        /// accept one waiting client at a time and tell it 503, instead of leaving it hanging.
        var reserveFD: Int32 = -1
        /// Set while accepting is paused after descriptor exhaustion.
        var acceptTimer: LoopTimer?
        /// Per-loop read scratch: a connection copies out only what it read.
        var scratch = [UInt8](repeating: 0, count: Worker.readScratchBytes)
        static let readScratchBytes = 64 * 1024
        /// How long a loop must stay without connections before its freed heap is given back.
        static let trimAfterIdleMillis = 1_000
        /// Write buffers of connections with nothing queued. A connection borrows one to queue an
        /// answer (or one callback's stream events) and gives it back once the socket took it
        /// all: an open stream holds no buffer between events, and no event allocates one.
        /// Unchecked exclusivity: touched only by the two small methods below, which call out to
        /// nothing (the dynamic check cost more than the rest of the borrowing, per event).
        @exclusivity(unchecked) var spareWriteBuffers: [[UInt8]] = []
        static let maxSpareWriteBuffers = 64
        static let maxSpareWriteBufferBytes = 16 * 1024

        @inline(__always)
        func takeWriteBuffer() -> [UInt8] { spareWriteBuffers.popLast() ?? [] }

        /// Takes `buffer` (emptied) into the spares, or lets it go; leaves `buffer` empty.
        @inline(__always)
        func giveBack(_ buffer: inout [UInt8]) {
            guard buffer.capacity > 0 else { return }
            if buffer.capacity <= Worker.maxSpareWriteBufferBytes && spareWriteBuffers.count < Worker.maxSpareWriteBuffers {
                buffer.removeAll(keepingCapacity: true)
                spareWriteBuffers.append(buffer)
            }
            buffer = []
        }

        init(server: HTTPServer, loop: EventLoop, listenFD: Int32) {
            self.server = server; self.loop = loop; self.listenFD = listenFD
            reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
        }

        deinit {
            acceptTimer?.cancel()
            if reserveFD >= 0 { Glibc.close(reserveFD) }
        }


        func startListening() {
            loop.watch(listenFD, [.readable], self)
        }

        public func ioReady(_ events: IOEvents) {
            // Accept a bounded batch per wake-up to stay fair to existing connections.
            for _ in 0..<server.config.acceptBatch {
                guard listenFD >= 0 else { return }
                let fd: Int32, peer: String
                switch Socket.accept(listenFD) {
                case .accepted(let f, let p): (fd, peer) = (f, p)
                case .none: return
                case .retry: continue
                case .exhausted: return outOfDescriptors()
                }
                let perLoop = max(1, server.config.maxConnections / max(1, server.workers.count))
                if connections.count >= perLoop {
                    server.refusedOverCapacity.add(1)
                    refuseOverCapacity(fd)
                    continue
                }
                let c = HTTPConnection(fd: fd, peer: peer, server: server, worker: self)
                connections[ObjectIdentifier(c)] = c
                server.openConnections.add(1)
                c.start()
            }
        }

        /// EMFILE/ENFILE: the listener stays readable and accepting fails, so a level-triggered loop
        /// would spin. Tell the clients already waiting 503 (through the reserve descriptor), then
        /// stop watching the listener for `acceptBackoffMillis` while open connections carry on.
        private func outOfDescriptors() {
            server.acceptExhausted.add(1)
            if reserveFD >= 0 {
                Glibc.close(reserveFD)
                reserveFD = -1
                for _ in 0..<server.config.acceptBatch {
                    guard case .accepted(let fd, _) = Socket.accept(listenFD) else { break }
                    server.refusedOverCapacity.add(1)
                    refuseOverCapacity(fd)           // its descriptor is free again at once
                }
                reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
            }
            guard acceptTimer == nil else { return }
            loop.unwatch(listenFD)
            acceptTimer = loop.schedule(afterMillis: server.config.acceptBackoffMillis, target: self)
        }

        public func timerFired(_ timer: LoopTimer) {
            guard timer === acceptTimer else { return }
            acceptTimer = nil
            if reserveFD < 0 { reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC) }
            if listenFD >= 0 { loop.watch(listenFD, [.readable], self) }
        }

        private func refuseOverCapacity(_ fd: Int32) {
            let (ct, b) = server.config.errorBody(503, "too many connections")
            var h = HTTPResponseHead(status: 503, headers: ["content-type": ct, "content-length": String(b.count), "connection": "close", "retry-after": "1"])
            h.headers.add("date", server.httpDate(loop.now))
            var out: [UInt8] = []
            HTTPResponseWriter.head(h, into: &out)
            out.append(contentsOf: b)
            _ = out.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            Glibc.close(fd)
        }

        func connectionClosed(_ c: HTTPConnection) {
            if connections.removeValue(forKey: ObjectIdentifier(c)) != nil { server.openConnections.sub(1) }
            if connections.isEmpty && trimTimer == nil {
                trimTimer = loop.schedule(afterMillis: Worker.trimAfterIdleMillis) { [weak self] in
                    guard let self else { return }
                    self.trimTimer = nil
                    // Still idle a second later: hand the freed heap back to the kernel. glibc keeps
                    // freed memory of the loop threads' arenas otherwise, so RSS stayed at its peak
                    // (227 MiB after 9,900 streams closed) instead of returning to idle.
                    if self.connections.isEmpty { _ = veil_malloc_trim() }
                }
            }
        }

        func drain() {
            acceptTimer?.cancel()
            acceptTimer = nil
            if listenFD >= 0 {
                loop.unwatch(listenFD)
                Glibc.close(listenFD)
                listenFD = -1
            }
            for c in Array(connections.values) { c.beginDrain() }
        }
    }
}
