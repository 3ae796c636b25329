# syntax=docker/dockerfile:1
# Build stage: the same steps as .ci/run / scripts/deps (Debian bookworm, Swift 6, the -dev packages).
FROM swift:6.3-bookworm AS build
WORKDIR /src
COPY scripts/deps scripts/deps
RUN VEIL_DEPS=build bash scripts/deps
COPY Package.swift ./
COPY Sources Sources
COPY Tests Tests
RUN swift build -c release --static-swift-stdlib --product veil \
 && install -D .build/release/veil /out/veil

# Runtime: slim Debian with only the shared libraries the binary still needs. The package list
# lives in docker/runtime-packages.txt, which scripts/container-check also reads: it installs
# exactly these packages in a debootstrapped bookworm root and runs the binary there as uid 10001
# (`serve --sandbox`, /healthz, a chat completion), so CI proves this stage without an engine.
#
# The container needs /proc (every container runtime mounts it): the statically linked Swift
# runtime takes its arguments from /proc/self/cmdline; without /proc the binary sees no
# arguments at all and falls back to `serve` with the default configuration (checked by hand in
# the debootstrapped root: `veil --version` without /proc starts `serve`).
FROM debian:bookworm-slim
COPY docker/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      $(sed 's/#.*//' /tmp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
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
  CMD ["/usr/local/bin/veil", "healthcheck", "--port", "8080"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/veil"]
CMD ["serve"]
