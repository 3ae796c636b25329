import ArgumentParser
import Gateway
import Logging

/// `veil` — the command line. `serve` is the default subcommand.
struct Veil: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "veil",
        abstract: "A small, fast gateway in front of a quirky OpenAI-style reseller: hides the key, cleans the schema, keeps teams apart.",
        version: VeilVersion.current,
        subcommands: [Serve.self, CheckConfig.self, Migrate.self, StoreCommand.self, Teams.self, TokenCommand.self, HashToken.self, Usage.self,
                      WebhooksCommand.self,
                      Healthcheck.self],
        defaultSubcommand: Serve.self)
}

// The handler's format is chosen once the configuration is read (`serve`); until then text on a
// terminal, else JSON. A static function, not a closure written here (Swift 6 would make it
// @MainActor and trap when another thread makes a logger).
LoggingSystem.bootstrap(VeilLogHandler.make)
Veil.main()
