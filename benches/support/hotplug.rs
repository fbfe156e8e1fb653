//! Hot-plug (issue 17, goal 3): the real podagent and kactus with the bridge + host-local
//! delegates, as on a node; `data` added to and removed from a running pod through its
//! annotation. Measured: from the annotation PATCH answered to the device in (or gone from)
//! the pod's netns, polled in-process; and from podagent's log, the time from its watch event
//! to the plugin's exec (react) and the plugin's own time. One sandbox and podagent per
//! build, the builds alternating rep by rep.

use crate::common::podagent::*;
use crate::common::*;
use crate::report::pct;
use crate::world::Binary;
use std::path::Path;
use std::time::{Duration, Instant};

/// One build's node: its sandbox (own node netns, apiserver and podagent) and samples.
struct Node {
    label: &'static str,
    sb: Sandbox,
    pod: usize,
    agent: PodAgent,
    appear: Vec<Duration>,
    vanish: Vec<Duration>,
}

pub fn hotplug(builds: &[(&Binary, String)], reps: usize) {
    let mut nodes: Vec<Node> = builds.iter().map(|(kactus, podagent)| start(kactus, podagent)).collect();
    for rep in 0..=reps {
        for node in nodes.iter_mut() {
            let (appear, vanish) = plug_and_unplug(node, rep as u64 + 1);
            if rep > 0 {
                node.appear.push(appear);
                node.vanish.push(vanish);
            }
        }
    }
    println!("\nHot-plug: podagent + kactus, bridge + host-local, `data` added then removed through the annotation, {reps} times");
    println!("| build | device in the pod after the PATCH, p50 / p99 | react (watch event -> exec) p50 | plugin p50 | device gone after the PATCH, p50 / p99 | react p50 | plugin p50 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for node in &nodes {
        let log = std::fs::read_to_string(&node.agent.log).unwrap_or_default();
        let (add_react, add_plugin) = logged(&log, "add network", reps);
        let (del_react, del_plugin) = logged(&log, "delete network", reps);
        let (a50, a99) = pct(&node.appear);
        let (v50, v99) = pct(&node.vanish);
        println!(
            "| {} | {a50:.1} / {a99:.1} ms | {add_react} | {add_plugin} | {v50:.1} / {v99:.1} ms | {del_react} | {del_plugin} |",
            node.label
        );
    }
}

/// A sandbox with pod app1 (green) set up by kactus, the node's CNI dir holding kactus's
/// config as the installer writes it (the pod-annotations capability declared) and the build's
/// kactus itself (no recording wrapper: nothing but kactus in the measurement), and its
/// podagent running.
fn start(kactus: &Binary, podagent: &str) -> Node {
    let mut sb = Sandbox::new();
    let pod = running_pod(&mut sb);
    let node = node_cni_passing_pod_annotations(&sb);
    let mut conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node.conf_dir.join("00-kactus.conf")).expect("node config"))
            .expect("json");
    conf["logLevel"] = "info".into();
    std::fs::write(node.conf_dir.join("00-kactus.conf"), conf.to_string()).expect("node config");
    let bin = node.bin_dir.join("kactus");
    std::fs::remove_file(&bin).expect("the recording wrapper");
    std::fs::copy(kactus.path(), &bin).expect("kactus in the node's bin dir");
    let flags = ["--sandbox-lookup=cache".to_string(), format!("--kactus-cache-dir={}", sb.cache_dir().display())];
    let agent = PodAgent::start_binary(&sb, &node, &flags, podagent);
    Node { label: kactus.label, sb, pod, agent, appear: Vec::new(), vanish: Vec::new() }
}

/// Adds data, then removes it; returns how long each took to show in the pod. Waits for
/// podagent to have counted each call (kactus wrote network-status before returning) so the
/// next change starts from a settled pod.
fn plug_and_unplug(node: &Node, round: u64) -> (Duration, Duration) {
    let path = node.sb.pods[node.pod].path.clone();
    let present = |p: &Path| kactus::netns::link_exists(p, DATA).unwrap_or(false);
    let start = Instant::now();
    set_networks(&node.sb, r#"[{"name":"green"},{"name":"data"}]"#);
    let appear = until(start, || present(&path));
    assert!(wait_until(|| node.agent.metric("podagent_adds_total") >= round), "podagent never counted the add");
    let start = Instant::now();
    set_networks(&node.sb, r#"[{"name":"green"}]"#);
    let vanish = until(start, || !present(&path));
    assert!(wait_until(|| node.agent.metric("podagent_dels_total") >= round), "podagent never counted the delete");
    (appear, vanish)
}

/// Polls `done` every 0.2 ms; the time since `start` when it held.
fn until(start: Instant, mut done: impl FnMut() -> bool) -> Duration {
    while !done() {
        assert!(start.elapsed() < CONVERGE, "the pod never changed");
        std::thread::sleep(Duration::from_micros(200));
    }
    start.elapsed()
}

/// p50 of the react and plugin times podagent logged for `what` (its last `reps` calls; a
/// build that does not log them: n/a).
fn logged(log: &str, what: &str, reps: usize) -> (String, String) {
    let field = |line: &str, before: &str| -> Option<Duration> {
        let head = line.split(before).next()?;
        let number = head.rsplit([' ', ':']).find(|s| !s.is_empty())?;
        number.parse::<f64>().ok().map(|v| Duration::from_secs_f64(v / 1e3))
    };
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&format!(": {what} "))).collect();
    let lines = &lines[lines.len().saturating_sub(reps)..];
    let react: Vec<Duration> = lines.iter().filter_map(|l| field(l, " ms after the watch event")).collect();
    let plugin: Vec<Duration> = lines.iter().filter_map(|l| field(l, " ms in the plugin")).collect();
    let show = |v: &[Duration]| if v.is_empty() { "n/a".to_string() } else { format!("{:.1} ms", pct(v).0) };
    (show(&react), show(&plugin))
}
