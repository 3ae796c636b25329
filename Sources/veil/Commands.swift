import ArgumentParser
import Gateway
import Glibc
import Store

struct HashToken: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-token",
        abstract: "Print the SHA-256 digest of a team token, to paste in `tokens_sha256`.",
        discussion: "Without an argument the token is read from standard input (not echoed on a terminal), so it stays out of the shell's history.")
    @Argument(help: "The team token (omit it to type or pipe it in).") var token: String?
    func run() {
        if let token { print(sha256Hex(token)); return }
        guard let line = readSecretLine(prompt: "token: "), !line.isEmpty else { fail("no token on standard input") }
        print(sha256Hex(line))
    }
}

/// One line from stdin; on a terminal without echo.
func readSecretLine(prompt: String) -> String? {
    let tty = isatty(0) == 1
    var saved = termios()
    if tty {
        StandardError.write(prompt)
        tcgetattr(0, &saved)
        var quiet = saved
        quiet.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(0, TCSANOW, &quiet)
    }
    defer { if tty { tcsetattr(0, TCSANOW, &saved); StandardError.write("\n") } }
    guard let line = readLine(strippingNewline: true) else { return nil }
    return line.trimmingCharacters(in: " \t\r")
}

struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "token", abstract: "Team tokens.", subcommands: [NewToken.self])
}

struct NewToken: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "new",
        abstract: "Make a strong random team token; print it once, and the configuration lines with its digest.",
        discussion: """
        The token goes to standard output (alone, so `veil token new --team web > token.txt` keeps it
        out of the terminal); the configuration lines go to standard error. Veil never stores the
        token: give it to the team now.
        """)
    @Option(name: .long, help: "The team the token is for (letters, digits, - _ .).") var team: String
    @Option(name: .long, help: "Expiry: a duration from now (30d, 12h, 2w) or Unix seconds. Default: never.") var expires: String?

    func run() {
        guard TokenIssue.isValidTeamName(team) else { fail("--team `\(team)`: use letters, digits, `-`, `_`, `.` (at most 64)") }
        var expiresAt: Int?
        if let expires {
            switch TokenIssue.parseExpiry(expires, now: time(nil)) {
            case .success(let at): expiresAt = at
            case .failure(let why): fail("--expires \(why)")
            }
        }
        var rng = SystemRandomNumberGenerator()
        let token = TokenIssue.newToken(using: &rng)
        let digest = sha256Hex(token)
        StandardError.write("New token for team `\(team)` (shown once; Veil keeps only its digest):\n")
        print(token)
        fflush(nil)
        StandardError.write("""

        Add it to the configuration (a team may have several tokens), then reload Veil (SIGHUP):

        \(TokenIssue.configSnippet(team: team, digest: digest, expiresAt: expiresAt))
        """)
    }
}

struct Teams: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the configured teams, their limits and their tokens' expiries.")
    @OptionGroup var options: ConfigOption
    func run() {
        let (env, _) = environment()
        let path = options.path(env)
        do {
            let c = try ConfigLoader.load(yaml: try readFile(path), environment: env, requireUpstreamKey: false)
            print(TeamsReport.render(c.teams, now: time(nil)), terminator: "")
        } catch { fail("\(path): \(error)", hints: Preflight.hints(for: error, configPath: path, configExists: fileExists(path))) }
    }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Run every check `serve` runs on the configuration, then exit (0 = it would start).",
        discussion: """
        Checked: the YAML and every key, every environment variable it uses (all missing ones at
        once), the key file, host names in `listen` (resolved), the store's directory — or, with
        store.url, that PostgreSQL answers and whether its schema is current (`serve` and
        `veil migrate` bring it up to date). Not checked: whether the port is free (a running Veil
        holds it; `serve` refuses a taken port at start).
        """)
    @OptionGroup var options: ConfigOption
    func run() {
        let (env, problems) = environment()
        let path = options.path(env)
        var found = problems
        var summary = ""
        do {
            let c = try ConfigLoader.load(yaml: try readFile(path), environment: env)
            var storeNote = ""
            if let url = c.store.url {
                switch StoreCheck.postgres(c.store, url: url) {
                case .failure(let problem): found.append(problem)
                case .success(let note): storeNote = " (\(note))"
                }
            } else if let p = Preflight.storeProblem(c.store.path) { found.append(p) }
            summary = "\(path): valid — \(c.teams.count) team(s), upstream \(StartupLine.origin(c.upstream.baseURL)), listen \(c.listen), store \(c.store.label)\(storeNote)"
            let hooks = c.teams.compactMap { t in t.webhook.map { "\(t.name) → \(TeamsReport.webhookShown($0.url))" } }
            if !hooks.isEmpty { summary += ", webhooks: " + hooks.joined(separator: ", ") }
        } catch {
            found.append("\(fileExists(path) ? path + ": " : "")\(error)")
            if found.count == 1 { fail(found[0], hints: Preflight.hints(for: error, configPath: path, configExists: fileExists(path))) }
        }
        if !found.isEmpty { fail(found.joined(separator: "\nveil: ")) }
        print(summary)
    }
}

struct Usage: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print per-team usage (requests, errors, tokens, videos) from the store.",
        discussion: "Reads the store only: no upstream key is needed.")
    @OptionGroup var options: ConfigOption
    @Option(name: .long, help: "Only this team.") var team: String?
    @Option(name: .long, help: "How far back: 90s, 30m, 24h, 7d, 2w.") var since = "24h"
    @Option(name: .long, help: "The store: a SQLite file or a postgres:// URL (default: store.url or store.path of the configuration).") var store: String?

    func run() throws {
        guard let seconds = UsageReport.parseDuration(since) else { fail("--since `\(since)`: use a number and s, m, h, d or w (e.g. 24h)") }
        var settings = GatewayConfig.StoreSettings()
        if let store {
            if StoreURL.isPostgres(store) { settings.url = store } else { settings.path = store }
        } else {
            let (env, _) = environment()
            let cfg = options.path(env)
            do { settings = try ConfigLoader.load(yaml: try readFile(cfg), environment: env, requireUpstreamKey: false).store }
            catch { fail("\(cfg): \(error)", hints: Preflight.hints(for: error, configPath: cfg, configExists: fileExists(cfg))) }
        }
        if let url = settings.url {
            do { print(try UsageReport.run(postgres: VeilRuntime.postgresSettings(settings, url: url), team: team, sinceSeconds: seconds), terminator: "") }
            catch { fail("\(error)") }
            return
        }
        let path = settings.path
        guard path != ":memory:" else { fail("the store is in memory (sandbox mode): nothing to read") }
        // Opening would create an empty store and report nothing: a wrong path must say so.
        guard fileExists(path) else { fail("store `\(path)` does not exist (nothing was recorded there; is --store or store.path right?)") }
        do { print(try UsageReport.run(storePath: path, team: team, sinceSeconds: seconds), terminator: "") }
        catch { fail("\(error)") }
    }
}
