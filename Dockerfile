# syntax=docker/dockerfile:1
#
# driftguard container image (README: "Container image").
#
#   docker build -t driftguard:dev .
#
# Three stages: `builder` compiles driftguard, `tools` downloads and verifies the pinned
# kustomize and helm release binaries the renderers run, and the final stage is distroless
# (no shell, no package manager) running as the non-root user 65532.
#
# This repository's CI has no container engine, so this file is not built there: keep it small
# and boring. Base images are pinned by tag only; a release pipeline should pin each FROM by
# digest (image:tag@sha256:...) and let a bot (Renovate, Dependabot) bump tags and digests.
#
# Architectures: amd64 and arm64. Each stage runs on the target platform (no cross-compiling):
# `docker buildx build --platform linux/amd64,linux/arm64 .` needs native builders or QEMU.

# ---------------------------------------------------------------------------------------------
# builder: driftguard in release mode, exactly the dependency versions of Cargo.lock.
FROM rust:1.95-bookworm AS builder

# What the binary links, and why the runtime image needs nothing beyond distroless/cc:
# - OpenSSL (git2's `https` and `ssh` features -> openssl-sys, system OpenSSL, not vendored):
#   linked dynamically against Debian 12's libssl3 (libssl.so.3, libcrypto.so.3). The
#   distroless cc-debian12 base ships the same libssl3, so rebuilding on a newer base picks up
#   OpenSSL security fixes without touching driftguard.
# - libgit2 1.9 (libgit2-sys) and libssh2 (libssh2-sys): compiled from the sources bundled in
#   the crates and linked statically. libgit2-sys only uses a system libgit2 1.9.x (Debian 12
#   has 1.5), libssh2-sys only a system copy when LIBSSH2_SYS_USE_PKG_CONFIG is set.
# - zlib (libz-sys, for libgit2 and libssh2): LIBZ_SYS_STATIC=1 builds the bundled copy
#   statically; distroless cc-debian12 has no libz.so.1.
# - glibc and libgcc_s: in distroless/cc. TLS for the webhook and the Kubernetes client is
#   rustls with ring, compiled in.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev \
 && rm -rf /var/lib/apt/lists/*
ENV LIBZ_SYS_STATIC=1 \
    CARGO_TERM_COLOR=never

WORKDIR /src
COPY . .
# The whole workspace is copied (Cargo.toml names tests/support/apiserver as a member and
# declares the benches), but only the driftguard binary is built.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin driftguard \
 && install -D -m 0755 target/release/driftguard /out/driftguard

# Fail here, not at runtime, if the binary needs a shared library distroless/cc lacks.
RUN set -eu; \
    needed="$(readelf -d /out/driftguard | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"; \
    echo "driftguard links: $needed"; \
    for lib in $needed; do \
      case "$lib" in \
        libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1|libutil.so.1|ld-linux-*) ;; \
        libgcc_s.so.1|libssl.so.3|libcrypto.so.3) ;; \
        *) echo "unexpected shared library $lib (not in gcr.io/distroless/cc-debian12)" >&2; exit 1 ;; \
      esac; \
    done

# ---------------------------------------------------------------------------------------------
# tools: kustomize and helm for `render.type: kustomize | helm` (driftguard finds them on PATH;
# the final image puts them in /usr/local/bin). Both are static Go binaries.
FROM buildpack-deps:bookworm-curl AS tools

# Versions and their SHA-256 checksums, per architecture. Changing a version without its
# checksums fails the build (fail closed). Where the checksums come from:
# - kustomize: checksums.txt of the release,
#   https://github.com/kubernetes-sigs/kustomize/releases/tag/kustomize%2F<version>
#   (the lines for kustomize_<version>_linux_amd64.tar.gz and ..._linux_arm64.tar.gz)
# - helm: https://get.helm.sh/helm-<version>-linux-<arch>.tar.gz.sha256sum, linked from
#   https://github.com/helm/helm/releases/tag/<version>
# The default checksums below were written without network access to those pages and have not
# been checked against the downloads here; the first build checks them (a wrong one stops it).
ARG KUSTOMIZE_VERSION=v5.7.1
ARG KUSTOMIZE_SHA256_AMD64=ea375e7372f9aa029129d4b2d16c66b7750b7f1213c4f66f910d981c895818d8
ARG KUSTOMIZE_SHA256_ARM64=4261a040217df3bd6896597c3986d1465925726e4f22a945304b5233a4dcdbda
ARG HELM_VERSION=v3.19.0
ARG HELM_SHA256_AMD64=a7f81ce08007091b86d8bd696eb4d86b8d0f2e1b9f6c714be62f82f96a594496
ARG HELM_SHA256_ARM64=440cf7add0aee27ebc93fada965523c1dc2e0ab340d4348da2215737fc0d76ad
# Set by BuildKit; the legacy builder leaves it empty and the build machine's arch is used.
ARG TARGETARCH

RUN set -eu; \
    arch="${TARGETARCH:-$(dpkg --print-architecture)}"; \
    case "$arch" in \
      amd64) kustomize_sha256="$KUSTOMIZE_SHA256_AMD64"; helm_sha256="$HELM_SHA256_AMD64" ;; \
      arm64) kustomize_sha256="$KUSTOMIZE_SHA256_ARM64"; helm_sha256="$HELM_SHA256_ARM64" ;; \
      *) echo "unsupported architecture $arch (amd64, arm64)" >&2; exit 1 ;; \
    esac; \
    cd /tmp; \
    curl -fsSL --proto '=https' --retry 3 -o kustomize.tar.gz \
      "https://github.com/kubernetes-sigs/kustomize/releases/download/kustomize%2F${KUSTOMIZE_VERSION}/kustomize_${KUSTOMIZE_VERSION}_linux_${arch}.tar.gz"; \
    echo "${kustomize_sha256}  kustomize.tar.gz" | sha256sum -c -; \
    curl -fsSL --proto '=https' --retry 3 -o helm.tar.gz \
      "https://get.helm.sh/helm-${HELM_VERSION}-linux-${arch}.tar.gz"; \
    echo "${helm_sha256}  helm.tar.gz" | sha256sum -c -; \
    mkdir -p /out/bin /out/cache; \
    tar -xzf kustomize.tar.gz --no-same-owner -C /out/bin kustomize; \
    tar -xzf helm.tar.gz --no-same-owner -C /out/bin --strip-components=1 "linux-${arch}/helm"; \
    chmod 0755 /out/bin/kustomize /out/bin/helm; \
    /out/bin/kustomize version; \
    /out/bin/helm version --short

# ---------------------------------------------------------------------------------------------
# runtime: glibc, libgcc_s, libssl3, CA certificates, tzdata; user nonroot (65532).
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="driftguard" \
      org.opencontainers.image.description="Kubernetes admission webhook and GitOps enforcer: denies or reverts drift from Git and repairs what slips through" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/driftguard/driftguard" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=builder /out/driftguard /usr/local/bin/driftguard
COPY --from=tools /out/bin/kustomize /out/bin/helm /usr/local/bin/
# gitCacheDir; the chart mounts an emptyDir here (and on /tmp), the root filesystem is read-only.
COPY --from=tools --chown=65532:65532 /out/cache /var/cache/driftguard

USER 65532:65532
# 10250: HTTPS webhook (service.containerPort), 9090: plain-HTTP /metrics (metrics.port).
EXPOSE 10250 9090
ENTRYPOINT ["/usr/local/bin/driftguard"]
# The chart mounts /etc/driftguard/config.yaml from its ConfigMap.
CMD ["serve", "--cluster", "--config", "/etc/driftguard/config.yaml"]
