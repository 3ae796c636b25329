// Minimal reproduction: ThreadSanitizer on Linux reports an "access race" on state guarded by
// Synchronization.Mutex (it does not see the futex-based lock). See SECURITY.md, Sanitizers.
//   swiftc -sanitize=thread scripts/tsan-mutex-repro.swift -o /tmp/m && /tmp/m
import Synchronization
import Glibc
final class Box: Sendable { let m = Mutex<[Int]>([]) }
let b = Box()
var threads: [pthread_t] = []
for _ in 0..<4 {
    var t = pthread_t()
    pthread_create(&t, nil, { _ in
        for i in 0..<20000 { b.m.withLock { $0.append(i); if $0.count > 100 { $0.removeAll() } } }
        return nil
    }, nil)
    threads.append(t)
}
for t in threads { pthread_join(t, nil) }
print(b.m.withLock { $0.count })
