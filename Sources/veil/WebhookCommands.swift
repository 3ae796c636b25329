import ArgumentParser
import Gateway
import Glibc
import Store

/// `veil webhooks`: the webhook outbox (issue 16).
struct WebhooksCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhooks", abstract: "The webhook outbox: list pending and failed deliveries, replay one.",
        subcommands: [WebhooksList.self, WebhooksReplay.self])
}

/// Where the outbox is: `--store`, or the configuration's store.
struct OutboxStoreOption: ParsableArguments {
    @OptionGroup var options: ConfigOption
    @Option(name: .long, help: "The store: a SQLite file or a postgres:// URL (default: store.url or store.path of the configuration).")
    var store: String?

    func settings() -> GatewayConfig.StoreSettings {
        var settings = GatewayConfig.StoreSettings()
        if let store {
            if StoreURL.isPostgres(store) { settings.url = store } else { settings.path = store }
        } else {
            let (env, _) = environment()
            let cfg = options.path(env)
            do { settings = try ConfigLoader.load(yaml: try readFile(cfg), environment: env, requireUpstreamKey: false).store }
            catch { fail("\(cfg): \(error)", hints: Preflight.hints(for: error, configPath: cfg, configExists: fileExists(cfg))) }
        }
        if settings.url == nil {
            guard settings.path != ":memory:" else { fail("the store is in memory (sandbox mode): nothing to read") }
            guard fileExists(settings.path) else { fail("store `\(settings.path)` does not exist (is --store or store.path right?)") }
        }
        return settings
    }
}

struct WebhooksList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List webhook events, newest first (default: pending and failed).",
        discussion: "EVENT is the webhook-id receivers see on every attempt. LAST is the last attempt's status or error.")
    @OptionGroup var where_: OutboxStoreOption
    @Flag(name: .long, help: "Only events still to be delivered.") var pending = false
    @Flag(name: .long, help: "Only events given up (after webhooks.retry_for_s).") var failed = false
    @Flag(name: .long, help: "Every event, delivered ones included.") var all = false
    @Option(name: .long, help: "At most this many rows.") var limit = 100

    func run() {
        guard [pending, failed, all].filter({ $0 }).count <= 1 else { fail("use one of --pending, --failed, --all") }
        guard limit > 0 else { fail("--limit must be positive") }
        let settings = where_.settings()
        do {
            if pending || failed || all {
                let status: WebhookDeliveryStatus? = pending ? .pending : (failed ? .failed : nil)
                print(try WebhooksReport.list(settings, status: status, limit: limit), terminator: "")
            } else {
                // Default: what needs attention, both kinds in one table.
                let rows = try WebhooksReport.withStore(settings) { db in
                    try db.webhookDeliveries(status: .pending, limit: limit) + db.webhookDeliveries(status: .failed, limit: limit)
                }
                let newest = rows.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }.prefix(limit)
                print(WebhooksReport.render(Array(newest)), terminator: "")
            }
        } catch { fail("\(error)") }
    }
}

struct WebhooksReplay: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay", abstract: "Send an event again (failed, delivered, or waiting for a retry): pending, due now, retried anew.",
        discussion: "The running Veil (any replica) sends it with its next claim (webhooks.poll_ms), with the same webhook-id and body.")
    @OptionGroup var where_: OutboxStoreOption
    @Argument(help: "The event id (evt_…), as `veil webhooks list` shows it.") var event: String

    func run() {
        let settings = where_.settings()
        do {
            switch try WebhooksReport.replay(settings, id: event) {
            case .unknown: fail("no webhook event `\(event)` in the store")
            case .inFlight: fail("\(event): an attempt is in flight right now; its answer settles it (replay it after, if it fails)")
            case .replayed: print("\(event): pending again; the running Veil sends it at its next claim")
            }
        } catch { fail("\(error)") }
    }
}
