//! The NPWG vocabulary end to end: `k8s.v1.cni.cncf.io/networks` selection elements with
//! per-attachment options, checked as an operator would in the pod's network namespace.

mod common;
use common::*;
use kactus::attachment::device_name_for;
use serde_json::{json, Value};

const NPWG: &str = "k8s.v1.cni.cncf.io/networks";
const GREEN: &str = "net9f27410725ab";

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
             {"dst": "0.0.0.0/0", "gw": "10.158.100.254"},
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

/// green on a bridge (with DNS in its config, which bridge passes through to its result),
/// blue on macvlan over a veth master in the node netns.
fn green_blue(sb: &Sandbox, namespace: &str) {
    if !sb.node.has_link("blue0") {
        sb.node.ip(&["link", "add", "blue0", "type", "veth", "peer", "name", "blue0p"]);
        sb.node.ip(&["link", "set", "blue0", "up"]);
        sb.node.ip(&["link", "set", "blue0p", "up"]);
    }
    let green = json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "green-br",
        "dns": {"nameservers": ["192.168.42.53"], "search": ["green.example"]},
        "ipam": {"type": "host-local", "subnet": "192.168.42.0/24", "rangeStart": "192.168.42.10", "dataDir": sb.ipam_dir()}});
    let blue = json!({"cniVersion": "0.4.0", "type": "macvlan", "master": "blue0", "mode": "bridge",
        "ipam": {"type": "host-local", "subnet": "192.168.43.0/24", "rangeStart": "192.168.43.10", "dataDir": sb.ipam_dir()}});
    sb.apply(&Sandbox::nad_yaml(namespace, "green", &green));
    sb.apply(&Sandbox::nad_yaml(namespace, "blue", &blue));
}

fn network_status(sb: &Sandbox, namespace: &str, pod: &str) -> Vec<Value> {
    let obj = sb.api().store().get("pods", namespace, pod).unwrap();
    let text = obj["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().expect("network-status");
    serde_json::from_str::<Value>(text).unwrap().as_array().unwrap().clone()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn assert_clean(sb: &Sandbox, pod: usize) {
    assert!(sb.pod_devices(pod).is_empty(), "devices left: {:?}", sb.pod_devices(pod));
    assert!(sb.leases().is_empty(), "leases left: {:?}", sb.leases());
    assert!(sb.cache_files().is_empty(), "cache left: {:?}", sb.cache_files());
}

#[test]
fn the_same_network_twice_gets_two_devices_named_by_repeat() {
    let mut sb = Sandbox::new();
    green_blue(&sb, "default");
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({ NPWG: "green, green" })));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    let args = pod_args("default", "app1");
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    let second = device_name_for("green#1");
    assert_eq!(sb.pod_devices(p).len(), 3, "{:?}", sb.pod_devices(p));
    assert!(sb.pods[p].has_link("net9f27410725ab") && sb.pods[p].has_link(&second), "{:?}", sb.pod_devices(p));
    assert_ne!(sb.pods[p].addrs("net9f27410725ab"), sb.pods[p].addrs(&second));
    let status = network_status(&sb, "default", "app1");
    let green: Vec<&Value> = status.iter().filter(|e| e["name"] == "default/green").collect();
    assert_eq!(green.len(), 2, "{status:?}");
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert_clean(&sb, p);
}

#[test]
fn an_option_no_plugin_declares_fails_with_code_7_naming_it_and_leaves_nothing() {
    let mut sb = Sandbox::new();
    green_blue(&sb, "default");
    sb.apply(&Sandbox::pod_yaml(
        "default",
        "app1",
        &json!({ NPWG: r#"[{"name":"green","ips":["192.168.42.99/24"]}]"# }),
    ));
    let p = sb.pod("app1");
    let out =
        sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &sb.kactus_conf());
    let (code, msg) = out.err();
    assert_eq!(code, 7, "{msg}");
    assert!(msg.contains("\"ips\"") && msg.contains("default/green"), "{msg}");
    assert_clean(&sb, p);
    assert_eq!(pod_events(&sb, "default", "app1"), vec![("Warning".into(), "AttachFailed".into(), msg)]);
}

#[test]
fn network_status_matches_the_devices_in_the_pod_field_by_field() {
    let mut sb = Sandbox::new();
    green_blue(&sb, "default");
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({ NPWG: "green, blue@blue1" })));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    let args = pod_args("default", "app1");
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    let pod = &sb.pods[p];
    let status = network_status(&sb, "default", "app1");
    assert_eq!(status.len(), 3, "{status:?}");
    let green_ip = pod.addrs("net9f27410725ab")[0].clone();
    let events = pod_events(&sb, "default", "app1");
    let added: Vec<&(String, String, String)> = events.iter().filter(|e| e.1 == "AddedInterface").collect();
    assert_eq!(added.len(), 1, "one for the pod's start, naming every device: {events:?}");
    assert_eq!(added[0].0, "Normal");
    let texts: Vec<&str> = added[0].2.split("; ").collect();
    assert_eq!(texts.len(), 3, "one text per device: {events:?}");
    assert!(texts.contains(&format!("Add net9f27410725ab [{green_ip}] from default/green").as_str()), "{events:?}");
    assert_eq!(status[0]["name"], "cluster", "the default network (the master delegate) first");
    assert_eq!(status[0]["default"], true);
    assert_eq!(status.iter().filter(|e| e["default"] == true).count(), 1);
    let interfaces: Vec<String> = status.iter().map(|e| e["interface"].as_str().unwrap().to_string()).collect();
    assert_eq!(sorted(interfaces), sorted(sb.pod_devices(p)), "one entry per device in the pod");
    for e in &status {
        let dev = e["interface"].as_str().unwrap();
        let addrs: Vec<String> = pod.addrs(dev).iter().map(|a| a.split('/').next().unwrap().to_string()).collect();
        assert_eq!(e["ips"], json!(addrs), "ips of {dev}");
        assert_eq!(e["mac"], pod.mac(dev), "mac of {dev}");
        assert!(e["dns"].is_object(), "dns of {dev}: {e}");
    }
    let by_name = |n: &str| status.iter().find(|e| e["name"] == n).cloned().unwrap();
    assert_eq!(by_name("default/green")["interface"], "net9f27410725ab");
    assert_eq!(by_name("default/blue")["interface"], "blue1");
    assert!(by_name("default/green").get("default").is_none());
    assert_eq!(by_name("default/green")["dns"], json!({"nameservers": ["192.168.42.53"], "search": ["green.example"]}));
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert_clean(&sb, p);
}

/// Hot-plugging `green` into a pod that has `mep/green` makes the pod's own `default/green`:
/// a dynamic ADD is a repeat only of that key or network, never of a bare name's match in
/// another namespace (it was answered from mep/green's cache: rc 0, no device, network-status
/// unchanged, and podagent re-planned forever).
#[test]
fn hot_plugging_a_bare_name_beside_another_namespaces_network_of_that_name_makes_it() {
    let mut sb = Sandbox::new();
    green_blue(&sb, "mep");
    green_blue(&sb, "default");
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({ NPWG: "mep/green" })));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    let args = pod_args("default", "app1");
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    let mep_green = device_name_for("mep/green");
    assert!(sb.pods[p].has_link(&mep_green), "{:?}", sb.pod_devices(p));

    let patch = json!({"metadata": {"annotations": { NPWG: "mep/green, green" }}});
    sb.api().store().merge_patch("pods", "default", "app1", &patch).expect("annotate");
    let dynamic = format!("{args};K8S_POD_NETWORK=green");
    let r = sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &dynamic, &conf).ok();
    assert!(r["interfaces"].as_array().unwrap().iter().any(|i| i["name"] == GREEN), "{r}");
    assert_eq!(sorted(sb.pod_devices(p)), sorted(vec!["eth0".into(), mep_green.clone(), GREEN.into()]));
    let names: Vec<String> = network_status(&sb, "default", "app1")
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(names.contains(&"default/green".to_string()) && names.contains(&"mep/green".to_string()), "{names:?}");

    // Its DEL removes the pod's own green, not mep's.
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &dynamic, &conf).ok();
    assert_eq!(sorted(sb.pod_devices(p)), sorted(vec!["eth0".into(), mep_green]));
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert_clean(&sb, p);
}

#[test]
fn namespace_isolation_refuses_another_namespaces_network_but_not_a_global_one() {
    let mut sb = Sandbox::new();
    green_blue(&sb, "team-b");
    green_blue(&sb, "default");
    sb.apply(&Sandbox::pod_yaml("team-a", "app1", &json!({ NPWG: "team-b/green" })));
    sb.apply(&Sandbox::pod_yaml("team-a", "app2", &json!({ NPWG: "default/green" })));
    let (p1, p2) = (sb.pod("app1"), sb.pod("app2"));
    let mut conf = sb.kactus_conf();
    conf["namespaceIsolation"] = true.into();
    let (code, msg) =
        sb.kactus("ADD", "c-app1", Some(&sb.pods[p1].path), "eth0", &pod_args("team-a", "app1"), &conf).err();
    assert_eq!(code, 102, "{msg}");
    assert!(msg.contains("team-a/app1") && msg.contains("team-b/green") && msg.contains("namespaceIsolation"), "{msg}");
    assert_clean(&sb, p1);

    // default is a global namespace unless configured otherwise.
    let args2 = pod_args("team-a", "app2");
    sb.kactus("ADD", "c-app2", Some(&sb.pods[p2].path), "eth0", &args2, &conf).ok();
    assert!(sb.pods[p2].has_link(&device_name_for("default/green")));
    sb.kactus("DEL", "c-app2", Some(&sb.pods[p2].path), "eth0", &args2, &conf).ok();
    assert_clean(&sb, p2);
}

/// DEL rebuilding a damaged cache from the pod's annotation checks what an ADD checks: the
/// tenant rewrote the annotation after the ADD to name another namespace's network on green's
/// device, and that network's delegate must not run (as root, with team-b's config) for it.
#[test]
fn a_rebuilt_call_passes_namespace_isolation_as_an_add_would() {
    let mut sb = Sandbox::new();
    green_blue(&sb, "default");
    let log = recording_plugin(&mut sb, "bridge");
    let foreign = json!({"cniVersion": "1.0.0", "type": "rec-bridge", "bridge": "teamb-br",
        "ipam": {"type": "host-local", "subnet": "192.168.99.0/24", "dataDir": sb.ipam_dir()}});
    sb.apply(&Sandbox::nad_yaml("team-b", "green", &foreign));
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({ NPWG: "green, blue" })));
    let p = sb.pod("app1");
    let mut conf = sb.kactus_conf();
    conf["namespaceIsolation"] = true.into();
    // The UID the apiserver gave the pod, as kubelet passes it (DEL rebuilds only for that pod).
    let uid = sb.api().store().get("pods", "default", "app1").expect("pod")["metadata"]["uid"].clone();
    let args = pod_args("default", "app1").replace("uid-app1", uid.as_str().unwrap_or_default());
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    // The tenant names team-b's green on green's device, then the cache is damaged beyond
    // its intent records.
    let patch = json!({"metadata": {"annotations": { NPWG: format!("team-b/green@{GREEN}, blue") }}});
    sb.api().store().merge_patch("pods", "default", "app1", &patch).expect("annotate");
    for file in std::fs::read_dir(sb.cache_dir().join("c-app1")).expect("cache").flatten() {
        std::fs::write(file.path(), b"{\"trunc").expect("damage");
    }
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert!(recorded_calls(&log).is_empty(), "team-b's delegate ran: {:?}", recorded_calls(&log));
    assert!(sb.pod_devices(p).is_empty(), "green's device is removed all the same: {:?}", sb.pod_devices(p));
    // green's lease (its network no longer known) is reported; eth0's and blue's released.
    let leases = sb.leases();
    assert!(leases.len() == 1 && leases[0].starts_with("green/"), "{leases:?}");
    let events = pod_events(&sb, "default", "app1");
    assert!(events.iter().any(|e| e.1 == "LeaseNotReleased" && e.2.contains(GREEN)), "{events:?}");
    assert!(sb.cache_files().is_empty(), "{:?}", sb.cache_files());
}

#[test]
fn the_npwg_annotation_wins_over_the_kactus_one() {
    let mut sb = Sandbox::new();
    green_blue(&sb, "default");
    let ann = json!({ NPWG: "green", "networks": r#"[{"name":"blue"}]"# });
    sb.apply(&Sandbox::pod_yaml("default", "app1", &ann));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    let args = pod_args("default", "app1");
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert_eq!(sorted(sb.pod_devices(p)), vec!["eth0", "net9f27410725ab"]);
    let log = std::fs::read_to_string(sb.path("kactus.log")).unwrap_or_default();
    assert!(log.contains(r#"using "k8s.v1.cni.cncf.io/networks""#), "a warning is logged: {log}");
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert_clean(&sb, p);
}

#[test]
fn gc_removes_a_stale_containers_devices_leases_and_cache_and_keeps_the_live_one() {
    let mut sb = Sandbox::new();
    green_blue(&sb, "default");
    for name in ["app1", "app2"] {
        sb.apply(&Sandbox::pod_yaml("default", name, &json!({ NPWG: "green" })));
    }
    let (p1, p2) = (sb.pod("app1"), sb.pod("app2"));
    let conf = sb.kactus_conf();
    for (p, name) in [(p1, "app1"), (p2, "app2")] {
        sb.kactus("ADD", &format!("c-{name}"), Some(&sb.pods[p].path), "eth0", &pod_args("default", name), &conf).ok();
    }
    assert_eq!(sb.leases().len(), 4);

    // The runtime lost track of app1 (its DEL never came): only app2 is valid.
    let mut gc_conf = conf.clone();
    gc_conf["cniVersion"] = "1.1.0".into();
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": "c-app2", "ifname": "eth0"}]);
    sb.kactus("GC", "", None, "", "", &gc_conf).ok();

    assert!(sb.pod_devices(p1).is_empty(), "app1 left: {:?}", sb.pod_devices(p1));
    assert_eq!(sorted(sb.pod_devices(p2)), vec!["eth0", "net9f27410725ab"]);
    assert_eq!(sb.leases().len(), 2, "only app2's leases stay: {:?}", sb.leases());
    assert!(sb.cache_files().iter().all(|f| !f.contains("c-app1")), "{:?}", sb.cache_files());
    assert!(sb.cache_files().iter().any(|f| f == "c-app2"), "{:?}", sb.cache_files());

    // disableGC makes GC a no-op, even with an empty list.
    let mut off = gc_conf.clone();
    off["disableGC"] = true.into();
    off["cni.dev/valid-attachments"] = json!([]);
    sb.kactus("GC", "", None, "", "", &off).ok();
    assert_eq!(sb.leases().len(), 2);

    sb.kactus("DEL", "c-app2", Some(&sb.pods[p2].path), "eth0", &pod_args("default", "app2"), &conf).ok();
    assert_clean(&sb, p2);
}

#[test]
fn status_is_ready_with_the_master_installed_and_50_without_it() {
    let sb = Sandbox::new();
    let mut conf = sb.kactus_conf();
    conf["cniVersion"] = "1.1.0".into();
    sb.kactus("STATUS", "", None, "", "", &conf).ok();
    conf["delegates"][0]["type"] = "flannel-not-installed".into();
    let (code, msg) = sb.kactus("STATUS", "", None, "", "", &conf).err();
    assert_eq!(code, 50, "{msg}");
    assert!(msg.contains("flannel-not-installed"), "{msg}");
}

#[test]
fn a_missing_network_is_a_network_not_found_warning_on_the_pod() {
    let mut sb = Sandbox::new();
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({ NPWG: "nosuchnet" })));
    let p = sb.pod("app1");
    let out =
        sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &sb.kactus_conf());
    let (code, msg) = out.err();
    assert_eq!(code, 101, "{msg}");
    let events = pod_events(&sb, "default", "app1");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].0.as_str(), events[0].1.as_str()), ("Warning", "NetworkNotFound"));
    assert!(events[0].2.contains("default/nosuchnet"), "{events:?}");
    assert_clean(&sb, p);
}

/// The Kaloom fallback source denied (RBAC without its rule) or absent (no CRD: 404) must not
/// hide the real answer: the NAD is missing.
#[test]
fn a_missing_network_is_network_not_found_whatever_the_kaloom_source_answers() {
    for denied in [true, false] {
        let mut sb = Sandbox::new();
        if denied {
            sb.api().faults().forbid("get", "networks");
        } else {
            sb.api().faults().fail_next(1, 404, Some("/apis/kaloom.com/"));
        }
        sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({ NPWG: "nosuch" })));
        let p = sb.pod("app1");
        let args = pod_args("default", "app1");
        let (code, msg) = sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &sb.kactus_conf()).err();
        assert_eq!(code, 101, "denied={denied}: {msg}");
        assert!(msg.contains("no NetworkAttachmentDefinition default/nosuch"), "{msg}");
        assert!(!msg.contains("forbidden"), "{msg}");
        let events = pod_events(&sb, "default", "app1");
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!((events[0].0.as_str(), events[0].1.as_str()), ("Warning", "NetworkNotFound"));
        assert!(events[0].2.contains("default/nosuch"), "{events:?}");
        assert_clean(&sb, p);
    }
}

#[test]
fn a_kaloom_network_object_is_the_second_source_of_network_configs() {
    let mut sb = Sandbox::new();
    // As Kaloom's examples write it: spec.plugin names the plugin, spec.config the rest.
    let config = json!({"cniVersion": "0.3.1", "name": "green-net", "bridge": "green-br",
        "ipam": {"type": "host-local", "subnet": "192.168.42.0/24", "rangeStart": "192.168.42.10", "dataDir": sb.ipam_dir()}});
    let network = json!({"apiVersion": "kaloom.com/v1", "kind": "Network",
        "metadata": {"name": "green", "namespace": "default"},
        "spec": {"plugin": "bridge", "config": config.to_string()}});
    sb.apply(&network.to_string());
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"green"}]"#})));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    let args = pod_args("default", "app1");
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert_eq!(sb.pods[p].addrs("net9f27410725ab"), vec!["192.168.42.10/24"]);
    assert!(sb.node.has_link("green-br"), "the bridge plugin ran");
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert_clean(&sb, p);
}

#[test]
fn an_ipv6_gateway_moves_only_the_ipv6_default_route() {
    let mut sb = Sandbox::new();
    macvlan100(&sb);
    let v6 = json!({"cniVersion": "1.0.0", "type": "macvlan", "capabilities": {"ips": true}, "master": "vlan100",
        "mode": "bridge", "ipam": {"type": "static"}});
    sb.apply(&Sandbox::nad_yaml("default", "v6net", &v6));
    let ann = r#"[{"name":"v6net","ips":["fd00:100::2/64"],"default-route":["fd00:100::fe"]}]"#;
    sb.apply(&Sandbox::pod_yaml("default", "fe6", &json!({ NPWG: ann })));
    let p = sb.pod("fe6");
    let conf = conf_with_default_route(&sb);
    let args = pod_args("default", "fe6");
    sb.kactus("ADD", "c-fe6", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    let dev = device_name_for("v6net");
    assert_eq!(sb.pods[p].default_routes("-6"), vec![("fd00:100::fe".to_string(), dev.clone())]);
    assert_eq!(sb.pods[p].default_routes("-4"), vec![("10.244.0.1".to_string(), "eth0".to_string())], "v4 stays");
    sb.kactus("DEL", "c-fe6", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert_clean(&sb, p);
}

#[test]
fn every_delegate_gets_the_pod_args_cni_args_reach_args_cni_and_del_repeats_add_exactly() {
    let mut sb = Sandbox::new();
    let log = recording_plugin(&mut sb, "bridge");
    let green = json!({"cniVersion": "1.0.0", "type": "rec-bridge", "bridge": "green-br",
        "ipam": {"type": "host-local", "subnet": "192.168.42.0/24", "dataDir": sb.ipam_dir()}});
    sb.apply(&Sandbox::nad_yaml("default", "green", &green));
    let ann = json!({"k8s.v1.cni.cncf.io/networks": r#"[{"name": "green", "cni-args": {"role": "edge"}}]"#});
    sb.apply(&Sandbox::pod_yaml("default", "app1", &ann));
    let p = sb.pod("app1");
    let mut conf = sb.kactus_conf();
    conf["delegates"][0]["type"] = "rec-bridge".into();
    conf["delegates"][0]["capabilities"] = json!({"portMappings": true});
    // kubelet's runtimeConfig: for the pod's eth0 only.
    conf["runtimeConfig"] = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    let args = pod_args("default", "app1");
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();

    let calls = recorded_calls(&log);
    let of = |cmd: &str, ifname: &str| -> Value {
        calls
            .iter()
            .find(|c| c["command"] == cmd && c["ifname"] == ifname)
            .cloned()
            .unwrap_or_else(|| panic!("no {cmd} {ifname}: {calls:?}"))
    };
    let (master_add, green_add) = (of("ADD", "eth0"), of("ADD", GREEN));
    for call in [&master_add, &green_add] {
        assert_eq!(
            call["args"],
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=app1;K8S_POD_INFRA_CONTAINER_ID=c-app1;K8S_POD_UID=uid-app1"
        );
    }
    assert_eq!(master_add["stdin"]["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
    assert!(green_add["stdin"].get("runtimeConfig").is_none(), "{green_add}");
    assert_eq!(green_add["stdin"]["args"]["cni"]["role"], "edge");
    // DEL sends each delegate what its ADD had: same CNI_ARGS and config (plus prevResult).
    for (ifname, add) in [("eth0", &master_add), (GREEN, &green_add)] {
        let del = of("DEL", ifname);
        assert_eq!(del["args"], add["args"], "{ifname}");
        let mut sent = del["stdin"].clone();
        assert!(sent.as_object_mut().unwrap().remove("prevResult").is_some(), "{ifname}: DEL carries prevResult");
        assert_eq!(&sent, &add["stdin"], "{ifname}");
    }
    assert!(sb.pod_devices(p).is_empty() && sb.leases().is_empty());
}

/// Every form a dynamic ADD accepts is deletable by the same form: podagent (or an operator)
/// deletes with what it added. A dynamic DEL that matches nothing says so in the log.
#[test]
fn a_dynamic_del_finds_what_its_add_made_in_every_form_the_add_accepts() {
    let mut sb = Sandbox::new();
    let n0 = sb.bridge_net("n0", "n0-br", "10.30.0.0/24");
    sb.apply(&Sandbox::nad_yaml("default", "n0", &n0));
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({NPWG: "n0@eth7"})));
    let p = sb.pod("app1");
    let (conf, args) = (sb.kactus_conf(), pod_args("default", "app1"));
    sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &conf).ok();
    assert_eq!(sorted(sb.pod_devices(p)), ["eth0", "eth7"]);
    let dynamic = |form: &str| format!("{args};K8S_POD_NETWORK={form}");
    let json_form = json!([{"name": "n0", "interface": "eth7"}]).to_string();
    for form in ["n0@eth7", "default/n0@eth7", json_form.as_str()] {
        // The runtime's ADD made it for the first form; podagent's dynamic ADD for the others.
        if !sb.pods[p].has_link("eth7") {
            sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", &dynamic(form), &conf).ok();
            assert!(sb.pods[p].has_link("eth7"), "{form}: ADD made eth7");
        }
        sb.kactus("DEL", "c1", Some(&sb.pods[p].path), "eth0", &dynamic(form), &conf).ok();
        assert_eq!(sb.pod_devices(p), ["eth0"], "{form}: DEL removed eth7");
        assert_eq!(sb.leases().len(), 1, "{form}: eth7's lease released: {:?}", sb.leases());
    }
    sb.kactus("DEL", "c1", Some(&sb.pods[p].path), "eth0", &dynamic("n0@eth9"), &conf).ok();
    let log = std::fs::read_to_string(sb.path("kactus.log")).unwrap_or_default();
    assert!(log.contains("K8S_POD_NETWORK=n0@eth9 matches no attachment"), "the log says so");
    sb.kactus("DEL", "c1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert_clean(&sb, p);
}
