# syntax=docker/dockerfile:1
#
# Shoal's container image: every binary the chart runs (shoal-orchestrator,
# shoal-worker, shoal-sim, shoal-acl for the ACL job) in one image; the Helm
# chart (deploy/helm/shoal) chooses which one each workload runs. Build from the repository root:
#
#   docker build -t shoal:0.1.0 .
#
# The build stage runs the same build as the tests and `make bench`
# (cargo build --workspace --bins, in release mode and with the lock file
# enforced); scripts/chart-check.sh asserts that this stays so, since no
# container engine runs in CI.

# ---------------------------------------------------------------------------
# Build: the official Rust image on Debian bookworm, plus what the rdkafka
# crate needs to compile librdkafka (see scripts/ensure-deps.sh).
FROM rust:1.95-bookworm AS build

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        cmake g++ libcurl4-openssl-dev libsasl2-dev libssl-dev pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The registry and target caches survive between builds (BuildKit); the
# binaries are copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --workspace --bins --locked \
    && mkdir -p /out \
    && cp target/release/shoal-orchestrator target/release/shoal-worker target/release/shoal-sim target/release/shoal-acl /out/

# ---------------------------------------------------------------------------
# Runtime: a slim Debian of the same release (same glibc), the shared
# libraries the binaries link (OpenSSL, libcurl, SASL, zstd, zlib), the CA
# bundle, and an unprivileged user. No shell entrypoint: the chart sets the
# command of each container.
FROM debian:bookworm-slim

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates libcurl4 libsasl2-2 libssl3 libzstd1 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 shoal \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin shoal

COPY --from=build /out/ /usr/local/bin/

LABEL org.opencontainers.image.title="shoal" \
      org.opencontainers.image.description="Shoal orchestrator, worker and market simulator" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 10001:10001
# /metrics, /healthz and /readyz (observability.listen).
EXPOSE 9464
CMD ["shoal-worker", "--help"]
