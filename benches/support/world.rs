//! The benchmark's world: one node netns with the test apiserver, pods in namespaces of their
//! own, NADs for the real `bridge` delegate and for the null delegate, and the ways to run
//! kactus (and the same delegates directly) inside it.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The binary cargo built for this bench; copied before use (see [`Binary`]).
const BUILT_KACTUS: &str = env!("CARGO_BIN_EXE_kactus");
/// The namespace of the bridge rows (real delegates) and the one of the null rows.
pub const BRIDGE_NS: &str = "default";
pub const NULL_NS: &str = "nulls";
pub const BRIDGE_NADS: usize = 16;
pub const NULL_NADS: usize = 64;

/// One child process's outcome: what it printed and how long it took.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub wall: Duration,
}

/// Spawns `program` inside `netns`, feeds stdin, and reaps it. The spawn is made from a
/// thread that entered the netns (children inherit the calling thread's namespaces), so it is
/// a plain `posix_spawn` (vfork), as a container runtime execs a plugin: a `setns` in a
/// `pre_exec` hook would make it a full fork of this big, many-threaded bench process and
/// charge the copy of its page tables to the program measured. No `ip netns exec` either.
pub fn run_in(netns: Option<&Path>, program: &str, env: &[(&str, String)], stdin: &[u8]) -> Run {
    let Some(netns) = netns else { return spawn_and_reap(program, env, stdin) };
    let program = program.to_string();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let stdin = stdin.to_vec();
    kactus::netns::run_in(netns, move || {
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        spawn_and_reap(&program, &env, &stdin)
    })
    .expect("enter the netns")
}

fn spawn_and_reap(program: &str, env: &[(&str, String)], stdin: &[u8]) -> Run {
    let mut cmd = Command::new(program);
    cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    let _ = input.write_all(stdin);
    drop(input);
    // stdout and stderr read together on this thread (poll), no reader thread in the timing.
    let out = child.wait_with_output().expect("wait for child");
    let wall = start.elapsed();
    let (ok, stdout, stderr) = (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    Run { ok, stdout, stderr, wall }
}

/// A kactus build to measure: a private copy, since the target dir is shared and a build
/// elsewhere must not swap it halfway through a run.
pub struct Binary {
    pub label: &'static str,
    /// Where it was copied from, for the report.
    pub origin: String,
    pub path: PathBuf,
}

impl Binary {
    /// This bench's build, or `KACTUS_BENCH_BINARY`.
    pub fn measured() -> Binary {
        let origin = std::env::var("KACTUS_BENCH_BINARY").unwrap_or_else(|_| BUILT_KACTUS.to_string());
        Binary::copy("this build", origin)
    }

    /// `KACTUS_BENCH_BEFORE`: a second build measured in the same rounds, for before/after.
    pub fn before() -> Option<Binary> {
        std::env::var("KACTUS_BENCH_BEFORE").ok().map(|origin| Binary::copy("before", origin))
    }

    fn copy(label: &'static str, origin: String) -> Binary {
        let path =
            std::env::temp_dir().join(format!("kactus-bench-{}-{}", std::process::id(), label.replace(' ', "-")));
        std::fs::copy(&origin, &path).unwrap_or_else(|e| panic!("copy the kactus binary {origin}: {e}"));
        Binary { label, origin, path }
    }

    pub fn path(&self) -> &str {
        self.path.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The null delegate (`benches/support/null_delegate.rs`), built by scripts/bench.sh beside
/// the bench's own build.
pub fn null_delegate() -> PathBuf {
    let built = Path::new(BUILT_KACTUS).with_file_name("examples").join("null-delegate");
    assert!(
        built.exists(),
        "{} is missing: run scripts/bench.sh, or `cargo build --release --example null-delegate` first",
        built.display()
    );
    built
}

/// Which delegates a row runs: the real bridge + host-local, or the null delegate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Delegates {
    Bridge,
    Null,
}

/// A pod of the bench: its object in the apiserver, its netns, the annotations the runtime
/// passes for it.
pub struct BenchPod {
    pub namespace: String,
    pub name: String,
    pub netns: PathBuf,
    /// Its place in the sandbox's pods.
    pub index: usize,
    pub annotations: Value,
}

impl BenchPod {
    pub fn args(&self) -> String {
        pod_args(&self.namespace, &self.name)
    }
}

/// The bench world: one node, the master network, bridge NADs `n<i>` in `default` and null
/// NADs `z<i>` in `nulls`, one pod per (delegates, attachment count).
pub struct World {
    pub sb: Sandbox,
    /// kactus's config with the bridge master; the null rows swap the master for a null one.
    conf: Value,
    null_master: Value,
    /// NAD configs as kactus sends them (name and cniVersion set), by index.
    nads: Vec<Value>,
    pub master: Value,
    pub pods: BTreeMap<(Delegates, usize), BenchPod>,
    /// `CNI_PATH` of the null rows: the null delegate's dir first.
    pub null_path: String,
    /// Whether ADDs get the pod's annotations in `runtimeConfig`, as containerd and CRI-O
    /// pass them to a config declaring the capability (what the installer writes).
    pub from_runtime: AtomicBool,
}

pub fn nad_name(d: Delegates, i: usize) -> String {
    match d {
        Delegates::Bridge => format!("n{i}"),
        Delegates::Null => format!("z{i}"),
    }
}

/// A null delegate's network config (`address` is what it answers).
pub fn null_net(name: &str, address: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "null", "address": address})
}

/// The config of null NAD `z<i>` (what its `spec.config` holds).
pub fn null_nad_config(i: usize) -> Value {
    null_net(&nad_name(Delegates::Null, i), &format!("10.{}.{}.2/24", 1 + i / 250, i % 250))
}

/// Pod `name` in `namespace` asking for the given networks (the kactus annotation).
pub fn annotations_for(networks: &[String]) -> Value {
    if networks.is_empty() {
        return json!({});
    }
    let list: Vec<Value> = networks.iter().map(|n| json!({ "name": n })).collect();
    json!({"networks": Value::Array(list).to_string()})
}

impl World {
    pub fn new(bridge_counts: &[usize], null_counts: &[usize]) -> World {
        let mut sb = Sandbox::new();
        let nads: Vec<Value> = (0..BRIDGE_NADS)
            .map(|i| {
                let name = nad_name(Delegates::Bridge, i);
                sb.bridge_net(&name, &format!("br{i}"), &format!("10.{}.0.0/24", 100 + i))
            })
            .collect();
        for (i, nad) in nads.iter().enumerate() {
            sb.apply(&Sandbox::nad_yaml(BRIDGE_NS, &nad_name(Delegates::Bridge, i), nad));
        }
        for i in 0..NULL_NADS {
            let name = nad_name(Delegates::Null, i);
            sb.apply(&Sandbox::nad_yaml(NULL_NS, &name, &null_nad_config(i)));
        }
        let null_dir = sb.path("null-cni");
        std::fs::create_dir_all(&null_dir).expect("null delegate dir");
        std::fs::copy(null_delegate(), null_dir.join("null")).expect("copy the null delegate");
        let null_path = format!("{}:{CNI_PATH}", null_dir.display());

        let mut pods = BTreeMap::new();
        for (d, counts, namespace) in
            [(Delegates::Bridge, bridge_counts, BRIDGE_NS), (Delegates::Null, null_counts, NULL_NS)]
        {
            for &n in counts {
                let networks: Vec<String> = (0..n).map(|i| nad_name(d, i)).collect();
                let prefix = if d == Delegates::Bridge { "bench" } else { "null" };
                let pod = world_pod(&mut sb, namespace, &format!("{prefix}{n}"), annotations_for(&networks));
                pods.insert((d, n), pod);
            }
        }
        let mut conf = sb.kactus_conf();
        // What a node would run: info, not the tests' debug.
        conf["logLevel"] = "info".into();
        let mut master = sb.bridge_net("cluster", "cni0", "10.244.0.0/24");
        master.as_object_mut().map(|m| m.remove("masterPlugin"));
        let mut null_master = null_net("cluster", "10.244.0.2/24");
        null_master["masterPlugin"] = true.into();
        World { sb, conf, null_master, nads, master, pods, null_path, from_runtime: AtomicBool::new(true) }
    }

    pub fn pod(&self, d: Delegates, n: usize) -> &BenchPod {
        &self.pods[&(d, n)]
    }

    /// A pod in the apiserver with its own netns.
    pub fn add_pod(&mut self, namespace: &str, name: &str, annotations: Value) -> BenchPod {
        world_pod(&mut self.sb, namespace, name, annotations)
    }

    pub fn cni_path(&self, d: Delegates) -> &str {
        match d {
            Delegates::Bridge => CNI_PATH,
            Delegates::Null => &self.null_path,
        }
    }

    /// The config a runtime would send for `command` on `pod`: an ADD carries the pod's
    /// annotations unless [`World::from_runtime`] is off.
    pub fn conf_for(&self, command: &str, d: Delegates, pod: &BenchPod) -> Value {
        let mut conf = self.conf.clone();
        if d == Delegates::Null {
            conf["delegates"] = json!([self.null_master]);
        }
        if command == "ADD" && self.from_runtime.load(Ordering::Relaxed) {
            conf["runtimeConfig"] =
                json!({ kactus::plugin::plan::POD_ANNOTATIONS_CAPABILITY: pod.annotations.clone() });
        }
        conf
    }

    /// One kactus call as the runtime makes it; panics if it fails.
    pub fn kactus(&self, bin: &Binary, command: &str, container: &str, d: Delegates, pod: &BenchPod) -> Run {
        let run = self.kactus_with(bin, command, container, d, pod, &[]);
        assert!(run.ok, "kactus {command} {container}: {}\n{}", run.stdout, run.stderr);
        run
    }

    /// One kactus call with more `CNI_ARGS` (e.g. podagent's `K8S_POD_NETWORK`).
    pub fn kactus_with(
        &self,
        bin: &Binary,
        command: &str,
        container: &str,
        d: Delegates,
        pod: &BenchPod,
        extra_args: &[(&str, &str)],
    ) -> Run {
        let mut args = pod.args();
        for (k, v) in extra_args {
            args.push_str(&format!(";{k}={v}"));
        }
        let env = cni_env(command, container, Some(&pod.netns), "eth0", &args, self.cni_path(d));
        let conf = self.conf_for(command, d, pod);
        run_in(Some(&self.sb.node.path), bin.path(), &env, conf.to_string().as_bytes())
    }

    /// Peak RSS (KiB) of one kactus call, measured by GNU time: a child's own wait4 maxrss
    /// also counts the memory of the process it was forked from (ours), so it needs a small
    /// parent. None without /usr/bin/time.
    pub fn kactus_rss(&self, bin: &Binary, command: &str, container: &str, pod: &BenchPod) -> Option<i64> {
        let env = cni_env(command, container, Some(&pod.netns), "eth0", &pod.args(), self.cni_path(Delegates::Null));
        let conf = self.conf_for(command, Delegates::Null, pod);
        self.rss_of(bin, Some(&self.sb.node.path), &env, conf.to_string().as_bytes())
    }

    pub fn version_rss(&self, bin: &Binary) -> Option<i64> {
        self.rss_of(bin, None, &[("CNI_COMMAND", "VERSION".to_string())], br#"{"cniVersion":"1.0.0"}"#)
    }

    fn rss_of(&self, bin: &Binary, netns: Option<&Path>, env: &[(&str, String)], stdin: &[u8]) -> Option<i64> {
        if !Path::new("/usr/bin/time").exists() {
            return None;
        }
        let out = self.sb.path("rss.txt");
        let script = format!("exec /usr/bin/time -f %M -o {} {}", out.display(), bin.path());
        let mut env = env.to_vec();
        env.push(("KACTUS_BENCH_SCRIPT", script));
        let run =
            run_in(netns, "/bin/sh", &env, &[b"eval \"$KACTUS_BENCH_SCRIPT\" <<'EOF'\n", stdin, b"\nEOF\n"].concat());
        assert!(run.ok, "kactus under time: {} {}", run.stdout, run.stderr);
        std::fs::read_to_string(out).ok()?.trim().lines().last()?.parse().ok()
    }

    /// The wall time kactus says its delegates took in its last `verb` for `container`
    /// (its `answered` log line; builds before that line have none).
    pub fn delegate_time(&self, verb: &str, container: &str) -> Option<Duration> {
        let log = std::fs::read_to_string(self.conf["logFile"].as_str().unwrap_or_default()).unwrap_or_default();
        let marker = format!("{verb} {container} answered");
        log.lines()
            .rev()
            .find(|l| l.contains(&marker))
            .and_then(|l| l.rsplit_once(" taking ")?.1.strip_suffix(" ms")?.parse::<f64>().ok())
            .map(|ms| Duration::from_secs_f64(ms / 1e3))
    }

    /// Records one measured ADD and DEL of `container` in `row`: their wall times, and their
    /// own times (the wall time minus what the delegates took, from kactus's log) when the log
    /// has both.
    pub fn record(&self, row: &mut crate::report::Row, container: &str, add: &Run, del: &Run) {
        row.kactus_add.push(add.wall);
        row.kactus_del.push(del.wall);
        if let (Some(a), Some(d)) = (self.delegate_time("ADD", container), self.delegate_time("DEL", container)) {
            row.own_add.push(add.wall.saturating_sub(a));
            row.delegates_add.push(a);
            row.own_del.push(del.wall.saturating_sub(d));
        }
    }

    /// The bridge delegates kactus would run for `n` attachments, as (ifname, config).
    fn delegate_calls(&self, n: usize) -> Vec<(String, Value)> {
        let mut calls = vec![("eth0".to_string(), self.master.clone())];
        for i in 0..n {
            calls.push((kactus::attachment::device_name_for(&nad_name(Delegates::Bridge, i)), self.nads[i].clone()));
        }
        calls
    }

    /// The same bridge delegates exec'd directly, in the same order, with the same env;
    /// returns the ADD results (DEL gets them as prevResult, as kactus does from its cache).
    pub fn direct_add(&self, container: &str, pod: &BenchPod, n: usize) -> (Duration, Vec<Value>) {
        let args = pod.args();
        let start = Instant::now();
        let mut results = Vec::new();
        for (ifname, conf) in self.delegate_calls(n) {
            let env = cni_env("ADD", container, Some(&pod.netns), &ifname, &args, CNI_PATH);
            let run =
                run_in(Some(&self.sb.node.path), &format!("{CNI_PATH}/bridge"), &env, conf.to_string().as_bytes());
            assert!(run.ok, "bridge ADD {ifname}: {}", run.stdout);
            results.push(serde_json::from_str(&run.stdout).expect("bridge result"));
        }
        (start.elapsed(), results)
    }

    pub fn direct_del(&self, container: &str, pod: &BenchPod, n: usize, results: &[Value]) -> Duration {
        let args = pod.args();
        let start = Instant::now();
        for ((ifname, mut conf), prev) in self.delegate_calls(n).into_iter().zip(results).rev() {
            conf["prevResult"] = prev.clone();
            let env = cni_env("DEL", container, Some(&pod.netns), &ifname, &args, CNI_PATH);
            let run =
                run_in(Some(&self.sb.node.path), &format!("{CNI_PATH}/bridge"), &env, conf.to_string().as_bytes());
            assert!(run.ok, "bridge DEL {ifname}: {}", run.stdout);
        }
        start.elapsed()
    }

    /// Nothing left after a row: no lease, no cache file.
    pub fn assert_clean(&self, what: &str) {
        assert!(self.sb.leases().is_empty(), "{what}: leases left: {:?}", self.sb.leases());
        assert!(self.sb.cache_files().is_empty(), "{what}: cache left: {:?}", self.sb.cache_files());
    }
}

fn world_pod(sb: &mut Sandbox, namespace: &str, name: &str, annotations: Value) -> BenchPod {
    sb.apply(&Sandbox::pod_yaml(namespace, name, &annotations));
    let i = sb.pod(name);
    let netns = sb.pods[i].path.clone();
    BenchPod { namespace: namespace.to_string(), name: name.to_string(), netns, index: i, annotations }
}
