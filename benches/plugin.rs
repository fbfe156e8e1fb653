//! What kactus costs per pod and per attachment (issues 6 and 17).
//!
//! Runs the release kactus binary inside a throwaway node netns against the in-process test
//! apiserver: with the null delegate (`benches/support/null_delegate.rs`, answers at once) so
//! a row is kactus alone, and with the real bridge + host-local delegates next to the same
//! delegates exec'd directly. Needs root, `ip` and the reference plugins; `scripts/bench.sh`
//! builds the null delegate and runs it. Environment:
//! - `KACTUS_BENCH_REPS` (default 20) repetitions per row;
//! - `KACTUS_BENCH_BINARY` another kactus build to measure;
//! - `KACTUS_BENCH_BEFORE` a second kactus build measured in the same rounds (before/after
//!   rows; the hot-plug rows take the `podagent` beside it, if there is one);
//! - `KACTUS_BENCH_ONLY` a comma list of sections: alone, bridge, latency, unannotated,
//!   dynamic, hotplug, list, process, concurrent, fastpath, dataplane (default: all);
//! - `KACTUS_BENCH_PROFILE=<att>:<latency ms>[:null[:fast]]` where one ADD spends its time
//!   (`fast`: through podagent's fast path).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/dataplane.rs"]
mod dataplane;
#[path = "support/fastpath.rs"]
mod fastpath;
#[path = "support/hotplug.rs"]
mod hotplug;
#[path = "support/profile.rs"]
mod profile;
#[path = "support/report.rs"]
mod report;
#[path = "support/world.rs"]
mod world;

use common::*;
use report::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use world::*;

const BRIDGE_COUNTS: [usize; 4] = [0, 1, 4, 16];
const NULL_COUNTS: [usize; 5] = [0, 1, 4, 16, 64];
const CONCURRENT_PODS: usize = 50;
/// The namespace of the LIST figures, and how many NADs it holds.
const BIG_NS: &str = "big";
const BIG_NADS: usize = 1000;

fn main() {
    if !nix::unistd::Uid::effective().is_root() || !Path::new(CNI_PATH).join("bridge").exists() {
        eprintln!("the kactus benchmark needs root and the CNI reference plugins in {CNI_PATH}");
        std::process::exit(2);
    }
    let reps: usize = std::env::var("KACTUS_BENCH_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let only = std::env::var("KACTUS_BENCH_ONLY").unwrap_or_default();
    let want = |section: &str| only.is_empty() || only.split(',').any(|s| s.trim() == section);
    let started = Instant::now();
    let bin = Binary::measured();
    let before = Binary::before();
    println!("kactus benchmark: {}", machine());
    println!("binary {}, {reps} measured repetitions per row (+1 warm-up)", bin.origin);
    if let Some(b) = &before {
        println!("before: {} (measured in the same rounds, alternating)", b.origin);
    }
    println!("load average at the start: {}", load_average());

    if want("dataplane") {
        // Its own node, podagent and kactus-endpoints (benches/support/dataplane.rs).
        dataplane::dataplane(reps);
        if only.split(',').all(|s| s.trim() == "dataplane") && !only.is_empty() {
            println!("\nload average at the end: {}", load_average());
            println!("bench wall time {:.0} s", started.elapsed().as_secs_f64());
            return;
        }
    }
    let mut world = World::new(&BRIDGE_COUNTS, &NULL_COUNTS);
    if let Ok(spec) = std::env::var("KACTUS_BENCH_PROFILE") {
        profile::profile(&world, &bin, &spec, reps);
        return;
    }
    let builds: Vec<&Binary> = std::iter::once(&bin).chain(before.as_ref()).collect();
    if want("alone") {
        alone(&world, &builds, reps);
    }
    if want("bridge") {
        let rows: Vec<(usize, Row)> = BRIDGE_COUNTS.iter().map(|&n| (n, measure(&world, &bin, n, reps, "p"))).collect();
        print_timing(
            "With the bridge + host-local delegates: ADD/DEL wall time, no added apiserver latency (overhead = kactus - direct, p50)",
            &rows,
        );
    }
    if want("latency") {
        world.sb.api().faults().set_latency(Duration::from_millis(5));
        let rows: Vec<(usize, Row)> = BRIDGE_COUNTS.iter().map(|&n| (n, measure(&world, &bin, n, reps, "s"))).collect();
        world.sb.api().faults().set_latency(Duration::ZERO);
        print_timing("The same with 5 ms added to every apiserver response", &rows);
    }
    if want("unannotated") {
        // Runtimes that do not pass the pod's annotations (and calls by hand): kactus GETs the pod.
        world.from_runtime.store(false, std::sync::atomic::Ordering::Relaxed);
        let rows = alone_rows(&world, &builds, &[0, 4, 16], reps, "u");
        world.from_runtime.store(true, std::sync::atomic::Ordering::Relaxed);
        print_alone("Without the pod's annotations from the runtime (kactus GETs the pod), null delegates", &rows);
        let api: Vec<(usize, &str, &Row)> = rows.iter().map(|(n, b, r)| (*n, *b, r)).collect();
        print_api("apiserver traffic per ADD without them", &api);
    }
    if want("dynamic") {
        dynamic(&mut world, &builds, reps);
    }
    if want("hotplug") {
        let mut agents = vec![(&bin, env!("CARGO_BIN_EXE_podagent").to_string())];
        if let Some(b) = &before {
            let beside = Path::new(&b.origin).with_file_name("podagent");
            match beside.exists() {
                true => agents.push((b, beside.display().to_string())),
                false => println!("(no podagent beside {}: hot-plug of this build only)", b.origin),
            }
        }
        hotplug::hotplug(&agents, reps);
    }
    if want("list") {
        big_namespace(&mut world, &builds, reps);
    }
    if want("fastpath") {
        fastpath::fastpath(&world, &bin, &NULL_COUNTS, reps);
    }
    if want("process") {
        process(&world, &bin);
    }
    if want("concurrent") {
        concurrent(&mut world, &bin);
    }
    println!("\nload average at the end: {}", load_average());
    println!("bench wall time {:.0} s", started.elapsed().as_secs_f64());
}

/// kactus alone: null delegates at 0/1/4/16/64 attachments, every build in the same rounds.
fn alone(world: &World, builds: &[&Binary], reps: usize) {
    let rows = alone_rows(world, builds, &NULL_COUNTS, reps, "a");
    print_alone(
        "kactus alone: null delegates (they answer at once), the pod's annotations from the runtime, no added apiserver latency",
        &rows,
    );
    let api: Vec<(usize, &str, &Row)> = rows.iter().map(|(n, b, r)| (*n, *b, r)).collect();
    print_api(
        &format!(
            "apiserver traffic per ADD (median; the pods' namespace holds {NULL_NADS} NADs; DEL reads the cache only)"
        ),
        &api,
    );
    no_apiserver(world, builds, reps);
}

/// What an ADD costs kactus before any apiserver work: a call without pod identity (no
/// `K8S_POD_*` in CNI_ARGS, as when kactus is run by hand) and the null master, so no client,
/// no TLS, no network-status or Event: the process, the config, the lock, the plan, the cache
/// and the delegate's exec. The part of "kactus alone" that no apiserver change can reduce.
fn no_apiserver(world: &World, builds: &[&Binary], reps: usize) {
    let pod = world.pod(Delegates::Null, 0);
    let mut rows: Vec<(&str, Row)> = builds.iter().map(|b| (b.label, Row::default())).collect();
    for rep in 0..=reps {
        for (bin, (_, row)) in builds.iter().zip(rows.iter_mut()) {
            let container = format!("floor-{}-{rep}", bin.label.replace(' ', "-"));
            let conf = world.conf_for("ADD", Delegates::Null, pod).to_string();
            let call = |command: &str| {
                let env = cni_env(command, &container, Some(&pod.netns), "eth0", "", world.cni_path(Delegates::Null));
                let run = run_in(Some(&world.sb.node.path), bin.path(), &env, conf.as_bytes());
                assert!(run.ok, "{command} without a pod: {}\n{}", run.stdout, run.stderr);
                run
            };
            let (add, del) = (call("ADD"), call("DEL"));
            if rep > 0 {
                world.record(row, &container, &add, &del);
            }
        }
    }
    world.assert_clean("no apiserver");
    println!(
        "\nkactus without the apiserver: a call naming no pod, null master (process, config, lock, plan, cache, exec)"
    );
    println!("| build | ADD own p50 | ADD own p99 | DEL own p50 |");
    println!("|---|---:|---:|---:|");
    for (label, row) in &rows {
        let (p50, p99) = pct(&row.own_add);
        println!("| {label} | {p50:.2} ms | {p99:.2} ms | {:.2} ms |", pct(&row.own_del).0);
    }
    println!("| (spawn and reap /bin/true) | {:.2} ms | - | - |", spawn_floor(reps.max(50)));
}

fn alone_rows<'b>(
    world: &World,
    builds: &[&'b Binary],
    counts: &[usize],
    reps: usize,
    tag: &str,
) -> Vec<(usize, &'b str, Row)> {
    let mut rows = Vec::new();
    for &n in counts {
        let pod = world.pod(Delegates::Null, n);
        let mut row_of: Vec<Row> = builds.iter().map(|_| Row::default()).collect();
        for rep in 0..=reps {
            for (bin, row) in builds.iter().zip(row_of.iter_mut()) {
                let container = format!("{tag}-{}-{n}-{rep}", bin.label.replace(' ', "-"));
                let stats = || world.sb.api().stats();
                let before = stats();
                let add = world.kactus(bin, "ADD", &container, Delegates::Null, pod);
                let mid = stats();
                let del = world.kactus(bin, "DEL", &container, Delegates::Null, pod);
                let after = stats();
                if rep == 0 {
                    continue;
                }
                world.record(row, &container, &add, &del);
                traffic(row, &before, &mid);
                row.del_requests.push(after.requests - mid.requests);
            }
        }
        world.assert_clean(&format!("{tag} n={n}"));
        rows.extend(builds.iter().zip(row_of).map(|(b, r)| (n, b.label, r)));
    }
    rows
}

/// `reps` rounds of kactus ADD, kactus DEL, direct ADD, direct DEL with bridge delegates
/// (interleaved so drift hits both alike), after one unmeasured warm-up round that creates
/// the bridges.
fn measure(world: &World, bin: &Binary, n: usize, reps: usize, tag: &str) -> Row {
    let pod = world.pod(Delegates::Bridge, n);
    let mut row = Row::default();
    for rep in 0..=reps {
        let container = format!("{tag}-{n}-{rep}");
        let before = world.sb.api().stats();
        let add = world.kactus(bin, "ADD", &container, Delegates::Bridge, pod);
        let mid = world.sb.api().stats();
        let del = world.kactus(bin, "DEL", &container, Delegates::Bridge, pod);
        let after = world.sb.api().stats();
        let dcontainer = format!("{container}-direct");
        let (dadd, results) = world.direct_add(&dcontainer, pod, n);
        let ddel = world.direct_del(&dcontainer, pod, n, &results);
        if rep == 0 {
            continue;
        }
        world.record(&mut row, &container, &add, &del);
        row.direct_add.push(dadd);
        row.direct_del.push(ddel);
        traffic(&mut row, &before, &mid);
        row.del_requests.push(after.requests - mid.requests);
    }
    if std::env::var_os("KACTUS_BENCH_SAMPLES").is_some() {
        let show = |v: &[Duration]| v.iter().map(|d| format!("{:.0}", ms(*d))).collect::<Vec<_>>().join(" ");
        eprintln!(
            "{tag} n={n} kactus ADD: {}\n{tag} n={n} direct ADD: {}",
            show(&row.kactus_add),
            show(&row.direct_add)
        );
    }
    world.assert_clean(&format!("{tag} n={n}"));
    row
}

/// podagent's calls: a running pod (eth0 + z0) gets z1 added through its annotation, then
/// removed: the dynamic ADD and DEL (`K8S_POD_NETWORK`) as podagent execs them, with and
/// without the pod's annotations in `runtimeConfig`.
fn dynamic(world: &mut World, builds: &[&Binary], reps: usize) {
    let networks = [nad_name(Delegates::Null, 0), nad_name(Delegates::Null, 1)];
    let mut pod = world.add_pod(NULL_NS, "dyn", annotations_for(&networks));
    let started_with = annotations_for(&networks[..1]);
    println!("\npodagent's dynamic calls on a running pod (eth0 + z0; z1 added, then deleted), null delegates");
    println!(
        "| build | podagent passes the annotations | call | own p50 | wall p50 | requests | by verb | response bytes |"
    );
    println!("|---|---|---|---:|---:|---:|---|---:|");
    for bin in builds {
        for passed in [false, true] {
            let (mut add, mut del) = (Row::default(), Row::default());
            for rep in 0..=reps {
                let container = format!("d-{}-{passed}-{rep}", bin.label.replace(' ', "-"));
                pod.annotations = started_with.clone();
                world.kactus(bin, "ADD", &container, Delegates::Null, &pod);
                pod.annotations = if passed { annotations_for(&networks) } else { json!(null) };
                world.from_runtime.store(passed, std::sync::atomic::Ordering::Relaxed);
                let dynamic = [("K8S_POD_NETWORK", networks[1].as_str())];
                for (command, row) in [("ADD", &mut add), ("DEL", &mut del)] {
                    let before = world.sb.api().stats();
                    let run = world.kactus_with(bin, command, &container, Delegates::Null, &pod, &dynamic);
                    assert!(run.ok, "dynamic {command}: {} {}", run.stdout, run.stderr);
                    let after = world.sb.api().stats();
                    if rep > 0 {
                        row.kactus_add.push(run.wall);
                        if let Some(d) = world.delegate_time(command, &container) {
                            row.own_add.push(run.wall.saturating_sub(d));
                        }
                        traffic(row, &before, &after);
                    }
                }
                world.from_runtime.store(true, std::sync::atomic::Ordering::Relaxed);
                world.kactus(bin, "DEL", &container, Delegates::Null, &pod);
            }
            for (call, row) in [("ADD", &add), ("DEL", &del)] {
                println!(
                    "| {} | {} | {call} | {:.2} ms | {:.2} ms | {} | {} | {} |",
                    bin.label,
                    if passed { "yes" } else { "no" },
                    pct(&row.own_add).0,
                    pct(&row.kactus_add).0,
                    median_u64(&row.requests),
                    row.verbs,
                    median_u64(&row.bytes)
                );
            }
        }
    }
    world.assert_clean("dynamic");
}

/// What reading NADs costs in a namespace holding [`BIG_NADS`] of them, each the size of a
/// real one (`kubectl apply`'s last-applied annotation and managedFields included): a GET of
/// one, a LIST of all of them (from the watch cache, `resourceVersion=0`, and consistent), the
/// one page kactus reads, and ADDs of pods there.
fn big_namespace(world: &mut World, builds: &[&Binary], reps: usize) {
    for i in 0..BIG_NADS {
        world.sb.apply(&realistic_nad(BIG_NS, &format!("big{i}")).to_string());
    }
    let kubeconfig = world.sb.kubeconfig.clone();
    let path = format!("/apis/k8s.cni.cncf.io/v1/namespaces/{BIG_NS}/network-attachment-definitions");
    let api = world.sb.api();
    let timed = |what: &str, query: &'static [(&'static str, &'static str)], suffix: &str| {
        let (kubeconfig, path) = (kubeconfig.clone(), format!("{path}{suffix}"));
        let before = api.stats();
        let samples = kactus::netns::run_in(&world.sb.node.path, move || {
            let client = kactus::kube::Client::new(Some(&kubeconfig), Default::default()).expect("client");
            client.get::<Value>("/version").expect("connect");
            (0..reps)
                .map(|_| {
                    let start = Instant::now();
                    client.get::<Value>(&format!("{path}?{}", query_string(query))).expect(&path);
                    start.elapsed()
                })
                .collect::<Vec<_>>()
        })
        .expect("node netns");
        let bytes = (api.stats().response_bytes - before.response_bytes) as usize / reps.max(1);
        println!("| {what} | {bytes} | {:.2} ms | {:.2} ms |", pct(&samples).0, pct(&samples).1);
    };
    println!("\nReading NADs in a namespace holding {BIG_NADS} (each ~1 KiB as a real apiserver serves it), from one client, warm connection");
    println!("| request | response bytes | p50 | p99 |");
    println!("|---|---:|---:|---:|");
    timed("GET one NAD", &[], "/big7");
    timed(&format!("LIST all {BIG_NADS}, resourceVersion=0 (watch cache)"), &[("resourceVersion", "0")], "");
    timed(&format!("LIST all {BIG_NADS}, consistent read"), &[], "");
    // What kactus reads for a pod naming 4 networks there: one page.
    let page: &'static str = Box::leak(kactus::plugin::networks::list_page(4).to_string().into_boxed_str());
    let query: &'static [(&'static str, &'static str)] = Box::leak(Box::new([("limit", page)]));
    timed(&format!("LIST one page, limit={page} (what kactus reads for 4 networks there)"), query, "");
    let big_pods: Vec<(usize, BenchPod)> = [1, 4, 16]
        .into_iter()
        .map(|n| {
            let networks: Vec<String> = (0..n).map(|i| format!("big{}", i * 37 % BIG_NADS)).collect();
            (n, world.add_pod(BIG_NS, &format!("big-pod{n}"), annotations_for(&networks)))
        })
        .collect();
    let world = &*world;
    let mut rows = Vec::new();
    for (n, pod) in &big_pods {
        let mut row_of: Vec<Row> = builds.iter().map(|_| Row::default()).collect();
        for rep in 0..=reps {
            for (bin, row) in builds.iter().zip(row_of.iter_mut()) {
                let container = format!("b-{}-{n}-{rep}", bin.label.replace(' ', "-"));
                let before = world.sb.api().stats();
                let add = world.kactus(bin, "ADD", &container, Delegates::Null, pod);
                let mid = world.sb.api().stats();
                world.kactus(bin, "DEL", &container, Delegates::Null, pod);
                if rep > 0 {
                    row.kactus_add.push(add.wall);
                    if let Some(d) = world.delegate_time("ADD", &container) {
                        row.own_add.push(add.wall.saturating_sub(d));
                    }
                    traffic(row, &before, &mid);
                }
            }
        }
        rows.extend(builds.iter().zip(row_of).map(|(b, r)| (*n, b.label, r)));
    }
    println!("\nADDs of pods in that namespace (null delegates)");
    println!("| att | build | ADD own p50 | requests/ADD | by verb | response bytes/ADD |");
    println!("|---:|---|---:|---:|---|---:|");
    for (n, build, row) in &rows {
        println!(
            "| {n} | {build} | {:.2} ms | {} | {} | {} |",
            pct(&row.own_add).0,
            median_u64(&row.requests),
            row.verbs,
            median_u64(&row.bytes)
        );
    }
    world.assert_clean("big namespace");
}

fn query_string(query: &[(&str, &str)]) -> String {
    query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// Peak RSS, start-up and binary size.
fn process(world: &World, bin: &Binary) {
    // Peak RSS of kactus alone: null delegates, so the figure is not a Go delegate's.
    let pod = world.pod(Delegates::Null, 16);
    let mut rss = None;
    for rep in 0..5 {
        for command in ["ADD", "DEL"] {
            rss = rss.max(world.kactus_rss(bin, command, &format!("rss-{rep}"), pod));
        }
    }
    let (version_p50, bridge_version_p50) = version_startup(bin, 200);
    let version_rss = world.version_rss(bin);
    let size = std::fs::metadata(bin.path()).map(|m| m.len()).unwrap_or(0);
    println!("\nprocess");
    println!("| measure | value | target |");
    println!("|---|---:|---:|");
    let mib = |kib: Option<i64>| {
        kib.map_or("n/a (needs /usr/bin/time)".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    };
    println!("| peak RSS of kactus, ADD+DEL with 16 attachments (null delegates) | {} | < 15 MiB |", mib(rss));
    println!("| peak RSS of kactus, VERSION | {} | - |", mib(version_rss));
    println!("| binary size (release, stripped) | {:.1} MiB | - |", size as f64 / 1048576.0);
    println!("| start-up: CNI_COMMAND=VERSION, p50 of 200 | {version_p50:.2} ms | < 2 ms |");
    println!("| reference: /usr/lib/cni/bridge VERSION, p50 of 200 | {bridge_version_p50:.2} ms | - |");
    println!("| floor: spawn and reap /bin/true, p50 of 200 | {:.2} ms | - |", spawn_floor(200));
    world.assert_clean("process");
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

fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// p50 of `/bin/true` spawned and reaped the same way: the floor under every start-up figure.
fn spawn_floor(runs: usize) -> f64 {
    let samples: Vec<Duration> = (0..runs).map(|_| run_in(None, "/bin/true", &[], b"").wall).collect();
    pct(&samples).0
}

fn version_startup(bin: &Binary, runs: usize) -> (f64, f64) {
    let env = vec![("CNI_COMMAND", "VERSION".to_string())];
    let stdin = br#"{"cniVersion":"1.0.0"}"#;
    let mut kactus = Vec::new();
    let mut bridge = Vec::new();
    for _ in 0..runs {
        let r = run_in(None, bin.path(), &env, stdin);
        assert!(r.ok && r.stdout.contains("supportedVersions"), "VERSION: {}", r.stdout);
        kactus.push(r.wall);
        bridge.push(run_in(None, &format!("{CNI_PATH}/bridge"), &env, stdin).wall);
    }
    (pct(&kactus).0, pct(&bridge).0)
}

/// 50 pods (eth0 + n0, bridge delegates) started at once on one node, then deleted.
fn concurrent(world: &mut World, bin: &Binary) {
    let networks = [nad_name(Delegates::Bridge, 0)];
    let pods: Vec<BenchPod> = (0..CONCURRENT_PODS)
        .map(|i| world.add_pod(BRIDGE_NS, &format!("conc{i}"), annotations_for(&networks)))
        .collect();
    let world = &*world;
    let phase = |command: &'static str| {
        let start = Instant::now();
        let errors: usize = std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .map(|pod| {
                    s.spawn(move || {
                        let r =
                            world.kactus_with(bin, command, &format!("c-{}", pod.name), Delegates::Bridge, pod, &[]);
                        if !r.ok {
                            eprintln!("{command} {}: {} {}", pod.name, r.stdout, r.stderr.trim());
                        }
                        usize::from(!r.ok)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(1)).sum()
        });
        (start.elapsed(), errors)
    };
    let devices_of = |pods: &[BenchPod]| -> usize { pods.iter().map(|p| world.sb.pod_devices(p.index).len()).sum() };
    let (add_time, add_errors) = phase("ADD");
    let devices_after_add = devices_of(&pods);
    let (del_time, del_errors) = phase("DEL");
    let devices = devices_of(&pods);
    let leases = world.sb.leases().len();
    let cache = world.sb.cache_files().len();
    println!("\n{CONCURRENT_PODS} concurrent pods on one node (1 attachment each: eth0 + n0, bridge), threads");
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
