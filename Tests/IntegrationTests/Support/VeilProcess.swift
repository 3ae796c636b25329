import Foundation
import Glibc
import Sandbox

/// The real `veil` binary as a child process (for signals), with its config in a temp file and
/// its stdout (access log) and stderr (operations log) in temp files.
final class VeilProcess: @unchecked Sendable {
    let process = Process()
    let configPath: String
    let storePath: String
    let stdoutPath: String
    let stderrPath: String
    private(set) var port: UInt16 = 0

    /// `.build/debug/veil`, found from this source file's place in the package (or the binary
    /// `VEIL_TEST_BINARY` names: to run the same attacks against another build).
    static var binary: String? {
        if let b = ProcessInfo.processInfo.environment["VEIL_TEST_BINARY"], !b.isEmpty { return b }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        for rel in [".build/debug/veil", ".build/x86_64-unknown-linux-gnu/debug/veil"] {
            let p = root.appendingPathComponent(rel).path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    static func config(upstream: String, key: String, store: String, tokenDigest: String, graceMillis: Int = 10_000, extra: String = "") -> String {
        """
        listen: "127.0.0.1:0"
        workers: 2
        shutdown_grace_ms: \(graceMillis)
        upstream:
          base_url: "\(upstream)"
          api_key: "\(key)"
          connect_timeout_ms: 2000
          stall_timeout_ms: 5000
        store:
          path: "\(store)"
        \(extra)
        teams:
          - name: web
            tokens_sha256: ["\(tokenDigest)"]
        """
    }

    /// `arguments` default to `serve --config <the temp config>`; `environment` is added to a bare
    /// PATH/HOME (no VEIL_* from the test's own environment).
    init(configText: String, storePath: String, arguments: [String]? = nil, environment: [String: String] = [:]) throws {
        guard let bin = VeilProcess.binary else { throw VeilProcessError.noBinary }
        let id = UUID().uuidString
        configPath = "/tmp/veil-signal-\(id).yaml"
        stdoutPath = "/tmp/veil-signal-\(id).out"
        stderrPath = "/tmp/veil-signal-\(id).err"
        self.storePath = storePath
        try configText.write(toFile: configPath, atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: bin)
        process.arguments = arguments ?? ["serve", "--config", configPath]
        // No VEIL_* from the test's environment.
        process.environment = ["PATH": "/usr/bin:/bin", "HOME": "/tmp"].merging(environment) { $1 }
        process.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // The port is in the "veil listening" line.
        let found = waitUntil(15) { self.parsePort() || !self.process.isRunning }
        guard found, port != 0 else { kill(); throw VeilProcessError.didNotStart(stderr) }
    }

    private func parsePort() -> Bool {
        let text = stderr
        // Text (`port=8080`) or JSON (`"port":"8080"`) operations log.
        guard text.contains("veil listening"), let r = text.range(of: #"port(=|":")\d+"#, options: .regularExpression) else { return false }
        port = UInt16(text[r].drop { !$0.isNumber }) ?? 0
        return port != 0
    }

    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
    var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var pid: pid_t { process.processIdentifier }

    func signal(_ sig: Int32) { _ = Glibc.kill(pid, sig) }

    func rewriteConfig(_ text: String) throws { try text.write(toFile: configPath, atomically: true, encoding: .utf8) }

    /// The exit status, or nil if still running after `seconds`.
    func waitExit(_ seconds: Double) -> Int32? {
        guard waitUntil(seconds, { !process.isRunning }) else { return nil }
        return process.terminationStatus
    }

    func kill() {
        if process.isRunning { _ = Glibc.kill(pid, SIGKILL); _ = waitExit(5) }
    }

    /// Runs `veil ARGS` to completion (bounded); returns (status, stdout+stderr).
    static func run(_ args: [String], seconds: Double = 20, environment: [String: String] = [:], stdin: String? = nil,
                    directory: String? = nil) throws -> (Int32, String) {
        guard let bin = binary else { throw VeilProcessError.noBinary }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = args
        p.environment = ["PATH": "/usr/bin:/bin", "HOME": "/tmp"].merging(environment) { $1 }
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let input = Pipe()
        p.standardInput = stdin == nil ? FileHandle.nullDevice : input
        let out = "/tmp/veil-run-\(UUID().uuidString).out"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        let fh = FileHandle(forWritingAtPath: out)
        p.standardOutput = fh
        p.standardError = fh
        try p.run()
        if let stdin {
            input.fileHandleForWriting.write(Data(stdin.utf8))
            try? input.fileHandleForWriting.close()
        }
        guard waitUntil(seconds, { !p.isRunning }) else { _ = Glibc.kill(p.processIdentifier, SIGKILL); throw VeilProcessError.timedOut }
        return (p.terminationStatus, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }
}

enum VeilProcessError: Error { case noBinary, didNotStart(String), timedOut }
