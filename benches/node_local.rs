//! Issue 15: the node-local IPAM plugin against host-local, and what it asks of the apiserver.
//!
//! Runs the release `node-local` and `/usr/lib/cni/host-local` the way a delegate runs its
//! IPAM plugin (exec, config on stdin, result on stdout), interleaved so drift hits both
//! alike, on the dual-stack example: node-local with `nodeSliceSize` ranges of
//! 11.0.0.0/16 and fd11::/48, host-local with the node's slices written out as its ranges
//! (what the seed's template gave it). Counts every apiserver request and write per pod start
//! on the in-process test apiserver. `cargo bench --bench node_local` or `scripts/bench.sh`;
//! `KACTUS_BENCH_REPS` (default 200) sets the repetitions.

use kactus_testapi::TestApiServer;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BUILT: &str = env!("CARGO_BIN_EXE_node-local");
const HOST_LOCAL: &str = "/usr/lib/cni/host-local";
const TOKEN: &str = "node-local-bench";

struct Bench {
    api: TestApiServer,
    dir: tempfile::TempDir,
    binary: PathBuf,
}

/// One plugin run: success, what it printed, how long it took (spawn to reap).
fn run(program: &Path, command: &str, container: &str, stdin: &Value) -> (bool, String, Duration) {
    let start = Instant::now();
    let mut child = Command::new(program)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", "/var/run/netns/bench")
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", "/usr/lib/cni")
        .env("CNI_ARGS", "IgnoreUnknown=1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the plugin");
    child.stdin.take().expect("stdin").write_all(stdin.to_string().as_bytes()).expect("stdin");
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("stdout");
    let ok = child.wait().expect("wait").success();
    (ok, out, start.elapsed())
}

impl Bench {
    fn new() -> Bench {
        let api = TestApiServer::start(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), TOKEN).unwrap();
        api.store().apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bench-node"}})).unwrap();
        let dir = tempfile::tempdir().unwrap();
        api.write_kubeconfig(&dir.path().join("kubeconfig.yaml")).unwrap();
        let node = json!({"nodeName": "bench-node", "kubeconfig": dir.path().join("kubeconfig.yaml")});
        std::fs::write(dir.path().join("node.json"), node.to_string()).unwrap();
        // A private copy: a build elsewhere must not swap the binary halfway through.
        let binary = dir.path().join("node-local-binary");
        std::fs::copy(BUILT, &binary).unwrap();
        Bench { api, dir, binary }
    }

    fn node_local_conf(&self, network: &str, extra: Value) -> Value {
        let mut ipam = json!({"type": "node-local",
            "ranges": [[{"subnet": "11.0.0.0/16", "nodeSliceSize": 24}], [{"subnet": "fd11::/48", "nodeSliceSize": 64}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": self.dir.path().join("node-local"), "nodeFile": self.dir.path().join("node.json")});
        for (k, v) in extra.as_object().into_iter().flatten() {
            ipam[k] = v.clone();
        }
        json!({"cniVersion": "1.0.0", "name": network, "type": "bridge", "ipam": ipam})
    }

    /// host-local with the node's slices as its ranges.
    fn host_local_conf(&self, v4: &str, v6: &str) -> Value {
        json!({"cniVersion": "1.0.0", "name": "green", "type": "bridge",
               "ipam": {"type": "host-local", "ranges": [[{"subnet": v4}], [{"subnet": v6}]],
                        "routes": [{"dst": "0.0.0.0/0"}], "dataDir": self.dir.path().join("host-local")}})
    }

    fn writes(&self) -> u64 {
        let stats = self.api.stats();
        ["create", "update", "patch", "delete"].iter().map(|v| stats.per_verb.get(*v).copied().unwrap_or(0)).sum()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50, p90 and p99 (nearest rank) in ms.
fn pct(samples: &[Duration]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.50), rank(0.90), rank(0.99))
}

fn row(what: &str, samples: &[Duration], requests: f64, writes: f64) {
    let (p50, p90, p99) = pct(samples);
    println!("| {what} | {p50:.2} | {p90:.2} | {p99:.2} | {requests:.2} | {writes:.2} |");
}

fn main() {
    if !Path::new(HOST_LOCAL).exists() {
        eprintln!("the node-local benchmark needs the CNI reference plugins in /usr/lib/cni");
        std::process::exit(2);
    }
    let reps: usize = std::env::var("KACTUS_BENCH_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let bench = Bench::new();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "node-local benchmark: {cpus} CPU(s), {reps} repetitions per row (interleaved), dual-stack, release build"
    );

    // A node's first pod on the network: the slices are claimed through the apiserver.
    let mut first = Vec::new();
    let (mut first_requests, mut first_writes) = (0, 0);
    let claims = 20;
    for i in 0..claims {
        let (r0, w0) = (bench.api.stats().requests, bench.writes());
        let (ok, out, wall) = run(&bench.binary, "ADD", "first", &bench.node_local_conf(&format!("net{i}"), json!({})));
        assert!(ok, "first ADD: {out}");
        first.push(wall);
        first_requests += bench.api.stats().requests - r0;
        first_writes += bench.writes() - w0;
    }
    let conf = bench.node_local_conf("green", json!({}));
    let (ok, out, _) = run(&bench.binary, "ADD", "warm", &conf);
    assert!(ok, "{out}");
    let result: Value = serde_json::from_str(&out).unwrap();
    let slice = |i: usize, len: u8| {
        let net: ipnet::IpNet = result["ips"][i]["address"].as_str().unwrap().parse().unwrap();
        format!("{}/{len}", ipnet::IpNet::new(net.addr(), len).unwrap().trunc().network())
    };
    let host_local = bench.host_local_conf(&slice(0, 24), &slice(1, 64));
    let checked = bench.node_local_conf("green", json!({"revalidateSeconds": 0}));

    let (mut nl_add, mut hl_add, mut nl_del, mut hl_del, mut nl_checked) = (vec![], vec![], vec![], vec![], vec![]);
    // In batches that fit a /24 slice: ADDs (the lease directory filling up as on a busy
    // node), then the DELs of the batch.
    let (mut pod_requests, mut pod_writes) = (0, 0);
    let indexes: Vec<usize> = (0..reps).collect();
    for batch in indexes.chunks(200) {
        let (r0, w0) = (bench.api.stats().requests, bench.writes());
        for i in batch {
            let c = format!("c{i}");
            let (ok, out, wall) = run(Path::new(HOST_LOCAL), "ADD", &c, &host_local);
            assert!(ok, "host-local: {out}");
            hl_add.push(wall);
            let (ok, out, wall) = run(&bench.binary, "ADD", &c, &conf);
            assert!(ok, "node-local: {out}");
            nl_add.push(wall);
        }
        pod_requests += bench.api.stats().requests - r0;
        pod_writes += bench.writes() - w0;
        for i in batch {
            let c = format!("c{i}");
            hl_del.push(run(Path::new(HOST_LOCAL), "DEL", &c, &host_local).2);
            nl_del.push(run(&bench.binary, "DEL", &c, &conf).2);
        }
    }
    let (r1, w1) = (bench.api.stats().requests, bench.writes());
    for i in 0..reps.min(50) {
        let (ok, out, wall) = run(&bench.binary, "ADD", &format!("k{i}"), &checked);
        assert!(ok, "{out}");
        nl_checked.push(wall);
    }
    let checks = reps.min(50) as f64;
    let (check_requests, check_writes) = (bench.api.stats().requests - r1, bench.writes() - w1);

    println!("\n| call | p50 ms | p90 ms | p99 ms | apiserver requests per call | writes per call |");
    println!("|---|---:|---:|---:|---:|---:|");
    row("host-local ADD (the node's slices as its ranges)", &hl_add, 0.0, 0.0);
    row(
        "node-local ADD, node holds its slices",
        &nl_add,
        pod_requests as f64 / reps as f64,
        pod_writes as f64 / reps as f64,
    );
    row("host-local DEL", &hl_del, 0.0, 0.0);
    row("node-local DEL", &nl_del, 0.0, 0.0);
    row(
        "node-local ADD when its periodic check is due (GET Node, LIST own claims)",
        &nl_checked,
        check_requests as f64 / checks,
        check_writes as f64 / checks,
    );
    row(
        "node-local first ADD of a node on a network (claims a v4 and a v6 slice)",
        &first,
        first_requests as f64 / claims as f64,
        first_writes as f64 / claims as f64,
    );
    let (nl, hl) = (pct(&nl_add).0, pct(&hl_add).0);
    println!(
        "\nnode-local ADD p50 / host-local ADD p50 = {:.2} ({:+.0}%); apiserver writes per pod start once sliced: {pod_writes} in {reps}",
        nl / hl,
        (nl / hl - 1.0) * 100.0
    );
}
