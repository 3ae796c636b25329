import HTTPWire
import Reactor
import Store
import Translation

/// `GET /v1/videos/{id}/events` (Veil's addition, issue 16): a video's progress pushed as
/// Server-Sent Events, for a browser's `EventSource` or any SSE client.
///
/// - At once: `event: video.updated` with Veil's video object as `data` (the freshest state
///   known); then a `video.updated` whenever status or progress changes; last
///   `event: video.completed` or `event: video.failed` (the object, `error` included), and the
///   stream ends. A video already finished gets its state and the final event at once.
/// - A comment line (`: keep-alive`) every `videos.events_heartbeat_ms` (15 s) while nothing
///   happens, so proxies keep the connection.
/// - Team ownership as everywhere: another team's id is 404, like an unknown one.
/// - It holds one of the team's `max_concurrent_streams` slots until it ends; a client that
///   leaves frees it and its subscription at once (the watcher's polls go on for the others).
/// - The stream never polls the upstream itself: it listens to the watcher, whose polls are
///   shared with every caller's (any number of streams cost no upstream call).
/// - A slow reader is bounded by the connection's write high-water mark: while it is past it,
///   intermediate states are dropped and only the latest is written once it drains (heartbeats
///   are skipped too); the final event is always written.
/// - Deleted meanwhile, or Veil shutting down: the stream ends (an `EventSource` reconnects and
///   gets the current answer: the state, or a 404).
enum VideoEventRoutes {
    static func events(_ x: Exchange, _ g: Gateway) {
        VideoRoutes.withOwnedVideo(x, g) { record in
            guard let team = x.team else { return x.fail(.unauthorized) }
            x.model = record.model
            switch x.snapshot.policy.admitStream(team: team) {
            case .failure(let refusal): return x.fail(refusal.error, headers: refusal.headers)
            case .success(let lease): if let lease { x.leases.append(lease) }
            }
            VideoEventStream(x, g).start(record)
        }
    }
}

/// SSE framing of the stream's events. Pure.
enum VideoEventFrame {
    static let updated = "video.updated"

    /// `event: <name>\ndata: <json>\n\n` (Veil's JSON never holds a raw line break).
    static func event(_ name: String, _ json: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(json.count + name.utf8.count + 16)
        out.append(contentsOf: "event: ".utf8)
        out.append(contentsOf: name.utf8)
        out.append(contentsOf: "\ndata: ".utf8)
        out.append(contentsOf: json)
        out.append(contentsOf: "\n\n".utf8)
        return out
    }

    /// A comment line: ignored by SSE clients, it keeps the connection busy.
    static func comment(_ text: String) -> [UInt8] { Array(": \(text)\n\n".utf8) }

    /// The final event's name for a finished video (nil while unfinished).
    static func finalEvent(_ o: VideoObject) -> String? { WebhookPayload.eventType(o.status) }
}

/// One open event stream; loop-confined (its exchange's loop). Kept alive by its subscription
/// and its client's close callback until it ends.
final class VideoEventStream {
    private let x: Exchange
    private let g: Gateway
    private var videoID = ""
    private var token: UInt64?
    private var heartbeat: LoopTimer?
    private var told: VideoObject?
    /// The latest state not written yet (the client is slow).
    private var pending: VideoObject?
    private var waitingForDrain = false
    private var ended = false

    init(_ x: Exchange, _ g: Gateway) {
        self.x = x
        self.g = g
    }

    func start(_ record: VideoRecord) {
        videoID = record.id
        // The client left while the video was looked up: its close callback has already fired
        // (unset then) and will not fire again, so nothing may be started that only it would
        // end. The exchange ends now and its stream slot goes back.
        guard x.isOpen else { return x.abandon("client_closed") }
        x.sendHead(200, headers: ["content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
                                  "x-accel-buffering": "no"])
        // HEAD: the head is the whole answer. No stream, no subscription, no slot held: the
        // connection's next request must not wait for the video's end.
        if x.request.method == "HEAD" { return x.end() }
        x.releaseAfterHead()
        g.metrics.eventStreams.add(1, ordering: .relaxed)
        x.onClientGone { [self] in close(abandoned: true) }
        let stored = record.object
        if stored.status.isFinal { return send(stored) }
        let (t, latest) = g.watcher.subscribe(record, loop: x.context.loop) { [self] update in receive(update) }
        token = t
        send(latest ?? stored)
        if !ended { armHeartbeat() }
    }

    private func receive(_ update: VideoWatchUpdate) {
        guard !ended else { return }
        switch update {
        case .state(let o): send(o)
        case .gone(let reason):
            write(VideoEventFrame.comment(reason))
            close(abandoned: false)
        }
    }

    /// A state: written now, kept as the latest while the client is slow, or — final — written
    /// with the final event, ending the stream.
    private func send(_ o: VideoObject) {
        guard !ended else { return }
        if let final = VideoEventFrame.finalEvent(o) {
            pending = nil
            let json = redacted(o)
            if told.map({ VideoWatcher.changed($0, o) }) ?? true { write(VideoEventFrame.event(VideoEventFrame.updated, json)) }
            write(VideoEventFrame.event(final, json))
            told = o
            return close(abandoned: false)
        }
        guard told.map({ VideoWatcher.changed($0, o) }) ?? true else { return }
        guard x.isWritable else {
            // A slow client: only the latest state waits (bounded memory); the one it replaces
            // is skipped, as the state it described is no longer true anyway.
            if pending != nil { g.metrics.eventUpdatesSkipped.increment() }
            pending = o
            if !waitingForDrain {
                waitingForDrain = true
                x.onWritable { [weak self] in self?.drained() }
            }
            return
        }
        write(VideoEventFrame.event(VideoEventFrame.updated, redacted(o)))
        told = o
    }

    private func drained() {
        waitingForDrain = false
        guard let p = pending else { return }
        pending = nil
        send(p)
    }

    private func armHeartbeat() {
        let every = x.snapshot.config.videos.eventsHeartbeatMillis
        heartbeat = x.context.loop.schedule(afterMillis: every) { [weak self] in
            guard let self, !self.ended else { return }
            guard self.tokenStillValid() else {
                self.write(VideoEventFrame.comment("the token is no longer valid"))
                return self.close(abandoned: false)
            }
            if self.x.isWritable { self.write(VideoEventFrame.comment("keep-alive")) }
            self.armHeartbeat()
        }
    }

    /// The token asked again under the configuration current now (at each heartbeat): a stream
    /// outlives its token's expiry, or its removal by a reload, by at most one heartbeat.
    private func tokenStillValid() -> Bool {
        guard let auth = x.authorization, let team = x.team?.name else { return true }
        let snap = x.context.snapshot
        if case .team(let i) = Gateway.authenticate(auth, snap, x.context.verifiedTokens), snap.team(i).name == team { return true }
        return false
    }

    private func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { x.write($0) }
    }

    /// The object as the caller may see it: the upstream key never leaves, whatever came back.
    /// The states come from the watcher's polls, made under the configuration current now, not
    /// the one this (long-lived) stream started with: a key rotated since (SIGHUP) is redacted
    /// too.
    private func redacted(_ o: VideoObject) -> [UInt8] {
        let started = x.snapshot.apiKeyBytes, current = x.context.snapshot.apiKeyBytes
        let once = KeyRedactor.redact(o.jsonBytes, secret: started)
        return current == started ? once : KeyRedactor.redact(once, secret: current)
    }

    /// The one end: unsubscribed, the timer gone, the slot freed (the exchange's lease).
    private func close(abandoned: Bool) {
        guard !ended else { return }
        ended = true
        if let token { g.watcher.unsubscribe(videoID, token: token) }
        token = nil
        heartbeat?.cancel()
        heartbeat = nil
        g.metrics.eventStreams.subtract(1, ordering: .relaxed)
        if abandoned { x.abandon("client_closed") } else { x.end() }
    }
}
