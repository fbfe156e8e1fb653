//! `KACTUS_BENCH_PROFILE=<attachments>:<latency ms>[:null[:fast]]`: where an ADD's time goes,
//! phase by phase from kactus's debug log, and one ADD under strace; `fast` through podagent's
//! fast path (the real podagent serving its socket in the node).

use crate::common::*;
use crate::report::{ms, pct};
use crate::world::*;
use std::time::{Duration, Instant};

/// Runs the ADD `reps` times with a debug log and prints the p50 of each phase between log
/// lines (with bridge delegates, next to the same delegates exec'd directly); then one ADD
/// under `strace -f -tt -T`, kept in /tmp/kactus-bench-profile.strace with its log beside it.
pub fn profile(world: &World, bin: &Binary, spec: &str, reps: usize) {
    let mut parts = spec.split(':');
    let n: usize = parts.next().unwrap_or("4").parse().expect("attachments");
    let latency: u64 = parts.next().unwrap_or("0").parse().expect("latency ms");
    let d = if parts.next() == Some("null") { Delegates::Null } else { Delegates::Bridge };
    let fast = parts.next() == Some("fast");
    world.sb.api().faults().set_latency(Duration::from_millis(latency));
    let pod = world.pod(d, n);
    world.kactus(bin, "ADD", "warm", d, pod);
    world.kactus(bin, "DEL", "warm", d, pod);
    let log = "/tmp/kactus-bench-profile.log";
    let mut conf = world.conf_for("ADD", d, pod);
    conf["logLevel"] = "debug".into();
    conf["logFile"] = log.into();
    let mut args = pod.args();
    let _agent = fast.then(|| {
        let (agent, socket) = crate::fastpath::start_podagent(world);
        conf["podagentSocket"] = serde_json::json!(socket);
        args = crate::fastpath::args_with_uid(world, pod);
        agent
    });
    let mut phases: Vec<(String, Vec<Duration>)> = Vec::new();
    let mut direct_calls = Vec::new();
    let mut usages = Vec::new();
    for rep in 0..reps {
        let _ = std::fs::remove_file(log);
        let container = format!("phases-{rep}");
        let env = cni_env("ADD", &container, Some(&pod.netns), "eth0", &args, world.cni_path(d));
        let add = run_in(Some(&world.sb.node.path), bin.path(), &env, conf.to_string().as_bytes());
        assert!(add.ok, "ADD with debug log: {}", add.stdout);
        world.kactus(bin, "DEL", &container, d, pod);
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
        if d == Delegates::Bridge {
            let (took, results) = world.direct_add(&format!("{container}-direct"), pod, n);
            world.direct_del(&format!("{container}-direct"), pod, n, &results);
            direct_calls.push(took / (n as u32 + 1));
        }
    }
    let path = if fast { "the fast path" } else { "in-process" };
    println!("\nwhere an ADD with {n} attachment(s) spends its time ({latency} ms apiserver latency, {d:?} delegates, {path}), p50 of {reps}");
    println!("| phase (up to the log line) | p50 |");
    println!("|---|---:|");
    for (name, samples) in &phases {
        println!("| {name} | {:.2} ms |", pct(samples).0);
    }
    if !direct_calls.is_empty() {
        println!("| (a direct delegate call, for comparison) | {:.2} ms |", pct(&direct_calls).0);
    }
    if let Some(usage) = usages.get(usages.len() / 2) {
        println!("kactus's own usage in one of these ADDs (its threads, not its delegates): {usage}");
    }

    let _ = std::fs::remove_file(log);
    // sh reads this script from stdin; the config goes to kactus through $CONF.
    let mut env = cni_env("ADD", "prof", Some(&pod.netns), "eth0", &args, world.cni_path(d));
    env.push(("CONF", conf.to_string()));
    let script = format!("printf '%s' \"$CONF\" | strace -f -tt -T -o /tmp/kactus-bench-profile.strace {}", bin.path());
    let start = Instant::now();
    let run = run_in(Some(&world.sb.node.path), "/bin/sh", &env, script.as_bytes());
    println!("\nADD under strace: {:.1} ms ok={} {}", ms(start.elapsed()), run.ok, run.stderr);
    println!("strace in /tmp/kactus-bench-profile.strace, its debug log in {log}");
    world.kactus(bin, "DEL", "prof", d, pod);
    let _ = CNI_PATH;
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
        } else if msg.starts_with("fast path: podagent answered") {
            ("podagent answered the networks".to_string(), planned)
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
