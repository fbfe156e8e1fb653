#!/bin/sh
# The edit behind add-/del-network-annotation.sh:
#   edit-network-annotation.sh add|del POD NETWORK NAMESPACE
# Edits the NPWG annotation (k8s.v1.cni.cncf.io/networks, comma or JSON list) when the pod
# has one, since it wins over kactus's; else kactus's `networks` JSON list. The merge patch
# carries the resourceVersion it was computed from, so a concurrent edit is retried, not lost.
set -eu
op=$1 pod=$2 network=$3 ns=$4
KUBECTL=${KUBECTL:-kubectl}
case $network in
  */*) net_ns=${network%%/*} net_name=${network#*/} ;;
  *) net_ns="" net_name=$network ;;
esac
for attempt in 1 2 3 4 5; do
  obj=$($KUBECTL -n "$ns" get pod "$pod" -o json)
  patch=$(printf '%s' "$obj" | jq -c --arg op "$op" --arg ns "$net_ns" --arg name "$net_name" '
    def parse: if . == null or . == "" then []
      elif test("^\\s*\\[") then fromjson
      else split(",") | map(gsub("^\\s+|\\s+$"; "") | select(. != "")
        | split("@") as $a | ($a[0] | split("/")) as $n
        | (if ($n | length) == 2 then {namespace: $n[0], name: $n[1]} else {name: $n[0]} end)
          + (if ($a | length) > 1 then {interface: $a[1]} else {} end))
      end;
    def same: .name == $name and ((.namespace // "") == $ns);
    (.metadata.annotations // {}) as $ann
    | (if $ann["k8s.v1.cni.cncf.io/networks"] != null then "k8s.v1.cni.cncf.io/networks" else "networks" end) as $key
    | ($ann[$key] | parse) as $list
    | (if $op == "add" then
         if any($list[]; same) then $list
         else $list + [{name: $name} + (if $ns != "" then {namespace: $ns} else {} end)] end
       else [$list[] | select(same | not)] end) as $new
    | {metadata: {resourceVersion: .metadata.resourceVersion, annotations: {($key): ($new | tojson)}}}')
  if out=$($KUBECTL -n "$ns" patch pod "$pod" --type merge -p "$patch" 2>&1); then
    echo "$out"
    exit 0
  fi
  case $out in
    *onflict*|*"has been modified"*) echo "pod $ns/$pod changed meanwhile; retrying" >&2 ;;
    *) echo "$out" >&2; exit 1 ;;
  esac
done
echo "pod $ns/$pod: gave up after 5 conflicting edits" >&2
exit 1
