import Foundation
import Glibc
import Store
import Synchronization

/// A private PostgreSQL cluster for tests: `initdb` and `pg_ctl` (Debian's `postgresql` package)
/// in a temporary directory, on a free loopback port, as the `postgres` user when the tests run
/// as root (the server refuses to run as root). Stopped and removed when the test process exits
/// (at exit, and by a watcher process should the tests be killed).
///
/// Tests that need PostgreSQL call `PostgresCluster.shared()` (or make their own, to stop and
/// start it): when the server's programs are missing they FAIL with `PostgresMissing`, which says
/// what to install — they never pass silently.
public final class PostgresCluster: @unchecked Sendable {
    public let port: Int
    public let directory: String
    public var dataDirectory: String { directory + "/data" }
    private let bin: String
    private let asPostgresUser: Bool
    private let databases = Atomic<Int>(0)

    public struct PostgresMissing: Error, CustomStringConvertible {
        public let description: String
    }

    public struct CommandFailed: Error, CustomStringConvertible {
        public let description: String
    }

    private static let sharedCluster = Mutex<PostgresCluster?>(nil)

    /// The cluster shared by this test process (started on first use).
    public static func shared() throws -> PostgresCluster {
        try sharedCluster.withLock { c in
            if let c { return c }
            let fresh = try PostgresCluster()
            c = fresh
            return fresh
        }
    }

    /// Starts a new cluster of its own. `binaries`: the directory of initdb and pg_ctl
    /// (default: the newest /usr/lib/postgresql/N/bin, else the PATH's; `VEIL_TEST_POSTGRES_BIN`).
    public init(binaries: String? = ProcessInfo.processInfo.environment["VEIL_TEST_POSTGRES_BIN"]) throws {
        let found = binaries.map { dir in
            access(dir + "/initdb", X_OK) == 0 && access(dir + "/pg_ctl", X_OK) == 0 ? dir : nil
        } ?? PostgresCluster.findBinaries()
        guard let bin = found else {
            throw PostgresMissing(description: """
                PostgreSQL is not installed: this test needs the server programs initdb and pg_ctl \
                (Debian: `apt-get install postgresql`; scripts/deps installs it). Not skipped: a test \
                that can't run fails.
                """)
        }
        self.bin = bin
        asPostgresUser = getuid() == 0
        if asPostgresUser && getpwnam("postgres") == nil {
            throw PostgresMissing(description: "running as root, but there is no `postgres` user to run the server as (the `postgresql` package creates it)")
        }
        directory = "/tmp/veil-pg-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        port = PostgresCluster.freePort()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if asPostgresUser, let pw = getpwnam("postgres") {
            chown(directory, pw.pointee.pw_uid, pw.pointee.pw_gid)
        }
        try run(["\(bin)/initdb", "-D", dataDirectory, "-U", "veil", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"])
        PostgresCluster.register(self)
        try start()
    }

    /// `postgresql://veil@127.0.0.1:PORT/NAME` (trust authentication: no password).
    public func url(database: String) -> String { "postgresql://veil@127.0.0.1:\(port)/\(database)" }

    /// A new, empty database; its URL.
    public func createDatabase() throws -> String {
        let name = "veil_test_\(getpid())_\(databases.add(1, ordering: .relaxed).newValue)_\(UInt16.random(in: 0...UInt16.max))"
        let c = try PostgresConnection(conninfo: url(database: "postgres"), deadline: StoreClock.monotonicMillis() + 20_000, statementTimeoutMillis: 0)
        defer { c.close() }
        try c.execute("CREATE DATABASE \(name)", deadline: StoreClock.monotonicMillis() + 20_000)
        return url(database: name)
    }

    public func start() throws {
        try run(["\(bin)/pg_ctl", "-D", dataDirectory, "-l", directory + "/server.log", "-w", "-t", "30", "-o",
                 "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400",
                 "start"])
    }

    /// `mode`: `fast` (clients disconnected, a clean shutdown) or `immediate` (like a crash).
    public func stop(mode: String = "fast") throws {
        try run(["\(bin)/pg_ctl", "-D", dataDirectory, "-m", mode, "-w", "-t", "30", "stop"])
    }

    /// Stops the server (if running) and removes the directory.
    public func destroy() {
        _ = try? run(["\(bin)/pg_ctl", "-D", dataDirectory, "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(atPath: directory)
        PostgresCluster.unregister(self)
    }

    public var serverLog: String { (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? "" }

    // MARK: - Plumbing

    @discardableResult
    private func run(_ args: [String]) throws -> String {
        let argv = asPostgresUser ? ["/usr/sbin/runuser", "-u", "postgres", "--"] + args : args
        // Output to a file, not a pipe: the server `pg_ctl start` leaves running would inherit a
        // pipe and keep it open. posix_spawn and waitpid, not Foundation's Process (whose exit
        // monitoring did not reap children here when called from a test's thread).
        let outPath = "/tmp/veil-pg-cmd-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).out"
        defer { unlink(outPath) }
        let status = try PostgresCluster.spawn(argv, output: outPath, wait: true)
        let text = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw CommandFailed(description: "\(args.joined(separator: " ")) failed (\(status)): \(text)")
        }
        return text
    }

    /// Spawns `argv` with stdin from /dev/null and stdout+stderr to `output`; with `wait`, its
    /// exit status.
    @discardableResult
    static func spawn(_ argv: [String], output: String, wait: Bool) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // From /tmp: the `postgres` user may not enter the tests' working directory.
        let wrapped = ["/bin/sh", "-c", "cd /tmp && exec \"$@\"", "sh"] + argv
        let cArgs: [UnsafeMutablePointer<CChar>?] = wrapped.map { strdup($0) } + [nil]
        defer { for a in cArgs { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/bin/sh", &actions, nil, cArgs, environ)
        guard rc == 0 else { throw CommandFailed(description: "cannot run \(argv[0]): \(String(cString: strerror(rc)))") }
        guard wait else { return 0 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// The newest /usr/lib/postgresql/N/bin with initdb and pg_ctl, else the PATH's.
    static func findBinaries() -> String? {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted(by: >)
        for v in versions {
            let dir = "\(root)/\(v)/bin"
            if access(dir + "/initdb", X_OK) == 0 && access(dir + "/pg_ctl", X_OK) == 0 { return dir }
        }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        where access(dir + "/initdb", X_OK) == 0 && access(dir + "/pg_ctl", X_OK) == 0 {
            return dir
        }
        return nil
    }

    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    // MARK: - Clean-up at exit

    private static let live = Mutex<[ObjectIdentifier: PostgresCluster]>([:])
    private static let atExitRegistered = Atomic<Bool>(false)

    private static func register(_ c: PostgresCluster) {
        live.withLock { $0[ObjectIdentifier(c)] = c }
        if !atExitRegistered.exchange(true, ordering: .relaxed) { atexit(postgresClusterAtExit) }
        c.startWatcher()
    }

    private static func unregister(_ c: PostgresCluster) {
        _ = live.withLock { $0.removeValue(forKey: ObjectIdentifier(c)) }
    }

    static func destroyAll() {
        let all = live.withLock { Array($0.values) }
        for c in all { c.destroy() }
    }

    /// Should the test process die without running its exit handlers, a small shell waits for
    /// it and then stops the server and removes the directory.
    private func startWatcher() {
        let stop = asPostgresUser
            ? "/usr/sbin/runuser -u postgres -- \(bin)/pg_ctl -D \(dataDirectory) -m immediate stop"
            : "\(bin)/pg_ctl -D \(dataDirectory) -m immediate stop"
        let script = "while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done; \(stop) >/dev/null 2>&1; rm -rf \(directory)"
        _ = try? PostgresCluster.spawn(["/usr/bin/setsid", "/bin/sh", "-c", script], output: "/dev/null", wait: false)
    }
}

private func postgresClusterAtExit() { PostgresCluster.destroyAll() }
