# kactus image: the kactus CNI plugin / installer, the node-local IPAM plugin (which the
# installer copies beside kactus) and podagent, as static musl binaries.
#
# Static linking is not just for a small image: `kactus install` copies the kactus binary
# onto the node, where the runtime executes it against whatever libc the host has (or none).
#
#   docker build -t kactus:0.1.0 .
#
# Builds for the platform it runs on; use `docker buildx build --platform ...` for others.

FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN target="$(uname -m)-unknown-linux-musl" \
    && rustup target add "$target" \
    && cargo build --locked --release --target "$target" --bin kactus --bin node-local --bin podagent \
    && mkdir -p /out \
    && cp "target/$target/release/kactus" "target/$target/release/node-local" "target/$target/release/podagent" /out/

# distroless/static: no shell, no libc, CA certificates and /etc/passwd only.
FROM gcr.io/distroless/static-debian12
COPY --from=build /out/kactus /out/node-local /out/podagent /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/kactus", "install"]
