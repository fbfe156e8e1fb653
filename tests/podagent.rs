//! podagent end to end: the real podagent binary watching the test apiserver, calling the
//! real kactus (through a wrapper that records each call) with the real reference plugins,
//! in a throwaway node netns. Asserted as an operator would: the device is in the pod with
//! an address, network-status lists it, its lease is freed on removal, and a restarted
//! podagent or an expired watch neither repeats nor loses a change.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GREEN: &str = "net9f27410725ab";
const DATA: &str = "net8d777f385d3d";
const CONVERGE: Duration = Duration::from_secs(20);

/// The node's CNI set-up: kactus first in the conf dir, and a `kactus` in the bin dir that
/// appends `COMMAND CNI_ARGS` to calls.log before running the real one.
struct Node {
    conf_dir: PathBuf,
    bin_dir: PathBuf,
    calls: PathBuf,
}

fn node_cni(sb: &Sandbox) -> Node {
    let (conf_dir, bin_dir, calls) = (sb.path("net.d"), sb.path("bin"), sb.path("calls.log"));
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::write(conf_dir.join("00-kactus.conf"), sb.kactus_conf().to_string()).unwrap();
    std::fs::write(
        conf_dir.join("99-other.conf"),
        json!({"cniVersion": "1.0.0", "name": "x", "type": "nope"}).to_string(),
    )
    .unwrap();
    let wrapper = format!(
        "#!/bin/sh\necho \"$CNI_COMMAND $CNI_ARGS\" >> '{}'\nexec '{}' \"$@\"\n",
        calls.display(),
        env!("CARGO_BIN_EXE_kactus")
    );
    let path = bin_dir.join("kactus");
    std::fs::write(&path, wrapper).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    Node { conf_dir, bin_dir, calls }
}

impl Node {
    /// The calls podagent made, e.g. `ADD IgnoreUnknown=1;...;K8S_POD_NETWORK=data`.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls).unwrap_or_default().lines().map(String::from).collect()
    }
}

/// A running podagent in the node netns, killed on drop.
struct PodAgent {
    child: Child,
    node_ns: PathBuf,
    log: PathBuf,
}

impl PodAgent {
    fn start(sb: &Sandbox, node: &Node) -> PodAgent {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(sb.path("podagent.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &sb.node.name, env!("CARGO_BIN_EXE_podagent")])
            .arg("--node-name=node1")
            .arg(format!("--kubeconfig={}", sb.kubeconfig.display()))
            .arg(format!("--cni-conf-dir={}", node.conf_dir.display()))
            .arg(format!("--cni-bin-dir={}", node.bin_dir.display()))
            .arg(format!("--cni-path={}:{CNI_PATH}", node.bin_dir.display()))
            .arg(format!("--kactus-cache-dir={}", sb.cache_dir().display()))
            .arg("--log-level=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn podagent");
        let agent = PodAgent { child, node_ns: sb.node.path.clone(), log: sb.path("podagent.log") };
        assert!(wait_until(|| agent.get("/healthz").is_some_and(|(code, _)| code == 200)), "podagent never got ready");
        agent
    }

    /// GET on the metrics port inside the node netns: (status, body).
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let answer = kactus::netns::run_in(&self.node_ns, move || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9648")?;
            s.write_all(request.as_bytes())?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .ok()?
        .ok()?;
        let code = answer.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()))
    }

    fn metric(&self, name: &str) -> u64 {
        let (_, body) = self.get("/metrics").expect("metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing from {body}"))
    }
}

impl Drop for PodAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("podagent log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// Polls `cond` until it holds or [`CONVERGE`] passes.
fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + CONVERGE;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// Pod app1 with green, running, set up by kactus as kubelet would; and the data NAD.
fn running_pod(sb: &mut Sandbox) -> usize {
    let green = json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "green-br",
        "ipam": {"type": "host-local", "subnet": "192.168.42.0/24", "dataDir": sb.ipam_dir()}});
    let data = json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "data-br",
        "ipam": {"type": "host-local", "subnet": "10.10.0.0/24", "dataDir": sb.ipam_dir()}});
    sb.apply(&Sandbox::nad_yaml("default", "green", &green));
    sb.apply(&Sandbox::nad_yaml("default", "data", &data));
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"green"}]"#})));
    start_pod(sb, "app1")
}

/// Runs kactus ADD for a pod already in the apiserver, with its server-made UID as kubelet does.
fn start_pod(sb: &mut Sandbox, name: &str) -> usize {
    let p = sb.pod(name);
    let args = kubelet_args(sb, name);
    sb.kactus("ADD", &format!("c-{name}"), Some(&sb.pods[p].path), "eth0", &args, &sb.kactus_conf()).ok();
    p
}

fn kubelet_args(sb: &Sandbox, name: &str) -> String {
    let uid = sb.api().store().get("pods", "default", name).unwrap()["metadata"]["uid"].as_str().unwrap().to_string();
    pod_args("default", name).replace(&format!("K8S_POD_UID=uid-{name}"), &format!("K8S_POD_UID={uid}"))
}

fn set_networks(sb: &Sandbox, networks: &str) {
    let patch = json!({"metadata": {"annotations": {"networks": networks}}});
    sb.api().store().merge_patch("pods", "default", "app1", &patch).unwrap();
}

fn network_status(sb: &Sandbox) -> Value {
    let pod = sb.api().store().get("pods", "default", "app1").unwrap();
    serde_json::from_str(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().unwrap()).unwrap()
}

fn lists(sb: &Sandbox, dev: &str) -> bool {
    network_status(sb).as_array().unwrap().iter().any(|e| e["interface"] == dev)
}

fn data_leases(sb: &Sandbox) -> usize {
    sb.leases().iter().filter(|l| l.contains("10.10.0.")).count()
}

#[test]
fn data_is_hot_plugged_then_unplugged_and_a_restart_in_between_changes_nothing() {
    let mut sb = Sandbox::new();
    let p = running_pod(&mut sb);
    let node = node_cni(&sb);
    let agent = PodAgent::start(&sb, &node);
    assert!(node.calls().is_empty(), "an in-sync pod needs no call: {:?}", node.calls());

    // The operator adds data: net8d777f385d3d appears with an address, without a restart.
    let eth0_before = sb.pods[p].addrs("eth0");
    set_networks(&sb, r#"[{"name":"green"},{"name":"data"}]"#);
    assert!(
        wait_until(|| sb.pods[p].has_link(DATA) && lists(&sb, DATA)),
        "data never appeared: {:?}",
        sb.pod_devices(p)
    );
    assert!(sb.pods[p].addrs(DATA)[0].starts_with("10.10.0."), "{:?}", sb.pods[p].addrs(DATA));
    assert_eq!(sb.pods[p].addrs("eth0"), eth0_before, "eth0 untouched");
    let calls = node.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].starts_with("ADD ") && calls[0].contains("K8S_POD_NETWORK=data"), "{calls:?}");
    for pair in kubelet_args(&sb, "app1").split(';') {
        assert!(calls[0].contains(pair), "{pair} missing: {calls:?}");
    }
    assert_eq!(agent.metric("podagent_adds_total"), 1);

    // A restarted podagent finds the pod in sync: nothing re-added, nothing dropped.
    let (devices, leases) = (sb.pod_devices(p), sb.leases());
    drop(agent);
    let agent = PodAgent::start(&sb, &node);
    assert!(agent.metric("podagent_reconciles_total") >= 1, "the restarted podagent looked at the pod");
    assert_eq!(node.calls().len(), 1, "{:?}", node.calls());
    assert_eq!((sb.pod_devices(p), sb.leases()), (devices, leases));

    // Removed from the annotation: the device goes and its lease is freed; green stays.
    set_networks(&sb, r#"[{"name":"green"}]"#);
    assert!(wait_until(|| !sb.pods[p].has_link(DATA) && !lists(&sb, DATA)), "data never went away");
    assert_eq!(data_leases(&sb), 0, "{:?}", sb.leases());
    let mut devices = sb.pod_devices(p);
    devices.sort();
    assert_eq!(devices, vec!["eth0", GREEN]);
    let calls = node.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[1].starts_with("DEL ") && calls[1].contains("K8S_POD_NETWORK=data"), "{calls:?}");
    assert_eq!((agent.metric("podagent_dels_total"), agent.metric("podagent_failures_total")), (1, 0));
}

#[test]
fn a_change_across_expired_watches_and_dropped_connections_is_applied_exactly_once() {
    let mut sb = Sandbox::new();
    let p = running_pod(&mut sb);
    let node = node_cni(&sb);
    let agent = PodAgent::start(&sb, &node);

    // The watch expires (410: relist) and the next connections drop, around the change.
    sb.api().faults().expire_watches();
    sb.api().faults().reset_next(2);
    set_networks(&sb, r#"[{"name":"green"},{"name":"data"}]"#);
    assert!(wait_until(|| sb.pods[p].has_link(DATA) && lists(&sb, DATA)), "data never appeared");
    assert!(wait_until(|| agent.metric("podagent_watch_restarts_total") >= 1));

    // Another expiry: the relist sees the pod again and must not add data a second time.
    let reconciles = agent.metric("podagent_reconciles_total");
    sb.api().faults().expire_watches();
    assert!(wait_until(|| agent.metric("podagent_reconciles_total") > reconciles), "no relist after the expiry");
    assert_eq!(node.calls().iter().filter(|c| c.starts_with("ADD ")).count(), 1, "{:?}", node.calls());
    assert_eq!(data_leases(&sb), 1, "{:?}", sb.leases());
    assert_eq!(agent.metric("podagent_failures_total"), 0);
}

#[test]
fn a_pod_created_after_podagent_started_is_watched_too() {
    let mut sb = Sandbox::new();
    running_pod(&mut sb);
    let node = node_cni(&sb);
    let agent = PodAgent::start(&sb, &node);
    let reconciles = agent.metric("podagent_reconciles_total");

    // kubelet creates app3 on this node while podagent runs; kactus sets it up.
    sb.apply(&Sandbox::pod_yaml("default", "app3", &json!({"networks": r#"[{"name":"green"}]"#})));
    let p3 = start_pod(&mut sb, "app3");
    assert!(wait_until(|| agent.metric("podagent_reconciles_total") > reconciles), "app3 was never looked at");
    assert!(node.calls().is_empty(), "app3 is in sync: {:?}", node.calls());

    let patch = json!({"metadata": {"annotations": {"networks": r#"[{"name":"green"},{"name":"data"}]"#}}});
    sb.api().store().merge_patch("pods", "default", "app3", &patch).unwrap();
    assert!(wait_until(|| sb.pods[p3].has_link(DATA)), "data never appeared in app3: {:?}", sb.pod_devices(p3));
    assert_eq!(node.calls().len(), 1, "{:?}", node.calls());
}

#[test]
fn a_missing_network_is_reported_on_its_pod_and_does_not_hold_up_another() {
    let mut sb = Sandbox::new();
    let p = running_pod(&mut sb);
    sb.apply(&Sandbox::pod_yaml("default", "app2", &json!({"networks": "[]"})));
    let p2 = start_pod(&mut sb, "app2");
    let node = node_cni(&sb);
    let agent = PodAgent::start(&sb, &node);

    set_networks(&sb, r#"[{"name":"green"},{"name":"nope"}]"#);
    let patch = json!({"metadata": {"annotations": {"networks": r#"[{"name":"data"}]"#}}});
    sb.api().store().merge_patch("pods", "default", "app2", &patch).unwrap();
    assert!(wait_until(|| sb.pods[p2].has_link(DATA)), "app2 never got data");
    let warned = || {
        sb.api().store().list("events", Some("default")).into_iter().find(|e| {
            e["involvedObject"]["name"] == "app1" && e["reason"] == "NetworkAttachFailed" && e["type"] == "Warning"
        })
    };
    assert!(wait_until(|| warned().is_some()), "no Warning event on app1");
    let message = warned().unwrap()["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("nope"), "{message}");
    assert!(agent.metric("podagent_failures_total") >= 1);
    assert!(!sb.pods[p].has_link(&kactus::attachment::device_name_for("nope")));

    // The NAD appears: the retry (with backoff) adds it without any further edit.
    let nope = json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "nope-br",
        "ipam": {"type": "host-local", "subnet": "10.20.0.0/24", "dataDir": sb.ipam_dir()}});
    sb.apply(&Sandbox::nad_yaml("default", "nope", &nope));
    assert!(wait_until(|| sb.pods[p].has_link(&kactus::attachment::device_name_for("nope"))), "retry never added nope");
}

/// `cargo test --release --test podagent -- --ignored --nocapture hot_plug_benchmark`:
/// hot-plug latency (annotation patched -> device present) p50/p99 over 30 adds.
#[test]
#[ignore]
fn hot_plug_benchmark() {
    let mut sb = Sandbox::new();
    let p = running_pod(&mut sb);
    let node = node_cni(&sb);
    let _agent = PodAgent::start(&sb, &node);
    let mut latencies = Vec::new();
    // Polled every millisecond in-process (no `ip` exec), so the figure is podagent's, not the poll's.
    let present = |path: &std::path::Path| kactus::netns::link_exists(path, DATA).unwrap_or(false);
    for _ in 0..30 {
        let start = Instant::now();
        set_networks(&sb, r#"[{"name":"green"},{"name":"data"}]"#);
        while !present(&sb.pods[p].path) {
            assert!(start.elapsed() < CONVERGE, "data never appeared");
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(start.elapsed());
        set_networks(&sb, r#"[{"name":"green"}]"#);
        assert!(wait_until(|| !sb.pods[p].has_link(DATA) && !lists(&sb, DATA)));
    }
    latencies.sort();
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    eprintln!("hot-plug latency over {} adds: p50 {:?}, p99 {:?}", latencies.len(), pct(0.5), pct(0.99));
}

/// podagent's idle cost with 100 in-sync pods on its node: CPU over 10 s and resident memory.
/// `cargo test --release --test podagent idle_cost_with_100_pods -- --ignored --nocapture`
#[test]
#[ignore]
fn idle_cost_with_100_pods() {
    let mut sb = Sandbox::new();
    running_pod(&mut sb);
    let status = r#"[{"name":"cluster","interface":"eth0","ips":["10.244.0.9"],"default":true},{"name":"default/green","interface":"net9f27410725ab","ips":["192.168.42.9"]}]"#;
    for i in 0..100 {
        sb.apply(&Sandbox::pod_yaml(
            "default",
            &format!("idle{i}"),
            &json!({"networks": r#"[{"name":"green"}]"#, "k8s.v1.cni.cncf.io/network-status": status}),
        ));
    }
    let node = node_cni(&sb);
    let agent = PodAgent::start(&sb, &node);
    assert!(wait_until(|| agent.metric("podagent_reconciles_total") >= 101), "not every pod was looked at");
    assert!(node.calls().is_empty(), "in-sync pods need no call: {:?}", node.calls());
    let pid = agent.child.id();
    let cpu_ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let (t0, c0) = (Instant::now(), cpu_ticks());
    std::thread::sleep(Duration::from_secs(10));
    let (elapsed, used) = (t0.elapsed(), cpu_ticks() - c0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or_default().to_string();
    eprintln!(
        "podagent idle with 101 pods: CPU {:.3}% of one core over {:?}; {rss}",
        used as f64 / hz / elapsed.as_secs_f64() * 100.0,
        elapsed
    );
}
