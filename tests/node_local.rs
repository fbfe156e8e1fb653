//! The node-local IPAM plugin (issue 15) as an operator would check it: simulated nodes (each
//! its own network namespace, node file and lease dir) against one test apiserver, the real
//! binary under kactus with the real bridge and macvlan delegates, and on its own as a
//! delegate runs it. What is checked is what an operator would look at: the pods' addresses,
//! the SliceClaims in the apiserver, the lease files on each node, the apiserver's request
//! counters, and that every failure leaves no lease, no claim and no record behind.

mod common;

use common::nodes::{network, Cluster, SimNode, NODE_LOCAL};
use common::{cni_env, CniOutput};
use ipnet::IpNet;
use serde_json::{json, Value};
use std::net::IpAddr;

/// The issue's example: a /24 of 11.0.0.0/16 and a /64 of fd11::/48 per node.
fn dual_stack() -> Value {
    json!({"ranges": [[{"subnet": "11.0.0.0/16", "nodeSliceSize": 24}], [{"subnet": "fd11::/48", "nodeSliceSize": 64}]]})
}

fn ipam_conf(node: &SimNode, name: &str, ipam: &Value) -> Value {
    network(node, name, json!({"type": "bridge"}), ipam)
}

/// A NAD whose config comes from each node's confDir (the node's lease dir differs).
fn nad_from_conf_dir(name: &str) -> String {
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": name, "namespace": "default"}, "spec": {"config": ""}})
    .to_string()
}

fn pod_object(name: &str, networks: &str) -> String {
    common::Sandbox::pod_yaml("default", name, &json!({"k8s.v1.cni.cncf.io/networks": networks}))
}

/// The addresses a node-local result gave, as (address, prefix).
fn result_ips(result: &Value) -> Vec<(IpAddr, u8)> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|ip| {
            let net: IpNet = ip["address"].as_str().unwrap().parse().unwrap();
            (net.addr(), net.prefix_len())
        })
        .collect()
}

/// The slices a node holds, by family.
fn slices_of(cluster: &Cluster, node: &str) -> Vec<IpNet> {
    cluster.held().into_iter().filter(|(n, _)| n == node).map(|(_, s)| s.parse().unwrap()).collect()
}

fn in_one_of(ip: IpAddr, slices: &[IpNet]) -> bool {
    slices.iter().any(|s| s.contains(&ip))
}

#[test]
fn two_nodes_get_disjoint_slices_their_pods_get_addresses_from_them_and_del_frees_them() {
    let mut cluster = Cluster::new(2);
    let tag = cluster.tag.clone();
    cluster.api().store().apply_yaml(&nad_from_conf_dir("green")).unwrap();
    for node in &cluster.nodes {
        let bridge = json!({"type": "bridge", "bridge": "green-br", "isGateway": true});
        node.put_network(&network(node, "green", bridge, &dual_stack()));
    }
    for (name, node) in [("app-a", 0), ("app-a2", 0), ("app-b", 1)] {
        cluster.api().store().apply_yaml(&pod_object(name, "green")).unwrap();
        let pod = cluster.nodes[node].pod(&tag, name);
        let netns = cluster.nodes[node].pods[pod].path.clone();
        cluster.nodes[node].kactus(&cluster.cni_path, "ADD", name, Some(&netns)).ok();
    }

    let held = cluster.held();
    assert_eq!(held.len(), 4, "one v4 and one v6 slice per node: {held:?}");
    let slices: std::collections::BTreeSet<&String> = held.iter().map(|(_, s)| s).collect();
    assert_eq!(slices.len(), 4, "disjoint: {held:?}");
    for claim in cluster.claims() {
        let node = cluster.api().store().get("nodes", "", claim["spec"]["node"].as_str().unwrap()).unwrap();
        assert_eq!(claim["metadata"]["ownerReferences"][0]["uid"], node["metadata"]["uid"], "owned by its Node");
        assert_eq!(claim["metadata"]["labels"]["kactus.io/network"], "green");
        assert_eq!(claim["metadata"]["labels"]["kactus.io/node"], claim["spec"]["node"]);
    }
    for (node, pod) in [(0, 0), (0, 1), (1, 0)] {
        let n = &cluster.nodes[node];
        let addrs = n.pods[pod].addrs("net9f27410725ab");
        assert_eq!(addrs.len(), 2, "dual-stack on {}: {addrs:?}", n.name);
        let mine = slices_of(&cluster, &n.name);
        for addr in &addrs {
            let net: IpNet = addr.parse().unwrap();
            assert!(in_one_of(net.addr(), &mine), "{addr} is in {}'s slices {mine:?}", n.name);
            assert_eq!(net.prefix_len(), if net.addr().is_ipv4() { 24 } else { 64 }, "{addr}");
        }
        assert!(n.record("green").is_some(), "{} recorded its slices", n.name);
    }
    let a2 = cluster.nodes[0].pods[1].addrs("net9f27410725ab")[0].split('/').next().unwrap().to_string();
    assert!(cluster.nodes[0].pods[0].ping(&a2), "pods on node-a reach each other over green");

    // DEL frees the leases, again is fine, and works with the apiserver gone.
    let node_a = &cluster.nodes[0];
    assert_eq!(node_a.leases("green").len(), 4);
    node_a.kactus(&cluster.cni_path, "DEL", "app-a", Some(&node_a.pods[0].path)).ok();
    node_a.kactus(&cluster.cni_path, "DEL", "app-a", None).ok();
    assert_eq!(node_a.leases("green").len(), 2, "app-a2's two remain");
    cluster.stop_api();
    let node_b = &cluster.nodes[1];
    node_b.kactus(&cluster.cni_path, "DEL", "app-b", Some(&node_b.pods[0].path)).ok();
    assert!(node_b.leases("green").is_empty());
}

#[test]
fn a_shared_subnet_spans_nodes_on_one_l2_segment() {
    let mut cluster = Cluster::new(2);
    let tag = cluster.tag.clone();
    // One L2 segment between the two nodes: each node's end is the macvlan master "l2".
    common::ip(&[
        "-n",
        &cluster.nodes[0].ns.name,
        "link",
        "add",
        "l2",
        "type",
        "veth",
        "peer",
        "name",
        "l2",
        "netns",
        &cluster.nodes[1].ns.name,
    ]);
    for node in &cluster.nodes {
        node.ns.ip(&["link", "set", "l2", "up"]);
        let ipam = json!({"ranges": [
            [{"subnet": "11.1.0.0/16", "nodeSliceSize": 24, "sharedSubnet": true}],
            [{"subnet": "fd12::/48", "nodeSliceSize": 64, "sharedSubnet": true}]]});
        node.put_network(&network(node, "blue", json!({"type": "macvlan", "master": "l2", "mode": "bridge"}), &ipam));
    }
    cluster.api().store().apply_yaml(&nad_from_conf_dir("blue")).unwrap();
    for (name, node) in [("web-a", 0), ("web-b", 1)] {
        cluster.api().store().apply_yaml(&pod_object(name, "blue")).unwrap();
        let pod = cluster.nodes[node].pod(&tag, name);
        let netns = cluster.nodes[node].pods[pod].path.clone();
        cluster.nodes[node].kactus(&cluster.cni_path, "ADD", name, Some(&netns)).ok();
    }
    let dev = format!("net{}", device_suffix("blue"));
    let a = cluster.nodes[0].pods[0].addrs(&dev);
    let b = cluster.nodes[1].pods[0].addrs(&dev);
    assert!(a.iter().chain(&b).all(|x| x.ends_with("/16") || x.ends_with("/48")), "the range's prefix: {a:?} {b:?}");
    assert!(in_one_of(a[0].split('/').next().unwrap().parse().unwrap(), &slices_of(&cluster, "node-a")));
    assert!(in_one_of(b[0].split('/').next().unwrap().parse().unwrap(), &slices_of(&cluster, "node-b")));
    let b4 = b.iter().find(|x| !x.contains(':')).unwrap().split('/').next().unwrap().to_string();
    assert!(cluster.nodes[0].pods[0].ping(&b4), "a pod on node-a reaches one on node-b: {a:?} -> {b4}");
}

/// kactus's device name for a network in the pod's namespace (README: md5 of the key).
fn device_suffix(network: &str) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(network.as_bytes()))[..12].to_string()
}

#[test]
fn once_a_node_has_its_slice_pod_starts_make_no_apiserver_call_and_restarts_keep_it() {
    let cluster = Cluster::new(1);
    let node = cluster.node(0);
    let conf = ipam_conf(node, "green", &dual_stack());
    let first = result_ips(&node.node_local("ADD", "c0", "net1", &conf).ok());
    let slices = slices_of(&cluster, "node-a");
    assert_eq!(slices.len(), 2);
    assert!(first.iter().all(|(ip, _)| in_one_of(*ip, &slices)));
    let (requests, writes) = (cluster.requests(), cluster.writes());
    assert_eq!(writes, 2, "one create per slice, nothing else");
    for i in 1..=5 {
        let ips = result_ips(&node.node_local("ADD", &format!("c{i}"), "net1", &conf).ok());
        assert!(ips.iter().all(|(ip, _)| in_one_of(*ip, &slices)), "{ips:?}");
    }
    assert_eq!(cluster.requests(), requests, "five pod starts, no apiserver request at all");

    // A lost record (or a reinstalled node with an empty lease dir) finds its claims by label.
    std::fs::remove_file(node.data_dir().join("green/node-local.json")).unwrap();
    node.node_local("ADD", "c6", "net1", &conf).ok();
    std::fs::remove_dir_all(node.data_dir()).unwrap();
    node.node_local("ADD", "c7", "net1", &conf).ok();
    assert_eq!(slices_of(&cluster, "node-a"), slices, "the same slices");
    assert_eq!(cluster.writes(), writes, "found, not claimed again");

    // A new installer pod rewrites the node file: one check, reads only.
    let before = cluster.requests();
    node.write_node_file();
    node.node_local("ADD", "c8", "net1", &conf).ok();
    assert_eq!((cluster.requests() - before, cluster.writes()), (2, writes), "GET the Node, LIST its claims");
    node.node_local("ADD", "c9", "net1", &conf).ok();
    assert_eq!(cluster.requests() - before, 2, "and then none again");
}

#[test]
fn concurrent_slice_assignment_from_many_nodes_never_collides() {
    let mut cluster = Cluster::new(8);
    // Eight /24 slices for eight nodes starting at once: every slice taken exactly once.
    let ipam = json!({"ranges": [[{"subnet": "11.2.0.0/21", "nodeSliceSize": 24}]]});
    let ipam = &ipam;
    let outcomes: Vec<CniOutput> = std::thread::scope(|s| {
        let handles: Vec<_> = cluster
            .nodes
            .iter()
            .map(|node| s.spawn(move || node.node_local("ADD", "c1", "net1", &ipam_conf(node, "conc", ipam))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (node, out) in cluster.nodes.iter().zip(&outcomes) {
        let ip = result_ips(&out.ok())[0].0;
        assert!(in_one_of(ip, &slices_of(&cluster, &node.name)), "{} got {ip}", node.name);
    }
    let held = cluster.held();
    let distinct: std::collections::BTreeSet<&String> = held.iter().map(|(_, s)| s).collect();
    assert_eq!((held.len(), distinct.len()), (8, 8), "{held:?}");

    // A ninth node finds the range full, and says so naming the network.
    cluster.add_node(8);
    let ninth = &cluster.nodes[8];
    let (code, msg) = ninth.node_local("ADD", "c1", "net1", &ipam_conf(ninth, "conc", ipam)).err();
    assert_eq!(code, 105, "{msg}");
    assert!(msg.contains("network conc: no free /24 slice left in 11.2.0.0/21 for node node-i"), "{msg}");
    assert!(ninth.leases("conc").is_empty() && slices_of(&cluster, "node-i").is_empty());
}

#[test]
fn gc_frees_leases_of_attachments_no_longer_alive_and_reports_corrupt_files() {
    let cluster = Cluster::new(1);
    let node = cluster.node(0);
    let conf = ipam_conf(node, "green", &json!({"ranges": [[{"subnet": "11.5.0.0/16", "nodeSliceSize": 24}]]}));
    for c in ["c1", "c2", "c3"] {
        node.node_local("ADD", c, "net1", &conf).ok();
    }
    let mut gc = conf.clone();
    gc["cniVersion"] = "1.1.0".into();
    let (code, msg) = node.node_local("GC", "", "", &gc).err();
    assert!(code == 7 && msg.contains("cni.dev/valid-attachments"), "no list, nothing freed: {msg}");
    assert_eq!(node.leases("green").len(), 3);

    let corrupt = node.data_dir().join("green/11.5.9.9");
    std::fs::write(&corrupt, "\u{0}\u{1}").unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c2", "ifname": "net1"}]);
    let (code, msg) = node.node_local("GC", "", "", &gc).err();
    assert_eq!(code, 6, "{msg}");
    assert!(msg.contains(&corrupt.display().to_string()) && msg.contains("remove a file once no pod uses"), "{msg}");
    let leases = node.leases("green");
    assert_eq!(leases.len(), 2, "c2's lease and the corrupt file: {leases:?}");
    std::fs::remove_file(&corrupt).unwrap();
    node.node_local("GC", "", "", &gc).ok();
    let owner = std::fs::read_to_string(node.data_dir().join("green").join(&node.leases("green")[0])).unwrap();
    assert_eq!(owner, "c2\r\nnet1");
}

/// The seeds' `default` template, as the seed README has it.
const SEED_DEFAULT: &str = include_str!("../examples/node-local/default");

/// A template dir holding the seed's `default`, and a config using it with leases in `data`.
fn seed_conf(cluster: &Cluster, node: &SimNode, index: Value) -> Value {
    let templates = cluster.dir.path().join("node-local");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(
        templates.join("default"),
        SEED_DEFAULT.replace(
            "\"type\": \"host-local\",",
            &format!("\"type\": \"host-local\", \"dataDir\": {},", json!(node.data_dir())),
        ),
    )
    .unwrap();
    json!({"cniVersion": "0.3.1", "name": "seed", "type": "bridge",
           "ipam": {"type": "node-local", "cfg": "default", "templateDir": templates, "nodeIndex": index,
                    "nodeFile": node.node_file()}})
}

#[test]
fn the_seed_template_gives_11_0_4_x_on_vm_004() {
    let cluster = Cluster::new(1);
    let node = cluster.node(0);
    let conf = seed_conf(&cluster, node, json!({"from": "hostname"}));
    // The seed's rule reads the hostname: run the plugin in a UTS namespace named vm-004.
    let env = cni_env("ADD", "c1", Some(std::path::Path::new("/x")), "net1", "", common::CNI_PATH);
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--uts", "sh", "-c", &format!("hostname vm-004 && exec {NODE_LOCAL}")]);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = run_with_stdin(cmd, &conf);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["ips"][0]["address"], "11.0.4.2/24");
    assert_eq!(result["ips"][0]["gateway"], "11.0.4.1");
    assert_eq!(result["cniVersion"], "0.3.1");
    assert_eq!(node.leases("default"), vec!["11.0.4.2"], "where host-local would have put it");
    assert_eq!(cluster.requests(), 0, "the hostname rule needs no apiserver");

    // On this machine's own hostname ("vm", or anything without a number) it says why.
    let mut plain = std::process::Command::new("unshare");
    plain.args(["--uts", "sh", "-c", &format!("hostname node4 && exec {NODE_LOCAL}")]);
    plain.env_clear().envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = run_with_stdin(plain, &conf);
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 7);
    assert!(err["msg"].as_str().unwrap().contains("hostname \"node4\" has no node index"), "{err}");
}

fn run_with_stdin(mut cmd: std::process::Command, conf: &Value) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_seed_template_with_the_index_from_a_node_label_under_kactus() {
    let mut cluster = Cluster::new(1);
    let tag = cluster.tag.clone();
    let store = cluster.api().store();
    store.merge_patch("nodes", "", "node-a", &json!({"metadata": {"labels": {"kactus.io/node-index": "4"}}})).unwrap();
    let mut conf = seed_conf(&cluster, cluster.node(0), json!({"from": "label", "key": "kactus.io/node-index"}));
    conf["cniVersion"] = "1.0.0".into();
    conf["bridge"] = "seed-br".into();
    conf["isGateway"] = true.into();
    cluster.node(0).put_network(&conf);
    store.apply_yaml(&nad_from_conf_dir("seed")).unwrap();
    store.apply_yaml(&pod_object("app", "seed")).unwrap();
    let pod = cluster.nodes[0].pod(&tag, "app");
    let netns = cluster.nodes[0].pods[pod].path.clone();
    cluster.nodes[0].kactus(&cluster.cni_path, "ADD", "app", Some(&netns)).ok();
    let dev = format!("net{}", device_suffix("seed"));
    assert_eq!(cluster.nodes[0].pods[pod].addrs(&dev), vec!["11.0.4.2/24"]);
    assert_eq!(cluster.nodes[0].record("default").unwrap()["nodeIndex"], 4);
}

#[test]
fn a_deleted_node_frees_its_slices_and_a_full_range_reclaims_those_the_collector_has_not() {
    let cluster = Cluster::new(3);
    let ipam = json!({"ranges": [[{"subnet": "11.3.0.0/23", "nodeSliceSize": 24}]]});
    for i in 0..2 {
        let node = cluster.node(i);
        node.node_local("ADD", "c1", "net1", &ipam_conf(node, "red", &ipam)).ok();
    }
    let b_slice = slices_of(&cluster, "node-b");
    // node-b is gone, and the garbage collector has not got to its claim yet: the range is
    // full, so node-c takes the slice of the node that no longer exists.
    cluster.api().store().delete("nodes", "", "node-b").unwrap();
    assert_eq!(cluster.claims().len(), 2);
    let node_c = cluster.node(2);
    let ip = result_ips(&node_c.node_local("ADD", "c1", "net1", &ipam_conf(node_c, "red", &ipam)).ok())[0].0;
    assert_eq!(slices_of(&cluster, "node-c"), b_slice);
    assert!(in_one_of(ip, &b_slice));
    assert!(slices_of(&cluster, "node-b").is_empty());

    // With the collector working, deleting a Node deletes its claims.
    cluster.api().store().enable_garbage_collector();
    cluster.api().store().delete("nodes", "", "node-a").unwrap();
    assert_eq!(cluster.held().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), vec!["node-c"]);
}

#[test]
fn a_node_registered_again_keeps_its_slice_or_says_it_moved() {
    let cluster = Cluster::new(2);
    let ipam = json!({"ranges": [[{"subnet": "11.6.0.0/22", "nodeSliceSize": 24}]]});
    let node_a = cluster.node(0);
    let conf = ipam_conf(node_a, "green", &ipam);
    let first = result_ips(&node_a.node_local("ADD", "c1", "net1", &conf).ok())[0].0;
    let slice = slices_of(&cluster, "node-a");

    // Node deleted and registered again before the collector ran: the claim is taken over.
    cluster.recreate_node_object(0);
    node_a.write_node_file();
    node_a.node_local("ADD", "c2", "net1", &conf).ok();
    let uid = cluster.api().store().get("nodes", "", "node-a").unwrap()["metadata"]["uid"].clone();
    let claim = &cluster.claims()[0];
    assert_eq!(
        (claim["metadata"]["ownerReferences"][0]["uid"].clone(), slices_of(&cluster, "node-a")),
        (uid, slice.clone())
    );

    // With the collector: the claim goes with the old Node; the node claims its slice again
    // (its pods keep their addresses), found by its periodic check.
    cluster.api().store().enable_garbage_collector();
    cluster.recreate_node_object(0);
    assert!(cluster.claims().is_empty());
    let mut fast = conf.clone();
    fast["ipam"]["revalidateSeconds"] = 0.into();
    node_a.node_local("ADD", "c3", "net1", &fast).ok();
    assert_eq!(slices_of(&cluster, "node-a"), slice);

    // And if another node took it meanwhile, it moves to a free slice and says so.
    cluster.recreate_node_object(0);
    let node_b = cluster.node(1);
    let theft = json!({"apiVersion": "kactus.io/v1alpha1", "kind": "SliceClaim", "metadata": {"name": "green.taken",
        "labels": {"kactus.io/network": "green", "kactus.io/node": "node-b"}},
        "spec": {"network": "green", "range": "11.6.0.0/22", "slice": slice[0].to_string(), "node": node_b.name}});
    cluster.api().store().apply(theft).unwrap();
    let out = node_a.node_local("ADD", "c4", "net1", &fast);
    let moved = result_ips(&out.ok())[0].0;
    assert!(!slice[0].contains(&moved) && in_one_of(moved, &slices_of(&cluster, "node-a")), "{moved}");
    assert!(out.stderr.contains("is now claimed by node node-b"), "{}", out.stderr);
    assert!(slice[0].contains(&first));
}

/// Slice assignment as the `kactus` service account of manifests/kactus-serviceaccount-and-rbac.yaml
/// (a TokenRequest token, RBAC enforced by the test apiserver): every call node-local makes,
/// including the rare ones (taking a claim over, reclaiming a deleted Node's slice), is granted.
#[test]
fn the_shipped_rbac_allows_every_call_slice_assignment_makes() {
    let cluster = Cluster::new(3);
    let store = cluster.api().store();
    let rbac =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/kactus-serviceaccount-and-rbac.yaml"));
    store.apply_yaml(&rbac.unwrap()).unwrap();
    store
        .apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kactus-x", "namespace": "kube-system"}}))
        .unwrap();
    let token = cluster.api().tokens().issue_for_pod(
        store,
        "kube-system",
        "kactus",
        "kactus-x",
        std::time::Duration::from_secs(3600),
    );
    for node in &cluster.nodes {
        node.use_token(token.as_ref().unwrap());
    }
    let ipam = json!({"ranges": [[{"subnet": "11.10.0.0/23", "nodeSliceSize": 24}]]});
    let add = |i: usize, c: &str| {
        let node = cluster.node(i);
        node.node_local("ADD", c, "net1", &ipam_conf(node, "rbac", &ipam))
    };
    add(0, "c1").ok(); // get nodes, list and create sliceclaims
    add(1, "c1").ok();
    cluster.recreate_node_object(0);
    cluster.node(0).write_node_file();
    add(0, "c2").ok(); // the check, and update: the claim taken over for the new Node
    store.delete("nodes", "", "node-b").unwrap();
    add(2, "c1").ok(); // the range is full: get node-b, delete its claim, create it anew
    assert_eq!(slices_of(&cluster, "node-c").len(), 1);
    let stats = cluster.api().stats();
    for verb in ["get", "list", "create", "update", "delete"] {
        assert!(stats.per_verb.get(verb).copied().unwrap_or(0) > 0, "{verb} was exercised: {stats:?}");
    }
}

#[test]
fn bad_input_is_a_clear_cni_error_and_leaves_nothing_behind() {
    let mut cluster = Cluster::new(2);
    let (node, other) = (cluster.node(0), cluster.node(1));
    let nothing_left = |node: &SimNode, net: &str| {
        assert!(node.leases(net).is_empty(), "leases of {net}: {:?}", node.leases(net));
        assert!(node.record(net).is_none(), "record of {net}");
    };
    let check = |node: &SimNode, net: &str, ipam: Value, code: u64, text: &str| {
        let (c, msg) = node.node_local("ADD", "c1", "net1", &ipam_conf(node, net, &ipam)).err();
        assert_eq!(c, code, "{msg}");
        assert!(msg.contains(text), "{msg:?} lacks {text:?}");
        nothing_left(node, net);
    };
    check(
        node,
        "n1",
        json!({"ranges": [[{"subnet": "11.0.0.0/16", "nodeSliceSize": 24}], [{"subnet": "11.0.4.0/24"}]]}),
        7,
        "ipam.ranges[0][0] 11.0.0.0/16 (slices of /24) overlaps ipam.ranges[1][0] 11.0.4.0/24",
    );
    check(
        node,
        "n2",
        json!({"ranges": [[{"subnet": "11.0.0.0/16", "nodeSliceSize": 12}]]}),
        7,
        "nodeSliceSize /12 is larger than the range 11.0.0.0/16",
    );
    check(node, "n3", json!({"cfg": "default"}), 7, "ipam.cfg needs a node index source");
    let mut unknown_node =
        ipam_conf(node, "n4", &json!({"ranges": [[{"subnet": "11.7.0.0/16", "nodeSliceSize": 24}]]}));
    unknown_node["ipam"]["nodeFile"] = "/nonexistent/node.json".into();
    let (c, msg) = node.node_local("ADD", "c1", "net1", &unknown_node).err();
    assert!(c == 7 && msg.contains("no node identity: /nonexistent/node.json") && msg.contains("NODE_NAME"), "{msg}");
    assert!(cluster.claims().is_empty());

    // A full range, naming the network; a full slice; a corrupt lease file in the way.
    let one = json!({"ranges": [[{"subnet": "11.8.0.0/30", "nodeSliceSize": 30}]]});
    node.node_local("ADD", "c1", "net1", &ipam_conf(node, "tiny", &one)).ok();
    check(other, "tiny", one.clone(), 105, "network tiny: no free /30 slice left in 11.8.0.0/30 for node node-b");
    let (c, msg) = node.node_local("ADD", "c2", "net1", &ipam_conf(node, "tiny", &one)).err();
    assert!(c == 105 && msg.contains("no free address in range set 0 (11.8.0.1-11.8.0.2): 1 leased"), "{msg}");
    node.node_local("DEL", "c1", "net1", &ipam_conf(node, "tiny", &one)).ok();
    std::fs::write(node.data_dir().join("tiny/11.8.0.2"), "").unwrap();
    let (c, msg) = node.node_local("ADD", "c2", "net1", &ipam_conf(node, "tiny", &one)).err();
    assert!(c == 105 && msg.contains("lease file(s) are corrupt") && msg.contains("11.8.0.2 (content"), "{msg}");

    // A dual-stack network whose IPv6 range is full claims no IPv4 slice either.
    let v6_full = json!({"ranges": [[{"subnet": "11.9.0.0/16", "nodeSliceSize": 24}], [{"subnet": "fd19::/64", "nodeSliceSize": 64}]]});
    node.node_local("ADD", "c1", "net1", &ipam_conf(node, "pair", &v6_full)).ok();
    check(other, "pair", v6_full, 105, "no free /64 slice left in fd19::/64");
    assert!(slices_of(&cluster, "node-b").iter().all(|s| !s.to_string().starts_with("11.9.")), "{:?}", cluster.held());

    // Refused by RBAC: the apiserver's message, code 100, nothing claimed.
    cluster.api().faults().forbid("create", "sliceclaims");
    check(
        other,
        "rbac",
        json!({"ranges": [[{"subnet": "12.0.0.0/16", "nodeSliceSize": 24}]]}),
        100,
        "cannot create resource \"sliceclaims\"",
    );
    cluster.api().faults().clear();

    // No Node object: slices are for registered nodes.
    cluster.api().store().delete("nodes", "", "node-b").unwrap();
    check(
        other,
        "ghost",
        json!({"ranges": [[{"subnet": "12.1.0.0/16", "nodeSliceSize": 24}]]}),
        100,
        "node node-b (from",
    );

    // A corrupt record is rebuilt from the claims; with the apiserver down it says which file.
    let green = json!({"ranges": [[{"subnet": "12.2.0.0/16", "nodeSliceSize": 24}]]});
    node.node_local("ADD", "c1", "net1", &ipam_conf(node, "green", &green)).ok();
    let record = node.data_dir().join("green/node-local.json");
    std::fs::write(&record, "{not json").unwrap();
    node.node_local("ADD", "c2", "net1", &ipam_conf(node, "green", &green)).ok();
    assert!(node.record("green").is_some(), "rebuilt");
    std::fs::write(&record, "{not json").unwrap();
    cluster.stop_api();
    let node = cluster.node(0);
    let (c, msg) = node.node_local("ADD", "c3", "net1", &ipam_conf(node, "green", &green)).err();
    assert_eq!(c, 11, "{msg}");
    assert!(msg.contains("node-local.json is corrupt"), "{msg}");
    assert_eq!(node.leases("green").len(), 2, "c3 got nothing");

    // And the very first assignment with the apiserver down: try again later, nothing made.
    let (c, msg) = node
        .node_local(
            "ADD",
            "c1",
            "net1",
            &ipam_conf(node, "later", &json!({"ranges": [[{"subnet": "12.3.0.0/16", "nodeSliceSize": 24}]]})),
        )
        .err();
    assert!(c == 11 && msg.contains("apiserver"), "{msg}");
    assert!(node.leases("later").is_empty() && node.record("later").is_none());
}

#[test]
fn versions_check_and_requested_addresses_like_host_local() {
    let cluster = Cluster::new(1);
    let node = cluster.node(0);
    let mut conf = ipam_conf(node, "green", &dual_stack());
    conf["cniVersion"] = "0.3.0".into();
    let result = node.node_local("ADD", "c1", "net1", &conf).ok();
    assert_eq!(result["ips"][0]["version"], "4", "0.3.x results carry the family");
    conf["cniVersion"] = "1.0.0".into();
    conf["prevResult"] = result.clone();
    conf["prevResult"]["cniVersion"] = "0.3.0".into();
    node.node_local("CHECK", "c1", "net1", &conf).ok();
    let (code, msg) = node.node_local("CHECK", "c9", "net1", &conf).err();
    assert!(code == 3 && msg.contains("container c9 has no lease on net1"), "{msg}");

    let slice = slices_of(&cluster, "node-a");
    let wanted = slice.iter().find(|s| s.addr().is_ipv4()).unwrap().hosts().nth(9).unwrap();
    let mut asked = ipam_conf(node, "green", &dual_stack());
    asked["runtimeConfig"] = json!({"ips": [format!("{wanted}/24")]});
    let got = result_ips(&node.node_local("ADD", "c2", "net1", &asked).ok());
    assert_eq!(got[0], (wanted, 24));
    let (code, msg) = node.node_local("ADD", "c3", "net1", &asked).err();
    assert!(
        code == 7 && msg.contains(&format!("requested address {wanted} is already leased to container c2")),
        "{msg}"
    );

    let version = node.node_local("VERSION", "", "", &json!({"cniVersion": "0.4.0"})).ok();
    assert_eq!(version["supportedVersions"].as_array().unwrap().len(), 7);
    let mut old = conf.clone();
    old["cniVersion"] = "0.2.0".into();
    old.as_object_mut().unwrap().remove("prevResult");
    let legacy = node.node_local("ADD", "c4", "net1", &old).ok();
    assert!(legacy["ip4"]["ip"].is_string() && legacy["ip6"]["ip"].is_string(), "{legacy}");
}
