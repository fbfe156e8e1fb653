//! The in-pod data plane (issues 23 and 24): the release podagent and kactus-endpoints against
//! the test apiserver in a throwaway node netns, with [`CLIENTS`] client pods on one node, each
//! a real network namespace with a veth `net1` on a bridge in the node netns (network `dp/mp1`)
//! and the record a pod set up by kactus has: its cache entry (where podagent's
//! `--sandbox-lookup=cache` finds the sandbox) and its `kactus.io/attachments` condition.
//! Made directly, not through CNI ADD, so 100 pods take seconds; podagent sees what it sees
//! on a node.
//!
//! What is measured, and how:
//! - **Ready -> rule in every client pod** (issue 23): an endpoint pod of one of [`SERVICES`]
//!   Services (on another node) gets `Ready=True` (a status PATCH, as kubelet writes it);
//!   kactus-endpoints rewrites the Service's slice, podagent rewrites every client's proxy
//!   table. Timed by this bench from the PATCH to the moment each client's nftables
//!   generation moved (the kernel adds one per committed transaction, and podagent is the
//!   only writer there), read over one netlink socket per pod opened beforehand, swept every
//!   [`SWEEP_PAUSE`]; "every pod" is the slowest pod of the change. Each change is then
//!   checked (untimed) with the nft CLI in that last pod: the endpoint is in its table.
//! - **Peer -> rules in 100 selected pods** (issue 24): the same, for a pod on another node
//!   that gets its attachment (kactus's status PATCH of its condition) and is a peer of one
//!   of [`POLICIES`] policies that each select all 100 clients.
//! - **CPU and RSS**: podagent's utime+stime (and stime alone) from /proc/PID/stat (10 ms
//!   ticks), from before each change until podagent is quiet after it; its VmRSS and VmHWM
//!   after the phase.
//! - **An unrelated change** (a proxied Service on a network none of the pods is on, created
//!   then deleted; a pod of this node without attachments, created then deleted): from the
//!   write until podagent's `podagent_dataplane_passes_total` moved (polled every ms over
//!   its metrics port), and its CPU per change once the node is quiet again; at 10 pods x 5
//!   Services and at 100 x 50, so growth with pods x Services shows.
//! - **Per-packet cost**: TCP throughput between two pods of the bridge (a sender and a
//!   receiver in Rust, [`TPUT_SECS`] s a run), and new connections per second, with no
//!   policy on the receiver and with one policy holding [`IPBLOCKS`] ipBlock peers, runs
//!   alternating.
//!
//! Every netns, link and process made here goes when the section ends, when it fails (the
//! guards' Drop) and when it panics (a panic hook does the same, in case panics abort).

use crate::common::podagent::{cache_lookup, node_cni, wait_until, PodAgent};
use crate::common::*;
use crate::report::{ms, pct};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const NS: &str = "dp";
const NETWORK: &str = "mp1";
const DEVICE: &str = "net1";
const CLIENTS: usize = 100;
const SERVICES: usize = 50;
/// The smaller node the unrelated change is also measured on.
const SMALL: (usize, usize) = (10, 5);
const POLICIES: usize = 20;
const IPBLOCKS: usize = 1000;
const TPUT_SECS: f64 = 3.0;
const CRR_SECS: f64 = 1.0;
const TPUT_RUNS: usize = 5;
/// Between two sweeps of the clients' generations.
const SWEEP_PAUSE: Duration = Duration::from_millis(1);
/// How long podagent must stay without a pass to count as quiet.
const QUIET: Duration = Duration::from_millis(300);
const LIMIT: Duration = Duration::from_secs(30);

/// What a panic must still clean: netns names and child pids (a release profile may abort).
static LEFT: Mutex<(Vec<String>, Vec<u32>)> = Mutex::new((Vec::new(), Vec::new()));

fn clean_left() {
    let Ok(mut left) = LEFT.try_lock() else { return };
    for pid in left.1.drain(..) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
    for name in left.0.drain(..) {
        let _ = Command::new("ip").args(["netns", "del", &name]).stderr(Stdio::null()).status();
    }
}

/// Cleans what [`LEFT`] holds when dropped (end of the section, or unwinding).
struct Guard;

impl Guard {
    fn new() -> Guard {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            clean_left();
            previous(info);
        }));
        Guard
    }

    fn netns(name: &str) {
        LEFT.lock().unwrap_or_else(|e| e.into_inner()).0.push(name.to_string());
    }

    fn pid(pid: u32) {
        LEFT.lock().unwrap_or_else(|e| e.into_inner()).1.push(pid);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        clean_left();
    }
}

/// kactus-endpoints in the node netns, killed on drop.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A client pod: its netns (in the sandbox's pods) and an nftables socket opened there.
struct Client {
    netns: PathBuf,
    name: String,
    nft: kactus::nft::Nft,
}

struct Bench {
    // Dropped first: the processes, then the netns (the Sandbox's pods before its node).
    agent: Option<PodAgent>,
    _controller: Controller,
    sb: Sandbox,
    clients: Vec<Client>,
    services: usize,
    _guard: Guard,
}

fn client_ip(i: usize) -> String {
    format!("10.77.{}.{}", i / 250, i % 250 + 1)
}

fn attachments(ip: &str) -> Value {
    json!({"type": "kactus.io/attachments", "status": "True", "reason": "Attached",
           "message": json!([{"name": format!("{NS}/{NETWORK}"), "interface": DEVICE, "ips": [format!("{ip}/16")]}]).to_string()})
}

fn ready(status: bool) -> Value {
    json!({"type": "Ready", "status": if status { "True" } else { "False" }})
}

fn pod(name: &str, node: &str, labels: Value, conditions: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": NS, "labels": labels},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
           "status": {"phase": "Running", "conditions": conditions}})
}

/// A Service for kactus on `network`, its pods chosen by `kactus.io/selector`.
fn service(k: usize, name: &str, network: &str, selector: Value) -> Value {
    let ip = format!("10.96.{}.{}", 1 + k / 250, k % 250 + 1);
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": NS,
                        "labels": {"service.kubernetes.io/service-proxy-name": "kactus"},
                        "annotations": {"k8s.v1.cni.cncf.io/networks": network, "kactus.io/selector": selector.to_string()}},
           "spec": {"clusterIP": ip, "clusterIPs": [ip],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}})
}

/// podagent's utime + stime so far.
fn stat_cpu(pid: u32) -> Duration {
    let (user, sys) = stat_times(pid);
    user + sys
}

/// (utime, stime) from /proc/PID/stat: the fields after the command (which may hold
/// spaces), utime the 14th of the line and stime the 15th.
fn stat_times(pid: u32) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let time = |i: usize| Duration::from_secs_f64(fields.get(i).copied().unwrap_or(0) as f64 / ticks);
    (time(0), time(1))
}

/// (VmRSS, VmHWM) in MiB.
fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl Bench {
    fn agent(&self) -> &PodAgent {
        self.agent.as_ref().expect("podagent runs")
    }

    fn pid(&self) -> u32 {
        self.agent().child.id()
    }

    /// A metric of podagent; `None` when this build has no such metric.
    fn metric(&self, name: &str) -> Option<u64> {
        let (_, body) = self.agent().get("/metrics")?;
        body.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
    }

    fn passes(&self) -> u64 {
        self.metric("podagent_dataplane_passes_total").unwrap_or(0)
    }

    /// Adds client pods up to `n`: netns, veth on the bridge, cache entry, Pod object.
    fn add_clients(&mut self, n: usize, app: &str) {
        let bridge_ns = self.sb.node.name.clone();
        for i in self.clients.len()..n {
            let name = format!("c{i}");
            let p = self.sb.pod(&format!("dp{i}"));
            let ns = &self.sb.pods[p];
            Guard::netns(&ns.name);
            let peer = format!("dc{i}");
            ns.ip(&["link", "add", DEVICE, "type", "veth", "peer", "name", &peer, "netns", &bridge_ns]);
            ns.ip(&["addr", "add", &format!("{}/16", client_ip(i)), "dev", DEVICE]);
            ns.ip(&["link", "set", DEVICE, "up"]);
            self.sb.node.ip(&["link", "set", &peer, "master", "dp-br", "up"]);
            write_cache_entry(&self.sb, &name, &ns.path);
            self.sb
                .api()
                .store()
                .apply(pod(&name, "node1", json!({"app": app}), vec![attachments(&client_ip(i))]))
                .expect("client pod");
            let nft = kactus::nft::Nft::open_in(&ns.path).expect("nftables socket in the pod");
            self.clients.push(Client { netns: ns.path.clone(), name: ns.name.clone(), nft });
        }
    }

    /// Adds Services up to `n`, each with one ready endpoint pod on node2 and one not ready.
    fn add_services(&mut self, n: usize) {
        let store = self.sb.api().store();
        for k in self.services..n {
            let svc = format!("s{k}");
            store.apply(service(k, &svc, NETWORK, json!({"svc": svc}))).expect("service");
            let labels = json!({"svc": svc});
            let ip = |third: usize| format!("10.77.{third}.{}", k % 250 + 1);
            store
                .apply(pod(&format!("e{k}"), "node2", labels.clone(), vec![attachments(&ip(10)), ready(true)]))
                .expect("endpoint pod");
            store.apply(pod(&format!("r{k}"), "node2", labels, vec![attachments(&ip(11)), ready(false)])).expect("pod");
        }
        self.services = n;
    }

    /// Waits until every client has a proxy table with every Service and podagent is quiet.
    fn converge(&self, what: &str) {
        let want = self.clients.len() as u64;
        let done = wait_until(|| self.metric("podagent_dataplane_pods_programmed") == Some(want));
        assert!(done, "{what}: {:?} pods programmed, want {want}", self.metric("podagent_dataplane_pods_programmed"));
        let last = self.clients.last().expect("a client");
        let services = self.services;
        let all = wait_until(|| {
            let table = nft_list(&last.name, "kactus-proxy");
            (0..services).all(|k| mentions(&table, &format!("10.77.10.{}", k % 250 + 1)))
        });
        assert!(all, "{what}: the last client's table lacks Services:\n{}", nft_list(&last.name, "kactus-proxy"));
        self.quiet();
    }

    /// Waits until podagent made no pass for [`QUIET`].
    fn quiet(&self) {
        let start = Instant::now();
        let mut seen = self.passes();
        let mut since = Instant::now();
        while since.elapsed() < QUIET {
            assert!(start.elapsed() < LIMIT, "podagent never went quiet");
            std::thread::sleep(Duration::from_millis(20));
            let now = self.passes();
            if now != seen {
                seen = now;
                since = Instant::now();
            }
        }
    }

    /// Runs `change`, then sweeps every client's nftables generation until each moved; the
    /// time from the change to each pod's move, and the first time `marker` held (polled in
    /// the same sweeps).
    fn timed_change(&mut self, change: impl FnOnce(&Sandbox), mut marker: impl FnMut(&Sandbox) -> bool) -> Sweep {
        let before: Vec<u32> = self.clients.iter_mut().map(|c| c.nft.generation().expect("generation")).collect();
        let start = Instant::now();
        change(&self.sb);
        let mut moved: Vec<Option<Duration>> = vec![None; self.clients.len()];
        let mut marked = None;
        let (mut sweeps, mut sweeping) = (0u32, Duration::ZERO);
        while moved.iter().any(Option::is_none) {
            assert!(start.elapsed() < LIMIT, "the change never reached every client: {moved:?}");
            let sweep = Instant::now();
            for (i, c) in self.clients.iter_mut().enumerate() {
                if moved[i].is_none() && c.nft.generation().expect("generation") != before[i] {
                    moved[i] = Some(start.elapsed());
                }
            }
            if marked.is_none() && marker(&self.sb) {
                marked = Some(start.elapsed());
            }
            sweeping += sweep.elapsed();
            sweeps += 1;
            std::thread::sleep(SWEEP_PAUSE);
        }
        let moved: Vec<Duration> = moved.into_iter().flatten().collect();
        let last = moved.iter().enumerate().max_by_key(|(_, d)| **d).map(|(i, _)| i).unwrap_or(0);
        Sweep {
            all: moved[last],
            first: *moved.iter().min().unwrap_or(&Duration::ZERO),
            marked,
            last,
            sweeps,
            sweeping,
        }
    }

    /// A `timed_change` whose result is checked in the last pod to move: `contains` (or, with
    /// `present == false`, its absence) in its `table`.
    fn measured(
        &mut self,
        table: &str,
        contains: &str,
        present: bool,
        change: impl FnOnce(&Sandbox),
        marker: impl FnMut(&Sandbox) -> bool,
    ) -> Sweep {
        let sweep = self.timed_change(change, marker);
        let name = &self.clients[sweep.last].name;
        let listed = nft_list(name, table);
        assert_eq!(mentions(&listed, contains), present, "{contains} in {table} of {name}:\n{listed}");
        self.quiet();
        sweep
    }
}

/// One change's sweep: when the slowest and the fastest pod moved, when the marker held.
struct Sweep {
    all: Duration,
    first: Duration,
    marked: Option<Duration>,
    last: usize,
    sweeps: u32,
    sweeping: Duration,
}

/// Whether `text` names the address `ip` (not as a prefix of another).
fn mentions(text: &str, ip: &str) -> bool {
    text.match_indices(ip).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + ip.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit() || c == '.') && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// `nft list table inet <table>` in the netns named `name` (untimed checks only).
fn nft_list(name: &str, table: &str) -> String {
    let out = Command::new("ip").args(["netns", "exec", name, "nft", "list", "table", "inet", table]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

/// What kactus's cache holds for a pod it set up (its eth0 entry): where podagent's cache
/// lookup finds the pod's netns.
fn write_cache_entry(sb: &Sandbox, name: &str, netns: &Path) {
    let dir = sb.cache_dir().join(format!("dp-{name}"));
    std::fs::create_dir_all(&dir).expect("cache dir");
    let entry = json!({"kind": "cniCacheV1", "containerId": format!("dp-{name}"), "config": "",
        "ifName": "eth0", "networkName": "cluster", "netns": netns,
        "cniArgs": [["K8S_POD_NAMESPACE", NS], ["K8S_POD_NAME", name]],
        "kactus": {"seq": 0, "role": "master"}});
    std::fs::write(dir.join("eth0.json"), entry.to_string()).expect("cache entry");
}

/// The slice kactus-endpoints wrote for Service `svc`, ready addresses.
fn ready_in_slice(sb: &Sandbox, svc: &str) -> Vec<String> {
    sb.api()
        .store()
        .list("endpointslices", Some(NS))
        .into_iter()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == svc)
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .filter_map(|e| e["addresses"][0].as_str().map(String::from))
        .collect()
}

fn start() -> Bench {
    let guard = Guard::new();
    let sb = Sandbox::new();
    Guard::netns(&sb.node.name);
    sb.node.ip(&["link", "add", "dp-br", "type", "bridge"]);
    sb.node.ip(&["link", "set", "dp-br", "up"]);
    let store = sb.api().store();
    store
        .apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"team": "dp"}}}))
        .expect("namespace");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(sb.path("endpoints.log")).expect("log");
    let controller = Command::new("ip")
        .args(["netns", "exec", &sb.node.name, env!("CARGO_BIN_EXE_kactus-endpoints")])
        .arg(format!("--kubeconfig={}", sb.kubeconfig.display()))
        .args(["--metrics-addr=127.0.0.1:9649", "--log-level=info"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start kactus-endpoints");
    Guard::pid(controller.id());
    Bench { agent: None, _controller: Controller(controller), sb, clients: Vec::new(), services: 0, _guard: guard }
}

pub fn dataplane(reps: usize) {
    let mut b = start();
    let node = node_cni(&b.sb);
    b.add_clients(SMALL.0, "client");
    b.add_services(SMALL.1);
    assert!(wait_until(|| ready_in_slice(&b.sb, &format!("s{}", SMALL.1 - 1)).len() == 1), "no slices");
    let agent = PodAgent::start_with(&b.sb, &node, &cache_lookup(&b.sb));
    Guard::pid(agent.child.id());
    b.agent = Some(agent);
    b.converge("small node");
    let small = unrelated(&mut b, reps);

    let started = Instant::now();
    b.add_clients(CLIENTS, "client");
    b.add_services(SERVICES);
    assert!(wait_until(|| ready_in_slice(&b.sb, &format!("s{}", SERVICES - 1)).len() == 1), "no slices");
    b.converge("full node");
    let setup = started.elapsed();
    let full = unrelated(&mut b, reps);
    let computed = b.metric("podagent_dataplane_pods_computed_total").is_some();

    // Issue 23: an endpoint turning Ready (and back), one Service after another.
    let mut ready_rows = [Phase::default(), Phase::default()];
    let (mut sweeps, mut sweeping) = (0u32, Duration::ZERO);
    for rep in 0..=reps {
        let k = rep % SERVICES;
        let (name, svc, ip) = (format!("r{k}"), format!("s{k}"), format!("10.77.11.{}", k % 250 + 1));
        for (on, row) in [true, false].into_iter().zip(ready_rows.iter_mut()) {
            let (name, sv) = (name.clone(), svc.clone());
            let cpu = stat_times(b.pid());
            let s = b.measured(
                "kactus-proxy",
                &ip,
                on,
                move |sb: &Sandbox| {
                    let patch = json!({"status": {"conditions": [ready(on)]}});
                    sb.api().store().strategic_patch("pods", NS, &name, &patch).expect("readiness");
                },
                move |sb| ready_in_slice(sb, &sv).len() == if on { 2 } else { 1 },
            );
            if rep > 0 {
                row.record(&s, cpu, stat_times(b.pid()));
                sweeps += s.sweeps;
                sweeping += s.sweeping;
            }
        }
    }
    let ready_rss = rss(b.pid());

    // Issue 24: 20 policies selecting every client; a peer gets its attachment, then goes.
    for m in 0..POLICIES {
        b.sb.api().store().apply(policy(m)).expect("policy");
    }
    let all_have = wait_until(|| b.clients.iter().all(|c| nft_list(&c.name, "kactus-policy").contains("ingress")));
    assert!(all_have, "the policies never reached every client");
    b.quiet();
    let mut peer_rows = [Phase::default(), Phase::default()];
    for rep in 0..=reps {
        let name = format!("q{rep}");
        let ip = format!("10.77.12.{}", rep % 250 + 1);
        let labels = json!({"role": format!("peer{}", rep % POLICIES)});
        // Made without its attachment (a node2 pod podagent does not keep), then attested.
        b.sb.api().store().apply(pod(&name, "node2", labels, vec![ready(true)])).expect("peer pod");
        std::thread::sleep(Duration::from_millis(20));
        for (appear, row) in [true, false].into_iter().zip(peer_rows.iter_mut()) {
            let (n, a) = (name.clone(), ip.clone());
            let cpu = stat_times(b.pid());
            let s = b.measured(
                "kactus-policy",
                &ip,
                appear,
                move |sb: &Sandbox| {
                    let store = sb.api().store();
                    match appear {
                        true => drop(
                            store
                                .strategic_patch("pods", NS, &n, &json!({"status": {"conditions": [attachments(&a)]}}))
                                .expect("attest"),
                        ),
                        false => drop(store.delete("pods", NS, &n).expect("delete peer")),
                    }
                },
                |_| false,
            );
            if rep > 0 {
                row.record(&s, cpu, stat_times(b.pid()));
                sweeps += s.sweeps;
                sweeping += s.sweeping;
            }
        }
    }
    let policy_rss = rss(b.pid());

    let tput = throughput(&mut b);

    let per = |cpu: Duration, n: usize| ms(cpu) / n.max(1) as f64;
    println!(
        "\nThe in-pod data plane: {CLIENTS} client pods (netns, veth on a bridge) on one node, {SERVICES} Services on their network (one ready endpoint each, on another node), release podagent and kactus-endpoints; the 90 more pods and 45 more Services added and every table in place in {:.1} s{}",
        setup.as_secs_f64(),
        if computed { "; this build has podagent_dataplane_pods_computed_total" } else { "" }
    );
    println!("| change ({reps} of each) | rule in every client pod p50 / p99 | first pod p50 | slice written p50 | podagent CPU per change | podagent RSS / peak after the phase |");
    println!("|---|---:|---:|---:|---:|---:|");
    let rows = [
        ("an endpoint pod turns Ready (issue 23)", &ready_rows[0], Some(ready_rss)),
        ("an endpoint pod turns not Ready", &ready_rows[1], None),
        ("a peer pod gets its attachment, 20 policies select the 100 pods (issue 24)", &peer_rows[0], Some(policy_rss)),
        ("a peer pod is deleted", &peer_rows[1], None),
    ];
    for (what, row, memory) in rows {
        let (p50, p99) = pct(&row.all);
        println!(
            "| {what} | {p50:.1} / {p99:.1} ms | {:.1} ms | {} | {:.1} ms ({:.1} ms in the kernel) | {} |",
            pct(&row.first).0,
            if row.marked.is_empty() { "-".to_string() } else { format!("{:.1} ms", pct(&row.marked).0) },
            per(row.cpu, row.all.len()),
            per(row.sys, row.all.len()),
            memory.map_or(String::new(), |(r, h)| format!("{r:.1} / {h:.1} MiB"))
        );
    }
    println!(
        "(measurement: {sweeps} sweeps of {CLIENTS} netlink generation reads, {:.2} ms each on average, {} ms pause between sweeps)",
        ms(sweeping) / sweeps.max(1) as f64,
        ms(SWEEP_PAUSE)
    );

    println!("\nAn unrelated change: from the write to podagent's pass done; podagent's CPU per change once quiet ({reps} of each, created then deleted)");
    println!("| node | change | to the pass done p50 / p99 | passes per change | podagent CPU per change | pods computed per change |");
    println!("|---|---|---:|---:|---:|---:|");
    for ((pods, services), rows) in [(SMALL, &small), ((CLIENTS, SERVICES), &full)] {
        for row in rows.iter() {
            let (p50, p99) = pct(&row.latency);
            println!(
                "| {pods} pods x {services} Services | {} | {p50:.1} / {p99:.1} ms | {:.2} | {:.2} ms | {} |",
                row.what,
                row.passes as f64 / row.latency.len().max(1) as f64,
                per(row.cpu, row.latency.len()),
                row.computed
                    .map_or("n/a".to_string(), |c| format!("{:.1}", c as f64 / row.latency.len().max(1) as f64))
            );
        }
    }

    println!("\nPer-packet cost: two pods on the same bridge, receiver with no policy vs one policy of {IPBLOCKS} ipBlock peers (the sender's /32 last), {TPUT_RUNS} runs each, alternating");
    println!("| receiver | TCP throughput, {TPUT_SECS:.0} s runs: median (min - max) | new connections/s, {CRR_SECS:.0} s runs: median (min - max) |");
    println!("|---|---:|---:|");
    for (what, g, c) in [("no policy", &tput.0, &tput.1), (&*format!("{IPBLOCKS} ipBlocks"), &tput.2, &tput.3)] {
        println!("| {what} | {} Gbit/s | {} |", spread(g, 2), spread(c, 0));
    }
    assert_eq!(b.metric("podagent_dataplane_failures_total"), Some(0), "podagent failed pods");
    let kept = std::env::temp_dir().join("kactus-bench-dataplane-podagent.log");
    if std::fs::copy(b.sb.path("podagent.log"), &kept).is_ok() {
        println!("(podagent's log: {})", kept.display());
    }
}

/// Median (min - max).
fn spread(v: &[f64], digits: usize) -> String {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return "n/a".into();
    }
    format!("{:.*} ({:.*} - {:.*})", digits, v[v.len() / 2], digits, v[0], digits, v[v.len() - 1])
}

/// Policy `m`: selects every client; ingress on mp1 from pods labelled `role=peer<m>`.
fn policy(m: usize) -> Value {
    json!({"apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
           "metadata": {"name": format!("p{m}"), "namespace": NS,
                        "annotations": {"k8s.v1.cni.cncf.io/policy-for": NETWORK}},
           "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Ingress"],
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": format!("peer{m}")}}}]}]}})
}

/// One kind of change measured `reps` times.
#[derive(Default)]
struct Phase {
    all: Vec<Duration>,
    first: Vec<Duration>,
    marked: Vec<Duration>,
    cpu: Duration,
    /// Of `cpu`, in the kernel (stime).
    sys: Duration,
}

impl Phase {
    /// One change: its sweep and podagent's (utime, stime) before and after it.
    fn record(&mut self, s: &Sweep, before: (Duration, Duration), after: (Duration, Duration)) {
        self.all.push(s.all);
        self.first.push(s.first);
        self.marked.extend(s.marked);
        self.cpu += (after.0 + after.1).saturating_sub(before.0 + before.1);
        self.sys += after.1.saturating_sub(before.1);
    }
}

struct Unrelated {
    what: &'static str,
    latency: Vec<Duration>,
    passes: u64,
    cpu: Duration,
    computed: Option<u64>,
}

/// The `j`th object of one kind of unrelated change.
type MakeObject = Box<dyn Fn(usize) -> Value>;

/// `reps` unrelated changes of each kind, each created then deleted (two changes).
fn unrelated(b: &mut Bench, reps: usize) -> Vec<Unrelated> {
    let store = b.sb.api().store();
    let kinds: [(&'static str, MakeObject, &str); 2] = [
        (
            "a Service on a network no pod is on",
            Box::new(|j| service(200 + j, &format!("u{j}"), "other", json!({"app": "nobody"}))),
            "services",
        ),
        (
            "a pod of this node without attachments",
            Box::new(|j| pod(&format!("x{j}"), "node1", json!({"app": "plain"}), vec![])),
            "pods",
        ),
    ];
    let mut rows = Vec::new();
    for (what, object, resource) in kinds {
        let mut row = Unrelated { what, latency: Vec::new(), passes: 0, cpu: Duration::ZERO, computed: None };
        for j in 0..=reps {
            let obj = object(j);
            let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
            for create in [true, false] {
                let (passes, cpu) = (b.passes(), stat_cpu(b.pid()));
                let computed = b.metric("podagent_dataplane_pods_computed_total");
                let start = Instant::now();
                match create {
                    true => drop(store.apply(obj.clone()).expect("unrelated object")),
                    false => drop(store.delete(resource, NS, &name).expect("delete unrelated object")),
                }
                while b.passes() == passes {
                    assert!(start.elapsed() < LIMIT, "{what}: podagent made no pass");
                    std::thread::sleep(Duration::from_millis(1));
                }
                let latency = start.elapsed();
                b.quiet();
                if j > 0 {
                    row.latency.push(latency);
                    row.passes += b.passes() - passes;
                    row.cpu += stat_cpu(b.pid()).saturating_sub(cpu);
                    if let (Some(a), Some(z)) = (computed, b.metric("podagent_dataplane_pods_computed_total")) {
                        row.computed = Some(row.computed.unwrap_or(0) + (z - a));
                    }
                }
            }
        }
        rows.push(row);
    }
    rows
}

/// (Gbit/s no policy, conn/s no policy, Gbit/s with the policy, conn/s with it).
fn throughput(b: &mut Bench) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    // The receiver and the sender are apps of their own: the 20 policies select app=client.
    let first = b.clients.len();
    b.add_clients(first + 1, "receiver");
    b.add_clients(first + 2, "sender");
    let (rx, tx) = (&b.clients[first], &b.clients[first + 1]);
    let (rx_path, tx_path, rx_name) = (rx.netns.clone(), tx.netns.clone(), rx.name.clone());
    let rx_ip: Ipv4Addr = client_ip(first).parse().expect("address");
    let tx_ip = client_ip(first + 1);
    let mut blocks: Vec<Value> = (0..IPBLOCKS - 1)
        .map(|i| json!({"ipBlock": {"cidr": format!("10.{}.{}.0/24", 100 + i / 250, i % 250)}}))
        .collect();
    blocks.push(json!({"ipBlock": {"cidr": format!("{tx_ip}/32")}}));
    let wide = json!({"apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
        "metadata": {"name": "wide", "namespace": NS, "annotations": {"k8s.v1.cni.cncf.io/policy-for": NETWORK}},
        "spec": {"podSelector": {"matchLabels": {"app": "receiver"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": blocks}]}});
    let has_policy = |name: &str| nft_list(name, "kactus-policy").contains("ingress");
    assert!(wait_until(|| !has_policy(&rx_name)), "the receiver kept a policy table");
    let (mut g0, mut c0, mut g1, mut c1) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..TPUT_RUNS {
        g0.push(gbits(&rx_path, &tx_path, rx_ip, 5201 + 2 * run as u16));
        c0.push(connections(&rx_path, &tx_path, rx_ip, 6201 + 2 * run as u16));
        b.sb.api().store().apply(wide.clone()).expect("policy");
        assert!(wait_until(|| has_policy(&rx_name)), "the ipBlock policy never reached the receiver");
        g1.push(gbits(&rx_path, &tx_path, rx_ip, 5202 + 2 * run as u16));
        c1.push(connections(&rx_path, &tx_path, rx_ip, 6202 + 2 * run as u16));
        b.sb.api().store().delete("multi-networkpolicies", NS, "wide").expect("delete policy");
        assert!(wait_until(|| !has_policy(&rx_name)), "the ipBlock policy stayed");
    }
    // The policy really filters: a sender outside every block is refused.
    b.sb.api().store().apply(wide).expect("policy");
    assert!(wait_until(|| has_policy(&rx_name)));
    let outsider = b.clients[0].netns.clone();
    assert!(!reaches(&rx_path, &outsider, rx_ip, 7201), "a sender in no ipBlock got through");
    assert!(reaches(&rx_path, &tx_path, rx_ip, 7202), "the sender in the last ipBlock was refused");
    (g0, c0, g1, c1)
}

fn listen(netns: &Path, port: u16) -> TcpListener {
    kactus::netns::run_in(netns, move || TcpListener::bind(("0.0.0.0", port)))
        .expect("enter the receiver")
        .expect("listen")
}

fn connect(netns: &Path, ip: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    kactus::netns::run_in(netns, move || TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(1)))
        .expect("enter the sender")
}

/// Bytes sent for [`TPUT_SECS`] over one connection, as Gbit/s at the receiver.
fn gbits(rx: &Path, tx: &Path, ip: Ipv4Addr, port: u16) -> f64 {
    let listener = listen(rx, port);
    let receiver = std::thread::spawn(move || -> (usize, Duration) {
        let Ok((mut conn, _)) = listener.accept() else { return (0, Duration::ZERO) };
        let mut buf = vec![0u8; 256 << 10];
        let (mut total, start) = (0usize, Instant::now());
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        (total, start.elapsed())
    });
    let mut conn = connect(tx, ip, port).expect("connect to the receiver");
    let buf = vec![7u8; 128 << 10];
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < TPUT_SECS {
        conn.write_all(&buf).expect("send");
    }
    drop(conn);
    let (bytes, took) = receiver.join().expect("receiver");
    bytes as f64 * 8.0 / took.as_secs_f64() / 1e9
}

/// New connections per second for [`CRR_SECS`]: connect, then close with a reset (linger 0,
/// so no TIME_WAIT runs the ports out); each SYN is a new flow through the policy.
fn connections(rx: &Path, tx: &Path, ip: Ipv4Addr, port: u16) -> f64 {
    let listener = listen(rx, port);
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let acceptor = std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            if listener.accept().is_err() {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    });
    let tx = tx.to_path_buf();
    let count = kactus::netns::run_in(&tx, move || {
        let (start, mut n) = (Instant::now(), 0u64);
        while start.elapsed().as_secs_f64() < CRR_SECS {
            if let Ok(conn) = TcpStream::connect((ip, port)) {
                let linger = libc::linger { l_onoff: 1, l_linger: 0 };
                // SAFETY: a valid socket and a linger struct of the size given.
                unsafe {
                    libc::setsockopt(
                        conn.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        &linger as *const libc::linger as *const libc::c_void,
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
                n += 1;
            }
        }
        n as f64 / start.elapsed().as_secs_f64()
    })
    .expect("enter the sender");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = acceptor.join();
    count
}

/// Whether one connection from `tx` is accepted by a listener in `rx`.
fn reaches(rx: &Path, tx: &Path, ip: Ipv4Addr, port: u16) -> bool {
    let _listener = listen(rx, port);
    connect(tx, ip, port).is_ok()
}
