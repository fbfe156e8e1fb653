# kactus image: the kactus CNI plugin / installer, the node-local IPAM plugin (which the
# installer copies beside kactus), podagent and kactus-endpoints, as static musl binaries.
#
# Static linking is not just for a small image: `kactus install` copies the kactus binary
# onto the node, where the runtime executes it against whatever libc the host has (or none).
#
#   docker build -t kactus:0.1.0 .
#
# Builds for the platform it runs on; use `docker buildx build --platform ...` for others.
# Without a docker daemon, scripts/image.sh builds the same image (same binaries at the same
# paths, same entrypoint) as an archive for `ctr images import`; tests/manifests.rs checks
# that the two agree.

FROM rust:1-bookworm AS build
ARG BINARIES="kactus node-local podagent kactus-endpoints"
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN target="$(uname -m)-unknown-linux-musl" \
    && rustup target add "$target" \
    && cargo build --locked --release --target "$target" $(printf -- '--bin %s ' $BINARIES) \
    && mkdir -p /out \
    && for bin in $BINARIES; do cp "target/$target/release/$bin" /out/; done

# distroless/static: no shell, no libc, CA certificates and /etc/passwd only.
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/ /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/kactus", "install"]
