#!/usr/bin/env bash
# Create a kubeconfig for the kactus service account, for installs without the kactus
# DaemonSet (which writes and rotates this file itself). Copy the result to every node:
#   sudo install -m 755 -d /etc/cni/net.d/kactus.d
#   sudo install -m 600 /tmp/kubeconfig/kactus-kubeconfig.yaml /etc/cni/net.d/kactus.d/
#
# The token comes from `kubectl create token` (Kubernetes >= 1.24), valid for -d DURATION;
# renew the file before it expires. On older clusters or kubectl it falls back to a legacy
# service-account token Secret, which does not expire but is stored in the cluster.
# The apiserver address and CA are taken from the current kubectl context.
#
# Needs: kubectl (with rights to create tokens/secrets), base64.
# Apply manifests/kactus-serviceaccount-and-rbac.yaml first.
set -euo pipefail

namespace=kube-system
service_account=kactus
output_dir=/tmp/kubeconfig
duration=8760h

usage() {
    cat <<USAGE
usage: $0 [-n NAMESPACE] [-s SERVICE_ACCOUNT] [-o OUTPUT_DIR] [-d TOKEN_DURATION]
  -n  namespace of the service account (default: $namespace)
  -s  service account (default: $service_account)
  -o  directory for kactus-kubeconfig.yaml (default: $output_dir)
  -d  token lifetime for 'kubectl create token' (default: $duration; the apiserver may cap it)
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

kubectl get serviceaccount "$service_account" -n "$namespace" >/dev/null ||
    die "service account $namespace/$service_account not found; apply manifests/kactus-serviceaccount-and-rbac.yaml first"

# A legacy token Secret: pre-1.24 clusters create one per service account; later ones
# populate one that is created with the service-account annotation.
legacy_token() {
    local secret
    secret=$(kubectl get serviceaccount "$service_account" -n "$namespace" \
        -o jsonpath='{.secrets[0].name}' 2>/dev/null || true)
    if [[ -z "$secret" ]]; then
        secret="$service_account-token"
        kubectl apply -n "$namespace" -f - >/dev/null <<SECRET
apiVersion: v1
kind: Secret
metadata:
  name: $secret
  annotations:
    kubernetes.io/service-account.name: $service_account
type: kubernetes.io/service-account-token
SECRET
    fi
    local encoded="" attempt
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        encoded=$(kubectl get secret "$secret" -n "$namespace" -o jsonpath='{.data.token}')
        [[ -n "$encoded" ]] && break
        echo "waiting for the token controller to fill secret $namespace/$secret ($attempt/10)" >&2
        sleep 1
    done
    [[ -n "$encoded" ]] || die "secret $namespace/$secret has no token"
    printf '%s' "$encoded" | base64 -d
}

if ! token=$(kubectl create token "$service_account" -n "$namespace" --duration="$duration" 2>/dev/null); then
    echo "create-kubeconfig: 'kubectl create token' failed (Kubernetes < 1.24?); using a legacy token Secret" >&2
    token=$(legacy_token)
fi
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

echo "wrote $kubeconfig for $namespace/$service_account (server $server)"
