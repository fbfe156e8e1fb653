//! podagent end to end: the real podagent binary watching the test apiserver, calling the
//! real kactus (through a wrapper that records each call) with the real reference plugins,
//! in a throwaway node netns. Asserted as an operator would: the device is in the pod with
//! an address, network-status lists it, its lease is freed on removal, and a restarted
//! podagent or an expired watch neither repeats nor loses a change.

mod common;
use common::podagent::*;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

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
    assert_data_appears(&sb, p);
    assert_eq!(sb.pods[p].addrs("eth0"), eth0_before, "eth0 untouched");
    let calls = node.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].starts_with("ADD ") && calls[0].contains("K8S_POD_NETWORK=data"), "{calls:?}");
    for pair in kubelet_args(&sb, "app1").split(';') {
        assert!(calls[0].contains(pair), "{pair} missing: {calls:?}");
    }
    // The device and its status are out before kactus exits and podagent counts the call.
    assert!(
        wait_until(|| agent.metric("podagent_adds_total") == 1),
        "adds_total: {}",
        agent.metric("podagent_adds_total")
    );

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
    assert!(
        wait_until(|| agent.metric("podagent_dels_total") == 1),
        "dels_total: {}",
        agent.metric("podagent_dels_total")
    );
    assert_eq!(agent.metric("podagent_failures_total"), 0);
}

/// podagent acts on the pod its watch delivered and hands kactus its annotations (as the
/// runtime does for a config declaring the capability, as the installer's does): a hot-plug
/// and an unplug read the pod neither in podagent nor in kactus.
#[test]
fn a_hot_plug_reads_the_pod_neither_in_podagent_nor_in_kactus() {
    let mut sb = Sandbox::new();
    let p = running_pod(&mut sb);
    let node = node_cni_passing_pod_annotations(&sb);
    let agent = PodAgent::start(&sb, &node);
    sb.api().faults().forbid("get", "pods");
    set_networks(&sb, r#"[{"name":"green"},{"name":"data"}]"#);
    assert_data_appears(&sb, p);
    set_networks(&sb, r#"[{"name":"green"}]"#);
    assert!(wait_until(|| !sb.pods[p].has_link(DATA) && !lists(&sb, DATA)), "data never went away");
    assert_eq!(data_leases(&sb), 0, "{:?}", sb.leases());
    let calls = node.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls[0].starts_with("ADD ") && calls[1].starts_with("DEL "), "{calls:?}");
    assert_eq!(agent.metric("podagent_failures_total"), 0);
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

/// podagent's idle cost with `pods` in-sync pods on its node besides app1: CPU over 10 s,
/// resident memory now and at its peak. `cargo test --release --test podagent idle_cost -- --ignored --nocapture`;
/// `KACTUS_PODAGENT=<binary>` measures that podagent build instead of this one's (before and
/// after builds of podagent alone, under the same harness). With `fast_path_nads`, podagent
/// also serves the fast path (issue 25) and its NAD cache holds that many NADs, as
/// `kubectl apply` leaves them (last-applied annotation, managedFields), spread over ten
/// namespaces; measured once every one of them is in the cache.
fn idle_cost(pods: usize, fast_path_nads: Option<usize>) {
    let mut sb = Sandbox::new();
    for i in 0..fast_path_nads.unwrap_or(0) {
        sb.apply(&realistic_nad(&format!("team{}", i % 10), &format!("net{i}")).to_string());
    }
    running_pod(&mut sb);
    let status = r#"[{"name":"cluster","interface":"eth0","ips":["10.244.0.9"],"default":true},{"name":"default/green","interface":"net9f27410725ab","ips":["192.168.42.9"]}]"#;
    for i in 0..pods {
        sb.apply(&Sandbox::pod_yaml(
            "default",
            &format!("idle{i}"),
            &json!({"networks": r#"[{"name":"green"}]"#, "k8s.v1.cni.cncf.io/network-status": status}),
        ));
    }
    let node = node_cni(&sb);
    let binary = std::env::var("KACTUS_PODAGENT").unwrap_or_else(|_| env!("CARGO_BIN_EXE_podagent").to_string());
    let mut flags = cache_lookup(&sb).to_vec();
    if fast_path_nads.is_some() {
        flags.push(format!("--fastpath-socket={}", sb.path("run/kactus/podagent.sock").display()));
    }
    let agent = PodAgent::start_binary(&sb, &node, &flags, &binary);
    assert!(wait_until(|| agent.metric("podagent_reconciles_total") > pods as u64), "not every pod was looked at");
    if let Some(nads) = fast_path_nads {
        // The watch's events: one per NAD listed, and its start and end.
        let cached = || agent.metric("podagent_fastpath_nad_events_total") >= nads as u64 + 2;
        assert!(wait_until(cached), "the NAD cache never held all {nads} NADs");
    }
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
    let field = |name: &str| status.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
    eprintln!(
        "podagent idle with {} pods{}: CPU {:.3}% of one core over {:?}; {}; {}",
        pods + 1,
        fast_path_nads.map(|n| format!(" and the fast path's cache of {n} NADs")).unwrap_or_default(),
        used as f64 / hz / elapsed.as_secs_f64() * 100.0,
        elapsed,
        field("VmRSS:"),
        field("VmHWM:")
    );
}

#[test]
#[ignore]
fn idle_cost_with_one_pod() {
    idle_cost(0, None);
}

#[test]
#[ignore]
fn idle_cost_with_100_pods() {
    idle_cost(100, None);
}

#[test]
#[ignore]
fn idle_cost_with_1000_pods() {
    idle_cost(1000, None);
}

/// The same 1,001 pods with the fast path served and no NAD: what serving it costs alone.
#[test]
#[ignore]
fn idle_cost_with_1000_pods_and_the_fast_path_without_nads() {
    idle_cost(1000, Some(0));
}

/// The same 1,001 pods with the fast path served and 200 NADs in its cache.
#[test]
#[ignore]
fn idle_cost_with_1000_pods_and_the_fast_paths_200_nads() {
    idle_cost(1000, Some(200));
}

/// The lead's cluster is Kubernetes 1.20: podagent needs nothing newer (events.k8s.io/v1 is
/// there from 1.19) and hot-plugs as on a current release.
#[test]
fn on_kubernetes_1_20_data_is_hot_plugged_too() {
    let mut sb = Sandbox::new();
    sb.api().emulate_kubernetes_minor(20);
    let p = running_pod(&mut sb);
    let node = node_cni(&sb);
    let agent = PodAgent::start(&sb, &node);
    set_networks(&sb, r#"[{"name":"green"},{"name":"data"}]"#);
    assert_data_appears(&sb, p);
    assert_eq!(agent.metric("podagent_adds_total"), 1);
}

/// A failure that repeats on every retry is one Warning Event whose count grows (kube-rs's
/// Recorder), not a new Event per retry.
#[test]
fn a_repeated_failure_is_one_event_with_a_count() {
    let mut sb = Sandbox::new();
    running_pod(&mut sb);
    let node = node_cni(&sb);
    let agent = PodAgent::start(&sb, &node);
    set_networks(&sb, r#"[{"name":"green"},{"name":"nope"}]"#);
    // The first try and two retries (after 1 s and 2 s).
    assert!(wait_until(|| agent.metric("podagent_failures_total") >= 3), "no retries");
    let events: Vec<_> = sb
        .api()
        .store()
        .list("events", Some("default"))
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == "app1" && e["reason"] == "NetworkAttachFailed")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0]["series"]["count"].as_u64().unwrap_or(0) >= 2, "{:?}", events[0]);
}

/// Whoever can edit a pod can write its network-status too: an entry whose name would add
/// CNI_ARGS items (`K8S_POD_NETWORK=default/data;K8S_POD_NAME=victim`) is not acted on, and
/// is reported on the pod; the pod's real changes still go through.
#[test]
fn a_hostile_network_status_name_never_reaches_cni_args() {
    let mut sb = Sandbox::new();
    let p = running_pod(&mut sb);
    let node = node_cni(&sb);
    let agent = PodAgent::start(&sb, &node);
    let mut status = network_status(&sb);
    status.as_array_mut().unwrap().push(json!({"name": "default/data;K8S_POD_NAME=victim", "interface": DATA}));
    let patch = json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/network-status": status.to_string()}}});
    sb.api().store().merge_patch("pods", "default", "app1", &patch).unwrap();

    let warned = || {
        sb.api().store().list("events", Some("default")).into_iter().find(|e| {
            e["involvedObject"]["name"] == "app1"
                && e["type"] == "Warning"
                && e["message"].as_str().is_some_and(|m| m.contains("K8S_POD_NAME=victim") && m.contains("ignored"))
        })
    };
    assert!(wait_until(|| warned().is_some()), "no Warning event on app1");
    assert!(node.calls().is_empty(), "{:?}", node.calls());
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("default/data;K8S_POD_NAME=victim") && log.contains("ignored"), "{log}");

    set_networks(&sb, r#"[{"name":"green"},{"name":"data"}]"#);
    assert!(wait_until(|| !node.calls().is_empty()), "data was never added");
    let calls = node.calls();
    assert!(calls.iter().all(|c| !c.contains("victim")), "{calls:?}");
    assert!(calls[0].starts_with("ADD ") && calls[0].ends_with("K8S_POD_NETWORK=data"), "{calls:?}");
    assert!(sb.pods[p].has_link(DATA) || wait_until(|| sb.pods[p].has_link(DATA)));
}
