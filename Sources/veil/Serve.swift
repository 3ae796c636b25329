import ArgumentParser
import CSystem
import Gateway
import Glibc
import Logging
import Reactor

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "Path of the YAML configuration (default: $VEIL_CONFIG or config/veil.yaml).")
    var config: String?

    func path(_ env: [String: String]) -> String {
        config ?? env["VEIL_CONFIG"].flatMap { $0.isEmpty ? nil : $0 } ?? "config/veil.yaml"
    }
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway (the default).",
        discussion: VeilEnvironment.helpText + "\n\n"
            + "A port another process already serves is refused at start (Veil's listeners share a port between its own event loops only).")
    @OptionGroup var options: ConfigOption
    @Flag(name: .long, help: "Start an in-process stand-in upstream with every quirk (no key, no network) and a demo team, unless --config names the teams.")
    var sandbox = false

    func run() throws {
        veil_block_signals()
        var (env, problems) = environment()
        let path = options.path(env)
        var config: GatewayConfig
        var sandboxHandle: SandboxMode?
        let named = !sandbox || options.config != nil   // a file's teams apply
        if sandbox {
            // The user's file when --config names one (VEIL_CONFIG is not read here: an image's
            // production config must not replace the demo team), upstream pointed at the stand-in.
            var userText: String?
            if named {
                do { userText = try readFile(path) } catch { fail("--config: \(error.problem)") }
            }
            let s: SandboxMode
            do { s = try SandboxMode(key: env["VEIL_SANDBOX_KEY"]) } catch { fail("\(error)") }
            do { try s.start() } catch { fail("sandbox failed to start: \(error)") }
            sandboxHandle = s
            env["VEIL_UPSTREAM_KEY"] = s.apiKey
            env["VEIL_UPSTREAM_URL"] = s.baseURL
            do { config = try ConfigLoader.load(yaml: SandboxMode.configText(userConfig: userText), environment: env) }
            catch { fail("\(named ? path + ": " : "")\(error)") }
            config.store.path = ":memory:"
            config.store.url = nil
            problems = []  // the key file is not used in sandbox mode
        } else {
            if let p = problems.first { fail(p) }
            do { config = try ConfigLoader.load(yaml: try readFile(path), environment: env) } catch {
                fail("\(fileExists(path) ? path + ": " : "")\(error)", hints: Preflight.hints(for: error, configPath: path, configExists: fileExists(path)))
            }
            if config.store.url == nil, let p = Preflight.storeProblem(config.store.path) {
                fail(p, hints: path == "config/veil.yaml" ? ["on a development machine: --config config/veil.dev.yaml keeps the store in the current directory"] : [])
            }
        }
        VeilLogHandler.select(LogFormat.resolveForStderr(config.log.format))
        // Refuse a port another process already serves (SO_REUSEPORT would share it silently).
        if let (host, port) = ConfigLoader.parseListen(config.listen) {
            do { try Socket.ensurePortFree(host: host, port: port) } catch {
                sandboxHandle?.stop()
                fail("cannot start: \(error)")
            }
        }
        let runtime: VeilRuntime
        do { runtime = try VeilRuntime(config: config) } catch { fail("\(error)") }
        let port: UInt16
        do { port = try runtime.start() } catch { fail("cannot start: \(error)") }
        runtime.log.logger.info(Logger.Message(stringLiteral: StartupLine.message), metadata: StartupLine.metadata(
            version: VeilVersion.current, configPath: named ? path : nil, listen: config.listen, port: port,
            loops: runtime.loops.count, upstreamBaseURL: config.upstream.baseURL, storePath: config.store.label,
            teams: config.teams.count, sandbox: sandbox))
        if let s = sandboxHandle {
            StandardError.write(SandboxMode.banner(port: port, upstream: s.baseURL, configPath: named ? path : nil, teams: config.teams))
        }
        while true {
            let sig = veil_wait_signal()
            if sig == SIGHUP {
                if sandboxHandle != nil { runtime.log.logger.notice("SIGHUP ignored in sandbox mode"); continue }
                do {
                    let (freshEnv, envProblems) = environment()
                    if let p = envProblems.first { throw ConfigError("", p) }
                    let fresh = try ConfigLoader.load(yaml: try readFile(path), environment: freshEnv)
                    runtime.reload(fresh)
                    runtime.log.logger.notice("configuration reloaded", metadata: ["teams": "\(fresh.teams.count)"])
                } catch {
                    runtime.log.logger.error("configuration reload refused; the old one stays", metadata: ["problem": "\(runtime.log.redact("\(error)"))"])
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
