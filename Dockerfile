# syntax=docker/dockerfile:1
#
# The AppServiceLink operator image: a static-ish Rust binary on distroless, nothing else.
#
#   docker build -t ghcr.io/appservicelink/appservicelink:0.1.0 .
#
# `python3 .ci/image.py build` runs the same cargo command without Docker, in the same build context.

# Builder: an exact Rust release on Debian 12 (bookworm), the glibc the runtime image has. For
# reproducible builds pin the digest your registry resolves, e.g.
#   --build-arg RUST_IMAGE=rust:1.95.0-bookworm@sha256:<digest>
ARG RUST_IMAGE=rust:1.95.0-bookworm
# Runtime: distroless cc (glibc, libgcc, CA certificates; no shell, no package manager), user 65532.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions in Cargo.lock. --no-default-features: without the sandbox,
# so the image holds no simulated apiserver or token issuer. The cache mounts only speed rebuilds up.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin appservicelink \
    && install -D -m 0555 target/release/appservicelink /out/appservicelink

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="appservicelink" \
      org.opencontainers.image.description="Kubernetes operator that links Azure App Services to AKS Services over internal load balancers and CoreDNS" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="AppServiceLink" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/appservicelink /usr/local/bin/appservicelink
# Numeric, so Kubernetes can verify runAsNonRoot without resolving a name.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/appservicelink"]
CMD ["run"]
