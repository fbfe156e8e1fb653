//! Seed 001's own install: Kaloom's `kaloom.com/v1` `Network` CRD and no
//! NetworkAttachmentDefinition CRD (the apiserver answers 404 to every NAD path), and a
//! cluster migrating from it (some networks as NADs, some as Kaloom `Network`s). The seed's
//! scenario on each: two pods on green and blue ping each other, at one, two and several
//! attachments, hot-plugged, checked, and deleted from a cache and from a damaged one; the
//! apiserver requests an ADD makes stay flat.

mod common;
use common::*;
use serde_json::{json, Value};

const GREEN: &str = "net9f27410725ab";
const BLUE: &str = "net48d6215903df";

/// Which source each network comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cluster {
    /// No NAD CRD: both networks are Kaloom `Network`s.
    KaloomOnly,
    /// Both CRDs: green is a NAD, blue a Kaloom `Network`.
    Mixed,
}

/// green on a bridge, blue on macvlan over a veth master made in the node netns, each from
/// the source `cluster` gives it.
fn green_blue(sb: &Sandbox, cluster: Cluster) {
    sb.node.ip(&["link", "add", "blue0", "type", "veth", "peer", "name", "blue0p"]);
    sb.node.ip(&["link", "set", "blue0", "up"]);
    sb.node.ip(&["link", "set", "blue0p", "up"]);
    let green = json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "green-br",
        "ipam": {"type": "host-local", "subnet": "192.168.42.0/24", "rangeStart": "192.168.42.10", "dataDir": sb.ipam_dir()}});
    let blue = json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "blue0", "mode": "bridge",
        "ipam": {"type": "host-local", "subnet": "192.168.43.0/24", "rangeStart": "192.168.43.10", "dataDir": sb.ipam_dir()}});
    match cluster {
        Cluster::KaloomOnly => {
            sb.without_nad_crd();
            sb.apply(&Sandbox::kaloom_network_yaml("default", "green", &green));
        }
        Cluster::Mixed => sb.apply(&Sandbox::nad_yaml("default", "green", &green)),
    }
    sb.apply(&Sandbox::kaloom_network_yaml("default", "blue", &blue));
}

fn first_addr(ns: &Netns, dev: &str) -> String {
    let addrs = ns.addrs(dev);
    assert_eq!(addrs.len(), 1, "{dev} in {}: {addrs:?}", ns.name);
    addrs[0].split('/').next().unwrap_or_default().to_string()
}

/// GETs and LISTs the apiserver answered so far (a 404 for an unserved resource included).
fn reads(sb: &Sandbox) -> u64 {
    let stats = sb.api().stats();
    ["get", "list"].iter().map(|v| stats.per_verb.get(*v).copied().unwrap_or(0)).sum()
}

/// `CNI_ARGS` for pod `name` with the UID the apiserver gave it, as kubelet passes them.
fn args_of(sb: &Sandbox, name: &str) -> String {
    let uid = sb.api().store().get("pods", "default", name).expect("pod")["metadata"]["uid"].clone();
    pod_args("default", name).replace(&format!("uid-{name}"), uid.as_str().unwrap_or_default())
}

/// The kactus `networks` annotation naming `names`.
fn kactus_networks(names: &[&str]) -> Value {
    let list: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
    json!({"networks": Value::Array(list).to_string()})
}

/// The seed's scenario on `cluster` with pods asking for `names`: both pods get every
/// device, ping each other over green and blue, and DEL leaves nothing, the
/// second pod's DEL from a cache damaged beyond its intent records (rebuilt from the
/// annotation and the networks, read from the same sources). Each ADD, and that DEL after
/// reading the pod, reads the networks in `want_reads` requests, however many attachments.
fn two_pods_ping(cluster: Cluster, names: &[&str], want_reads: u64) {
    let case = format!("{cluster:?} {names:?}");
    let mut sb = Sandbox::new();
    green_blue(&sb, cluster);
    let ann = kactus_networks(names);
    let pods = ["app1", "app2"];
    for name in pods {
        sb.apply(&Sandbox::pod_yaml("default", name, &ann));
    }
    let ps = [sb.pod("app1"), sb.pod("app2")];
    let mut conf = sb.kactus_conf();
    // The runtime passes the annotations (containerd, CRI-O): the reads are the networks'.
    conf["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": ann});
    for (p, name) in ps.iter().zip(pods) {
        let before = reads(&sb);
        sb.kactus("ADD", &format!("c-{name}"), Some(&sb.pods[*p].path), "eth0", &args_of(&sb, name), &conf).ok();
        assert_eq!(reads(&sb) - before, want_reads, "{case}: apiserver reads for {name}'s ADD");
        assert_eq!(sb.pod_devices(*p).len(), names.len() + 1, "{case}: {name}: {:?}", sb.pod_devices(*p));
    }
    let (a1, a2) = (&sb.pods[ps[0]], &sb.pods[ps[1]]);
    for (dev, prefix) in [(GREEN, "192.168.42."), (BLUE, "192.168.43.")] {
        if !names.iter().any(|n| attachment_device(n) == dev) {
            continue;
        }
        let (from, to) = (first_addr(a1, dev), first_addr(a2, dev));
        assert!(from.starts_with(prefix) && to.starts_with(prefix), "{case}: {dev}: {from} {to}");
        assert!(a1.ping(&to), "{case}: app1 -> app2 over {dev} ({to})");
        assert!(a2.ping(&from), "{case}: app2 -> app1 over {dev} ({from})");
    }
    assert_eq!(sb.leases().len(), 2 * (names.len() + 1), "{case}: {:?}", sb.leases());

    sb.kactus("DEL", "c-app1", Some(&a1.path), "eth0", &args_of(&sb, "app1"), &conf).ok();
    assert!(sb.pod_devices(ps[0]).is_empty(), "{case}: {:?}", sb.pod_devices(ps[0]));
    // app2's cache is damaged beyond its intent records: DEL rebuilds every call.
    let dir = sb.cache_dir().join("c-app2");
    for file in std::fs::read_dir(&dir).expect("app2's cache").flatten() {
        std::fs::write(file.path(), b"{\"trunc").expect("damage");
    }
    let args = args_of(&sb, "app2");
    let before = reads(&sb);
    sb.kactus("DEL", "c-app2", Some(&a2.path), "eth0", &args, &conf).ok();
    assert_eq!(reads(&sb) - before, 1 + want_reads, "{case}: the pod, then its networks as an ADD reads them");
    sb.assert_nothing_left(ps[1], &case);
    assert!(sb.pod_devices(ps[0]).is_empty(), "{case}");
}

fn attachment_device(name: &str) -> &'static str {
    match name {
        "green" => GREEN,
        _ => BLUE,
    }
}

/// Seed 001's own install: one network is a GET of its NAD (404) and of its Kaloom `Network`;
/// several are a LIST of NADs (404: not served) and one LIST of Kaloom `Network`s.
#[test]
fn on_seed_001s_own_install_two_pods_on_kaloom_networks_ping_each_other() {
    two_pods_ping(Cluster::KaloomOnly, &["green"], 2);
    two_pods_ping(Cluster::KaloomOnly, &["green", "blue"], 2);
    two_pods_ping(Cluster::KaloomOnly, &["green", "blue", "green", "blue", "blue"], 2);
}

/// A cluster migrating from Kaloom's kactus: green is a NAD, blue a Kaloom `Network`. One
/// network: its NAD's GET; several: the NAD LIST, then blue's Kaloom `Network` (a GET, the
/// only network the LIST did not hold).
#[test]
fn with_one_network_a_nad_and_one_a_kaloom_network_two_pods_ping_each_other() {
    two_pods_ping(Cluster::Mixed, &["green"], 1);
    two_pods_ping(Cluster::Mixed, &["blue"], 2);
    two_pods_ping(Cluster::Mixed, &["green", "blue"], 2);
    two_pods_ping(Cluster::Mixed, &["blue", "green", "blue", "green"], 2);
}

/// podagent hot-plugs a Kaloom `Network` into a running pod on seed 001's install (the
/// dynamic ADD reads that one network), and deletes it again.
#[test]
fn a_kaloom_network_is_hot_plugged_without_the_nad_crd() {
    let mut sb = Sandbox::new();
    green_blue(&sb, Cluster::KaloomOnly);
    sb.apply(&Sandbox::pod_yaml("default", "app1", &kactus_networks(&["green"])));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    let args = pod_args("default", "app1");
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    let patch = json!({"metadata": {"annotations": kactus_networks(&["green", "blue"])}});
    sb.api().store().merge_patch("pods", "default", "app1", &patch).expect("annotate");
    let dynamic = format!("{args};K8S_POD_NETWORK=blue");
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &dynamic, &conf).ok();
    assert!(first_addr(&sb.pods[p], BLUE).starts_with("192.168.43."), "{:?}", sb.pod_devices(p));
    sb.kactus("CHECK", "c-app1", Some(&sb.pods[p].path), "eth0", &dynamic, &conf).ok();
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &dynamic, &conf).ok();
    assert!(!sb.pods[p].has_link(BLUE) && sb.pods[p].has_link(GREEN), "{:?}", sb.pod_devices(p));
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    sb.assert_nothing_left(p, "hot-plugged Kaloom network");
}

/// Neither source has the network: NetworkNotFound (101) naming it, at one and at several
/// attachments, whether the Kaloom `Network`s are listable or not, and eth0 rolled back.
#[test]
fn a_network_neither_source_has_is_network_not_found() {
    for (networks, forbid_list) in
        [(&["nosuch"][..], false), (&["green", "nosuch"], false), (&["green", "nosuch"], true)]
    {
        let case = format!("{networks:?}, Kaloom LIST forbidden: {forbid_list}");
        let mut sb = Sandbox::new();
        green_blue(&sb, Cluster::KaloomOnly);
        if forbid_list {
            sb.api().faults().forbid("list", "networks");
        }
        sb.apply(&Sandbox::pod_yaml("default", "app1", &kactus_networks(networks)));
        let p = sb.pod("app1");
        let args = pod_args("default", "app1");
        let (code, msg) = sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &sb.kactus_conf()).err();
        assert_eq!(code, 101, "{case}: {msg}");
        assert!(msg.contains("default/nosuch"), "{case}: {msg}");
        sb.assert_nothing_left(p, &case);
    }
}
