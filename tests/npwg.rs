//! The NPWG vocabulary end to end: `k8s.v1.cni.cncf.io/networks` selection elements with
//! per-attachment options, checked as an operator would in the pod's network namespace.

mod common;
use common::*;
use kactus::attachment::device_name_for;
use serde_json::{json, Value};

const NPWG: &str = "k8s.v1.cni.cncf.io/networks";

/// The cluster network with a default route via 10.244.0.1 on eth0, so moving it shows.
fn conf_with_default_route(sb: &Sandbox) -> Value {
    let mut conf = sb.kactus_conf();
    conf["delegates"][0]["isDefaultGateway"] = true.into();
    conf
}

/// The seeds' macvlan100 NAD: macvlan over a vlan100 master (a veth in the node netns),
/// static IPAM with the seed's routes, tuning for the MAC.
fn macvlan100(sb: &Sandbox) {
    sb.node.ip(&["link", "add", "vlan100", "type", "veth", "peer", "name", "vlan100p"]);
    sb.node.ip(&["link", "set", "vlan100", "up"]);
    sb.node.ip(&["link", "set", "vlan100p", "up"]);
    let list = json!({"cniVersion": "0.3.1", "plugins": [
        {"type": "macvlan", "capabilities": {"ips": true}, "master": "vlan100", "mode": "bridge",
         "ipam": {"type": "static", "routes": [
             {"dst": "192.168.100.0/24", "gw": "10.158.100.254"},
             {"dst": "10.158.0.0/16", "gw": "10.158.100.254"}]}},
        {"type": "tuning", "capabilities": {"mac": true}}]});
    sb.apply(&Sandbox::nad_yaml("default", "macvlan100", &list));
}

const FE1: &str = r#"[ { "name": "macvlan100", "ips": [ "10.158.100.2/24" ], "mac": "c2:b0:57:49:47:f1",
    "gateway": [ "10.158.100.254" ], "default-route": [ "10.158.100.254" ] } ]"#;

#[test]
fn macvlan100_with_ips_mac_and_default_route_as_the_seed_frontend() {
    let mut sb = Sandbox::new();
    macvlan100(&sb);
    sb.apply(&Sandbox::pod_yaml("default", "fe1", &json!({ NPWG: FE1 })));
    let p = sb.pod("fe1");
    // An IPv6 default route the v4 gateway must leave alone.
    sb.pods[p].ip(&["link", "add", "v6a", "type", "veth", "peer", "name", "v6b"]);
    sb.pods[p].ip(&["link", "set", "v6a", "up"]);
    sb.pods[p].ip(&["-6", "route", "add", "default", "via", "fe80::1", "dev", "v6a"]);
    let conf = conf_with_default_route(&sb);
    let args = pod_args("default", "fe1");
    sb.kactus("ADD", "c-fe1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();

    let dev = device_name_for("macvlan100");
    let pod = &sb.pods[p];
    assert_eq!(pod.addrs(&dev), vec!["10.158.100.2/24"]);
    assert_eq!(pod.mac(&dev), "c2:b0:57:49:47:f1");
    assert_eq!(pod.default_routes("-4"), vec![("10.158.100.254".to_string(), dev.clone())]);
    assert_eq!(pod.default_routes("-6"), vec![("fe80::1".to_string(), "v6a".to_string())], "v6 untouched");
    assert!(pod.addrs("eth0")[0].starts_with("10.244.0."), "eth0 keeps its address");
    assert!(pod.ip(&["route", "show", "192.168.100.0/24"]).contains(&dev), "static IPAM routes stay");

    let status = sb.api().store().get("pods", "default", "fe1").unwrap()["metadata"]["annotations"]
        ["k8s.v1.cni.cncf.io/network-status"]
        .as_str()
        .map(|s| serde_json::from_str::<Value>(s).unwrap())
        .unwrap();
    let entry = status.as_array().unwrap().iter().find(|e| e["interface"] == dev.as_str()).cloned().unwrap();
    assert_eq!(entry["default-route"], json!(["10.158.100.254"]), "{status}");

    sb.kactus("DEL", "c-fe1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    sb.pods[p].ip(&["link", "del", "v6a"]);
    assert!(sb.pod_devices(p).is_empty(), "{:?}", sb.pod_devices(p));
    assert!(sb.leases().is_empty() && sb.cache_files().is_empty());
}

#[test]
fn removing_the_default_route_attachment_gives_eth0_its_default_route_back() {
    let mut sb = Sandbox::new();
    macvlan100(&sb);
    sb.apply(&Sandbox::pod_yaml("default", "fe1", &json!({ NPWG: FE1 })));
    let p = sb.pod("fe1");
    let conf = conf_with_default_route(&sb);
    let args = pod_args("default", "fe1");
    sb.kactus("ADD", "c-fe1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    let dev = device_name_for("macvlan100");
    assert_eq!(sb.pods[p].default_routes("-4"), vec![("10.158.100.254".to_string(), dev)]);

    sb.kactus("DEL", "c-fe1", Some(&sb.pods[p].path), "eth0", &format!("{args};K8S_POD_NETWORK=macvlan100"), &conf)
        .ok();
    assert_eq!(sb.pods[p].default_routes("-4"), vec![("10.244.0.1".to_string(), "eth0".to_string())]);
    sb.kactus("DEL", "c-fe1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert!(sb.pod_devices(p).is_empty());
}
