//! The seeds' scenarios, end to end: the real kactus binary and the real reference plugins
//! in throwaway network namespaces, with the project's test apiserver. Asserted as an
//! operator would: device names, addresses, MACs, pings, and nothing left after DEL.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const GREEN: &str = "net9f27410725ab";
const BLUE: &str = "net48d6215903df";
const DATA: &str = "net8d777f385d3d";

/// green on a bridge, blue on macvlan over a veth master made inside the node netns.
fn green_blue(sb: &Sandbox) {
    sb.node.ip(&["link", "add", "blue0", "type", "veth", "peer", "name", "blue0p"]);
    sb.node.ip(&["link", "set", "blue0", "up"]);
    sb.node.ip(&["link", "set", "blue0p", "up"]);
    let green = json!({"cniVersion": "0.3.1", "type": "bridge", "bridge": "green-br",
        "ipam": {"type": "host-local", "subnet": "192.168.42.0/24", "rangeStart": "192.168.42.10", "dataDir": sb.ipam_dir()}});
    let blue = json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "blue0", "mode": "bridge",
        "ipam": {"type": "host-local", "subnet": "192.168.43.0/24", "rangeStart": "192.168.43.10", "dataDir": sb.ipam_dir()}});
    sb.apply(&Sandbox::nad_yaml("default", "green", &green));
    sb.apply(&Sandbox::nad_yaml("default", "blue", &blue));
}

/// A sandbox with green and blue, and pod default/app1 asking for `networks` (NPWG): the
/// sandbox, the pod's index and its `CNI_ARGS`.
fn app1_on(networks: &str) -> (Sandbox, usize, String) {
    let mut sb = Sandbox::new();
    green_blue(&sb);
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"k8s.v1.cni.cncf.io/networks": networks})));
    let p = sb.pod("app1");
    (sb, p, pod_args("default", "app1"))
}

fn first_addr(ns: &Netns, dev: &str) -> String {
    let addrs = ns.addrs(dev);
    assert_eq!(addrs.len(), 1, "{dev} in {}: {addrs:?}", ns.name);
    addrs[0].split('/').next().unwrap_or_default().to_string()
}

#[test]
fn two_pods_on_green_and_blue_ping_each_other_and_del_leaves_nothing() {
    let mut sb = Sandbox::new();
    green_blue(&sb);
    let ann = json!({"networks": r#"[ { "name": "green" }, { "name": "blue" } ]"#});
    sb.apply(&Sandbox::pod_yaml("default", "app1", &ann));
    sb.apply(&Sandbox::pod_yaml("default", "app2", &ann));
    let (p1, p2) = (sb.pod("app1"), sb.pod("app2"));
    let conf = sb.kactus_conf();

    for (pod, name) in [(p1, "app1"), (p2, "app2")] {
        let result = sb
            .kactus("ADD", &format!("c-{name}"), Some(&sb.pods[pod].path), "eth0", &pod_args("default", name), &conf)
            .ok();
        // The runtime gets the cluster network's eth0 result, in its own version.
        assert_eq!(result["cniVersion"], "1.0.0");
        let eth0 = result["interfaces"].as_array().unwrap().iter().find(|i| i["name"] == "eth0").cloned();
        assert!(eth0.is_some_and(|i| i["sandbox"] == sb.pods[pod].path.to_string_lossy().as_ref()), "{result}");
        assert!(result["ips"][0]["address"].as_str().unwrap().starts_with("10.244.0."), "{result}");
        let mut devices = sb.pod_devices(pod);
        devices.sort();
        assert_eq!(devices, vec!["eth0", BLUE, GREEN], "pod {name}");
    }
    let (a1, a2) = (&sb.pods[p1], &sb.pods[p2]);
    assert!(first_addr(a1, GREEN).starts_with("192.168.42."));
    assert!(first_addr(a1, BLUE).starts_with("192.168.43."));
    let green2 = first_addr(a2, GREEN);
    let blue2 = first_addr(a2, BLUE);
    assert!(a1.ping(&green2), "app1 -> app2 over green ({green2})");
    assert!(a1.ping(&blue2), "app1 -> app2 over blue ({blue2})");
    assert!(a2.ping(&first_addr(a1, GREEN)), "app2 -> app1 over green");

    // network-status says exactly what the pod has, default network first.
    let pod = sb.api().store().get("pods", "default", "app1").unwrap();
    let status: Value =
        serde_json::from_str(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().unwrap())
            .unwrap();
    let list = status.as_array().unwrap();
    assert_eq!(list.len(), 3, "{status}");
    assert_eq!((list[0]["interface"].as_str(), list[0]["default"].as_bool()), (Some("eth0"), Some(true)));
    assert_eq!(list.iter().filter(|e| e["default"] == true).count(), 1);
    let green_entry = list.iter().find(|e| e["name"] == "default/green").expect("green entry");
    assert_eq!(green_entry["interface"], GREEN);
    assert_eq!(green_entry["ips"], json!([first_addr(a1, GREEN)]));
    assert_eq!(green_entry["mac"], a1.mac(GREEN));
    // The same addresses in the pod's status, where only kactus writes (what kactus-endpoints
    // trusts): the attachments only, eth0 being the pod's own podIPs.
    let condition = pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "kactus.io/attachments"))
        .cloned()
        .unwrap_or_else(|| panic!("no kactus.io/attachments condition: {}", pod["status"]));
    assert_eq!(condition["status"], "True");
    let attested: Value = serde_json::from_str(condition["message"].as_str().unwrap()).unwrap();
    assert_eq!(
        attested,
        json!([{"name": "default/green", "interface": GREEN, "ips": [first_addr(a1, GREEN)]},
               {"name": "default/blue", "interface": BLUE, "ips": [first_addr(a1, BLUE)]}])
    );

    assert_eq!(sb.leases().len(), 6, "3 leases per pod: {:?}", sb.leases());
    for (pod, name) in [(p1, "app1"), (p2, "app2")] {
        sb.kactus("DEL", &format!("c-{name}"), Some(&sb.pods[pod].path), "eth0", &pod_args("default", name), &conf)
            .ok();
        assert!(sb.pod_devices(pod).is_empty(), "{name}: {:?}", sb.pod_devices(pod));
    }
    assert!(sb.leases().is_empty(), "leases left: {:?}", sb.leases());
    assert!(sb.cache_files().is_empty(), "cache left: {:?}", sb.cache_files());
}

#[test]
fn green_and_blue_on_vlans_42_and_43_when_the_kernel_has_8021q() {
    if !kernel_supports("vlan") {
        skip("green_and_blue_on_vlans_42_and_43_when_the_kernel_has_8021q", "kernel has no 8021q (vlan) support");
        return;
    }
    let mut sb = Sandbox::new();
    sb.node.ip(&["link", "add", "trunk0", "type", "veth", "peer", "name", "trunk0p"]);
    sb.node.ip(&["link", "set", "trunk0", "up"]);
    sb.node.ip(&["link", "set", "trunk0p", "up"]);
    for (name, vlan, subnet) in [("green", 42, "192.168.42.0/24"), ("blue", 43, "192.168.43.0/24")] {
        let conf = json!({"cniVersion": "1.0.0", "type": "vlan", "master": "trunk0", "vlanId": vlan,
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": sb.ipam_dir()}});
        sb.apply(&Sandbox::nad_yaml("default", name, &conf));
    }
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"green"},{"name":"blue"}]"#})));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &conf).ok();
    assert!(sb.pods[p].has_link(GREEN) && sb.pods[p].has_link(BLUE));
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &conf).ok();
    assert!(sb.pod_devices(p).is_empty());
    assert!(sb.leases().is_empty());
}

#[test]
fn conflist_nad_runs_the_chain_with_prev_result() {
    let mut sb = Sandbox::new();
    // tuning (second in the chain) sets the MAC and a sysctl on the device bridge made.
    let list = json!({"cniVersion": "1.0.0", "name": "data", "plugins": [
        {"type": "bridge", "bridge": "data-br", "ipam": {"type": "host-local", "subnet": "10.10.0.0/24", "dataDir": sb.ipam_dir()}},
        {"type": "tuning", "mac": "c2:00:00:00:10:01", "sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1"}}]});
    let list_text = list.to_string().replace("IFNAME", DATA);
    sb.apply(&Sandbox::nad_yaml("default", "data", &serde_json::from_str::<Value>(&list_text).unwrap()));
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"data"}]"#})));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &conf).ok();
    assert_eq!(sb.pods[p].mac(DATA), "c2:00:00:00:10:01");
    assert!(sb.pods[p].addrs(DATA)[0].starts_with("10.10.0."));
    sb.kactus("CHECK", "c-app1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &conf).ok();
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &conf).ok();
    assert!(sb.pod_devices(p).is_empty());
    assert!(sb.leases().is_empty());
}

#[test]
fn data_network_added_and_removed_on_a_running_pod() {
    let mut sb = Sandbox::new();
    green_blue(&sb);
    let data = json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "data-br",
        "ipam": {"type": "host-local", "subnet": "10.10.0.0/24", "dataDir": sb.ipam_dir()}});
    sb.apply(&Sandbox::nad_yaml("default", "data", &data));
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"green"}]"#})));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    let args = pod_args("default", "app1");
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    let eth0_before = sb.pods[p].addrs("eth0");

    // The operator adds data to the annotation; podagent calls kactus for that one network.
    sb.api()
        .store()
        .merge_patch(
            "pods",
            "default",
            "app1",
            &json!({"metadata": {"annotations": {"networks": r#"[{"name":"green"},{"name":"data"}]"#}}}),
        )
        .unwrap();
    let dyn_args = format!("{args};K8S_POD_NETWORK=data");
    let r = sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &dyn_args, &conf).ok();
    assert_eq!(r["interfaces"].as_array().unwrap().iter().filter(|i| i["name"] == DATA).count(), 1, "{r}");
    assert!(sb.pods[p].addrs(DATA)[0].starts_with("10.10.0."));
    assert_eq!(sb.pods[p].addrs("eth0"), eth0_before, "eth0 untouched");
    let status = sb.api().store().get("pods", "default", "app1").unwrap()["metadata"]["annotations"]
        ["k8s.v1.cni.cncf.io/network-status"]
        .clone();
    assert!(status.as_str().unwrap().contains(DATA), "{status}");

    // podagent repeats the dynamic ADD when network-status does not show the device (its
    // write failed, say): the repeat answers the same result and writes network-status again,
    // creating nothing.
    let leases = sb.leases();
    let no_status = json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": null}}});
    sb.api().store().merge_patch("pods", "default", "app1", &no_status).unwrap();
    let again = sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &dyn_args, &conf).ok();
    assert_eq!(again, r);
    assert_eq!(sb.leases(), leases);
    let status = sb.api().store().get("pods", "default", "app1").unwrap()["metadata"]["annotations"]
        ["k8s.v1.cni.cncf.io/network-status"]
        .clone();
    assert!(status.as_str().unwrap().contains(DATA), "{status}");
    // The runtime's own ADD onto existing devices is refused before anything is created.
    let (code, msg) = sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).err();
    assert_eq!(code, 7, "{msg}");
    assert!(msg.contains("already exists"), "{msg}");
    assert_eq!(sb.leases(), leases);

    // Removed from the annotation: podagent sends DEL for data only.
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &dyn_args, &conf).ok();
    let mut devices = sb.pod_devices(p);
    devices.sort();
    assert_eq!(devices, vec!["eth0", GREEN]);
    assert_eq!(sb.leases().iter().filter(|l| l.contains("10.10.0.")).count(), 0);
    let status = sb.api().store().get("pods", "default", "app1").unwrap()["metadata"]["annotations"]
        ["k8s.v1.cni.cncf.io/network-status"]
        .clone();
    assert!(!status.as_str().unwrap().contains(DATA), "{status}");

    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert!(sb.pod_devices(p).is_empty());
    assert!(sb.leases().is_empty() && sb.cache_files().is_empty());
}

#[test]
fn del_works_with_the_apiserver_stopped_and_twice() {
    let mut sb = Sandbox::new();
    green_blue(&sb);
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"green"},{"name":"blue"}]"#})));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    let args = pod_args("default", "app1");
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    sb.stop_api();
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert!(sb.pod_devices(p).is_empty());
    assert!(sb.leases().is_empty() && sb.cache_files().is_empty());
    // containerd's later DELs: same container, no netns, nothing left to delete.
    sb.kactus("DEL", "c-app1", None, "eth0", &args, &conf).ok();
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
}

#[test]
fn del_after_the_pod_netns_is_gone_releases_every_lease() {
    let mut sb = Sandbox::new();
    green_blue(&sb);
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"green"}]"#})));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    let args = pod_args("default", "app1");
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    let ns = sb.pods.remove(p);
    drop(ns);
    sb.kactus("DEL", "c-app1", None, "eth0", &args, &conf).ok();
    assert!(sb.leases().is_empty(), "{:?}", sb.leases());
    assert!(sb.cache_files().is_empty());
}

#[test]
fn failed_second_attachment_rolls_back_everything() {
    let mut sb = Sandbox::new();
    green_blue(&sb);
    let broken = json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "nosuchdev0",
        "ipam": {"type": "host-local", "subnet": "10.99.0.0/24", "dataDir": sb.ipam_dir()}});
    sb.apply(&Sandbox::nad_yaml("default", "broken", &broken));
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"green"},{"name":"broken"}]"#})));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    let out = sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &conf);
    let (_, msg) = out.err();
    assert!(msg.contains("default/broken") && msg.contains("macvlan"), "names attachment and delegate: {msg}");
    assert!(sb.pod_devices(p).is_empty(), "left behind: {:?}", sb.pod_devices(p));
    assert!(sb.leases().is_empty(), "leases left: {:?}", sb.leases());
    // macvlan's DEL fails as its ADD did (no master): the call stays for the runtime's DEL.
    assert!(msg.contains("rollback of"), "{msg}");
    assert_eq!(sb.cache_files().len(), 2, "broken's call is kept: {:?}", sb.cache_files());
    // The pod's events tell what it has: no device (one AddedInterface goes out only for a
    // complete ADD, naming every device), the failure; nor is network-status written.
    let events = pod_events(&sb, "default", "app1");
    let reasons = |r: &str| events.iter().filter(|e| e.1 == r).count();
    assert_eq!((reasons("AddedInterface"), reasons("AttachFailed")), (0, 1), "{events:?}");
    let pod = sb.api().store().get("pods", "default", "app1").unwrap();
    assert!(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].is_null(), "{pod}");
    // The runtime's DEL: macvlan fails again, for good; the call is given up on and reported.
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &conf).ok();
    sb.assert_nothing_left(p, "after the runtime's DEL");
}

#[test]
fn mac_and_primary_network_from_the_kactus_annotation() {
    let mut sb = Sandbox::new();
    green_blue(&sb);
    let core = json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "core-br", "isGateway": true,
        "ipam": {"type": "host-local", "subnet": "10.20.0.0/24", "dataDir": sb.ipam_dir(), "routes": [{"dst": "0.0.0.0/0"}]}});
    sb.apply(&Sandbox::nad_yaml("default", "core", &core));
    let ann = json!({"networks": r#"[ { "name": "green", "ifMac": "00:11:22:33:44:55" }, { "name": "core", "isPrimary": true } ]"#});
    sb.apply(&Sandbox::pod_yaml("default", "vrouter", &ann));
    let p = sb.pod("vrouter");
    let conf = sb.kactus_conf();
    let r = sb.kactus("ADD", "c-vr", Some(&sb.pods[p].path), "eth0", &pod_args("default", "vrouter"), &conf).ok();
    // core replaced the cluster network on eth0, and its result is what the runtime sees.
    assert!(r["ips"][0]["address"].as_str().unwrap().starts_with("10.20.0."), "{r}");
    assert!(sb.pods[p].addrs("eth0")[0].starts_with("10.20.0."));
    let (gw, dev) = sb.pods[p].default_gateway().expect("default route");
    assert_eq!((gw.as_str(), dev.as_str()), ("10.20.0.1", "eth0"));
    // bridge cannot set a MAC; kactus did, and the cached result says so.
    assert_eq!(sb.pods[p].mac(GREEN), "00:11:22:33:44:55");
    sb.kactus("DEL", "c-vr", Some(&sb.pods[p].path), "eth0", &pod_args("default", "vrouter"), &conf).ok();
    assert!(sb.pod_devices(p).is_empty() && sb.leases().is_empty());
}

#[test]
fn without_pod_identity_only_the_delegates_run() {
    let mut sb = Sandbox::new();
    let p = sb.pod("bare");
    let conf = sb.kactus_conf();
    let r = sb.kactus("ADD", "c-bare", Some(&sb.pods[p].path), "eth0", "", &conf).ok();
    assert!(r["ips"][0]["address"].as_str().unwrap().starts_with("10.244.0."));
    assert_eq!(sb.pod_devices(p), vec!["eth0"]);
    sb.kactus("DEL", "c-bare", Some(&sb.pods[p].path), "eth0", "", &conf).ok();
    assert!(sb.pod_devices(p).is_empty() && sb.leases().is_empty());
}

#[test]
fn result_is_converted_to_the_runtimes_version() {
    let mut sb = Sandbox::new();
    let p = sb.pod("old");
    let mut conf = sb.kactus_conf();
    conf["cniVersion"] = "0.3.1".into();
    let r = sb.kactus("ADD", "c-old", Some(&sb.pods[p].path), "eth0", "", &conf).ok();
    assert_eq!(r["cniVersion"], "0.3.1");
    assert_eq!(r["ips"][0]["version"], "4", "{r}");
    sb.kactus("DEL", "c-old", Some(&sb.pods[p].path), "eth0", "", &conf).ok();
}

#[test]
fn transient_apiserver_errors_are_retried() {
    let mut sb = Sandbox::new();
    green_blue(&sb);
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"green"}]"#})));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    sb.api().faults().fail_next(2, 503, None);
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &conf).ok();
    assert!(sb.pods[p].has_link(GREEN));
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &conf).ok();
}

#[test]
fn a_dynamic_del_removes_exactly_the_named_attachment_and_never_eth0() {
    let mut sb = Sandbox::new();
    green_blue(&sb);
    let core = json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "core-br",
        "ipam": {"type": "host-local", "subnet": "10.20.0.0/24", "dataDir": sb.ipam_dir()}});
    sb.apply(&Sandbox::nad_yaml("default", "core", &core));
    let ann = json!({"networks": r#"[{"name":"core","isPrimary":true},{"name":"green"},{"name":"green"}]"#});
    sb.apply(&Sandbox::pod_yaml("default", "app1", &ann));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    let args = pod_args("default", "app1");
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    const GREEN_1: &str = "net898f8541f0ab"; // md5("green#1")
    let mut devices = sb.pod_devices(p);
    devices.sort();
    assert_eq!(devices, vec!["eth0", GREEN_1, GREEN]);

    // The primary network is eth0, not an attachment: a dynamic DEL naming it touches nothing.
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &format!("{args};K8S_POD_NETWORK=core"), &conf).ok();
    assert!(sb.pods[p].has_link("eth0"));
    // The repeat by its key, then the first by its name.
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &format!("{args};K8S_POD_NETWORK=green#1"), &conf).ok();
    assert!(sb.pods[p].has_link(GREEN) && !sb.pods[p].has_link(GREEN_1), "{:?}", sb.pod_devices(p));
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &format!("{args};K8S_POD_NETWORK=green"), &conf).ok();
    assert_eq!(sb.pod_devices(p), vec!["eth0"]);

    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert!(sb.pod_devices(p).is_empty() && sb.leases().is_empty() && sb.cache_files().is_empty());
}

/// The cluster's plugin makes eth0 while the pod's networks are read, so their round trips
/// cost the pod's start nothing. The apiserver holds the NADs' answers until the master
/// delegate has started: read first, they would time the ADD out (code 11).
#[test]
fn eth0_is_made_while_the_pods_networks_are_read() {
    let networks = "green, blue";
    let (mut sb, p, args) = app1_on(networks);
    // Only the master is recorded; its log appears when it starts.
    let log = recording_plugin(&mut sb, "bridge");
    let mut conf = sb.kactus_conf();
    conf["delegates"][0]["type"] = "rec-bridge".into();
    sb.api().faults().hold("/network-attachment-definitions", &log);
    let mut from_runtime = conf.clone();
    from_runtime["runtimeConfig"] =
        json!({"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": networks}});
    for (how, conf) in [("the runtime's annotations", from_runtime), ("a pod read", conf)] {
        let r = sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
        assert!(r["ips"][0]["address"].as_str().unwrap_or_default().starts_with("10."), "{how}: eth0's result: {r}");
        assert!(sb.pods[p].has_link(GREEN) && sb.pods[p].has_link(BLUE), "{how}: {:?}", sb.pod_devices(p));
        let pod = sb.api().store().get("pods", "default", "app1").unwrap();
        let status = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().unwrap_or_default();
        assert_eq!(
            serde_json::from_str::<Value>(status).ok().and_then(|s| s.as_array().map(Vec::len)),
            Some(3),
            "{how}: {status}"
        );
        sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
        assert!(sb.pod_devices(p).is_empty() && sb.leases().is_empty() && sb.cache_files().is_empty(), "{how}");
        let _ = std::fs::remove_file(&log);
    }
}

#[test]
fn pod_annotations_from_the_runtime_spare_the_pod_read() {
    let networks = "green, blue";
    let (sb, p, args) = app1_on(networks);
    // kactus may not read the pod: the runtime passed its annotations, as containerd and
    // CRI-O do under this capability.
    sb.api().faults().forbid("get", "pods");
    let mut conf = sb.kactus_conf();
    conf["runtimeConfig"] =
        json!({"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": networks, "other": "x"}});
    let before = sb.api().stats();
    let r = sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    let after = sb.api().stats();
    assert!(r["ips"][0]["address"].as_str().unwrap_or_default().starts_with("10."), "eth0's result: {r}");
    // Both NADs, the status and the events over one connection (one TLS handshake), even
    // though no request warmed it up before the NADs were fetched.
    assert_eq!(after.connections - before.connections, 1, "connections per ADD");
    assert!(sb.pods[p].has_link(GREEN) && sb.pods[p].has_link(BLUE), "{:?}", sb.pod_devices(p));
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert!(sb.pod_devices(p).is_empty() && sb.leases().is_empty() && sb.cache_files().is_empty());
    // Without them (an older runtime, or the config by hand) kactus reads the pod, which this
    // apiserver refuses: the error says what was refused.
    let (code, msg) = sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &sb.kactus_conf()).err();
    assert_eq!(code, 100, "{msg}");
    assert!(msg.contains("get pod default/app1"), "{msg}");
    assert!(sb.pod_devices(p).is_empty() && sb.leases().is_empty());
}

/// What an ADD asks of the apiserver does not grow with the pod's attachments: the networks
/// in one request per namespace (a GET for one, a LIST for several), one AddedInterface Event
/// naming every device, one network-status PATCH.
#[test]
fn apiserver_requests_per_add_stay_flat_as_attachments_grow() {
    for (networks, read) in [("green", "get"), ("green, blue", "list"), ("green, blue, green, blue", "list")] {
        let (sb, p, args) = app1_on(networks);
        let mut conf = sb.kactus_conf();
        conf["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": networks}});
        let before = sb.api().stats();
        sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
        let after = sb.api().stats();
        let verbs: BTreeMap<String, u64> = after
            .per_verb
            .iter()
            .map(|(verb, n)| (verb.clone(), n - before.per_verb.get(verb).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let expected: BTreeMap<String, u64> =
            [(read, 1), ("create", 1), ("patch", 1)].map(|(v, n)| (v.into(), n)).into();
        assert_eq!(verbs, expected, "{networks}");
        // The one Event names each device with its own text.
        let events = pod_events(&sb, "default", "app1");
        assert_eq!(events.len(), 1, "{networks}: {events:?}");
        let devices = sb.pod_devices(p);
        assert_eq!(devices.len(), networks.split(',').count() + 1, "{networks}: {devices:?}");
        for dev in &devices {
            let text = format!("Add {dev} [{}/", first_addr(&sb.pods[p], dev));
            assert!(events[0].2.contains(&text), "{networks}: {text} not in {:?}", events[0]);
        }
        sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
        sb.assert_nothing_left(p, networks);
    }
}

/// Of several networks read with one LIST, a missing one is still NetworkNotFound naming it
/// (read once more with a GET first: the watch cache may lag a NAD created a moment ago), and
/// eth0, made meanwhile, is rolled back.
#[test]
fn a_missing_network_among_several_listed_is_network_not_found_naming_it() {
    let (sb, p, args) = app1_on("green, nosuch, blue");
    let before = sb.api().stats();
    let (code, msg) = sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &sb.kactus_conf()).err();
    let after = sb.api().stats();
    assert_eq!(code, 101, "{msg}");
    assert!(msg.contains("no NetworkAttachmentDefinition default/nosuch"), "{msg}");
    let lists = |s: &kactus_testapi::Stats| s.per_verb.get("list").copied().unwrap_or(0);
    assert_eq!(lists(&after) - lists(&before), 1, "the NADs were listed once");
    let events = pod_events(&sb, "default", "app1");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].0.as_str(), events[0].1.as_str()), ("Warning", "NetworkNotFound"));
    assert!(events[0].2.contains("default/nosuch"), "{events:?}");
    sb.assert_nothing_left(p, "missing among several");
}

/// A namespace holding more NADs than one LIST page: the page is all a LIST brings (its cost
/// bounded whatever the namespace holds), and the networks it did not hold are read with a
/// GET each. The fillers sort before green and blue, so neither is on the page: were the
/// whole namespace listed, there would be no GET.
#[test]
fn in_a_namespace_of_more_nads_than_a_page_the_list_is_one_page_and_the_rest_are_gets() {
    let (sb, p, args) = app1_on("green, blue");
    let filler = json!({"cniVersion": "0.3.1", "type": "bridge", "bridge": "unused-br"});
    for i in 0..kactus::plugin::networks::list_page(2) + 20 {
        sb.apply(&Sandbox::nad_yaml("default", &format!("a-filler-{i:04}"), &filler));
    }
    let mut conf = sb.kactus_conf();
    conf["runtimeConfig"] =
        json!({"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": "green, blue"}});
    let before = sb.api().stats();
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    let after = sb.api().stats();
    let count = |s: &kactus_testapi::Stats, verb: &str| s.per_verb.get(verb).copied().unwrap_or(0);
    let reads = (count(&after, "list") - count(&before, "list"), count(&after, "get") - count(&before, "get"));
    assert_eq!(reads, (1, 2), "(lists, gets): one page, then green and blue");
    assert!(sb.pods[p].has_link(GREEN) && sb.pods[p].has_link(BLUE), "{:?}", sb.pod_devices(p));
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    sb.assert_nothing_left(p, "more NADs than a page");
}

/// A ClusterRole from before kactus listed NADs (get only): they are read one by one.
#[test]
fn nads_are_read_one_by_one_where_listing_them_is_forbidden() {
    let (sb, p, args) = app1_on("green, blue");
    sb.api().faults().forbid("list", "network-attachment-definitions");
    sb.kactus("ADD", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &sb.kactus_conf()).ok();
    assert!(sb.pods[p].has_link(GREEN) && sb.pods[p].has_link(BLUE), "{:?}", sb.pod_devices(p));
    sb.kactus("DEL", "c-app1", Some(&sb.pods[p].path), "eth0", &args, &sb.kactus_conf()).ok();
    sb.assert_nothing_left(p, "list forbidden");
}

#[test]
fn a_pod_without_networks_gets_its_status_over_one_early_connection() {
    let mut sb = Sandbox::new();
    sb.apply(&Sandbox::pod_yaml("default", "plain", &json!({})));
    let p = sb.pod("plain");
    let args = pod_args("default", "plain");
    let mut conf = sb.kactus_conf();
    conf["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": {}});
    let before = sb.api().stats();
    sb.kactus("ADD", "c-plain", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    let after = sb.api().stats();
    // Connected while eth0 was made (GET /version), then the event and the status on it.
    assert_eq!(after.connections - before.connections, 1);
    let verbs = |s: &kactus_testapi::Stats, v: &str| s.per_verb.get(v).copied().unwrap_or(0);
    assert_eq!(verbs(&after, "create") - verbs(&before, "create"), 1, "one AddedInterface event");
    assert_eq!(verbs(&after, "patch") - verbs(&before, "patch"), 1, "one network-status write");
    let pod = sb.api().store().get("pods", "default", "plain").unwrap();
    let status = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().unwrap_or_default();
    assert!(status.contains("\"interface\":\"eth0\""), "{status}");
    sb.kactus("DEL", "c-plain", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert!(sb.pod_devices(p).is_empty() && sb.leases().is_empty() && sb.cache_files().is_empty());
}
