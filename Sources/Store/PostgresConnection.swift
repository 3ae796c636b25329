import CPostgres
#if canImport(Glibc)
import Glibc
#endif

// A thin wrapper over libpq, in the manner of `SQLiteConnection`: nothing here knows Veil's tables.
//
// Every wait is bounded by a deadline (a monotonic millisecond): the connection is made with
// libpq's non-blocking API (`PQconnectStartParams` / `PQconnectPoll`) and queries are sent and read
// in non-blocking mode, each wait a `poll(2)` on the connection's socket with what is left of the
// deadline. A query that runs out of time leaves the connection unusable: the caller drops it
// (the server rolls back whatever it was doing when it notices, at the latest at its
// `statement_timeout`). The one step libpq does not make asynchronous is resolving a host name
// (`getaddrinfo` inside `PQconnectStartParams`); the gateway's own guard still answers its caller.
//
// Not thread-safe (like libpq's PGconn): one thread at a time, which `PostgresPool` ensures.

/// A failure from libpq or from the server.
public struct PostgresError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The server answered with an error; the connection is still usable.
        case server
        /// The connection failed or was lost (refused, reset, the server shutting down).
        case connection
        /// The deadline passed (connecting or waiting for an answer).
        case timeout
    }
    public var kind: Kind
    /// The five-character SQLSTATE of a server error (e.g. `23505`, unique violation).
    public var sqlState: String?
    /// The constraint a server error names, if any.
    public var constraint: String?
    public var message: String

    public init(_ kind: Kind, _ message: String, sqlState: String? = nil, constraint: String? = nil) {
        self.kind = kind; self.message = message; self.sqlState = sqlState; self.constraint = constraint
    }

    public var description: String {
        var s = "PostgreSQL"
        if let sqlState { s += " \(sqlState)" }
        return s + ": " + message
    }

    /// Server errors that mean "not now" rather than "wrong": the connection's class (08), the
    /// server shutting down or starting (57P01-57P03), too many connections (53300), a statement
    /// cancelled by `statement_timeout` (57014), a read-only server after a fail-over (25006).
    public static func isTransient(sqlState: String) -> Bool {
        sqlState.hasPrefix("08") || ["57P01", "57P02", "57P03", "53300", "57014", "25006"].contains(sqlState)
    }

    /// True when the failure says nothing about the request (retrying later may work).
    public var isUnavailable: Bool {
        switch kind {
        case .connection, .timeout: return true
        case .server: return sqlState.map(PostgresError.isTransient) ?? false
        }
    }
}

/// The rows of a result, as text (libpq's text format), and the number of rows a command touched.
public struct PostgresRows: Sendable, Equatable {
    public var rows: [[String?]] = []
    public var affected = 0

    public var first: [String?]? { rows.first }
}

/// One connection to the server.
public final class PostgresConnection {
    private var conn: OpaquePointer?
    /// SQL text → the name of its prepared statement on this connection.
    private var prepared: [String: String] = [:]
    /// Set when the connection can't be trusted any more (lost, timed out mid-query).
    public private(set) var broken = false

    /// Connects within `deadline` and sets `statement_timeout` (0 = none). `conninfo` is a libpq
    /// URI (`postgres://…`); libpq also reads `PGPASSWORD`, `~/.pgpass` and the other `PG*`
    /// variables. `fallback_application_name` is `veil` (a URI's `application_name` wins).
    public init(conninfo: String, deadline: UInt64, statementTimeoutMillis: Int) throws(PostgresError) {
        let keywords = ["dbname", "fallback_application_name"]
        let values = [conninfo, "veil"]
        let c: OpaquePointer? = withCStrings(keywords) { k in withCStrings(values) { v in PQconnectStartParams(k, v, 1) } }
        guard let c else { throw PostgresError(.connection, "libpq could not allocate a connection") }
        conn = c
        if PQstatus(c) == CONNECTION_BAD { throw fail(.connection, PostgresConnection.errorText(c)) }
        var state = PGRES_POLLING_WRITING
        while state != PGRES_POLLING_OK {
            switch state {
            case PGRES_POLLING_FAILED:
                throw fail(.connection, PostgresConnection.errorText(c))
            case PGRES_POLLING_READING, PGRES_POLLING_WRITING:
                let fd = PQsocket(c)
                guard fd >= 0 else { throw fail(.connection, PostgresConnection.errorText(c)) }
                guard PostgresConnection.wait(fd, read: state == PGRES_POLLING_READING, write: state == PGRES_POLLING_WRITING, deadline: deadline) else {
                    throw fail(.timeout, "no connection within the connect timeout")
                }
            default:
                break
            }
            state = PQconnectPoll(c)
        }
        guard PQsetnonblocking(c, 1) == 0 else { throw fail(.connection, PostgresConnection.errorText(c)) }
        do {
            try execute("SET statement_timeout = \(max(0, statementTimeoutMillis))", deadline: deadline)
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    public func close() {
        if let conn { PQfinish(conn) }
        conn = nil
        broken = true
    }

    /// The server's version number (e.g. 150018).
    public var serverVersion: Int { conn.map { Int(PQserverVersion($0)) } ?? 0 }

    /// Before a pooled connection is used again: true when it still looks alive. An idle
    /// connection has nothing to read (Veil never LISTENs); if something is there it is the server
    /// saying goodbye (a restart, `pg_terminate_backend`) or the socket's end. Such a connection
    /// is not trusted (whatever the message): the caller makes a new one.
    public func isUsable() -> Bool {
        guard !broken, let c = conn, PQstatus(c) == CONNECTION_OK else { return false }
        let fd = PQsocket(c)
        guard fd >= 0 else { return false }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&p, 1, 0) != 0 { broken = true; return false }
        return true
    }

    // MARK: - Queries

    /// Runs one statement with text parameters (`$1`, `$2`, …; nil is NULL), prepared once per
    /// connection and reused.
    @discardableResult
    public func query(_ sql: String, _ params: [String?] = [], deadline: UInt64) throws(PostgresError) -> PostgresRows {
        let c = try live()
        let name: String
        if let n = prepared[sql] { name = n } else {
            name = "veil_\(prepared.count + 1)"
            let sent = PQsendPrepare(c, name, sql, Int32(params.count), nil)
            try afterSend(sent)
            _ = try collect(deadline: deadline)
            prepared[sql] = name
        }
        let sent: Int32 = withOptionalCStrings(params) { values in
            PQsendQueryPrepared(c, name, Int32(params.count), values, nil, nil, 0)
        }
        try afterSend(sent)
        return try collect(deadline: deadline)
    }

    /// Runs SQL text without parameters (several statements allowed: migrations, BEGIN/COMMIT).
    public func execute(_ sql: String, deadline: UInt64) throws(PostgresError) {
        let c = try live()
        try afterSend(PQsendQuery(c, sql))
        _ = try collect(deadline: deadline)
    }

    /// `body` inside BEGIN … COMMIT; rolled back if it throws (unless the connection is gone).
    public func transaction<R>(deadline: UInt64, _ body: () throws -> R) throws -> R {
        try execute("BEGIN", deadline: deadline)
        do {
            let r = try body()
            try execute("COMMIT", deadline: deadline)
            return r
        } catch {
            if !broken { try? execute("ROLLBACK", deadline: deadline) }
            throw error
        }
    }

    /// `COPY … FROM STDIN` (text format): `copySQL` names the table and columns, `data` is the
    /// rows as `PostgresCopy.encode` makes them. Answers the number of rows copied.
    @discardableResult
    public func copyIn(_ copySQL: String, data: [UInt8], deadline: UInt64) throws(PostgresError) -> Int {
        let c = try live()
        try afterSend(PQsendQuery(c, copySQL))
        try flush(deadline: deadline)
        // Wait for the server to switch to COPY IN (or refuse).
        while PQisBusy(c) != 0 { try readMore(deadline: deadline) }
        guard let r = PQgetResult(c) else { throw fail(.connection, "no answer to COPY") }
        let status = PQresultStatus(r)
        if status != PGRES_COPY_IN {
            let e = PostgresConnection.serverError(r)
            PQclear(r)
            _ = try? collect(deadline: deadline)
            throw e
        }
        PQclear(r)
        var offset = 0
        let chunk = 1 << 16
        while offset < data.count {
            let n = min(chunk, data.count - offset)
            let rc: Int32 = data.withUnsafeBufferPointer { b in
                b.baseAddress!.advanced(by: offset).withMemoryRebound(to: CChar.self, capacity: n) { PQputCopyData(c, $0, Int32(n)) }
            }
            if rc == 1 { offset += n; continue }
            if rc < 0 { throw fail(.connection, PostgresConnection.errorText(c)) }
            guard PostgresConnection.wait(PQsocket(c), read: false, write: true, deadline: deadline) else { throw fail(.timeout, "COPY timed out") }
        }
        while true {
            let rc = PQputCopyEnd(c, nil)
            if rc == 1 { break }
            if rc < 0 { throw fail(.connection, PostgresConnection.errorText(c)) }
            guard PostgresConnection.wait(PQsocket(c), read: false, write: true, deadline: deadline) else { throw fail(.timeout, "COPY timed out") }
        }
        return try collect(deadline: deadline).affected
    }

    // MARK: - Plumbing

    private func live() throws(PostgresError) -> OpaquePointer {
        guard let c = conn, !broken else { throw PostgresError(.connection, "the connection is closed") }
        return c
    }

    /// Marks the connection unusable (closing it) and returns the error to throw.
    private func fail(_ kind: PostgresError.Kind, _ message: String) -> PostgresError {
        close()
        return PostgresError(kind, message)
    }

    private func afterSend(_ rc: Int32) throws(PostgresError) {
        guard rc == 1 else { throw fail(.connection, conn.map(PostgresConnection.errorText) ?? "not connected") }
    }

    /// Sends what libpq buffered (non-blocking mode), reading meanwhile so the server never
    /// blocks on a full socket.
    private func flush(deadline: UInt64) throws(PostgresError) {
        let c = try live()
        while true {
            let rc = PQflush(c)
            if rc == 0 { return }
            if rc < 0 { throw fail(.connection, PostgresConnection.errorText(c)) }
            guard PostgresConnection.wait(PQsocket(c), read: true, write: true, deadline: deadline) else {
                throw fail(.timeout, "the server did not take the query within the store's deadline")
            }
            if PQconsumeInput(c) == 0 { throw fail(.connection, PostgresConnection.errorText(c)) }
        }
    }

    private func readMore(deadline: UInt64) throws(PostgresError) {
        let c = try live()
        guard PostgresConnection.wait(PQsocket(c), read: true, write: false, deadline: deadline) else {
            throw fail(.timeout, "no answer from the server within the store's deadline")
        }
        if PQconsumeInput(c) == 0 { throw fail(.connection, PostgresConnection.errorText(c)) }
    }

    /// Reads every result of what was sent; the first error is thrown once all are read (so the
    /// connection is ready for the next query).
    private func collect(deadline: UInt64) throws(PostgresError) -> PostgresRows {
        try flush(deadline: deadline)
        let c = try live()
        var out = PostgresRows()
        var firstError: PostgresError?
        while true {
            while PQisBusy(c) != 0 { try readMore(deadline: deadline) }
            guard let r = PQgetResult(c) else { break }
            switch PQresultStatus(r) {
            case PGRES_TUPLES_OK, PGRES_SINGLE_TUPLE:
                let n = PQntuples(r), f = PQnfields(r)
                out.rows.reserveCapacity(Int(n))
                for i in 0..<n {
                    var row: [String?] = []
                    row.reserveCapacity(Int(f))
                    for j in 0..<f {
                        row.append(PQgetisnull(r, i, j) == 1 ? nil : String(cString: PQgetvalue(r, i, j)))
                    }
                    out.rows.append(row)
                }
                out.affected = Int(n)
            case PGRES_COMMAND_OK:
                out.affected = Int(String(cString: PQcmdTuples(r))) ?? 0
            case PGRES_EMPTY_QUERY:
                break
            case PGRES_COPY_IN, PGRES_COPY_OUT, PGRES_COPY_BOTH:
                // Not expected here: give up on this connection rather than guess.
                PQclear(r)
                throw fail(.connection, "unexpected COPY state")
            default:
                if firstError == nil { firstError = PostgresConnection.serverError(r) }
            }
            PQclear(r)
        }
        if PQstatus(c) != CONNECTION_OK {
            let message = PostgresConnection.errorText(c)
            close()
            if var e = firstError { e.kind = .connection; throw e }
            throw PostgresError(.connection, message)
        }
        if let firstError { throw firstError }
        return out
    }

    static func serverError(_ r: OpaquePointer) -> PostgresError {
        func field(_ code: UInt8) -> String? { PQresultErrorField(r, Int32(code)).map { String(cString: $0) } }
        let message = field(UInt8(ascii: "M")) ?? trimmed(String(cString: PQresultErrorMessage(r)))
        return PostgresError(.server, message, sqlState: field(UInt8(ascii: "C")), constraint: field(UInt8(ascii: "n")))
    }

    static func errorText(_ c: OpaquePointer) -> String {
        let t = trimmed(String(cString: PQerrorMessage(c)))
        return t.isEmpty ? "connection failed" : t
    }

    private static func trimmed(_ s: String) -> String {
        var t = Substring(s)
        while let last = t.last, last == "\n" || last == " " { t = t.dropLast() }
        // libpq's multi-line messages: one line for logs.
        return t.split(separator: "\n").map { line in
            String(line.drop { $0 == " " || $0 == "\t" })
        }.joined(separator: "; ")
    }

    /// Waits until `fd` is readable/writable or the deadline passes (false).
    static func wait(_ fd: Int32, read: Bool, write: Bool, deadline: UInt64) -> Bool {
        var events: Int32 = 0
        if read { events |= Int32(POLLIN) }
        if write { events |= Int32(POLLOUT) }
        while true {
            let now = StoreClock.monotonicMillis()
            guard now < deadline else { return false }
            var p = pollfd(fd: fd, events: Int16(events), revents: 0)
            let rc = poll(&p, 1, Int32(min(deadline - now, UInt64(Int32.max))))
            if rc > 0 { return true }       // ready, or an error libpq will report
            if rc < 0 && errno != EINTR { return true }
        }
    }
}

/// `COPY … FROM STDIN` text format: a tab between columns, a newline after each row, `\N` for
/// NULL, and backslash, tab, newline and carriage return escaped.
public enum PostgresCopy {
    public static func encode(_ rows: [[String?]]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(rows.count * 64)
        for row in rows {
            for (i, value) in row.enumerated() {
                if i > 0 { out.append(0x09) }
                guard let value else { out.append(contentsOf: [0x5C, 0x4E]); continue }   // \N
                for b in value.utf8 {
                    switch b {
                    case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
                    case 0x09: out.append(contentsOf: [0x5C, 0x74])
                    case 0x0A: out.append(contentsOf: [0x5C, 0x6E])
                    case 0x0D: out.append(contentsOf: [0x5C, 0x72])
                    default: out.append(b)
                    }
                }
            }
            out.append(0x0A)
        }
        return out
    }
}

// MARK: - C strings

private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) } + [nil]
    defer { for p in copies { free(p) } }
    return copies.map { UnsafePointer($0) }.withUnsafeBufferPointer { body($0.baseAddress!) }
}

private func withOptionalCStrings<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let copies: [UnsafeMutablePointer<CChar>?] = strings.map { $0.flatMap { strdup($0) } }
    defer { for p in copies { free(p) } }
    return copies.map { UnsafePointer($0) }.withUnsafeBufferPointer { body($0.baseAddress) }
}
