//! Issue 6: what kactus costs on top of its delegates, per pod and per attachment.
//!
//! Runs the release kactus binary and the same delegates exec'd directly (bridge + host-local
//! from /usr/lib/cni) inside a throwaway node netns, against the in-process test apiserver,
//! and prints one table. Needs root, `ip` and the reference plugins. `cargo bench --bench
//! plugin` or `scripts/bench.sh`; `KACTUS_BENCH_REPS` (default 20) sets the repetitions,
//! `KACTUS_BENCH_BINARY` another kactus build to measure.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary cargo built for this bench; copied before use (see [`kactus_binary`]).
const BUILT_KACTUS: &str = env!("CARGO_BIN_EXE_kactus");
const ATTACHMENT_COUNTS: [usize; 4] = [0, 1, 4, 16];
const CONCURRENT_PODS: usize = 50;

/// One child process's outcome: what it printed and how long it took.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    wall: Duration,
}

/// Spawns `program` inside `netns` (setns in the child, so no `ip netns exec` in the
/// measurement), feeds stdin, and reaps it.
fn run_in(netns: Option<&Path>, program: &str, env: &[(&str, String)], stdin: &[u8]) -> Run {
    let ns_file = netns.map(|p| std::fs::File::open(p).expect("open netns"));
    let ns_fd = ns_file.as_ref().map(|f| f.as_raw_fd());
    let mut cmd = Command::new(program);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(fd) = ns_fd {
        // SAFETY: setns is async-signal-safe; it only changes the forked child's netns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    let _ = input.write_all(stdin);
    drop(input);
    let mut err_pipe = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    let _ = child.stdout.take().expect("stdout").read_to_string(&mut stdout);
    let stderr = err_reader.join().unwrap_or_default();
    let ok = child.wait().expect("wait for child").success();
    let wall = start.elapsed();
    Run { ok, stdout, stderr, wall }
}

/// A private copy of the release binary (or of `KACTUS_BENCH_BINARY`, to compare builds):
/// the target dir is shared, and a build elsewhere must not swap it halfway through a run.
fn kactus_binary() -> &'static str {
    static COPY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("kactus-bench-{}", std::process::id()));
        let built = std::env::var("KACTUS_BENCH_BINARY").unwrap_or_else(|_| BUILT_KACTUS.to_string());
        std::fs::copy(&built, &path).unwrap_or_else(|e| panic!("copy the kactus binary {built}: {e}"));
        path.display().to_string()
    })
}

fn cni_env(
    command: &str,
    container: &str,
    netns: &Path,
    ifname: &str,
    args: &str,
    cni_path: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", container.to_string()),
        ("CNI_NETNS", netns.display().to_string()),
        ("CNI_IFNAME", ifname.to_string()),
        ("CNI_ARGS", args.to_string()),
        ("CNI_PATH", cni_path.to_string()),
    ]
}

/// The bench world: one node, the master network and 16 bridge NADs, one pod object per
/// attachment count.
struct World {
    sb: Sandbox,
    conf: Value,
    /// NAD configs as kactus sends them (name and cniVersion set), by index.
    nads: Vec<Value>,
    master: Value,
    /// Each bench pod's annotations, by pod name.
    annotations: std::collections::BTreeMap<String, Value>,
    /// Whether ADDs get the pod's annotations in `runtimeConfig`, as containerd and CRI-O
    /// pass them to a config declaring the capability (what the installer writes).
    from_runtime: std::sync::atomic::AtomicBool,
}

fn nad_name(i: usize) -> String {
    format!("n{i}")
}

fn pod_name(n: usize) -> String {
    format!("bench{n}")
}

impl World {
    fn new() -> World {
        let mut sb = Sandbox::new();
        let nads: Vec<Value> = (0..16)
            .map(|i| sb.bridge_net(&nad_name(i), &format!("br{i}"), &format!("10.{}.0.0/24", 100 + i)))
            .collect();
        for (i, nad) in nads.iter().enumerate() {
            sb.apply(&Sandbox::nad_yaml("default", &nad_name(i), nad));
        }
        let mut annotations = std::collections::BTreeMap::new();
        for n in ATTACHMENT_COUNTS {
            let list: Vec<Value> = (0..n).map(|i| json!({"name": nad_name(i)})).collect();
            let ann = if n == 0 { json!({}) } else { json!({"networks": Value::Array(list).to_string()}) };
            sb.apply(&Sandbox::pod_yaml("default", &pod_name(n), &ann));
            sb.pod(&pod_name(n));
            annotations.insert(pod_name(n), ann);
        }
        let mut conf = sb.kactus_conf();
        // What a node would run: info, not the tests' debug.
        conf["logLevel"] = "info".into();
        let mut master = sb.bridge_net("cluster", "cni0", "10.244.0.0/24");
        master.as_object_mut().map(|m| m.remove("masterPlugin"));
        World { sb, conf, nads, master, annotations, from_runtime: std::sync::atomic::AtomicBool::new(true) }
    }

    /// The config a runtime would send for `command` on `pod`: an ADD carries the pod's
    /// annotations unless [`World::from_runtime`] is off.
    fn conf_for(&self, command: &str, pod: &str) -> Value {
        let mut conf = self.conf.clone();
        if command == "ADD" && self.from_runtime.load(std::sync::atomic::Ordering::Relaxed) {
            let annotations = self.annotations.get(pod).cloned().unwrap_or_else(|| json!({}));
            conf["runtimeConfig"] = json!({ kactus::plugin::plan::POD_ANNOTATIONS_CAPABILITY: annotations });
        }
        conf
    }

    fn pod_netns(&self, n: usize) -> PathBuf {
        let i = ATTACHMENT_COUNTS.iter().position(|&c| c == n).expect("count");
        self.sb.pods[i].path.clone()
    }

    fn kactus(&self, command: &str, container: &str, netns: &Path, pod: &str, cni_path: &str) -> Run {
        let env = cni_env(command, container, netns, "eth0", &pod_args("default", pod), cni_path);
        let conf = self.conf_for(command, pod);
        let run = run_in(Some(&self.sb.node.path), kactus_binary(), &env, conf.to_string().as_bytes());
        assert!(run.ok, "kactus {command} {container}: {}\n{}", run.stdout, run.stderr);
        run
    }

    /// Peak RSS (KiB) of one kactus call, measured by GNU time: a child's own wait4 maxrss
    /// also counts the memory of the process it was forked from (ours), so it needs a small
    /// parent. None without /usr/bin/time.
    fn kactus_rss(&self, command: &str, container: &str, netns: &Path, pod: &str, cni_path: &str) -> Option<i64> {
        let env = cni_env(command, container, netns, "eth0", &pod_args("default", pod), cni_path);
        self.rss_of(Some(&self.sb.node.path), &env, self.conf.to_string().as_bytes())
    }

    fn version_rss(&self) -> Option<i64> {
        self.rss_of(None, &[("CNI_COMMAND", "VERSION".to_string())], br#"{"cniVersion":"1.0.0"}"#)
    }

    fn rss_of(&self, netns: Option<&Path>, env: &[(&str, String)], stdin: &[u8]) -> Option<i64> {
        if !Path::new("/usr/bin/time").exists() {
            return None;
        }
        let out = self.sb.path("rss.txt");
        let script = format!("exec /usr/bin/time -f %M -o {} {}", out.display(), kactus_binary());
        let mut env = env.to_vec();
        env.push(("KACTUS_BENCH_SCRIPT", script));
        let run =
            run_in(netns, "/bin/sh", &env, &[b"eval \"$KACTUS_BENCH_SCRIPT\" <<'EOF'\n", stdin, b"\nEOF\n"].concat());
        assert!(run.ok, "kactus under time: {} {}", run.stdout, run.stderr);
        std::fs::read_to_string(out).ok()?.trim().lines().last()?.parse().ok()
    }

    /// The wall time kactus says its delegates took in its last `verb` for `container`
    /// (its `answered` log line; builds before that line have none).
    fn delegate_time(&self, verb: &str, container: &str) -> Option<Duration> {
        let log = std::fs::read_to_string(self.conf["logFile"].as_str().unwrap_or_default()).unwrap_or_default();
        let marker = format!("{verb} {container} answered");
        log.lines()
            .rev()
            .find(|l| l.contains(&marker))
            .and_then(|l| l.rsplit_once(" taking ")?.1.strip_suffix(" ms")?.parse::<f64>().ok())
            .map(|ms| Duration::from_secs_f64(ms / 1e3))
    }

    /// The delegates kactus would run for `n` attachments, as (ifname, config).
    fn delegate_calls(&self, n: usize) -> Vec<(String, Value)> {
        let mut calls = vec![("eth0".to_string(), self.master.clone())];
        for i in 0..n {
            calls.push((kactus::attachment::device_name_for(&nad_name(i)), self.nads[i].clone()));
        }
        calls
    }

    /// The same delegates exec'd directly, in the same order, with the same env; returns
    /// the ADD results (DEL gets them as prevResult, as kactus does from its cache).
    fn direct_add(&self, container: &str, netns: &Path, pod: &str, n: usize) -> (Duration, Vec<Value>) {
        let args = kactus_delegate_args(pod);
        let start = Instant::now();
        let mut results = Vec::new();
        for (ifname, conf) in self.delegate_calls(n) {
            let env = cni_env("ADD", container, netns, &ifname, &args, CNI_PATH);
            let run =
                run_in(Some(&self.sb.node.path), &format!("{CNI_PATH}/bridge"), &env, conf.to_string().as_bytes());
            assert!(run.ok, "bridge ADD {ifname}: {}", run.stdout);
            results.push(serde_json::from_str(&run.stdout).expect("bridge result"));
        }
        (start.elapsed(), results)
    }

    fn direct_del(&self, container: &str, netns: &Path, pod: &str, n: usize, results: &[Value]) -> Duration {
        let args = kactus_delegate_args(pod);
        let start = Instant::now();
        for ((ifname, mut conf), prev) in self.delegate_calls(n).into_iter().zip(results).rev() {
            conf["prevResult"] = prev.clone();
            let env = cni_env("DEL", container, netns, &ifname, &args, CNI_PATH);
            let run =
                run_in(Some(&self.sb.node.path), &format!("{CNI_PATH}/bridge"), &env, conf.to_string().as_bytes());
            assert!(run.ok, "bridge DEL {ifname}: {}", run.stdout);
        }
        start.elapsed()
    }
}

/// CNI_ARGS as kactus hands them to every delegate.
fn kactus_delegate_args(pod: &str) -> String {
    pod_args("default", pod)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p99 (nearest rank) in ms.
fn pct(samples: &[Duration]) -> (f64, f64) {
    let mut v: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.50), rank(0.99))
}

#[derive(Default)]
struct Row {
    kactus_add: Vec<Duration>,
    kactus_del: Vec<Duration>,
    /// kactus's wall time minus the time its delegates ran (from its log), per call: its own
    /// cost measured within the same call, so free of the run-to-run noise of the delegates.
    own_add: Vec<Duration>,
    own_del: Vec<Duration>,
    direct_add: Vec<Duration>,
    direct_del: Vec<Duration>,
    requests: Vec<u64>,
    verbs: String,
    bytes: Vec<u64>,
    connections: Vec<u64>,
    del_requests: Vec<u64>,
}

/// `reps` rounds of kactus ADD, kactus DEL, direct ADD, direct DEL (interleaved so drift
/// hits both alike), after one unmeasured warm-up round that creates the bridges.
fn measure(world: &World, n: usize, reps: usize, tag: &str) -> Row {
    let netns = world.pod_netns(n);
    let pod = pod_name(n);
    let mut row = Row::default();
    for rep in 0..=reps {
        let container = format!("{tag}-{n}-{rep}");
        let before = world.sb.api().stats();
        let add = world.kactus("ADD", &container, &netns, &pod, CNI_PATH);
        let mid = world.sb.api().stats();
        let del = world.kactus("DEL", &container, &netns, &pod, CNI_PATH);
        let after = world.sb.api().stats();
        let dcontainer = format!("{container}-direct");
        let (dadd, results) = world.direct_add(&dcontainer, &netns, &pod, n);
        let ddel = world.direct_del(&dcontainer, &netns, &pod, n, &results);
        if rep == 0 {
            continue;
        }
        row.kactus_add.push(add.wall);
        row.kactus_del.push(del.wall);
        if let (Some(add_waited), Some(del_waited)) =
            (world.delegate_time("ADD", &container), world.delegate_time("DEL", &container))
        {
            row.own_add.push(add.wall.saturating_sub(add_waited));
            row.own_del.push(del.wall.saturating_sub(del_waited));
        }
        row.direct_add.push(dadd);
        row.direct_del.push(ddel);
        row.requests.push(mid.requests - before.requests);
        row.bytes.push(mid.response_bytes - before.response_bytes);
        row.connections.push(mid.connections - before.connections);
        row.del_requests.push(after.requests - mid.requests);
        row.verbs = mid
            .per_verb
            .iter()
            .filter_map(|(verb, count)| {
                let delta = count - before.per_verb.get(verb).copied().unwrap_or(0);
                (delta > 0).then(|| format!("{delta} {verb}"))
            })
            .collect::<Vec<_>>()
            .join(", ");
    }
    if std::env::var_os("KACTUS_BENCH_SAMPLES").is_some() {
        let show = |v: &[Duration]| v.iter().map(|d| format!("{:.0}", ms(*d))).collect::<Vec<_>>().join(" ");
        eprintln!(
            "{tag} n={n} kactus ADD: {}\n{tag} n={n} direct ADD: {}",
            show(&row.kactus_add),
            show(&row.direct_add)
        );
    }
    assert!(world.sb.leases().is_empty(), "leases left: {:?}", world.sb.leases());
    assert!(world.sb.cache_files().is_empty(), "cache left: {:?}", world.sb.cache_files());
    row
}

fn median_u64(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn print_timing(title: &str, rows: &[(usize, Row)]) {
    println!("\n{title}");
    println!(
        "| att | verb | kactus p50 | kactus p99 | direct p50 | direct p99 | overhead p50 | overhead/att | overhead/direct | kactus own p50 |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for verb in ["ADD", "DEL"] {
        let base = rows.iter().find(|(n, _)| *n == 0).map(|(_, r)| overhead(r, verb));
        for (n, row) in rows {
            let (k, d) =
                if verb == "ADD" { (&row.kactus_add, &row.direct_add) } else { (&row.kactus_del, &row.direct_del) };
            let ((k50, k99), (d50, d99)) = (pct(k), pct(d));
            let ovh = k50 - d50;
            let per_att = match (n, base) {
                (0, _) | (_, None) => "-".to_string(),
                (n, Some(b)) => format!("{:+.2} ms", (ovh - b) / *n as f64),
            };
            let own = if verb == "ADD" { &row.own_add } else { &row.own_del };
            let own = if own.is_empty() { "n/a".to_string() } else { format!("{:.1} ms", pct(own).0) };
            println!(
                "| {n} | {verb} | {k50:.1} ms | {k99:.1} ms | {d50:.1} ms | {d99:.1} ms | {ovh:+.1} ms | {per_att} | {:.2} | {own} |",
                ovh / d50
            );
        }
    }
}

fn overhead(row: &Row, verb: &str) -> f64 {
    let (k, d) = if verb == "ADD" { (&row.kactus_add, &row.direct_add) } else { (&row.kactus_del, &row.direct_del) };
    pct(k).0 - pct(d).0
}

fn print_api(title: &str, rows: &[(usize, Row)]) {
    println!("\n{title}");
    println!("| att | requests/ADD | by verb | response bytes/ADD | new connections/ADD | requests/DEL |");
    println!("|---:|---:|---|---:|---:|---:|");
    for (n, row) in rows {
        println!(
            "| {n} | {} | {} | {} | {} | {} |",
            median_u64(&row.requests),
            row.verbs,
            median_u64(&row.bytes),
            median_u64(&row.connections),
            median_u64(&row.del_requests)
        );
    }
}

/// A delegate that does nothing, so the peak RSS measured is kactus's own (it covers
/// the reaped descendants too, and Go delegates are bigger than kactus).
fn stub_plugin_dir(world: &World) -> PathBuf {
    let dir = world.sb.path("stub-cni");
    std::fs::create_dir_all(&dir).expect("stub dir");
    let script = r#"#!/bin/sh
cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  printf '{"cniVersion":"1.0.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[]}' "$CNI_IFNAME" "$CNI_NETNS"
fi
"#;
    let path = dir.join("bridge");
    std::fs::write(&path, script).expect("write stub");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod stub");
    dir
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPU(s), {cpu}, Linux {}", kernel.trim())
}

/// p50 of `/bin/true` spawned and reaped the same way: the floor under every start-up figure.
fn spawn_floor(runs: usize) -> f64 {
    let samples: Vec<Duration> = (0..runs).map(|_| run_in(None, "/bin/true", &[], b"").wall).collect();
    pct(&samples).0
}

fn version_startup(runs: usize) -> (f64, f64) {
    let env = vec![("CNI_COMMAND", "VERSION".to_string())];
    let stdin = br#"{"cniVersion":"1.0.0"}"#;
    let mut kactus = Vec::new();
    let mut bridge = Vec::new();
    for _ in 0..runs {
        let r = run_in(None, kactus_binary(), &env, stdin);
        assert!(r.ok && r.stdout.contains("supportedVersions"), "VERSION: {}", r.stdout);
        kactus.push(r.wall);
        bridge.push(run_in(None, &format!("{CNI_PATH}/bridge"), &env, stdin).wall);
    }
    (pct(&kactus).0, pct(&bridge).0)
}

fn concurrent(world: &mut World) {
    let first = world.sb.pods.len();
    for i in 0..CONCURRENT_PODS {
        let name = format!("conc{i}");
        let ann = json!({"networks": r#"[{"name":"n0"}]"#});
        world.sb.apply(&Sandbox::pod_yaml("default", &name, &ann));
        world.sb.pod(&name);
        world.annotations.insert(name, ann);
    }
    let world = &*world;
    let phase = |command: &'static str| {
        let start = Instant::now();
        let errors: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..CONCURRENT_PODS)
                .map(|i| {
                    s.spawn(move || {
                        let name = format!("conc{i}");
                        let netns = world.sb.pods[first + i].path.clone();
                        let env = cni_env(
                            command,
                            &format!("c-{name}"),
                            &netns,
                            "eth0",
                            &pod_args("default", &name),
                            CNI_PATH,
                        );
                        let conf = world.conf_for(command, &name).to_string();
                        let r = run_in(Some(&world.sb.node.path), kactus_binary(), &env, conf.as_bytes());
                        if !r.ok {
                            eprintln!("{command} {name}: {} {}", r.stdout, r.stderr.trim());
                        }
                        usize::from(!r.ok)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(1)).sum()
        });
        (start.elapsed(), errors)
    };
    let (add_time, add_errors) = phase("ADD");
    let devices_after_add: usize = (0..CONCURRENT_PODS).map(|i| world.sb.pod_devices(first + i).len()).sum();
    let (del_time, del_errors) = phase("DEL");
    let devices: usize = (0..CONCURRENT_PODS).map(|i| world.sb.pod_devices(first + i).len()).sum();
    let leases = world.sb.leases().len();
    let cache = world.sb.cache_files().len();
    println!("\n{CONCURRENT_PODS} concurrent pods on one node (1 attachment each: eth0 + n0), threads");
    println!("| phase | total | errors | left after |");
    println!("|---|---:|---:|---|");
    println!(
        "| ADD x{CONCURRENT_PODS} | {:.0} ms | {add_errors} | {devices_after_add} devices in pod netns (expect {}) |",
        ms(add_time),
        2 * CONCURRENT_PODS
    );
    println!(
        "| DEL x{CONCURRENT_PODS} | {:.0} ms | {del_errors} | {devices} devices, {leases} host-local leases, {cache} cache entries |",
        ms(del_time)
    );
}

fn main() {
    if !nix::unistd::Uid::effective().is_root() || !Path::new(CNI_PATH).join("bridge").exists() {
        eprintln!("the kactus benchmark needs root and the CNI reference plugins in {CNI_PATH}");
        std::process::exit(2);
    }
    let reps: usize = std::env::var("KACTUS_BENCH_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let started = Instant::now();
    println!("kactus benchmark: {}", machine());
    println!(
        "binary {}, {reps} measured repetitions per row (+1 warm-up); every delegate is bridge + host-local",
        std::env::var("KACTUS_BENCH_BINARY").unwrap_or_else(|_| BUILT_KACTUS.to_string())
    );

    let mut world = World::new();
    if let Ok(spec) = std::env::var("KACTUS_BENCH_PROFILE") {
        profile(&world, &spec, reps);
        let _ = std::fs::remove_file(kactus_binary());
        return;
    }
    let mut plain = Vec::new();
    for n in ATTACHMENT_COUNTS {
        plain.push((n, measure(&world, n, reps, "p")));
    }
    print_timing("ADD/DEL wall time, apiserver without added latency (overhead = kactus - direct, p50)", &plain);

    world.sb.api().faults().set_latency(Duration::from_millis(5));
    let mut slow = Vec::new();
    for n in ATTACHMENT_COUNTS {
        slow.push((n, measure(&world, n, reps, "s")));
    }
    world.sb.api().faults().set_latency(Duration::ZERO);
    print_timing("The same with 5 ms added to every apiserver response", &slow);
    print_api("apiserver traffic per ADD (median; DEL reads the cache only)", &plain);

    // Runtimes that do not pass the pod's annotations (and calls by hand): kactus GETs the pod.
    world.from_runtime.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut unannotated = Vec::new();
    for n in [0, 4] {
        unannotated.push((n, measure(&world, n, reps, "u")));
    }
    world.from_runtime.store(true, std::sync::atomic::Ordering::Relaxed);
    print_timing(
        "Without the pod's annotations from the runtime (kactus GETs the pod), no added latency",
        &unannotated,
    );
    print_api("apiserver traffic per ADD without them", &unannotated);

    // Peak RSS of kactus alone: stub delegates, so the figure is not a Go delegate's.
    let stub = stub_plugin_dir(&world);
    let netns = world.pod_netns(16);
    let mut stub_rss = None;
    for rep in 0..5 {
        let container = format!("rss-{rep}");
        for command in ["ADD", "DEL"] {
            let rss = world.kactus_rss(command, &container, &netns, &pod_name(16), &stub.display().to_string());
            stub_rss = stub_rss.max(rss);
        }
    }
    let (version_p50, bridge_version_p50) = version_startup(200);
    let version_rss = world.version_rss();
    let size = std::fs::metadata(kactus_binary()).map(|m| m.len()).unwrap_or(0);
    println!("\nprocess");
    println!("| measure | value | target |");
    println!("|---|---:|---:|");
    let mib = |kib: Option<i64>| {
        kib.map_or("n/a (needs /usr/bin/time)".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    };
    println!(
        "| peak RSS of kactus, ADD+DEL with 16 attachments (delegates stubbed by /bin/sh) | {} | < 15 MiB |",
        mib(stub_rss)
    );
    println!("| peak RSS of kactus, VERSION | {} | - |", mib(version_rss));
    println!("| binary size (release, stripped) | {:.1} MiB | - |", size as f64 / 1048576.0);
    println!("| start-up: CNI_COMMAND=VERSION, p50 of 200 | {version_p50:.2} ms | < 2 ms |");
    println!("| reference: /usr/lib/cni/bridge VERSION, p50 of 200 | {bridge_version_p50:.2} ms | - |");
    println!("| floor: spawn and reap /bin/true, p50 of 200 | {:.2} ms | - |", spawn_floor(200));

    concurrent(&mut world);
    let _ = std::fs::remove_file(kactus_binary());
    println!("\nbench wall time {:.0} s", started.elapsed().as_secs_f64());
}

/// `KACTUS_BENCH_PROFILE=<attachments>:<latency ms>`: where an ADD's time goes. Runs the ADD
/// `reps` times with a debug log and prints the p50 of each phase between log lines, next to
/// the same delegates exec'd directly; then one ADD under `strace -f -tt -T`, kept in
/// /tmp/kactus-bench-profile.strace with its log beside it.
fn profile(world: &World, spec: &str, reps: usize) {
    let (n, latency) = spec.split_once(':').unwrap_or((spec, "0"));
    let n: usize = n.parse().expect("attachments");
    world.sb.api().faults().set_latency(Duration::from_millis(latency.parse().expect("latency ms")));
    let (netns, pod) = (world.pod_netns(n), pod_name(n));
    world.kactus("ADD", "warm", &netns, &pod, CNI_PATH);
    world.kactus("DEL", "warm", &netns, &pod, CNI_PATH);
    let log = "/tmp/kactus-bench-profile.log";
    let mut conf = world.conf_for("ADD", &pod);
    conf["logLevel"] = "debug".into();
    conf["logFile"] = log.into();
    let mut phases: Vec<(String, Vec<Duration>)> = Vec::new();
    let mut direct_calls = Vec::new();
    let mut usages = Vec::new();
    for rep in 0..reps {
        let _ = std::fs::remove_file(log);
        let container = format!("phases-{rep}");
        let env = cni_env("ADD", &container, &netns, "eth0", &pod_args("default", &pod), CNI_PATH);
        let add = run_in(Some(&world.sb.node.path), kactus_binary(), &env, conf.to_string().as_bytes());
        assert!(add.ok, "ADD with debug log: {}", add.stdout);
        world.kactus("DEL", &container, &netns, &pod, CNI_PATH);
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(usage) = text.lines().find_map(|l| l.split_once(&format!("ADD {container}: minor faults"))) {
            usages.push(format!("minor faults{}", usage.1));
        }
        // By name: the apiserver's side and the first delegate may log in either order.
        for (name, took) in log_phases(&text, add.wall) {
            match phases.iter_mut().find(|(known, _)| *known == name) {
                Some((_, samples)) => samples.push(took),
                None => phases.push((name, vec![took])),
            }
        }
        let (took, results) = world.direct_add(&format!("{container}-direct"), &netns, &pod, n);
        world.direct_del(&format!("{container}-direct"), &netns, &pod, n, &results);
        direct_calls.push(took / (n as u32 + 1));
    }
    println!("\nwhere an ADD with {n} attachment(s) spends its time ({latency} ms apiserver latency), p50 of {reps}");
    println!("| phase (up to the log line) | p50 |");
    println!("|---|---:|");
    for (name, samples) in &phases {
        println!("| {name} | {:.2} ms |", pct(samples).0);
    }
    println!("| (a direct delegate call, for comparison) | {:.2} ms |", pct(&direct_calls).0);
    if let Some(usage) = usages.get(usages.len() / 2) {
        println!("kactus's own usage in one of these ADDs (its threads, not its delegates): {usage}");
    }

    let _ = std::fs::remove_file(log);
    // sh reads this script from stdin; the config goes to kactus through $CONF.
    let mut env = cni_env("ADD", "prof", &netns, "eth0", &pod_args("default", &pod), CNI_PATH);
    env.push(("CONF", conf.to_string()));
    let script =
        format!("printf '%s' \"$CONF\" | strace -f -tt -T -o /tmp/kactus-bench-profile.strace {}", kactus_binary());
    let start = Instant::now();
    let run = run_in(Some(&world.sb.node.path), "/bin/sh", &env, script.as_bytes());
    println!("\nADD under strace: {:.1} ms ok={} {}", ms(start.elapsed()), run.ok, run.stderr);
    println!("strace in /tmp/kactus-bench-profile.strace, its debug log in {log}");
    world.kactus("DEL", "prof", &netns, &pod, CNI_PATH);
}

/// The gaps between kactus's own debug log lines (rustls's and reqwest's are skipped): each
/// phase is named by the line that ends it. The first phase is process start-up up to the
/// first line: the wall time minus the log's span. After the plan, the apiserver's side (the
/// client, the handshake, the NADs) runs beside the first delegates: its phases are timed
/// from the plan and from each other, and shown as "beside the delegates".
fn log_phases(log: &str, wall: Duration) -> Vec<(String, Duration)> {
    let stamped: Vec<(f64, &str)> = log
        .lines()
        .filter(|l| ["kactus::", "] ADD ", "starting new connection", "ALPN protocol"].iter().any(|m| l.contains(m)))
        .filter(|l| !l.contains("minor faults"))
        .filter_map(|l| {
            let (stamp, rest) = l.split_once(' ')?;
            let clock = stamp.split_once('T')?.1.trim_end_matches('Z');
            let mut parts = clock.split(':').map(|p| p.parse::<f64>().ok());
            let secs = parts.next()?? * 3600.0 + parts.next()?? * 60.0 + parts.next()??;
            let msg = rest.split_once("] ").map_or(rest, |(_, m)| m);
            Some((secs, msg.split_once(": ").filter(|(target, _)| target.contains("::")).map_or(msg, |(_, m)| m)))
        })
        .collect();
    let (Some(first), Some(last)) = (stamped.first(), stamped.last()) else { return Vec::new() };
    let span = Duration::from_secs_f64((last.0 - first.0).max(0.0));
    let mut out = vec![("process start-up and exit (wall - log span)".to_string(), wall.saturating_sub(span))];
    let mut delegates = 0;
    let (mut main_at, mut side_at, mut planned) = (first.0, None::<f64>, false);
    for &(now, msg) in &stamped[1..] {
        let (name, side) = if msg.contains("starting new connection") {
            ("apiserver client built".to_string(), planned)
        } else if msg.contains("ALPN") {
            ("TCP + TLS handshake".to_string(), planned)
        } else if msg.contains(" added on ") {
            delegates += 1;
            (format!("delegate {delegates} (exec + cache write)"), false)
        } else if msg.starts_with("pod ") && msg.ends_with(" read") {
            ("GET pod".to_string(), planned)
        } else if msg.contains("network config(s) read") {
            ("GET NADs (concurrent)".to_string(), planned)
        } else if msg.starts_with("plan:") {
            planned = true;
            ("plan checked (no device in the way)".to_string(), false)
        } else if msg.contains("durable") {
            ("cache fsyncs joined, directories synced".to_string(), false)
        } else if msg.contains("made and recorded") {
            ("events joined".to_string(), false)
        } else if msg.contains(" answered (") {
            ("answer ready".to_string(), false)
        } else {
            (msg.chars().take(40).collect(), false)
        };
        let took = |since: f64| Duration::from_secs_f64((now - since).max(0.0));
        if side {
            out.push((format!("beside the delegates: {name}"), took(side_at.unwrap_or(main_at))));
            side_at = Some(now);
        } else {
            if planned && side_at.is_none() {
                side_at = Some(now); // the plan line: the apiserver's side starts here
            }
            out.push((name, took(main_at)));
            main_at = now;
        }
    }
    out
}
