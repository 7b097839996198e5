# syntax=docker/dockerfile:1
#
# threepid-sidecar container image.
#
#   docker build -t registry.example.org/threepid-sidecar:0.1.0 .
#
# Two stages: a Rust build stage (dependencies compiled in their own cached layer) and a
# distroless runtime stage (glibc + libgcc, no shell, no package manager, user 65532).
#
# At run time:
#   - the config is read from /etc/threepid-sidecar/config.toml (THREEPID_SIDECAR_CONFIG);
#     the image ships deploy/docker/config.toml there; mount your own over it;
#   - the only writable path the sidecar needs is /var/lib/threepid-sidecar (a VOLUME here, an
#     emptyDir in Kubernetes): your config's identity.generated_cert_dir and email.file_dir
#     must point inside it (or at another writable mount) when the root filesystem is
#     read-only (`docker run --read-only`, Kubernetes readOnlyRootFilesystem: true);
#   - ports: 8080 client (server.listen), 9090 admin (admin.listen: /health/live,
#     /health/ready, /metrics); the identity listener (https, 8090) is on loopback for the
#     homeserver in the same network namespace, not published.
#
# Layout and checks: deploy/README.md; scripts/check-deploy lints this file (hadolint).

# ---------------------------------------------------------------------------------------------
# Build stage. Pinned to the Rust release the project is developed and tested with, on Debian 12
# (bookworm): the same glibc as the distroless runtime below. The slim image has gcc and
# libc6-dev, all that ring (the only C in the tree) needs.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src

# 1. Dependencies only, cached until Cargo.toml or Cargo.lock change: stub every target the
#    manifest declares (lib, bin, [[test]] paths) so that cargo can resolve and build the
#    dependency graph, then throw the stubs' own artifacts away.
COPY Cargo.toml Cargo.lock ./
RUN set -eu; \
    for target in src/lib.rs src/main.rs \
        $(sed -n 's/^path *= *"\([^"]*\)".*/\1/p' Cargo.toml); do \
        mkdir -p "$(dirname "$target")"; \
        printf 'fn main() {}\n' > "$target"; \
    done; \
    cargo build --release --locked --bin threepid-sidecar; \
    rm -rf src tests \
        target/release/threepid-sidecar* \
        target/release/deps/threepid_sidecar-* \
        target/release/deps/libthreepid_sidecar-* \
        target/release/.fingerprint/threepid-sidecar-*

# 2. The crate itself. config.example.toml is compiled in (the embedded default config).
COPY config.example.toml ./
COPY src ./src
# The state directory is made here and copied with its owner: the runtime stage has no RUN.
RUN cargo build --release --locked --bin threepid-sidecar \
    && install -D -m 0755 target/release/threepid-sidecar /out/bin/threepid-sidecar \
    && install -d -m 0750 /out/state/threepid-sidecar

# ---------------------------------------------------------------------------------------------
# Runtime stage: distroless "cc" (glibc, libgcc, CA certificates, /etc/passwd with nonroot),
# Debian 12, the :nonroot variant (user 65532). No shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="threepid-sidecar" \
      org.opencontainers.image.description="MSC2263 for legacy Matrix homeservers: a reverse-proxy sidecar that verifies email addresses and phone numbers itself" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /out/bin/threepid-sidecar /usr/local/bin/threepid-sidecar
COPY --from=build --chown=65532:65532 /out/state/ /var/lib/
COPY deploy/docker/config.toml /etc/threepid-sidecar/config.toml

ENV THREEPID_SIDECAR_CONFIG=/etc/threepid-sidecar/config.toml

# distroless :nonroot already runs as 65532; say so explicitly (runAsNonRoot needs a number).
USER 65532:65532
WORKDIR /var/lib/threepid-sidecar
VOLUME ["/var/lib/threepid-sidecar"]

EXPOSE 8080 9090

# No HEALTHCHECK: a distroless image has no shell and no curl to run one, and the binary has
# no probe subcommand. Orchestrators probe the admin port instead: GET :9090/health/live
# (liveness, startup) and GET :9090/health/ready (readiness), see deploy/kubernetes/.

ENTRYPOINT ["/usr/local/bin/threepid-sidecar"]
CMD ["run"]
