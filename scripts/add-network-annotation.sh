#!/bin/sh
# Adds NETWORK to POD's network annotation; podagent then hot-plugs it (device
# net + md5(key)[:12], e.g. data -> net8d777f385d3d) without restarting the pod.
#   scripts/add-network-annotation.sh POD NETWORK [NAMESPACE]
# NETWORK is `name` or `namespace/name`. Needs kubectl and jq.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 POD NETWORK [NAMESPACE]" >&2; exit 2; }
exec "$(dirname "$0")/edit-network-annotation.sh" add "$1" "$2" "${3:-default}"
