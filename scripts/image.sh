#!/usr/bin/env bash
# Builds the kactus image without a docker daemon: static (musl) binaries assembled into an
# image archive in the docker-archive layout, which `ctr images import` (and `docker load`)
# read. Same binaries at the same paths and the same entrypoint as the Dockerfile (which stays
# for users with docker; tests/manifests.rs checks the two agree). The base differs: instead of
# distroless/static, a minimal root of /etc/passwd, /etc/group and /tmp; the binaries need
# nothing else (no libc, no system CA store: the apiserver's CA comes from the kubeconfig).
#
#   scripts/image.sh [--tag kactus:0.1.0] [--out FILE] [--binaries DIR]
#   ctr -n k8s.io images import FILE        # on each node (imagePullPolicy: IfNotPresent finds it)
#
# --binaries DIR takes prebuilt binaries from DIR instead of building them (release, musl).
# Installs what the build needs when missing: Debian's musl-tools (musl-gcc, for ring's C
# code) and the rustup musl target. Deterministic: the same binaries give the same image ID.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the image holds: keep equal to the Dockerfile's ARG BINARIES, COPY and ENTRYPOINT.
BINARIES=(kactus node-local podagent kactus-endpoints)
BIN_DIR=usr/local/bin
ENTRYPOINT='["/usr/local/bin/kactus","install"]'
MTIME=946684800 # 2000-01-01: fixed, for reproducible archives

tag=kactus:0.1.0
out=""
prebuilt=""
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --binaries) prebuilt="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) echo "image.sh: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
target="$(uname -m)-unknown-linux-musl"
target_dir() {
    local dir
    dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    echo "${dir:-target}"
}
out="${out:-$(target_dir)/kactus-image.tar}"

if [ -z "$prebuilt" ]; then
    if ! command -v musl-gcc >/dev/null; then
        echo "image.sh: installing musl-tools (musl-gcc) from Debian" >&2
        apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null
    fi
    if ! rustup target list --installed | grep -qx "$target"; then
        rustup target add "$target"
    fi
    cargo build --locked --release --target "$target" $(printf -- '--bin %s ' "${BINARIES[@]}")
    prebuilt="$(target_dir)/$target/release"
    for bin in "${BINARIES[@]}"; do
        # A binary the runtime execs on any node must not ask for a dynamic loader.
        if readelf -l "$prebuilt/$bin" 2>/dev/null | grep -q "program interpreter"; then
            echo "image.sh: $prebuilt/$bin is dynamically linked" >&2
            exit 1
        fi
    done
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root/$BIN_DIR" "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
for bin in "${BINARIES[@]}"; do
    install -m 0755 "$prebuilt/$bin" "$root/$BIN_DIR/$bin"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"

tar_fixed() { tar --sort=name --mtime="@$MTIME" --owner=0 --group=0 --numeric-owner --format=gnu "$@"; }
tar_fixed -C "$root" -cf "$work/layer.tar" etc tmp usr
layer_sha="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"

config="{\"architecture\":\"$arch\",\"config\":{\"Entrypoint\":$ENTRYPOINT,\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\"WorkingDir\":\"/\"},\"created\":\"2000-01-01T00:00:00Z\",\"history\":[{\"created\":\"2000-01-01T00:00:00Z\",\"created_by\":\"scripts/image.sh\"}],\"os\":\"linux\",\"rootfs\":{\"diff_ids\":[\"sha256:$layer_sha\"],\"type\":\"layers\"}}"
config_sha="$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)"

archive="$work/archive"
mkdir -p "$archive/$layer_sha"
mv "$work/layer.tar" "$archive/$layer_sha/layer.tar"
printf '%s' "$config" > "$archive/$config_sha.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$config_sha" "$tag" "$layer_sha" > "$archive/manifest.json"
mkdir -p "$(dirname "$out")"
tar_fixed -C "$archive" -cf "$out.tmp" manifest.json "$config_sha.json" "$layer_sha"
mv "$out.tmp" "$out"
echo "$out: $tag, image ID sha256:$config_sha ($(du -h "$out" | cut -f1)): ${BINARIES[*]} in /$BIN_DIR, entrypoint $ENTRYPOINT"
