import CSQLite
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// A thin, generic wrapper over the system libsqlite3.
//
// Nothing here knows about Veil's tables; the tables in `SQLiteStore` are written on top of it, and a
// PostgreSQL backend would replace both behind the `VideoStore` / `CharacterStore` / `UsageStore`
// protocols.
//
// Thread safety: `SQLiteConnection` and `SQLiteStatement` are NOT thread-safe and are deliberately not
// `Sendable`. The connection is opened with SQLITE_OPEN_NOMUTEX (SQLite's "multi-thread" mode), so the
// owner must serialise every use of a connection and of its statements; `SQLiteStore` does that with a
// `Mutex`.

/// An error reported by SQLite: the extended result code, SQLite's message and the SQL involved, if any.
public struct SQLiteError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The extended result code (e.g. 2067 = SQLITE_CONSTRAINT_UNIQUE).
    public var code: Int32
    public var message: String
    public var sql: String?

    public init(code: Int32, message: String, sql: String? = nil) {
        self.code = code
        self.message = message
        self.sql = sql
    }

    /// The primary result code (low byte of the extended code), e.g. SQLITE_CONSTRAINT.
    public var primaryCode: Int32 { code & 0xFF }

    public var description: String {
        var s = "SQLite error \(code): \(message)"
        if let sql { s += " [\(sql)]" }
        return s
    }
}

/// A value that can be bound to a statement parameter.
public protocol SQLiteBindable {
    func bind(to statement: SQLiteStatement, at index: Int32) throws
}

extension Int: SQLiteBindable {
    public func bind(to statement: SQLiteStatement, at index: Int32) throws { try statement.bind(self, at: index) }
}
extension Double: SQLiteBindable {
    public func bind(to statement: SQLiteStatement, at index: Int32) throws { try statement.bind(self, at: index) }
}
extension String: SQLiteBindable {
    public func bind(to statement: SQLiteStatement, at index: Int32) throws { try statement.bind(self, at: index) }
}
extension Bool: SQLiteBindable {
    public func bind(to statement: SQLiteStatement, at index: Int32) throws { try statement.bind(self ? 1 : 0, at: index) }
}
extension Optional: SQLiteBindable where Wrapped: SQLiteBindable {
    public func bind(to statement: SQLiteStatement, at index: Int32) throws {
        switch self {
        case .some(let v): try v.bind(to: statement, at: index)
        case .none: try statement.bindNull(at: index)
        }
    }
}

/// A prepared statement. Obtain one from `SQLiteConnection.prepare(_:)` (cached per connection).
///
/// Use the `run` / `query` / `first` helpers where possible: they bind, step and reset the statement,
/// so a cached SELECT never keeps a read transaction open (which would block WAL checkpoints).
public final class SQLiteStatement {
    public let handle: OpaquePointer
    public let sql: String

    init(handle: OpaquePointer, sql: String) {
        self.handle = handle
        self.sql = sql
    }

    private func check(_ rc: Int32) throws {
        guard rc == SQLITE_OK else { throw error(rc) }
    }

    private func error(_ rc: Int32) -> SQLiteError {
        let db = sqlite3_db_handle(handle)
        let message = db.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) } ?? "error \(rc)"
        let code = db.map { sqlite3_extended_errcode($0) } ?? rc
        return SQLiteError(code: code, message: message, sql: sql)
    }

    // MARK: Binding (1-based indexes, as in SQLite)

    public func bind(_ value: Int, at index: Int32) throws {
        try check(sqlite3_bind_int64(handle, index, sqlite3_int64(value)))
    }

    public func bind(_ value: Double, at index: Int32) throws {
        try check(sqlite3_bind_double(handle, index, value))
    }

    public func bind(_ value: String, at index: Int32) throws {
        var value = value
        let rc: Int32 = value.withUTF8 { buf in
            guard let base = buf.baseAddress, buf.count > 0 else {
                // An empty buffer may have a nil base address, which SQLite would bind as NULL.
                return sqlite3_bind_text(handle, index, "", 0, veil_sqlite_transient())
            }
            return UnsafeRawPointer(base).withMemoryRebound(to: CChar.self, capacity: buf.count) {
                sqlite3_bind_text(handle, index, $0, Int32(buf.count), veil_sqlite_transient())
            }
        }
        try check(rc)
    }

    public func bindNull(at index: Int32) throws {
        try check(sqlite3_bind_null(handle, index))
    }

    /// Binds `values` to parameters 1...n.
    public func bind(_ values: [any SQLiteBindable]) throws {
        for (i, v) in values.enumerated() { try v.bind(to: self, at: Int32(i + 1)) }
    }

    // MARK: Stepping

    /// Steps once: true if a row is available, false when done.
    @discardableResult
    public func step() throws -> Bool {
        let rc = sqlite3_step(handle)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw error(rc)
        }
    }

    /// Resets the statement and clears its bindings (releases any read transaction it held).
    public func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    // MARK: Column readers (0-based indexes, as in SQLite)

    public var columnCount: Int32 { sqlite3_column_count(handle) }

    public func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }

    public func int(_ column: Int32) -> Int { Int(sqlite3_column_int64(handle, column)) }

    public func intOrNil(_ column: Int32) -> Int? { isNull(column) ? nil : int(column) }

    public func double(_ column: Int32) -> Double { sqlite3_column_double(handle, column) }

    public func doubleOrNil(_ column: Int32) -> Double? { isNull(column) ? nil : double(column) }

    public func text(_ column: Int32) -> String {
        guard let p = sqlite3_column_text(handle, column) else { return "" }
        let n = Int(sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
    }

    public func textOrNil(_ column: Int32) -> String? { isNull(column) ? nil : text(column) }

    // MARK: One-shot helpers (bind, step, reset)

    /// Runs a statement that returns no rows (or ignores them).
    public func run(_ values: any SQLiteBindable...) throws { try run(values) }

    public func run(_ values: [any SQLiteBindable]) throws {
        reset()
        defer { reset() }
        try bind(values)
        while try step() {}
    }

    /// Runs a query and maps every row.
    public func query<T>(_ values: any SQLiteBindable..., row: (SQLiteStatement) throws -> T) throws -> [T] {
        try query(values, row: row)
    }

    public func query<T>(_ values: [any SQLiteBindable], row: (SQLiteStatement) throws -> T) throws -> [T] {
        reset()
        defer { reset() }
        try bind(values)
        var out: [T] = []
        while try step() { out.append(try row(self)) }
        return out
    }

    /// Runs a query and maps the first row, if any.
    public func first<T>(_ values: any SQLiteBindable..., row: (SQLiteStatement) throws -> T) throws -> T? {
        try first(values, row: row)
    }

    public func first<T>(_ values: [any SQLiteBindable], row: (SQLiteStatement) throws -> T) throws -> T? {
        reset()
        defer { reset() }
        try bind(values)
        return try step() ? row(self) : nil
    }

    func finalize() { sqlite3_finalize(handle) }
}

/// One SQLite connection with a per-connection prepared-statement cache keyed by SQL text.
///
/// Not thread-safe (see the top of this file): serialise all use of a connection.
public final class SQLiteConnection {
    public let path: String
    public private(set) var handle: OpaquePointer?
    private var cache: [String: SQLiteStatement] = [:]
    private var savepointDepth = 0

    /// Opens (creating if needed) the database at `path`; `":memory:"` gives a private in-memory database.
    /// Extended result codes are enabled and `busy_timeout` is set.
    public init(path: String,
                flags: Int32 = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                busyTimeoutMillis: Int32 = 2000) throws {
        self.path = path
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            var message = db.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) } ?? "out of memory"
            if let db {
                let errno = sqlite3_system_errno(db)
                if errno != 0, let s = strerror(errno) { message += " (\(String(cString: s)))" }
            }
            let code = db.map { sqlite3_extended_errcode($0) } ?? rc
            sqlite3_close_v2(db)
            throw SQLiteError(code: code, message: message)
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, busyTimeoutMillis)
    }

    deinit { close() }

    /// Finalizes every cached statement and closes the connection. Idempotent.
    public func close() {
        for s in cache.values { s.finalize() }
        cache.removeAll()
        if let h = handle { sqlite3_close_v2(h) }
        handle = nil
    }

    public var isOpen: Bool { handle != nil }

    private func openHandle() throws -> OpaquePointer {
        guard let h = handle else { throw SQLiteError(code: SQLITE_MISUSE, message: "connection to '\(path)' is closed") }
        return h
    }

    private func error(_ rc: Int32, _ h: OpaquePointer, sql: String?) -> SQLiteError {
        SQLiteError(code: sqlite3_extended_errcode(h), message: String(cString: sqlite3_errmsg(h)), sql: sql)
    }

    /// Returns the cached prepared statement for `sql`, preparing it on first use.
    /// The statement is reset and its bindings cleared.
    public func prepare(_ sql: String) throws -> SQLiteStatement {
        if let s = cache[sql] {
            s.reset()
            return s
        }
        let s = try prepareUncached(sql, persistent: true)
        cache[sql] = s
        return s
    }

    /// Prepares `sql` without caching; the caller must `finalize()` it before the connection closes.
    func prepareUncached(_ sql: String, persistent: Bool) throws -> SQLiteStatement {
        let h = try openHandle()
        var stmt: OpaquePointer?
        let flags: UInt32 = persistent ? UInt32(SQLITE_PREPARE_PERSISTENT) : 0
        let rc = sqlite3_prepare_v3(h, sql, -1, flags, &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, h, sql: sql) }
        return SQLiteStatement(handle: stmt, sql: sql)
    }

    /// Runs one or more SQL statements without caching (schema, pragmas that return nothing).
    public func execute(_ sql: String) throws {
        let h = try openHandle()
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(h, sql, nil, nil, &err)
        if rc != SQLITE_OK {
            let message = err.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(h))
            sqlite3_free(err)
            throw SQLiteError(code: sqlite3_extended_errcode(h), message: message, sql: sql)
        }
    }

    /// Runs a one-off statement and returns the first column of its first row as text
    /// (e.g. `scalarText("PRAGMA journal_mode")`).
    public func scalarText(_ sql: String) throws -> String? {
        let s = try prepareUncached(sql, persistent: false)
        defer { s.finalize() }
        return try s.step() ? s.textOrNil(0) : nil
    }

    /// Like `scalarText` for integers (e.g. `PRAGMA user_version`).
    public func scalarInt(_ sql: String) throws -> Int? {
        let s = try prepareUncached(sql, persistent: false)
        defer { s.finalize() }
        return try s.step() ? s.intOrNil(0) : nil
    }

    /// Rows changed by the most recent INSERT/UPDATE/DELETE on this connection.
    public var changes: Int { handle.map { Int(sqlite3_changes($0)) } ?? 0 }

    public var lastInsertRowID: Int { handle.map { Int(sqlite3_last_insert_rowid($0)) } ?? 0 }

    /// True while a transaction is open.
    public var inTransaction: Bool { handle.map { sqlite3_get_autocommit($0) == 0 } ?? false }

    /// Runs `body` in a transaction (`BEGIN IMMEDIATE`, so writers take the lock up front and never
    /// deadlock on a read-to-write upgrade); commits on return, rolls back on throw.
    /// Nested calls use savepoints.
    public func transaction<R>(_ body: () throws -> R) throws -> R {
        if inTransaction {
            savepointDepth += 1
            defer { savepointDepth -= 1 }
            let name = "veil_sp\(savepointDepth)"
            try execute("SAVEPOINT \(name)")
            do {
                let r = try body()
                try execute("RELEASE \(name)")
                return r
            } catch {
                try? execute("ROLLBACK TO \(name)")
                try? execute("RELEASE \(name)")
                throw error
            }
        }
        try prepare("BEGIN IMMEDIATE").run()
        do {
            let r = try body()
            try prepare("COMMIT").run()
            return r
        } catch {
            if inTransaction { try? prepare("ROLLBACK").run() }
            throw error
        }
    }
}
