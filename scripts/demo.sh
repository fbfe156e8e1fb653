#!/usr/bin/env bash
# The seeds' green/blue example end to end on one machine, no cluster needed:
# a "node" network namespace holding the test apiserver (loaded with examples/sandbox) and
# the delegates' bridges, two "pod" namespaces app1 and app2, kactus ADD for both, `ip a` in
# each, pings across green and blue, `data` added to and removed from running app1 by podagent
# after an annotation edit, then DEL
# and a check that nothing is left. Everything it makes is removed on exit, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/demo.sh needs root (it creates network namespaces): sudo scripts/demo.sh" >&2
    exit 1
fi
scripts/install-deps.sh
cargo build --quiet --workspace --bins
BIN="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug"

NODE=kactus-demo-node
RUN=/run/kactus-demo
TOKEN=demo-token
API_PID=""
AGENT_PID=""
cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null && wait "$AGENT_PID" 2>/dev/null || true
    [ -n "$API_PID" ] && kill "$API_PID" 2>/dev/null && wait "$API_PID" 2>/dev/null || true
    for ns in kactus-demo-app1 kactus-demo-app2 "$NODE"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$RUN"
}
trap cleanup EXIT
cleanup
mkdir -p "$RUN"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "sandbox: node namespace $NODE, pods kactus-demo-app1 and kactus-demo-app2"
for ns in "$NODE" kactus-demo-app1 kactus-demo-app2; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
# blue's macvlan master: a veth pair inside the node namespace (never the machine's eth0).
ip -n "$NODE" link add blue0 type veth peer name blue0p
ip -n "$NODE" link set blue0 up
ip -n "$NODE" link set blue0p up

step "test apiserver in the node namespace, loaded with examples/sandbox"
ip netns exec "$NODE" "$BIN/kactus-test-apiserver" --listen 127.0.0.1:6443 --token "$TOKEN" \
    --load examples/sandbox --kubeconfig-out "$RUN/kubeconfig.yaml" --log-level warn > "$RUN/api.out" &
API_PID=$!
for _ in $(seq 100); do grep -q listening "$RUN/api.out" 2>/dev/null && break; sleep 0.1; done
cat "$RUN/api.out"

cat > "$RUN/kactus.conf" <<CONF
{
  "cniVersion": "1.0.0", "name": "kactus-net", "type": "kactus",
  "kubeconfig": "$RUN/kubeconfig.yaml", "cacheDir": "$RUN/cache",
  "logFile": "$RUN/kactus.log", "logLevel": "info",
  "delegates": [ { "type": "bridge", "name": "cluster", "masterPlugin": true, "bridge": "cni0", "isGateway": true,
                   "ipam": { "type": "host-local", "subnet": "10.244.0.0/24", "dataDir": "$RUN/ipam" } } ]
}
CONF
step "kactus config ($RUN/kactus.conf)"
cat "$RUN/kactus.conf"

kactus() { # COMMAND POD [EXTRA_CNI_ARGS]
    ip netns exec "$NODE" env CNI_COMMAND="$1" CNI_CONTAINERID="sandbox-$2" CNI_NETNS="/var/run/netns/kactus-demo-$2" \
        CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$2;K8S_POD_INFRA_CONTAINER_ID=sandbox-$2${3:-}" \
        "$BIN/kactus" < "$RUN/kactus.conf"
}

for pod in app1 app2; do
    step "CNI_COMMAND=ADD kactus < kactus.conf   (pod $pod)"
    kactus ADD "$pod"; echo
    step "ip a in $pod"
    ip -n "kactus-demo-$pod" addr
done

addr() { ip -n "kactus-demo-$1" -4 -o addr show dev "$2" | awk '{print $4}' | cut -d/ -f1; }
step "app1 pings app2 over green (net9f27410725ab) and blue (net48d6215903df)"
ip netns exec kactus-demo-app1 ping -c 2 -W 2 "$(addr app2 net9f27410725ab)"
ip netns exec kactus-demo-app1 ping -c 2 -W 2 "$(addr app2 net48d6215903df)"

step "network-status annotation kactus wrote on app1"
CA="$RUN/ca.crt"
sed -n 's/.*certificate-authority-data: *//p' "$RUN/kubeconfig.yaml" | base64 -d > "$CA"
api() { ip netns exec "$NODE" curl -sS --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$@"; }
api https://127.0.0.1:6443/api/v1/namespaces/default/pods/app1 \
    | sed -n 's/.*"k8s.v1.cni.cncf.io\/network-status":"\(.*\)","networks".*/\1/p' | sed 's/\\"/"/g'; echo

step "podagent on the node: watches the node's pods, execs the node's CNI config on a change"
mkdir -p "$RUN/net.d" "$RUN/bin"
cp "$RUN/kactus.conf" "$RUN/net.d/00-kactus.conf"
ln -sf "$BIN/kactus" "$RUN/bin/kactus"
# The demo's pods are not the container runtime's, so podagent finds their sandboxes in
# kactus's cache rather than asking containerd/CRI-O (--sandbox-lookup cache); it runs on the
# host, already in the host's filesystem, so the plugin needs no other mount namespace.
ip netns exec "$NODE" "$BIN/podagent" --node-name node1 --kubeconfig "$RUN/kubeconfig.yaml" \
    --cni-conf-dir "$RUN/net.d" --cni-bin-dir "$RUN/bin" --cni-path "$RUN/bin:/usr/lib/cni" \
    --kactus-cache-dir "$RUN/cache" --sandbox-lookup cache --plugin-mount-namespace none \
    --log-level warn 2> "$RUN/podagent.log" &
AGENT_PID=$!
for _ in $(seq 100); do ip netns exec "$NODE" curl -sf http://127.0.0.1:9648/healthz >/dev/null 2>&1 && break; sleep 0.1; done
echo "podagent ready: $(ip netns exec "$NODE" curl -s http://127.0.0.1:9648/healthz)"

wait_for() { # CONDITION-COMMAND...
    for _ in $(seq 100); do "$@" && return 0; sleep 0.1; done
    echo "timed out waiting for: $*" >&2; return 1
}
has_data() { ip -n kactus-demo-app1 link show net8d777f385d3d >/dev/null 2>&1; }
no_data() { ! has_data; }
networks() { # the networks annotation of app1, as a merge patch
    api -X PATCH -H 'Content-Type: application/merge-patch+json' \
        -d "{\"metadata\":{\"annotations\":{\"networks\":$1}}}" \
        https://127.0.0.1:6443/api/v1/namespaces/default/pods/app1 > /dev/null
}

step "add network data to running app1 (annotation edit only; podagent does the rest)"
networks '"[ { \"name\": \"green\" }, { \"name\": \"blue\" }, { \"name\": \"data\" } ]"'
wait_for has_data
ip -n kactus-demo-app1 -br addr show dev net8d777f385d3d

step "remove data from app1's annotation: podagent deletes the device"
networks '"[ { \"name\": \"green\" }, { \"name\": \"blue\" } ]"'
wait_for no_data
dels_counted() { ip netns exec "$NODE" curl -s http://127.0.0.1:9648/metrics | grep -q '^podagent_dels_total 1'; }
wait_for dels_counted
ip -n kactus-demo-app1 -br link
echo "podagent counters:"
ip netns exec "$NODE" curl -s http://127.0.0.1:9648/metrics | grep -E '^podagent_(adds|dels|failures)_total'
kill "$AGENT_PID"; wait "$AGENT_PID" 2>/dev/null || true; AGENT_PID=""

for pod in app1 app2; do
    step "CNI_COMMAND=DEL kactus   (pod $pod)"
    kactus DEL "$pod"
    ip -n "kactus-demo-$pod" -br link
done

step "nothing left: IPAM leases and kactus cache"
leases=$(find "$RUN/ipam" -type f -regextype posix-extended -regex '.*/[0-9a-f.:]+$' | wc -l)
cache=$(find "$RUN/cache" -mindepth 1 | wc -l)
echo "host-local leases: $leases, cache entries: $cache"
[ "$leases" = 0 ] && [ "$cache" = 0 ]
step "demo done; cleaning up"
