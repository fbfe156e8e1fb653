#!/usr/bin/env bash
# The real-cluster end-to-end test. Deploys kactus on the cluster KUBECONFIG points at, from
# this repository's own image (scripts/image.sh) and manifests, exactly as README's "Install on
# a cluster" tells a user, then runs the seeds' scenarios against the real kubelet and runtime:
#
#   green and blue: two pods ping each other over both networks, with the md5 device names;
#   the NPWG comma and JSON forms;  a missing NAD: NetworkNotFound, as an Event naming it;
#   a network backed by a device resource the pod was not allocated, asked of the real kubelet;
#   node-local IPAM: the node claims its slice of a cluster range once, pods get addresses in it;
#   `data` hot-plugged and unplugged through the podagent DaemonSet, the pod not restarted;
#   seed 000's Service on mep/mp1 through kactus-endpoints, applied unchanged (Endpoints on 1.20);
#   with a second node (NODE2, or the harness's harness-node2 when Ready): server and client pods
#   there too, the ClusterIP and the policy across both nodes, each node's podagent serving its own;
#   a rolling restart of the installer while pods are created (no "Unauthorized", no failure);
#   uninstall, and the node back on its own network;
#   and after each: no IPAM lease, no kactus cache entry, no device left behind.
#
# Run as root on a node of that cluster (a single-node cluster such as ../shared/cluster/):
# the image is loaded into that node's containerd, and leases, files and links are read there.
#   sudo KUBECONFIG=/path/to/admin.kubeconfig scripts/e2e.sh
# Knobs: KUBECTL (default: kubectl on PATH), CONTAINERD_ADDRESS (default: the first that exists
# of /run/containerd/containerd.sock, /run/harness/containerd.sock), POD_IMAGE (a busybox image
# the node already has, default harness.local/busybox:1.35 when present), CTR (containerd's
# ctr), IMAGE_BINARIES (a directory of static binaries already built, passed to scripts/image.sh
# --binaries instead of building them: a musl release build takes 10-20 minutes on 2 cores),
# KEEP=1 (leave the test's objects for a look). About 8 minutes with the binaries built. Ends
# with `N passed, M failed, K skipped`; exit 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "scripts/e2e.sh needs root on a node of the cluster (see its header)" >&2; exit 2; }
[ -n "${KUBECONFIG:-}" ] || { echo "scripts/e2e.sh: set KUBECONFIG to the cluster's admin kubeconfig" >&2; exit 2; }
KUBECTL=${KUBECTL:-$(command -v kubectl || true)}
[ -x "$KUBECTL" ] || { echo "scripts/e2e.sh: kubectl not found (set KUBECTL)" >&2; exit 2; }
if [ -z "${CONTAINERD_ADDRESS:-}" ]; then
    for s in /run/containerd/containerd.sock /run/harness/containerd.sock; do
        [ -S "$s" ] && CONTAINERD_ADDRESS=$s && break
    done
fi
[ -S "${CONTAINERD_ADDRESS:-}" ] || { echo "scripts/e2e.sh: no containerd socket (set CONTAINERD_ADDRESS)" >&2; exit 2; }
CTR=${CTR:-$(command -v ctr || true)}
[ -x "$CTR" ] || { echo "scripts/e2e.sh: ctr not found (Debian: containerd)" >&2; exit 2; }

NS=kactus-e2e
IMAGE=kactus:0.1.0           # the manifests' image, as shipped
CONF_DIR=/etc/cni/net.d
BIN_DIR=/opt/cni/bin
CACHE_DIR=/var/lib/cni/kactus
IPAM_DIR=/run/kactus-e2e/ipam # host-local dataDir of the test's networks
RUN=$(mktemp -d /tmp/kactus-e2e.XXXXXX)
NODE=""
pass=0 fail=0 skip=0

k() { "$KUBECTL" "$@"; }
kn() { "$KUBECTL" -n "$NS" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pass() { pass=$((pass + 1)); echo "PASS $*"; }
fail() { fail=$((fail + 1)); echo "FAIL $*"; }
skip() { skip=$((skip + 1)); echo "SKIP $*"; }
# check "what" command...: PASS or FAIL by the command's status (its output kept in $RUN/last).
check() {
    local what=$1; shift
    if "$@" >"$RUN/last" 2>&1; then pass "$what"; else fail "$what"; sed 's/^/    /' "$RUN/last" | tail -20; fi
}
# until_ok SECONDS command...: retries every 0.5 s.
until_ok() {
    local end=$(( $(date +%s) + $1 )); shift
    until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -ge "$end" ] && return 1; sleep 0.5; done
}

# ---- the test's objects: networks on bridges the delegates make on the node, never its uplink
nad() { # name bridge subnet [plugin-config-extra]
    cat <<EOF
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: $1, namespace: $NS}
spec:
  config: '{"cniVersion": "0.4.0", "name": "$1", "type": "bridge", "bridge": "$2",
            "ipam": {"type": "host-local", "subnet": "$3", "dataDir": "$IPAM_DIR"}}'
---
EOF
}
pod() { # name annotation-key annotation-value
    cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: $NS
  labels: {kactus-e2e: "true"}
  annotations: {$2: '$3'}
spec:
  nodeName: $NODE
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: $POD_IMAGE
      imagePullPolicy: Never
      command: ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
---
EOF
}
ready() { [ "$(kn get pod "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
# addr POD DEVICE: the device's IPv4 address (no prefix) as the pod sees it.
addr() { kn exec "$1" -- ip -4 addr show dev "$2" 2>/dev/null | sed -n 's/.*inet \([0-9.]*\)\/.*/\1/p' | head -1; }
has_dev() { kn exec "$1" -- ip link show dev "$2" >/dev/null 2>&1; }
# leases [NETWORK]: IPAM lease files under the test's dataDir (node-local.json is a node's
# slices, kept by design; last_reserved_ip and lock are host-local's bookkeeping).
leases() { find "$IPAM_DIR/${1:-}" -type f ! -name 'last_reserved_ip*' ! -name lock ! -name node-local.json 2>/dev/null | wc -l; }
cached() { find "$CACHE_DIR" -mindepth 1 2>/dev/null | wc -l; }
event() { # POD REASON: the messages of the pod's Events with that reason, one a line
    kn get events --field-selector "involvedObject.name=$1,reason=$2" -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' 2>/dev/null
}
delete_pods() {
    kn delete pod "$@" --wait=true --timeout=120s >/dev/null 2>&1
}
nothing_left() { # after all test pods are gone: no lease, no cache entry
    check "nothing left: $(leases) IPAM lease(s) in $IPAM_DIR, $(cached) file(s) under $CACHE_DIR" \
        test "$(leases)" = 0 -a "$(cached)" = 0
}

cleanup() {
    [ "${KEEP:-}" = 1 ] && { echo "KEEP=1: left namespace $NS and the installation"; return; }
    k delete namespace "$NS" mep --wait=true --timeout=120s >/dev/null 2>&1
    for f in endpoints-controller podagent-ds kactus-ds kactus-uninstall; do
        k delete -f "manifests/$f.yaml" --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1
    done
    k -n kube-system delete configmap kactus-apiserver --ignore-not-found >/dev/null 2>&1
    # A run stopped half-way leaves kactus on the node: take it off as the uninstaller would.
    rm -rf "$CONF_DIR/00-kactus.conflist" "$CONF_DIR/kactus.d" "$BIN_DIR/kactus" "$BIN_DIR/node-local" "$CACHE_DIR"
    k delete sliceclaims -l kactus.io/network=kte2e-nl --ignore-not-found >/dev/null 2>&1
    for b in kte2e-green kte2e-blue kte2e-data kte2e-mp1a kte2e-nl; do ip link del "$b" 2>/dev/null; done
    if [ -n "$N2PID" ]; then
        k -n kube-system delete ds podagent-node2 --ignore-not-found --wait=true --timeout=60s >/dev/null 2>&1
        n2 rm -rf "$CONF_DIR/00-kactus.conflist" "$CONF_DIR/kactus.d" "$CACHE_DIR"
        for d in /var/log/kactus /run/kactus /opt/cni/bin; do n2 umount "$d" 2>/dev/null; done
        rm -rf "$N2PRIV"
    fi
    rm -rf "$RUN" "$IPAM_DIR"
}
trap cleanup EXIT

# ---- preflight
# A second node: NODE2=<name>, or the harness's harness-node2 (../shared/cluster/node2-up.sh)
# when it is Ready. Pods are pinned to NODE (this machine) unless a scenario says NODE2.
NODE2=${NODE2:-}
if [ -z "$NODE2" ] && [ "$(k get node harness-node2 -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; then
    NODE2=harness-node2
fi
NODE=$(k get nodes -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' 2>/dev/null | grep -vx "${NODE2:-}" | head -1)
[ -n "$NODE" ] || { echo "scripts/e2e.sh: cannot list nodes with KUBECONFIG=$KUBECONFIG" >&2; exit 2; }
[ "$(k get nodes -o name | wc -l)" = 1 ] || echo "note: more than one node; pods are pinned to $NODE (this machine must be $NODE)${NODE2:+, and to $NODE2 where a scenario says so}"
if [ -z "${POD_IMAGE:-}" ]; then
    POD_IMAGE=busybox:1.36
    # grep reads the whole list: -q would exit at the match and, under pipefail, ctr's SIGPIPE fail it
    "$CTR" -a "$CONTAINERD_ADDRESS" -n k8s.io images ls -q | grep -x 'harness.local/busybox:1.35' >/dev/null && POD_IMAGE=harness.local/busybox:1.35
fi
server_minor=$(k version -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | tail -1)
echo "cluster: node $NODE, Kubernetes 1.${server_minor:-?}, containerd at $CONTAINERD_ADDRESS, pod image $POD_IMAGE"
own_conf=$(ls "$CONF_DIR" | grep -E '\.(conf|conflist|json)$' | grep -v '^00-kactus' | sort | head -1)
[ -n "$own_conf" ] || { echo "scripts/e2e.sh: the node has no network config in $CONF_DIR" >&2; exit 2; }
cp "$CONF_DIR/$own_conf" "$RUN/own-conf"
mkdir -p "$IPAM_DIR"

# ---- the second node, when there is one
# to_node2: a pod manifest (from pod()) pinned to NODE2 instead, tolerating its taints.
to_node2() { sed "s/^  nodeName: $NODE\$/  nodeName: $NODE2\n  tolerations: [{operator: Exists}]/"; }
# The harness's node 2 is a second kubelet and containerd on this same machine, in a mount
# namespace of their own (../shared/cluster/README.md, "Second node"): it shares /opt/cni/bin,
# /run and /var/log with node 1, where a real second machine has its own. Node 2 is given its
# own /opt/cni/bin (a copy of the plugins), /run/kactus (podagent's socket) and
# /var/log/kactus there, so each node's kactus, podagent and uninstaller act on their own node
# only, as on two machines; n2 runs a command in node 2's namespace (where its files are).
N2PID="" N2PRIV=/run/harness2/kactus-e2e
HARNESS=${HARNESS:-$(cd .. && pwd)/harness}
n2() { nsenter -t "$N2PID" -m -u -- "$@"; }
if [ -n "$NODE2" ] && [ -f "$HARNESS/run/node2-mntns.pid" ] && [ "$NODE2" = harness-node2 ]; then
    N2PID=$(cat "$HARNESS/run/node2-mntns.pid")
    for d in /opt/cni/bin /run/kactus /var/log/kactus; do
        mkdir -p "$N2PRIV$d" "$d"
        [ "$d" = /opt/cni/bin ] && find /opt/cni/bin -maxdepth 1 -type f ! -name kactus ! -name node-local -exec cp -p {} "$N2PRIV$d/" \;
        n2 mountpoint -q "$d" || n2 mount --bind "$N2PRIV$d" "$d"
    done
    echo "    $NODE2 (the harness's second node, on this machine): its own /opt/cni/bin, /run/kactus and /var/log/kactus under $N2PRIV"
fi
[ -n "$NODE2" ] && echo "second node: $NODE2 (server and client pods there in the Service scenario)"

# ---- install, as README says (the image built here and loaded into the node's runtime)
say "install: image, CRD, RBAC, the installer DaemonSet"
image_args=(--out "$RUN/kactus-image.tar")
[ -n "${IMAGE_BINARIES:-}" ] && image_args+=(--binaries "$IMAGE_BINARIES")
if scripts/image.sh "${image_args[@]}" >"$RUN/image.log" 2>&1 \
    && "$CTR" -a "$CONTAINERD_ADDRESS" -n k8s.io images import "$RUN/kactus-image.tar" >>"$RUN/image.log" 2>&1; then
    pass "scripts/image.sh built $IMAGE and the node's containerd imported it"
    if [ -n "$N2PID" ]; then
        check "$NODE2's containerd imported it too" "$CTR" -a /run/harness2/containerd.sock -n k8s.io images import "$RUN/kactus-image.tar"
    fi
else
    fail "image build or import"; tail -20 "$RUN/image.log"; exit 1
fi
BINARIES=${IMAGE_BINARIES:-$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/$(uname -m)-unknown-linux-musl/release}
# Without kube-proxy the kubernetes Service's address routes nowhere on the node (or, worse,
# off it): the daemons are given the apiserver's own address, as README says.
if ! iptables -t nat -nL KUBE-SERVICES >/dev/null 2>&1 && ! ip link show kube-ipvs0 >/dev/null 2>&1; then
    server=$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')
    hostport=${server#https://}; hostport=${hostport%%/*}
    k -n kube-system create configmap kactus-apiserver --dry-run=client -o yaml \
        --from-literal=KUBERNETES_SERVICE_HOST="${hostport%:*}" --from-literal=KUBERNETES_SERVICE_PORT="${hostport##*:}" \
        | k apply -f - >/dev/null
    echo "    no kube-proxy on this node: ConfigMap kube-system/kactus-apiserver points the daemons at $hostport"
    # An apiserver that listens on the node's loopback only (../shared/cluster/) is out of a
    # pod network's reach: kactus-endpoints then runs on the host network, one replica (two
    # would share the node's ports).
    case "${hostport%:*}" in 127.*|localhost|"[::1]") endpoints_on_host_network=1 ;; esac
fi
check "kubectl apply -f manifests/network-crd.yaml manifests/sliceclaim-crd.yaml manifests/kactus-serviceaccount-and-rbac.yaml manifests/kactus-ds.yaml" \
    k apply -f manifests/network-crd.yaml -f manifests/sliceclaim-crd.yaml -f manifests/kactus-serviceaccount-and-rbac.yaml -f manifests/kactus-ds.yaml
check "the installer DaemonSet is rolled out" k -n kube-system rollout status ds/kactus --timeout=120s
check "00-kactus.conflist is the node's first config and wraps $own_conf" \
    until_ok 30 sh -c "ls $CONF_DIR | grep -E '\.(conf|conflist|json)\$' | sort | head -1 | grep -qx 00-kactus.conflist && grep -q '$(sed -n 's/.*"name": *"\([^"]*\)".*/\1/p' "$RUN/own-conf" | head -1)' $CONF_DIR/00-kactus.conflist"
if [ -n "$N2PID" ]; then
    check "on $NODE2 too: 00-kactus.conflist is its first config, kactus in its /opt/cni/bin" \
        until_ok 60 n2 sh -c "ls $CONF_DIR | grep -E '\.(conf|conflist|json)\$' | sort | head -1 | grep -qx 00-kactus.conflist && test -x $BIN_DIR/kactus"
fi
check "the CRD is served" until_ok 30 k get network-attachment-definitions -A
k create namespace "$NS" >/dev/null 2>&1
mkdir -p "$IPAM_DIR"
{ nad green kte2e-green 10.201.0.0/24; nad blue kte2e-blue 10.202.0.0/24; nad data kte2e-data 10.203.0.0/24; } | kn apply -f - >/dev/null

# ---- 1. green and blue
say "seed scenario 1: app1 and app2 on green and blue"
all_ready() { local p; for p in "$@"; do ready "$p" || return 1; done; }
has_devs() { local p=$1 d; shift; for d in "$@"; do has_dev "$p" "$d" || return 1; done; }
{ pod app1 networks '[ { "name": "green" }, { "name": "blue" } ]'; pod app2 networks '[ { "name": "green" }, { "name": "blue" } ]'; } | kn apply -f - >/dev/null
check "app1 and app2 are Running and Ready" until_ok 120 all_ready app1 app2
for p in app1 app2; do
    check "$p has net9f27410725ab (green) and net48d6215903df (blue) besides eth0" has_devs $p eth0 net9f27410725ab net48d6215903df
done
g2=$(addr app2 net9f27410725ab) b2=$(addr app2 net48d6215903df)
pings() { [ -n "$3" ] && kn exec "$1" -- ping -c 2 -W 2 "$3"; }
check "app1 pings app2 on green (${g2:-no address})" pings app1 app2 "$g2"
check "app1 pings app2 on blue (${b2:-no address})" pings app1 app2 "$b2"
status_is() { # POD PYTHON-ASSERTIONS on s, the parsed network-status
    kn get pod "$1" -o jsonpath='{.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}' \
        | python3 -c "import json,sys; s=json.load(sys.stdin); $2"
}
check "app1's network-status: eth0 (default), then $NS/green and $NS/blue" status_is app1 \
    "assert [e['interface'] for e in s]==['eth0','net9f27410725ab','net48d6215903df'], s; assert s[0].get('default') is True; assert s[1]['name']=='$NS/green', s"
attested_is() { # POD PYTHON-ASSERTIONS on a, the kactus.io/attachments condition's entries
    kn get pod "$1" -o jsonpath='{.status.conditions[?(@.type=="kactus.io/attachments")].message}' \
        | python3 -c "import json,sys; a=json.load(sys.stdin); $2"
}
check "app1's status holds the addresses kactus assigned (kactus.io/attachments, beside kubelet's conditions)" attested_is app1 \
    "assert [e['interface'] for e in a]==['net9f27410725ab','net48d6215903df'], a; assert a[0]['ips'][0].startswith('10.201.0.'), a"
event_has() { event "$1" "$2" | grep -q -- "$3"; }
check "app1 has an AddedInterface Event for net9f27410725ab" event_has app1 AddedInterface "Add net9f27410725ab \\[10.201.0.[0-9]*/24\\] from $NS/green"

# ---- 2. the NPWG forms
say "NPWG annotation: the comma form and the JSON form"
{ pod npwg-comma k8s.v1.cni.cncf.io/networks 'green, blue@eth5'
  pod npwg-json k8s.v1.cni.cncf.io/networks '[ { "name": "green", "interface": "eth7", "mac": "02:00:00:00:e2:07" } ]'; } | kn apply -f - >/dev/null
check "npwg-comma and npwg-json are Ready" until_ok 120 all_ready npwg-comma npwg-json
check "npwg-comma has net9f27410725ab (green) and eth5 (blue@eth5)" has_devs npwg-comma net9f27410725ab eth5
mac_is() { kn exec "$1" -- ip link show dev "$2" | grep -q "$3"; }
check "npwg-json has eth7 with MAC 02:00:00:00:e2:07" mac_is npwg-json eth7 02:00:00:00:e2:07

# ---- 3. a missing NAD
say "a network with no NetworkAttachmentDefinition"
pod nonad networks '[ { "name": "nosuch" } ]' | kn apply -f - >/dev/null
check "pod nonad gets a NetworkNotFound Event naming nosuch" until_ok 90 event_has nonad NetworkNotFound nosuch
echo "    event: $(event nonad NetworkNotFound)"
not_ready() { ! ready "$1"; }
check "pod nonad is not started" not_ready nonad
delete_pods nonad npwg-comma npwg-json

# ---- 3a. a NAD that would run kactus itself (a tenant's way to steer root code)
say "a network whose config names kactus itself"
cat <<YAML | kn apply -f - >/dev/null
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: nested, namespace: $NS}
spec:
  config: '{"cniVersion": "0.4.0", "type": "kactus", "logFile": "$RUN/nested-victim", "cacheDir": "$RUN/nested-cache",
            "delegates": [{"type": "bridge", "bridge": "kte2e-nested", "masterPlugin": true}]}'
YAML
pod nested networks '[ { "name": "nested" } ]' | kn apply -f - >/dev/null
check "pod nested gets a Warning naming the meta-plugin refusal" until_ok 90 event_has nested AttachFailed meta-plugin
echo "    event: $(event nested AttachFailed | head -1)"
no_nested_trace() { [ ! -e "$RUN/nested-victim" ] && [ ! -e "$RUN/nested-cache" ]; }
check "nothing of the node was touched through its config (no log file, no cache dir)" no_nested_trace
check "pod nested is not started" not_ready nested
delete_pods nested
k -n "$NS" delete network-attachment-definition nested >/dev/null 2>&1 || true

# ---- 3b. a network backed by an allocated device, asked of the real kubelet
say "a network that names a device resource the pod was not allocated"
cat <<YAML | kn apply -f - >/dev/null
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: vfnet
  namespace: $NS
  annotations: {k8s.v1.cni.cncf.io/resourceName: kactus.io/e2e-vf}
spec:
  config: '{"cniVersion": "0.4.0", "name": "vfnet", "type": "host-device",
            "ipam": {"type": "host-local", "subnet": "10.204.0.0/24", "dataDir": "$IPAM_DIR"}}'
YAML
pod novf networks '[ { "name": "vfnet" } ]' | kn apply -f - >/dev/null
# kactus asks kubelet's pod-resources API (the real socket) which devices the pod holds.
check "pod novf gets an AttachFailed Event naming vfnet and kactus.io/e2e-vf" until_ok 90 event_has novf AttachFailed 'kactus.io/e2e-vf'
echo "    event: $(event novf AttachFailed | head -1)"
check "pod novf is not started" not_ready novf
delete_pods novf

# ---- 3c. node-unique addresses: node-local claims the node's slice once, then no apiserver call
say "node-local IPAM: the node's slice of a cluster range"
cat <<YAML | kn apply -f - >/dev/null
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: nl, namespace: $NS}
spec:
  config: '{"cniVersion": "1.0.0", "name": "kte2e-nl", "type": "bridge", "bridge": "kte2e-nl",
            "ipam": {"type": "node-local", "dataDir": "$IPAM_DIR",
                     "ranges": [[{"subnet": "10.205.0.0/16", "nodeSliceSize": 24}]]}}'
YAML
{ pod nl1 networks '[ { "name": "nl" } ]'; pod nl2 networks '[ { "name": "nl" } ]'; } | kn apply -f - >/dev/null
check "nl1 and nl2 are Ready" until_ok 120 all_ready nl1 nl2
nl_dev=$(python3 -c 'import hashlib; print("net" + hashlib.md5(b"nl").hexdigest()[:12])' 2>/dev/null)
n1=$(addr nl1 "$nl_dev") n2=$(addr nl2 "$nl_dev")
slice=$(k get sliceclaims -l kactus.io/network=kte2e-nl -o jsonpath='{.items[*].spec.slice}' 2>/dev/null)
echo "    nl1 ${n1:-no address}, nl2 ${n2:-no address}; the node's claims: ${slice:-none}"
in_slice() { python3 -c "import ipaddress,sys; n=ipaddress.ip_network('$slice'); assert ipaddress.ip_address('$n1') in n and ipaddress.ip_address('$n2') in n" 2>/dev/null; }
check "one SliceClaim for the network, a /24 of 10.205.0.0/16, and both pods' addresses in it" in_slice
owned() { [ "$(k get sliceclaims -l kactus.io/network=kte2e-nl -o jsonpath='{.items[0].metadata.ownerReferences[0].kind}/{.items[0].metadata.ownerReferences[0].name}')" = "Node/$NODE" ]; }
check "the claim is owned by Node $NODE (freed with it)" owned
check "nl1 pings nl2 on node-local's address (${n2:-none})" pings nl1 nl2 "$n2"
delete_pods nl1 nl2
check "their leases were released (the node keeps its slice)" test "$(leases kte2e-nl)" = 0

# ---- 4. hot-plug through podagent
say "seed scenario 2: data added to running app1 through podagent, then removed"
# The shipped DaemonSet, with what this node needs that the manifest cannot know (printed):
# a runtime socket outside /run/containerd, and a PID 1 that root on the node may not open (a
# sandboxed node whose init lives in another user namespace): the runtime's own mount
# namespace is the host's, where it runs CNI plugins.
podagent_ds() {
    local mntns=""
    readlink /proc/1/ns/mnt >/dev/null 2>&1 || mntns=/proc/$(pgrep -o -x containerd)/ns/mnt
    k create --dry-run=client -o json -f manifests/podagent-ds.yaml | CRI="$CONTAINERD_ADDRESS" MNTNS="$mntns" NODE2="$NODE2" N2PID="$N2PID" python3 -c '
import json, os, sys
ds = json.load(sys.stdin); spec = ds["spec"]["template"]["spec"]; c = spec["containers"][0]
cri = os.environ["CRI"]
if os.path.dirname(cri) != "/run/containerd":
    c["args"].append("--cri-socket=unix://" + cri)
    spec["volumes"].append({"name": "e2e-cri", "hostPath": {"path": os.path.dirname(cri), "type": "Directory"}})
    c["volumeMounts"].append({"name": "e2e-cri", "mountPath": os.path.dirname(cri)})
    print("    podagent: --cri-socket=unix://%s (mounted)" % cri, file=sys.stderr)
if os.environ["MNTNS"]:
    c["args"] = [a if not a.startswith("--plugin-mount-namespace=") else "--plugin-mount-namespace=" + os.environ["MNTNS"] for a in c["args"]]
    print("    podagent: --plugin-mount-namespace=%s (root cannot open /proc/1/ns/mnt on this node)" % os.environ["MNTNS"], file=sys.stderr)
out = ds
if os.environ["N2PID"]:
    # The harness node 2 shares this machine and its host network: the shipped DaemonSet
    # there would take node 1 metrics port and containerd. It runs as a twin DaemonSet
    # pinned to node 2: its port 9658 (kactus-endpoints has 9649), its containerd, its mount namespace.
    import copy
    node2 = os.environ["NODE2"]
    spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": [node2]}]}]}}}
    twin = copy.deepcopy(ds); t = twin["spec"]["template"]; ts = t["spec"]; tc = ts["containers"][0]
    twin["metadata"]["name"] = "podagent-node2"
    for labels in (twin["metadata"]["labels"], twin["spec"]["selector"]["matchLabels"], t["metadata"]["labels"]):
        labels["app"] = "podagent-node2"
    del ts["affinity"]
    ts["nodeSelector"] = {"kubernetes.io/hostname": node2}
    ts["volumes"] = [v for v in ts["volumes"] if v["name"] != "e2e-cri"] + [{"name": "e2e-cri", "hostPath": {"path": "/run/harness2", "type": "Directory"}}]
    tc["volumeMounts"] = [m for m in tc["volumeMounts"] if m["name"] != "e2e-cri"] + [{"name": "e2e-cri", "mountPath": "/run/harness2"}]
    def arg(a):
        if a.startswith("--metrics-addr="): return "--metrics-addr=127.0.0.1:9658"
        if a.startswith("--cri-socket="): return None
        if a.startswith("--plugin-mount-namespace="): return "--plugin-mount-namespace=/proc/%s/ns/mnt" % os.environ["N2PID"]
        return a
    tc["args"] = [b for b in map(arg, tc["args"]) if b] + ["--cri-socket=unix:///run/harness2/containerd.sock"]
    for probe in ("livenessProbe", "readinessProbe"):
        tc[probe]["httpGet"]["port"] = 9658
    tc["ports"] = [{"name": "health", "containerPort": 9658, "protocol": "TCP"}]
    out = {"apiVersion": "v1", "kind": "List", "items": [ds, twin]}
    print("    podagent on %s: the twin DaemonSet podagent-node2 (port 9658, its containerd and mount namespace)" % node2, file=sys.stderr)
json.dump(out, sys.stdout)'
}
podagent_ds 2>"$RUN/podagent-ds.note" >"$RUN/podagent-ds.json"; cat "$RUN/podagent-ds.note"
check "kubectl apply -f manifests/podagent-serviceaccount-and-rbac.yaml -f manifests/podagent-ds.yaml (as above)" \
    k apply -f manifests/podagent-serviceaccount-and-rbac.yaml -f "$RUN/podagent-ds.json"
check "the podagent DaemonSet is rolled out" k -n kube-system rollout status ds/podagent --timeout=120s
[ -n "$N2PID" ] && check "and its twin on $NODE2" k -n kube-system rollout status ds/podagent-node2 --timeout=120s
restarts() { kn get pod "$1" -o jsonpath='{.status.containerStatuses[0].restartCount}/{.status.containerStatuses[0].containerID}'; }
before=$(restarts app1)
t0=$(date +%s.%N)
kn annotate pod app1 --overwrite networks='[ { "name": "green" }, { "name": "blue" }, { "name": "data" } ]' >/dev/null
check "net8d777f385d3d (data) appears in running app1" until_ok 60 has_dev app1 net8d777f385d3d
if has_dev app1 net8d777f385d3d; then echo yes; else echo no; fi >"$RUN/appeared"
[ "$(cat "$RUN/appeared")" = yes ] && echo "    appeared within $(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{printf "%.2f", a-b}') s of the annotation (polled by kubectl exec)"
check "app1 was not restarted (restarts/container: $before)" test "$(restarts app1)" = "$before"
has_data_status() { status_is app1 "assert any(e['interface']=='net8d777f385d3d' and e['name']=='$NS/data' for e in s), s"; }
check "app1's network-status lists $NS/data" until_ok 30 has_data_status
gone() { ! has_dev "$1" "$2"; }
no_data_status() { status_is app1 "assert not any(e['interface']=='net8d777f385d3d' for e in s), s"; }
if [ "$(cat "$RUN/appeared")" = yes ]; then
    t0=$(date +%s.%N)
    kn annotate pod app1 --overwrite networks='[ { "name": "green" }, { "name": "blue" } ]' >/dev/null
    check "net8d777f385d3d goes away when data leaves the annotation" until_ok 60 gone app1 net8d777f385d3d
    echo "    gone within $(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN{printf "%.2f", a-b}') s of the annotation (polled by kubectl exec)"
    check "app1 still was not restarted" test "$(restarts app1)" = "$before"
    check "app1's network-status no longer lists data" until_ok 30 no_data_status
    check "data's lease was released" test "$(leases data)" = 0
else
    # A device never made cannot be seen to go: the failure is counted once, above.
    kn annotate pod app1 --overwrite networks='[ { "name": "green" }, { "name": "blue" } ]' >/dev/null
    skip "unplugging data: it never appeared"
fi

# ---- 5. a Service on a secondary network
# Seed 000's Service applied unchanged (spec.selector + the networks annotation): the webhook
# moves its selector, kactus-endpoints publishes the mp1 addresses only (Endpoints on 1.20,
# EndpointSlices from 1.21), and applying it again changes nothing.
# ---- 4b. the fast path (issue 25): kactus asks podagent, never waits for it
say "the fast path: pods start with podagent answering, and while podagent is rolled and killed"
podagent_metric() { python3 -c "
import urllib.request,sys
for l in urllib.request.urlopen('http://127.0.0.1:9648/metrics', timeout=3).read().decode().splitlines():
    if l.split(' ')[0]=='$1': print(l.split(' ')[1]); break
else: print(0)" 2>/dev/null || echo 0; }
answers_before=$(podagent_metric podagent_fastpath_answers_total)
pod fp1 networks '[ { "name": "green" }, { "name": "blue" } ]' | kn apply -f - >/dev/null
check "fp1 is Ready with green and blue" until_ok 90 all_ready fp1
check "fp1 has net9f27410725ab and net48d6215903df" has_devs fp1 net9f27410725ab net48d6215903df
answered() { [ "$(podagent_metric podagent_fastpath_answers_total | cut -d. -f1)" -gt "${answers_before%%.*}" ]; }
check "podagent answered kactus for it (podagent_fastpath_answers_total grew)" answered
no_fallback() { ! grep -q "fast path: pod $NS/fp1: reading the apiserver in-process" /var/log/kactus/kactus.log; }
check "kactus took no in-process path for fp1 (its log says no fallback)" no_fallback
k -n kube-system rollout restart ds/podagent >/dev/null
for i in 1 2 3 4; do pod "fproll$i" networks '[ { "name": "green" }, { "name": "blue" } ]' | kn apply -f - >/dev/null; sleep 1; done
k -n kube-system delete pod -l app=podagent --wait=false >/dev/null 2>&1
for i in 5 6; do pod "fproll$i" networks '[ { "name": "green" }, { "name": "blue" } ]' | kn apply -f - >/dev/null; done
check "podagent rolled and its pod killed" k -n kube-system rollout status ds/podagent --timeout=120s
check "all six pods created meanwhile are Ready" until_ok 120 all_ready fproll1 fproll2 fproll3 fproll4 fproll5 fproll6
every_pod_has_both() { local p; for p in fproll1 fproll2 fproll3 fproll4 fproll5 fproll6; do has_devs "$p" net9f27410725ab net48d6215903df || return 1; done; }
check "each has exactly what its annotation names (green and blue)" every_pod_has_both
echo "    fallbacks logged meanwhile: $(grep -c 'fast path: pod '"$NS"'/fproll' /var/log/kactus/kactus.log)"
delete_pods fp1 fproll1 fproll2 fproll3 fproll4 fproll5 fproll6

say "seed scenario 5: Service hello1 on mep/mp1 through kactus-endpoints, as the seed wrote it"
check "kubectl apply -f manifests/endpoints-controller.yaml" k apply -f manifests/endpoints-controller.yaml
if [ -n "${endpoints_on_host_network:-}" ]; then
    check "kactus-endpoints on the host network (the apiserver listens on the node's loopback only)" \
        k -n kube-system patch deploy kactus-endpoints --type=strategic \
        -p '{"spec":{"replicas":1,"template":{"spec":{"hostNetwork":true,"dnsPolicy":"ClusterFirstWithHostNet"}}}}'
fi
check "kactus-endpoints is rolled out" k -n kube-system rollout status deploy/kactus-endpoints --timeout=120s
webhook_ca() { [ -n "$(k get mutatingwebhookconfiguration kactus-endpoints -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]; }
check "kactus-endpoints put its CA into the webhook configuration" until_ok 60 webhook_ca
ip link add kte2e-mp1a type veth peer name kte2e-mp1b 2>/dev/null; ip link set kte2e-mp1a up; ip link set kte2e-mp1b up
k create namespace mep >/dev/null 2>&1
cat <<YAML | k apply -f - >/dev/null
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: mp1, namespace: mep}
spec:
  config: '{"cniVersion": "0.3.0", "type": "macvlan", "master": "kte2e-mp1a", "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": "200.1.1.0/24", "dataDir": "$IPAM_DIR"}}'
YAML
for i in 1 2; do
    pod "hello$i" k8s.v1.cni.cncf.io/networks mep/mp1 \
        | sed "s/namespace: $NS/namespace: mep/; s/kactus-e2e: \"true\"/app: hello/; s/^\(      imagePullPolicy: Never\)$/\1\n      ports: [{name: http, containerPort: 80}]/"
done | k apply -f - >/dev/null
hello_ready() { [ "$(k -n mep get pods -l app=hello -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}')" = "True True" ]; }
check "the hello pods are Ready" until_ok 120 hello_ready
SEED_SVC=$RUN/hello1-seed.yaml
cat >"$SEED_SVC" <<'YAML'
apiVersion: v1
kind: Service
metadata:
  name: hello1
  annotations:
    k8s.v1.cni.cncf.io/networks: mep/mp1
spec:
  selector:
    app: hello
  ports:
  - protocol: TCP
    port: 80
    targetPort: http
YAML
check "kubectl apply -n mep -f <seed 000's Service, unchanged>" k apply -n mep -f "$SEED_SVC"
no_selector() { [ -z "$(k -n mep get svc hello1 -o jsonpath='{.spec.selector}')" ] && [ -n "$(k -n mep get svc hello1 -o jsonpath='{.metadata.annotations.kactus\.io/selector}')" ]; }
check "hello1 is stored without spec.selector (kube-controller-manager publishes nothing for it)" until_ok 30 no_selector
mp1_addresses() { k -n mep get pods -l app=hello -o jsonpath='{.items[*].metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}' | grep -o '"200\.1\.1\.[0-9]*"' | tr -d '"' | sort | xargs; }
if k api-versions | grep -qx discovery.k8s.io/v1; then
    published() { k -n mep get endpointslices -l kubernetes.io/service-name=hello1 -o jsonpath='{.items[*].endpoints[*].addresses[*]}' | tr ' ' '\n' | sort | xargs; }
    what="EndpointSlices"
else
    published() { k -n mep get endpoints hello1 -o jsonpath='{.subsets[*].addresses[*].ip}' | tr ' ' '\n' | sort | xargs; }
    what="Endpoints (kubectl get ep)"
fi
only_mp1() { local want; want=$(mp1_addresses); [ -n "$want" ] && [ "$(published)" = "$want" ]; }
check "hello1's $what hold the hello pods' mp1 addresses and nothing else" until_ok 60 only_mp1
k -n mep get endpoints hello1 2>/dev/null | sed 's/^/    /'
rv=$(k -n mep get svc hello1 -o jsonpath='{.metadata.resourceVersion}')
k apply -n mep -f "$SEED_SVC" >/dev/null 2>&1
check "applying the same file again changes nothing (resourceVersion $rv)" test "$(k -n mep get svc hello1 -o jsonpath='{.metadata.resourceVersion}')" = "$rv"
sleep 3
check "nothing alternates: still only the mp1 addresses" only_mp1
echo "    events: $(k -n mep get events --field-selector involvedObject.name=hello1 -o jsonpath='{.items[*].reason}')"

# ---- 5b. the ClusterIP over mp1 with no node on mp1: podagent's in-pod proxy (seed 003's
# multus-service), and MultiNetworkPolicy on mp1 enforced in the pods
say "seed 003: a ClusterIP served inside the pods on mp1 (no node on mp1), and a MultiNetworkPolicy on mp1"
for i in 1 2; do k -n mep exec "hello$i" -- setsid nc -ll -p 80 -e /bin/hostname </dev/null >/dev/null 2>&1 & done
sleep 1
cat <<'YAML' | k apply -n mep -f - >/dev/null
apiVersion: v1
kind: Service
metadata:
  name: hello-proxy
  labels: {service.kubernetes.io/service-proxy-name: kactus}
  annotations: {k8s.v1.cni.cncf.io/networks: mep/mp1}
spec:
  selector: {app: hello}
  ports: [{protocol: TCP, port: 8080, targetPort: http}]
YAML
pod client k8s.v1.cni.cncf.io/networks mep/mp1 | sed "s/namespace: $NS/namespace: mep/" | k apply -f - >/dev/null
client_ready() { [ "$(k -n mep get pod client -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
check "the client pod on mp1 is Ready" until_ok 120 client_ready
vip=$(k -n mep get svc hello-proxy -o jsonpath='{.spec.clusterIP}')
ask_vip() { k -n mep exec client -- nc -w 2 "$vip" 8080 </dev/null 2>/dev/null | grep -q hello; }
check "the client reaches ClusterIP $vip:8080 through its own netns (DNAT to a hello pod's mp1 address)" until_ok 60 ask_vip
both_served() { local seen="" i; for i in $(seq 1 20); do seen="$seen $(k -n mep exec client -- nc -w 2 "$vip" 8080 </dev/null 2>/dev/null)"; done; echo "$seen" | grep -q hello1 && echo "$seen" | grep -q hello2; }
check "both hello pods answer over the ClusterIP (random over the ready endpoints)" both_served
vip_route() { k -n mep exec client -- ip route get "$vip" | grep -q "dev net48d54f43c30a"; }
check "the client's route to the ClusterIP leaves by its mp1 device" vip_route
# reaches CLIENT NAME: a connection from CLIENT to the ClusterIP is answered by NAME (tries 30).
reaches() { local i; for i in $(seq 1 30); do k -n mep exec "$1" -- nc -w 2 "$vip" 8080 </dev/null 2>/dev/null | grep -qx "$2" && return 0; done; return 1; }
if [ -n "$NODE2" ]; then
    say "two nodes: a hello pod and a client pod on $NODE2, the same mp1"
    { pod hello3 k8s.v1.cni.cncf.io/networks mep/mp1 \
        | sed "s/namespace: $NS/namespace: mep/; s/kactus-e2e: \"true\"/app: hello/; s/^\(      imagePullPolicy: Never\)$/\1\n      ports: [{name: http, containerPort: 80}]/" | to_node2
      pod client2 k8s.v1.cni.cncf.io/networks mep/mp1 | sed "s/namespace: $NS/namespace: mep/" | to_node2; } | k apply -f - >/dev/null
    n2_ready() { [ "$(k -n mep get pod hello3 client2 -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}')" = "True True" ]; }
    check "hello3 and client2 are Ready on $NODE2" until_ok 120 n2_ready
    check "they run on $NODE2" test "$(k -n mep get pod hello3 client2 -o jsonpath='{.items[*].spec.nodeName}')" = "$NODE2 $NODE2"
    k -n mep exec hello3 -- setsid nc -ll -p 80 -e /bin/hostname </dev/null >/dev/null 2>&1 &
    sleep 1
    check "hello1's $what now hold hello3's mp1 address too (a pod on $NODE2), still nothing else" until_ok 60 only_mp1
    check "the client on $NODE reaches hello3 on $NODE2 through the ClusterIP" reaches client hello3
    check "client2 on $NODE2 reaches hello1 on $NODE through the ClusterIP (served in its netns by $NODE2's podagent)" reaches client2 hello1
    n2_route() { k -n mep exec client2 -- ip route get "$vip" | grep -q "dev net48d54f43c30a"; }
    check "client2's route to the ClusterIP leaves by its mp1 device" n2_route
fi
hello1_mp1=$(k -n mep get pod hello1 -o jsonpath='{.status.conditions[?(@.type=="kactus.io/attachments")].message}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ips"][0].split("/")[0])' 2>/dev/null)
ask_hello1() { k -n mep exec client -- nc -w 2 "$hello1_mp1" 80 </dev/null 2>/dev/null | grep -q hello1; }
check "the client reaches hello1 on mp1 directly (${hello1_mp1:-no address}:80), before any policy" until_ok 30 ask_hello1
if k apply -f manifests/multi-networkpolicy-crd.yaml >/dev/null 2>&1 && until_ok 30 k get multi-networkpolicies -A >/dev/null 2>&1; then
    # podagent started before the CRD existed: it finds it by asking discovery again (every
    # 30 s by default), no restart.
    cat <<'YAML' | k apply -n mep -f - >/dev/null
apiVersion: k8s.cni.cncf.io/v1beta1
kind: MultiNetworkPolicy
metadata:
  name: hello-from-nobody
  annotations: {k8s.v1.cni.cncf.io/policy-for: mp1}
spec:
  podSelector: {matchLabels: {app: hello}}
  policyTypes: [Ingress]
YAML
    denied() { ! ask_hello1 && ! k -n mep exec client -- nc -w 2 "$vip" 8080 </dev/null 2>/dev/null | grep -q hello; }
    check "a MultiNetworkPolicy isolating the hello pods on mp1 stops the client (directly and through the ClusterIP; podagent found the CRD made after it started, not restarted)" until_ok 90 denied
    applied_metric() { python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9648/metrics', timeout=3).read().decode())" \
        | grep -q '^podagent_policy_applied{namespace="mep",pod="hello1",device="net48d54f43c30a",network="mep/mp1",direction="ingress",policy="mep/hello-from-nobody"} 1'; }
    check "podagent's /metrics names the policy isolating hello1's mp1 device (podagent_policy_applied)" until_ok 30 applied_metric
    if [ -n "$NODE2" ]; then
        hello3_mp1=$(k -n mep get pod hello3 -o jsonpath='{.status.conditions[?(@.type=="kactus.io/attachments")].message}' | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ips"][0].split("/")[0])' 2>/dev/null)
        n2_denied() { [ -n "$hello3_mp1" ] && ! k -n mep exec client2 -- nc -w 2 "$hello3_mp1" 80 </dev/null 2>/dev/null | grep -q hello3; }
        check "on $NODE2 too: the policy stops client2 reaching hello3 on mp1 (${hello3_mp1:-no address}:80), enforced by $NODE2's podagent" until_ok 60 n2_denied
    fi
    eth0_still() { local ip; ip=$(k -n mep get pod hello1 -o jsonpath='{.status.podIP}'); k -n mep exec client -- ping -c 1 -W 2 "$ip" >/dev/null 2>&1; }
    check "eth0 is not governed: the client still pings hello1 on the cluster network" eth0_still
    k -n mep delete multi-networkpolicy hello-from-nobody >/dev/null
    check "deleting the policy lets the client in again" until_ok 60 ask_hello1
    check "and through the ClusterIP" until_ok 60 ask_vip
    if [ -n "$NODE2" ]; then
        check "with the policy gone, client2 on $NODE2 reaches hello3 through the ClusterIP again" reaches client2 hello3
    fi
else
    fail "the MultiNetworkPolicy CRD could not be applied"
fi
if [ -n "$NODE2" ]; then
    k -n mep delete pod hello3 --wait=true --timeout=120s >/dev/null 2>&1
    check "hello3 deleted: hello1's $what hold the two hello pods on $NODE only" until_ok 60 only_mp1
    # never_hello3: ten connections in a row, every one answered, none by hello3.
    never_hello3() { local i out; for i in $(seq 1 10); do out=$(k -n mep exec client -- nc -w 2 "$vip" 8080 </dev/null 2>/dev/null); [ -n "$out" ] && [ "$out" != hello3 ] || return 1; done; }
    check "the ClusterIP then answers from $NODE's hello pods only, every time" until_ok 60 never_hello3
fi
k -n mep delete svc hello-proxy >/dev/null
no_proxy_table() { ! k -n mep exec client -- ip route get "$vip" 2>/dev/null | grep -q "dev net48d54f43c30a"; }
check "deleting the Service takes its route out of the client pod" until_ok 60 no_proxy_table
k delete namespace mep --wait=true --timeout=120s >/dev/null 2>&1
if [ -n "$N2PID" ]; then
    n2_cached() { n2 find "$CACHE_DIR" -mindepth 1 2>/dev/null | wc -l; }
    check "nothing of node 2's pods left in $NODE2's kactus cache ($(n2_cached) file(s))" until_ok 30 test "$(n2_cached)" = 0
fi
ip link del kte2e-mp1a 2>/dev/null
k delete -f manifests/endpoints-controller.yaml --ignore-not-found >/dev/null 2>&1

# ---- 6. the installer rolled while pods are created
say "rolling restart of the installer DaemonSet while pods are created"
k -n kube-system rollout restart ds/kactus >/dev/null
for i in 1 2 3 4 5 6; do pod "roll$i" networks '[ { "name": "green" } ]' | kn apply -f - >/dev/null; sleep 1; done
check "the installer DaemonSet rolled" k -n kube-system rollout status ds/kactus --timeout=120s
check "all six pods created during the roll are Ready" until_ok 120 all_ready roll1 roll2 roll3 roll4 roll5 roll6
unauthorized() { kn get events -o jsonpath='{.items[*].message}' | grep -qiE 'unauthorized|forbidden'; }
not_unauthorized() { ! unauthorized; }
check "no Event says Unauthorized or forbidden" not_unauthorized
delete_pods roll1 roll2 roll3 roll4 roll5 roll6 app2

# ---- 7. uninstall
say "uninstall, as README says, with app1 still running on green and blue"
check "kubectl delete -f manifests/podagent-ds.yaml -f manifests/kactus-ds.yaml" \
    k delete -f manifests/podagent-ds.yaml -f manifests/kactus-ds.yaml --wait=true --timeout=120s
[ -n "$N2PID" ] && check "and podagent's twin on $NODE2" k -n kube-system delete ds podagent-node2 --wait=true --timeout=120s
check "kubectl apply -f manifests/kactus-uninstall.yaml" k apply -f manifests/kactus-uninstall.yaml
uninstall_waits_for_app1() { k -n kube-system logs -l app=kactus-uninstall --tail=100 2>/dev/null | grep -q app1; }
check "the uninstaller waits, naming app1 (its attachments' leases need kactus's DEL)" until_ok 60 uninstall_waits_for_app1
check "00-kactus.conflist is still there while app1 runs" test -f "$CONF_DIR/00-kactus.conflist"
delete_pods app1
check "the uninstall DaemonSet is rolled out once app1 is gone" k -n kube-system rollout status ds/kactus-uninstall --timeout=120s
k delete -f manifests/kactus-uninstall.yaml --wait=true --timeout=60s >/dev/null 2>&1
kactus_gone() { [ ! -e "$CONF_DIR/00-kactus.conflist" ] && [ ! -e "$CONF_DIR/kactus.d" ] && [ ! -e "$BIN_DIR/kactus" ] && [ ! -e "$BIN_DIR/node-local" ] && [ ! -e "$CACHE_DIR" ]; }
check "00-kactus.conflist, kactus.d/, $BIN_DIR/kactus, $BIN_DIR/node-local and $CACHE_DIR are gone" kactus_gone
check "the node's own $own_conf is as it was" cmp -s "$RUN/own-conf" "$CONF_DIR/$own_conf"
nothing_left
if [ -n "$N2PID" ]; then
    n2_left() { n2 ls -d "$CONF_DIR/00-kactus.conflist" "$CONF_DIR/kactus.d" "$BIN_DIR/kactus" "$BIN_DIR/node-local" "$CACHE_DIR" 2>/dev/null; }
    n2_gone() { [ -z "$(n2_left)" ]; }
    until_ok 30 n2_gone; N2LEFT=$(n2_left | xargs)
    check "and on $NODE2: its 00-kactus.conflist, kactus.d/, kactus, node-local and cache are gone${N2LEFT:+ (left: $N2LEFT)}" n2_gone
fi
# No pod network namespace on this machine (containerd names them cni-*) keeps a kactus table
# (proxy or policy) or a ClusterIP route (proto 107).
no_data_plane_left() {
    local ns left=0
    for ns in $(ip netns list | awk '$1 ~ /^cni-/ {print $1}'); do
        if ip netns exec "$ns" nft list tables 2>/dev/null | grep -q kactus \
            || [ -n "$(ip -n "$ns" route show table all proto 107 2>/dev/null)$(ip -n "$ns" -6 route show table all proto 107 2>/dev/null)" ]; then
            echo "left in $ns:"; ip netns exec "$ns" nft list tables 2>/dev/null; ip -n "$ns" route show table all proto 107
            left=1
        fi
    done
    return $left
}
check "no pod network namespace on this machine keeps a kactus table or ClusterIP route ($(ip netns list | grep -c '^cni-') looked at)" no_data_plane_left
pod plain networks '[ { "name": "green" } ]' | kn apply -f - >/dev/null
check "a new pod starts on the node's own network" until_ok 120 all_ready plain
only_eth0() { has_dev plain eth0 && ! has_dev plain net9f27410725ab; }
check "it has eth0 and no kactus device" only_eth0
delete_pods plain

echo
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" = 0 ]
