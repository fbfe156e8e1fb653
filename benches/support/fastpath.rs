//! The fast path (issue 25): kactus's own time per ADD with podagent answering its apiserver
//! questions, beside today's in-process path and "kactus without the apiserver" at the same
//! number of networks, one interleaved run: every repetition makes each of the three in turn
//! at each count, so drift on the machine hits them alike. Null delegates; the real podagent
//! serving its socket.
//!
//! "Without the apiserver" at n attachments is a call naming no pod whose config lists the n
//! networks' very configs as `delegates` (besides the null master): kactus plans, records,
//! execs and caches the same n + 1 delegates on the same device names, but with no pod there
//! is nothing to ask anyone, so it builds no client, opens no socket and sends no request
//! (the apiserver's counters are shown for the row to prove it). What it does not do is what
//! an attachment costs beyond its delegate: the pod's annotations parsed, the networks'
//! answers parsed and checked, the second intent record, network-status and the Event.

use crate::common::podagent::{node_cni, wait_until, PodAgent};
use crate::common::*;
use crate::report::{median_u64, pct, traffic, Row};
use crate::world::{null_nad_config, run_in, BenchPod, Binary, Delegates, Run, World};
use serde_json::{json, Value};

/// The real podagent serving the fast path in the bench's node, and its socket.
pub fn start_podagent(world: &World) -> (PodAgent, std::path::PathBuf) {
    let node = node_cni(&world.sb);
    let socket = world.sb.path("run/kactus/podagent.sock");
    let flags = [
        "--sandbox-lookup=cache".to_string(),
        format!("--kactus-cache-dir={}", world.sb.cache_dir().display()),
        format!("--fastpath-socket={}", socket.display()),
    ];
    let agent = PodAgent::start_with(&world.sb, &node, &flags);
    assert!(wait_until(|| socket.exists()), "podagent never made its socket");
    (agent, socket)
}

/// `pod`'s CNI_ARGS with the UID the apiserver gave it (podagent matches the pod on it).
pub fn args_with_uid(world: &World, pod: &BenchPod) -> String {
    let uid = world.sb.api().store().get("pods", &pod.namespace, &pod.name).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    pod.args().replace(&format!("K8S_POD_UID=uid-{}", pod.name), &format!("K8S_POD_UID={uid}"))
}

pub fn fastpath(world: &World, bin: &Binary, counts: &[usize], reps: usize) {
    let (agent, socket) = start_podagent(world);

    struct Rows {
        n: usize,
        bare: Row,
        in_process: Row,
        fast: Row,
    }
    let mut rows: Vec<Rows> = counts
        .iter()
        .map(|&n| Rows { n, bare: Row::default(), in_process: Row::default(), fast: Row::default() })
        .collect();
    for rep in 0..=reps {
        for Rows { n, bare, in_process, fast } in rows.iter_mut() {
            let pod = world.pod(Delegates::Null, *n);
            let args = args_with_uid(world, pod);
            let conf = world.conf_for("ADD", Delegates::Null, pod);
            let mut fast_conf = conf.clone();
            fast_conf["podagentSocket"] = json!(socket);
            // kactus without the apiserver: no pod in CNI_ARGS; the n networks' configs as the
            // config's delegates.
            let bare_conf = without_apiserver(world, pod, *n);
            let mut kinds = [
                ("bare", "", &bare_conf, &mut *bare),
                ("ip", &args, &conf, &mut *in_process),
                ("fp", &args, &fast_conf, &mut *fast),
            ];
            // Each kind goes first in a third of the repetitions: what the call before leaves
            // running (podagent taking the last network-status in) hits all three alike.
            kinds.rotate_left(rep % 3);
            for (tag, args, conf, row) in kinds {
                let container = format!("{tag}-{n}-{rep}");
                let before = world.sb.api().stats();
                let (add, del) = add_del(world, bin, &container, pod, args, conf);
                if rep > 0 {
                    world.record(row, &container, &add, &del);
                    traffic(row, &before, &world.sb.api().stats());
                }
            }
        }
    }
    world.assert_clean("fast path");
    let log = std::fs::read_to_string(world.sb.path("kactus.log")).unwrap_or_default();
    let fallbacks = log.lines().filter(|l| l.contains("fast path:") && l.contains("in-process")).count();
    println!("\nThe fast path: kactus's own time per ADD (null delegates, runtime's annotations), one interleaved run; podagent answered {} requests, refused {}, kactus fell back {fallbacks} time(s)",
        agent.metric("podagent_fastpath_answers_total"),
        agent.get("/metrics").map(|(_, m)| m.lines().filter(|l| l.starts_with("podagent_fastpath_refusals_total{")).count()).unwrap_or(0));
    println!("\"without the apiserver\": no pod named, the same networks' configs as the config's delegates (n + 1 null delegates, as the pod's ADD)");
    println!("| attachments | without the apiserver own p50 / p99 | in-process own p50 / p99 | fast path own p50 / p99 | fast path / without the apiserver | in-process / without | apiserver requests and new connections per ADD+DEL without the apiserver (all clients, most in a repetition) | apiserver requests per ADD+DEL (all clients), in-process / fast path |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for Rows { n, bare, in_process, fast } in &rows {
        let ((b50, b99), (i50, i99), (f50, f99)) = (pct(&bare.own_add), pct(&in_process.own_add), pct(&fast.own_add));
        let most = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
        println!(
            "| {n} | {b50:.2} / {b99:.2} ms | {i50:.2} / {i99:.2} ms | {f50:.2} / {f99:.2} ms | {:.2}x | {:.2}x | {} / {} | {} ({}) / {} ({}) |",
            f50 / b50,
            i50 / b50,
            most(&bare.requests),
            most(&bare.connections),
            median_u64(&in_process.requests),
            in_process.verbs,
            median_u64(&fast.requests),
            fast.verbs,
        );
    }
}

/// The config of "kactus without the apiserver" at `n` attachments: the runtime's config for
/// `pod` (its annotations in `runtimeConfig`, unused without a pod) with networks `z0`..`z<n>`
/// as the config's own delegates, each with its NAD's very config: same delegates, same
/// device names, same results to cache.
fn without_apiserver(world: &World, pod: &BenchPod, n: usize) -> Value {
    let mut conf = world.conf_for("ADD", Delegates::Null, pod);
    if let Some(delegates) = conf["delegates"].as_array_mut() {
        delegates.extend((0..n).map(null_nad_config));
    }
    conf
}

fn add_del(world: &World, bin: &Binary, container: &str, pod: &BenchPod, args: &str, conf: &Value) -> (Run, Run) {
    let call = |command: &str| {
        let env = cni_env(command, container, Some(&pod.netns), "eth0", args, world.cni_path(Delegates::Null));
        let mut conf = conf.clone();
        if command == "DEL" {
            conf.as_object_mut().map(|c| c.remove("runtimeConfig"));
        }
        let run = run_in(Some(&world.sb.node.path), bin.path(), &env, conf.to_string().as_bytes());
        assert!(run.ok, "{command} {container}: {}\n{}", run.stdout, run.stderr);
        run
    };
    (call("ADD"), call("DEL"))
}
