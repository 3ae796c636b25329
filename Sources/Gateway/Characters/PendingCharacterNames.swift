import Synchronization

/// Names of characters being created right now (the upstream call is in flight), so two
/// concurrent `POST /v1/characters` with the same name — on the same or on different loops —
/// can't both reach the upstream: the store's unique index only sees the name once the upstream
/// has answered. Shared by every loop, hence the mutex; entries live only for the duration of
/// one upstream call and are keyed by the gateway, so gateways in one process (tests) don't
/// interfere.
final class PendingCharacterNames: Sendable {
    static let shared = PendingCharacterNames()

    private struct Key: Hashable {
        var gateway: ObjectIdentifier
        var name: String
    }

    private let names = Mutex<Set<Key>>([])

    /// True if the name (case-insensitively) was free and is now reserved.
    func reserve(_ name: String, gateway: Gateway) -> Bool {
        let k = Key(gateway: ObjectIdentifier(gateway), name: name.lowercased())
        return names.withLock { $0.insert(k).inserted }
    }

    func release(_ name: String, gateway: Gateway) {
        let k = Key(gateway: ObjectIdentifier(gateway), name: name.lowercased())
        _ = names.withLock { $0.remove(k) }
    }
}
