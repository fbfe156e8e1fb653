//! The fast path (issue 25): kactus's own time per ADD with podagent answering its apiserver
//! questions, beside today's in-process path and "kactus without the apiserver" (a call
//! naming no pod), one interleaved run: every repetition makes each of the three in turn, so
//! drift on the machine hits them alike. Null delegates; the real podagent serving its socket.

use crate::common::podagent::{node_cni, wait_until, PodAgent};
use crate::common::*;
use crate::report::{median_u64, pct, traffic, Row};
use crate::world::{run_in, Binary, Delegates, Run, World};
use serde_json::json;

pub fn fastpath(world: &World, bin: &Binary, counts: &[usize], reps: usize) {
    let node = node_cni(&world.sb);
    let socket = world.sb.path("run/kactus/podagent.sock");
    let flags = [
        "--sandbox-lookup=cache".to_string(),
        format!("--kactus-cache-dir={}", world.sb.cache_dir().display()),
        format!("--fastpath-socket={}", socket.display()),
    ];
    let agent = PodAgent::start_with(&world.sb, &node, &flags);
    assert!(wait_until(|| socket.exists()), "podagent never made its socket");

    let floor_pod = world.pod(Delegates::Null, 0);
    let mut floor = Row::default();
    let mut rows: Vec<(usize, Row, Row)> = counts.iter().map(|&n| (n, Row::default(), Row::default())).collect();
    for rep in 0..=reps {
        // kactus without the apiserver: no pod in CNI_ARGS, the null master.
        let container = format!("fp-floor-{rep}");
        let (add, del) =
            add_del(world, bin, &container, floor_pod, "", &world.conf_for("ADD", Delegates::Null, floor_pod));
        if rep > 0 {
            world.record(&mut floor, &container, &add, &del);
        }
        for (n, in_process, fast) in rows.iter_mut() {
            let pod = world.pod(Delegates::Null, *n);
            let uid = world.sb.api().store().get("pods", &pod.namespace, &pod.name).unwrap()["metadata"]["uid"]
                .as_str()
                .unwrap()
                .to_string();
            let args = pod.args().replace(&format!("K8S_POD_UID=uid-{}", pod.name), &format!("K8S_POD_UID={uid}"));
            let conf = world.conf_for("ADD", Delegates::Null, pod);
            let mut fast_conf = conf.clone();
            fast_conf["podagentSocket"] = json!(socket);
            for (tag, conf, row) in [("ip", &conf, &mut *in_process), ("fp", &fast_conf, &mut *fast)] {
                let container = format!("{tag}-{n}-{rep}");
                let before = world.sb.api().stats();
                let (add, del) = add_del(world, bin, &container, pod, &args, conf);
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
    let (floor50, _) = pct(&floor.own_add);
    println!("\nThe fast path: kactus's own time per ADD (null delegates, runtime's annotations), one interleaved run; podagent answered {} requests, refused {}, kactus fell back {fallbacks} time(s)",
        agent.metric("podagent_fastpath_answers_total"),
        agent.get("/metrics").map(|(_, m)| m.lines().filter(|l| l.starts_with("podagent_fastpath_refusals_total{")).count()).unwrap_or(0));
    println!("| attachments | in-process own p50 / p99 | fast path own p50 / p99 | fast path / without the apiserver | apiserver requests per ADD+DEL (all clients), in-process / fast path |");
    println!("|---:|---:|---:|---:|---:|");
    for (n, in_process, fast) in &rows {
        let ((i50, i99), (f50, f99)) = (pct(&in_process.own_add), pct(&fast.own_add));
        println!(
            "| {n} | {i50:.2} / {i99:.2} ms | {f50:.2} / {f99:.2} ms | {:.2}x | {} ({}) / {} ({}) |",
            f50 / floor50,
            median_u64(&in_process.requests),
            in_process.verbs,
            median_u64(&fast.requests),
            fast.verbs
        );
    }
    println!("| kactus without the apiserver (no pod, null master) | {floor50:.2} ms | | 1.00x | |");
}

fn add_del(
    world: &World,
    bin: &Binary,
    container: &str,
    pod: &crate::world::BenchPod,
    args: &str,
    conf: &serde_json::Value,
) -> (Run, Run) {
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
