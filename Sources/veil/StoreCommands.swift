import ArgumentParser
import Gateway
import Glibc
import Store

/// `veil migrate`: the store's schema brought up to date, then exit (a deployment's init step;
/// `serve` does the same at start, under the same lock).
struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply the store's schema migrations, then exit.",
        discussion: """
        With store.url (PostgreSQL) the migrations run under an advisory lock, so replicas starting
        meanwhile wait for them instead of racing. With store.path (SQLite) the file is created if
        needed. `serve` applies them too; this command is for running them as a step of its own.
        """)
    @OptionGroup var options: ConfigOption

    func run() {
        let (env, _) = environment()
        let path = options.path(env)
        let store: GatewayConfig.StoreSettings
        do { store = try ConfigLoader.load(yaml: try readFile(path), environment: env, requireUpstreamKey: false).store }
        catch { fail("\(path): \(error)", hints: Preflight.hints(for: error, configPath: path, configExists: fileExists(path))) }
        do {
            if let url = store.url {
                var s = VeilRuntime.postgresSettings(store, url: url)
                s.usageFlushIntervalMillis = 0
                try PostgresStore(settings: s).close()
                print("store \(store.label): schema at version \(PostgresSchema.version) (current)")
            } else {
                guard store.path != ":memory:" else { fail("store.path is :memory:: nothing to migrate") }
                if let p = Preflight.storeProblem(store.path) { fail(p) }
                try SQLiteStore(path: store.path, usageFlushIntervalMillis: 0).close()
                print("store \(store.path): schema at version \(SQLiteStore.schemaVersion) (current)")
            }
        } catch { fail("\(error)") }
    }
}

struct StoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "store", abstract: "The store.", subcommands: [StoreCopyCommand.self])
}

/// `veil store copy --from PATH.sqlite3 --to postgres://…`: a one-box deployment moves to PostgreSQL.
struct StoreCopyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy",
        abstract: "Copy a SQLite store into an empty PostgreSQL database (migrating it first).",
        discussion: """
        Videos and characters (deleted ones too: they count for quotas) and the usage log, in one
        transaction: a failure leaves the database as it was. Stop the Veil writing the file first.
        The password comes from the URL, PGPASSWORD or ~/.pgpass.
        """)
    @Option(name: .long, help: "The SQLite file (store.path of the one-box deployment).") var from: String
    @Option(name: .long, help: "The PostgreSQL URI (postgres://user@host:5432/database).") var to: String

    func run() {
        guard StoreURL.isPostgres(to) else { fail("--to must be a postgres:// or postgresql:// URI") }
        guard fileExists(from) else { fail("--from `\(from)` does not exist") }
        do {
            let counts = try StoreCopy.run(from: from, to: to) { table, n in print("copied \(n) \(table) row(s)") }
            print("done: \(counts.videos) video(s), \(counts.characters) character(s), \(counts.usage) usage record(s), \(counts.webhookEvents) webhook event(s) into \(StoreURL.redacted(to))")
        } catch { fail("\(error)") }
    }
}

/// `check-config`'s look at PostgreSQL.
enum StoreCheck {
    enum Outcome { case success(String), failure(String) }

    /// A note for the summary (the schema's state), or the problem that would stop `serve`.
    static func postgres(_ store: GatewayConfig.StoreSettings, url: String) -> Outcome {
        do {
            let status = try PostgresStore.schemaStatus(settings: VeilRuntime.postgresSettings(store, url: url))
            if status.current == status.expected { return .success("PostgreSQL answers; schema current, version \(status.current)") }
            if status.current > status.expected {
                return .failure("store.url: the schema is at version \(status.current), newer than this build (\(status.expected)): run a newer Veil")
            }
            return .success("PostgreSQL answers; schema at version \(status.current), this build needs \(status.expected): `veil migrate` or `serve` applies it")
        } catch {
            return .failure("store.url: \(error)")
        }
    }
}
