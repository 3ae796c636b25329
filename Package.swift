// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "veil",
    products: [
        .executable(name: "veil", targets: ["veil"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.0"),
    ],
    targets: [
        // C glue: epoll, accept4, eventfd, timerfd and signalfd are not exposed by Glibc's module map.
        .target(name: "CSystem"),
        // OpenSSL's libcrypto: SHA-256 and constant-time comparison (the TLS client links it anyway).
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        // OpenSSL's libssl for the upstream client's TLS, with typed wrappers around its macros.
        .systemLibrary(name: "COpenSSL", pkgConfig: "libssl", providers: [.apt(["libssl-dev"])]),
        // nghttp2's sans-I/O HTTP/2 session for the upstream client (`mem_recv` / `mem_send` over its TLS).
        .systemLibrary(name: "CNGHTTP2", pkgConfig: "libnghttp2", providers: [.apt(["libnghttp2-dev"])]),
        // The system SQLite, used through a thin wrapper in Store.
        .systemLibrary(name: "CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        // zlib: inflate for answers an upstream compressed although Veil asked for identity.
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // libpq: the PostgreSQL backend's client (a store shared by several replicas).
        .systemLibrary(name: "CPostgres", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),

        // Sans-I/O HTTP/1.1: request parser, the connection state machine, response serialiser.
        // No sockets, no Foundation.
        .target(name: "HTTPWire"),
        // The event loop: epoll, timers, cross-thread wake-ups, non-blocking sockets.
        .target(name: "Reactor", dependencies: ["CSystem"]),
        // HTTP/1.1 connections on the reactor: thin drivers of HTTPWire's connection machine.
        .target(name: "HTTPServer", dependencies: ["Reactor", "HTTPWire", "CSystem"]),
        // The upstream seam, protocol-neutral: request, head, bytes, finish; pause/resume/cancel;
        // the address policy for caller-supplied URLs. No client in it.
        .target(name: "Upstream", dependencies: ["Reactor", "HTTPWire"]),
        // Veil's own upstream client (HTTP/1.1 over TCP or TLS, HTTP/2 by ALPN, on the reactor;
        // pooled keep-alive, DNS off the loop), implementing Upstream's protocol-neutral seam.
        .target(name: "UpstreamHTTP", dependencies: ["Reactor", "HTTPWire", "Upstream", "CSystem", "COpenSSL", "CNGHTTP2"]),
        // The store: records, backend protocols, SQLite (WAL), PostgreSQL (libpq), and the executor
        // that runs a backend on store threads with completions delivered on the asking loop.
        .target(name: "Store", dependencies: ["CSQLite", "CPostgres"]),
        // Pure schema translation between Veil's OpenAI shapes and the upstream's quirks (no I/O).
        .target(name: "Translation"),
        // Streaming gzip/deflate decoding with bomb limits, so redaction sees decoded bytes.
        .target(name: "Inflate", dependencies: ["CZlib"]),
        // The gateway: the route table, admission (auth, limits), the upstream engine and the
        // endpoints' hooks, videos and characters, operations (metrics, readiness, logs), config.
        .target(name: "Gateway", dependencies: [
            "HTTPServer", "HTTPWire", "Reactor", "Upstream", "UpstreamHTTP", "Store",
            "CCrypto", "Translation", "Inflate",
            .product(name: "Yams", package: "Yams"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // The stand-in upstream: every quirk of the reseller, on loopback (`veil serve --sandbox`, tests).
        .target(name: "Sandbox", dependencies: ["HTTPServer", "HTTPWire", "Reactor", "Translation"]),
        .executableTarget(name: "veil", dependencies: [
            "Gateway", "Sandbox", "Reactor", "HTTPServer",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], linkerSettings: [
            // Release binaries: lld (shipped with the Swift toolchain) packs the ~78,000 relative
            // relocations of a static-stdlib binary into DT_RELR (glibc ≥ 2.36, as on bookworm):
            // 1.9 MB of relocation records no longer read at every start (idle RSS −1.9 MiB).
            .unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"],
                         .when(platforms: [.linux], configuration: .release)),
        ]),
        // Benchmark driver: the upstream client alone against bench/upstream.c.
        .executableTarget(name: "upstream-bench", dependencies: ["Reactor", "Upstream", "UpstreamHTTP"],
                          path: "bench/UpstreamBench"),

        .testTarget(name: "HTTPWireTests", dependencies: ["HTTPWire"]),
        .testTarget(name: "GatewayTests", dependencies: ["Gateway"]),
        .testTarget(name: "TranslationTests", dependencies: ["Translation"]),
        .testTarget(name: "InflateTests", dependencies: ["Inflate"]),
        // Tests' private PostgreSQL clusters (initdb/pg_ctl from Debian's `postgresql`).
        .target(name: "PostgresTestSupport", dependencies: ["Store"], path: "Tests/PostgresTestSupport"),
        .testTarget(name: "StoreTests", dependencies: ["Store", "PostgresTestSupport"]),
        .testTarget(name: "UpstreamHTTPTests", dependencies: ["UpstreamHTTP", "Upstream", "Reactor", "HTTPWire", "CNGHTTP2"]),
        .testTarget(name: "IntegrationTests", dependencies: ["Gateway", "Sandbox", "Reactor", "HTTPServer", "HTTPWire", "Store", "Translation", "Inflate", "PostgresTestSupport", "COpenSSL"]),
    ]
)
