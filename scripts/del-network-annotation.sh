#!/bin/sh
# Removes NETWORK from POD's network annotation; podagent then removes its device (and
# frees its IPAM lease) without restarting the pod.
#   scripts/del-network-annotation.sh POD NETWORK [NAMESPACE]
# NETWORK is `name` or `namespace/name`. Needs kubectl and jq.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 POD NETWORK [NAMESPACE]" >&2; exit 2; }
exec "$(dirname "$0")/edit-network-annotation.sh" del "$1" "$2" "${3:-default}"
