#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine (as root):
# the reference CNI plugins (/usr/lib/cni), iproute2, ping, curl, and nft (the nftables tests
# read kactus's tables back with it; kactus itself never runs it).
set -euo pipefail

need=()
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v nft >/dev/null 2>&1 || need+=(nftables)
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
for tool in ip ping curl nft cargo; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool" >&2; exit 1; }
done
[ -x /usr/lib/cni/bridge ] || { echo "missing /usr/lib/cni/bridge (containernetworking-plugins)" >&2; exit 1; }
