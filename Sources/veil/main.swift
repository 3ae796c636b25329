import ArgumentParser
import CSystem
import Gateway
import Glibc
import Logging
import Reactor

/// `veil` — the command line. `serve` is the default subcommand.
struct Veil: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "veil",
        abstract: "A small, fast gateway in front of a quirky OpenAI-style reseller: hides the key, cleans the schema, keeps teams apart.",
        subcommands: [Serve.self, HashToken.self, CheckConfig.self, Usage.self],
        defaultSubcommand: Serve.self)
}

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "Path of the YAML configuration (default: $VEIL_CONFIG or config/veil.yaml).")
    var config: String?

    func path(_ env: [String: String]) -> String {
        config ?? env["VEIL_CONFIG"].flatMap { $0.isEmpty ? nil : $0 } ?? "config/veil.yaml"
    }
}

func environment() -> [String: String] {
    var env: [String: String] = [:]
    var p = environ
    while let entry = p.pointee {
        let s = String(cString: entry)
        if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
        p += 1
    }
    // A mounted secret file (containers) stands in for VEIL_UPSTREAM_KEY.
    if env["VEIL_UPSTREAM_KEY", default: ""].isEmpty, let file = env["VEIL_UPSTREAM_KEY_FILE"], !file.isEmpty,
       let text = try? readFile(file) {
        env["VEIL_UPSTREAM_KEY"] = text.trimmingCharacters(in: " \t\r\n")
    }
    return env
}


func readFile(_ path: String) throws(ConfigError) -> String {
    guard let f = fopen(path, "rb") else { throw ConfigError("", "cannot read \(path): \(String(cString: strerror(errno)))") }
    defer { fclose(f) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        out.append(contentsOf: buf[0..<n])
        if out.count > 4 << 20 { throw ConfigError("", "\(path) is larger than 4 MiB") }
    }
    return String(decoding: out, as: UTF8.self)
}

func loadConfig(_ path: String, _ env: [String: String]) throws(ConfigError) -> GatewayConfig {
    try ConfigLoader.load(yaml: try readFile(path), environment: env)
}

func fail(_ message: String) -> Never {
    FileHandleStderr.write("veil: \(message)\n")
    exit(2)
}

enum FileHandleStderr {
    static func write(_ s: String) {
        var b = Array(s.utf8)
        _ = b.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway (the default).")
    @OptionGroup var options: ConfigOption
    @Flag(name: .long, help: "Start an in-process stand-in upstream with every quirk (no key, no network) and print a demo team token.")
    var sandbox = false

    func run() throws {
        veil_block_signals()
        var env = environment()
        let path = options.path(env)
        var config: GatewayConfig
        var sandboxHandle: SandboxMode?
        if sandbox {
            let s = SandboxMode()
            do { try s.start() } catch { fail("sandbox failed to start: \(error)") }
            sandboxHandle = s
            env["VEIL_UPSTREAM_KEY"] = s.apiKey
            env["VEIL_UPSTREAM_URL"] = s.baseURL
            let userText: String? = options.config == nil ? nil : ((try? readFile(path)) ?? "")
            do { config = try ConfigLoader.load(yaml: SandboxMode.configText(userConfig: userText), environment: env) }
            catch { fail("\(error)") }
            config.store.path = ":memory:"
        } else {
            do { config = try loadConfig(path, env) } catch { fail("\(error)") }
        }
        let runtime: VeilRuntime
        do { runtime = try VeilRuntime(config: config) } catch { fail("\(error)") }
        let port: UInt16
        do { port = try runtime.start() } catch { fail("cannot start: \(error)") }
        runtime.log.logger.info("veil listening", metadata: ["listen": "\(config.listen)", "port": "\(port)", "loops": "\(runtime.loops.count)"])
        if let s = sandboxHandle {
            FileHandleStderr.write("""

            Veil is running in sandbox mode on port \(port), in front of a stand-in upstream at \(s.baseURL).
            Demo team token: \(SandboxMode.demoToken)

              curl -N http://127.0.0.1:\(port)/v1/chat/completions \\
                -H 'Authorization: Bearer \(SandboxMode.demoToken)' -H 'Content-Type: application/json' \\
                -d '{"model":"gpt-3.5-turbo","stream":true,"messages":[{"role":"user","content":"Hello"}]}'


            """)
        }
        while true {
            let sig = veil_wait_signal()
            if sig == SIGHUP {
                if sandboxHandle != nil { runtime.log.logger.notice("SIGHUP ignored in sandbox mode"); continue }
                do {
                    let fresh = try loadConfig(path, environment())
                    runtime.reload(fresh)
                    runtime.log.logger.notice("configuration reloaded", metadata: ["teams": "\(fresh.teams.count)"])
                } catch {
                    runtime.log.logger.error("configuration reload refused; the old one stays", metadata: ["problem": "\(runtime.log.redact(error.description))"])
                }
                continue
            }
            runtime.log.logger.notice("shutting down", metadata: ["grace_ms": "\(config.shutdownGraceMillis)"])
            runtime.shutdown(graceMillis: runtime.config.shutdownGraceMillis)  // also closes the store
            sandboxHandle?.stop()
            runtime.log.logger.notice("stopped")
            fflush(nil)
            Glibc.exit(0)
        }
    }
}

struct HashToken: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "hash-token", abstract: "Print the SHA-256 digest of a team token, to paste in `tokens_sha256`.")
    @Argument(help: "The team token.") var token: String
    func run() { print(sha256Hex(token)) }
}

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-config", abstract: "Load and check the configuration, then exit (0 = valid).")
    @OptionGroup var options: ConfigOption
    func run() throws {
        let env = environment()
        let path = options.path(env)
        do {
            let c = try loadConfig(path, env)
            print("\(path): valid — \(c.teams.count) team(s), upstream \(c.upstream.baseURL), listen \(c.listen)")
        } catch { fail("\(error)") }
    }
}

struct Usage: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print per-team usage (requests, errors, tokens, videos) from the store.")
    @OptionGroup var options: ConfigOption
    @Option(name: .long, help: "Only this team.") var team: String?
    @Option(name: .long, help: "How far back: 90s, 30m, 24h, 7d, 2w.") var since = "24h"
    @Option(name: .long, help: "The store file (default: store.path of the configuration).") var store: String?

    func run() throws {
        guard let seconds = UsageReport.parseDuration(since) else { fail("--since `\(since)`: use a number and s, m, h, d or w (e.g. 24h)") }
        let path: String
        if let store { path = store } else {
            let env = environment()
            do { path = try loadConfig(options.path(env), env).store.path } catch { fail("\(error)") }
        }
        guard path != ":memory:" else { fail("the store is in memory (sandbox mode): nothing to read") }
        do { print(try UsageReport.run(storePath: path, team: team, sinceSeconds: seconds), terminator: "") }
        catch { fail("\(error)") }
    }
}

LoggingSystem.bootstrap { label in StreamLogHandler.standardError(label: label) }
Veil.main()
