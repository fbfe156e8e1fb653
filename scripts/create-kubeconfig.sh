#!/usr/bin/env bash
# Create a kubeconfig for the kactus service account, for installs without the kactus
# DaemonSet (which writes and renews this file itself). Copy the result to every node:
#   sudo install -m 755 -d /etc/cni/net.d/kactus.d
#   sudo install -m 600 /tmp/kubeconfig/kactus-kubeconfig.yaml /etc/cni/net.d/kactus.d/
#
# The token comes from the TokenRequest API (`kubectl create token`, Kubernetes >= 1.24), as
# the installer's does: bound to no pod, and expiring after -d DURATION (24h by default, at
# most 720h; the apiserver may grant less). No legacy token Secret: such a token never expires
# and lives in the cluster for anyone who may read Secrets in the namespace.
# The apiserver address and CA are taken from the current kubectl context.
#
# Needs: kubectl (with rights to create tokens for the service account), base64.
# Apply manifests/kactus-serviceaccount-and-rbac.yaml first.
set -euo pipefail

namespace=kube-system
service_account=kactus
output_dir=/tmp/kubeconfig
duration=24h
# The longest token asked for: a leaked copy of the file is worth no more than this.
max_duration_seconds=$((720 * 3600))

usage() {
    cat <<USAGE
usage: $0 [-n NAMESPACE] [-s SERVICE_ACCOUNT] [-o OUTPUT_DIR] [-d TOKEN_DURATION]
  -n  namespace of the service account (default: $namespace)
  -s  service account (default: $service_account)
  -o  directory for kactus-kubeconfig.yaml (default: $output_dir)
  -d  token lifetime, as 'kubectl create token --duration' reads it (24h, 90m, 1h30m;
      default: $duration, at most 720h; the apiserver may grant less)

When the token expires, every ADD on the nodes fails with code 100 ("Unauthorized") and pods
with kactus networks stop starting. Before that, run this script again and copy the new
kactus-kubeconfig.yaml to every node (the plugin reads it on every call: no restart needed),
e.g. from a scheduled job every half of the lifetime. Or install with manifests/kactus-ds.yaml,
whose installer renews the token on its own.
USAGE
}

while getopts "n:s:o:d:h" opt; do
    case "$opt" in
        n) namespace=$OPTARG ;;
        s) service_account=$OPTARG ;;
        o) output_dir=$OPTARG ;;
        d) duration=$OPTARG ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

die() {
    echo "create-kubeconfig: $*" >&2
    exit 1
}

# Seconds in a Go duration of hours, minutes and seconds (what --duration accepts here).
duration_seconds() {
    [[ "$1" =~ ^(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?$ && -n "$1" ]] || return 1
    echo $((10#${BASH_REMATCH[2]:-0} * 3600 + 10#${BASH_REMATCH[4]:-0} * 60 + 10#${BASH_REMATCH[6]:-0}))
}

seconds=$(duration_seconds "$duration") || { echo "create-kubeconfig: -d $duration is not a duration like 24h or 90m" >&2; usage >&2; exit 2; }
((seconds >= 600 && seconds <= max_duration_seconds)) ||
    { echo "create-kubeconfig: -d $duration must be from 10m to 720h" >&2; usage >&2; exit 2; }

kubectl get serviceaccount "$service_account" -n "$namespace" >/dev/null ||
    die "service account $namespace/$service_account not found; apply manifests/kactus-serviceaccount-and-rbac.yaml first"

token=$(kubectl create token "$service_account" -n "$namespace" --duration="$duration") ||
    die "'kubectl create token' failed (it needs Kubernetes >= 1.24 and the right to create serviceaccounts/token for $namespace/$service_account)"
[[ -n "$token" ]] || die "got an empty token for $namespace/$service_account"

server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
[[ -n "$server" ]] || die "no apiserver address in the current kubectl context"

ca_data=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
if [[ -z "$ca_data" ]]; then
    ca_file=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')
    [[ -n "$ca_file" && -r "$ca_file" ]] ||
        die "the current kubectl context has neither certificate-authority-data nor a readable certificate-authority file"
    ca_data=$(base64 -w0 <"$ca_file")
fi

umask 077
mkdir -p "$output_dir"
kubeconfig="$output_dir/kactus-kubeconfig.yaml"
cat >"$kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: kactus-cluster
  cluster:
    server: "$server"
    certificate-authority-data: "$ca_data"
users:
- name: kactus
  user:
    token: "$token"
contexts:
- name: kactus-context
  context:
    cluster: kactus-cluster
    user: kactus
current-context: kactus-context
KUBECONFIG

echo "wrote $kubeconfig for $namespace/$service_account (server $server); its token expires within $duration:" \
    "run $0 again before then and copy the file to every node"
