# syntax=docker/dockerfile:1
# Build stage: the same steps as .ci/run / scripts/deps (Debian bookworm, Swift 6, the -dev packages).
FROM swift:6.3-bookworm AS build
WORKDIR /src
COPY scripts/deps scripts/deps
RUN bash scripts/deps
COPY Package.swift ./
COPY Sources Sources
COPY Tests Tests
RUN swift build -c release --static-swift-stdlib --product veil \
 && install -D .build/release/veil /out/veil

# Runtime: slim Debian with only the shared libraries the binary still needs.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libcurl4 libnghttp2-14 libsqlite3-0 libssl3 libstdc++6 libgcc-s1 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/veil --create-home veil
COPY --from=build /out/veil /usr/local/bin/veil
COPY config/veil.yaml /etc/veil/veil.yaml
ENV VEIL_CONFIG=/etc/veil/veil.yaml
# The upstream key comes from the environment (VEIL_UPSTREAM_KEY) or a mounted secret file
# (VEIL_UPSTREAM_KEY_FILE=/run/secrets/veil_upstream_key); never baked into the image.
USER veil
WORKDIR /var/lib/veil
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz >/dev/null || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/veil"]
CMD ["serve"]
