//! The fault matrix: every way a delegate, kactus itself, the cache or the apiserver fails
//! during an ADD or a DEL, each case ending as an operator would check it after the runtime's
//! last DEL: no device in the pod, no veth end on the node, no IPAM lease, no file under
//! cacheDir. README's "Reliability" table is this file's list.
//!
//! The pod app1 asks for green (bridge), blue (macvlan over a veth made in the node netns)
//! and data (bridge), beside eth0 (bridge): real plugins in throwaway namespaces. Faults come
//! from wrapper delegates (shell scripts that run the real plugin, then misbehave), from
//! killing kactus, from damaging or mounting its cacheDir, and from the test apiserver's
//! fault switches; no test hook lives in the product.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const GREEN: &str = "net9f27410725ab";
const BLUE: &str = "net48d6215903df";
const DATA: &str = "net8d777f385d3d";
const CID: &str = "c-app1";

/// One case's world: the sandbox, pod app1 and the kactus config its runtime sends.
struct World {
    sb: Sandbox,
    pod: usize,
    args: String,
    conf: Value,
}

impl World {
    /// green, blue and data as NADs, pod app1 asking for `networks` (NPWG comma form).
    fn new(networks: &str) -> World {
        let mut sb = Sandbox::new();
        sb.node.ip(&["link", "add", "blue0", "type", "veth", "peer", "name", "blue0p"]);
        sb.node.ip(&["link", "set", "blue0", "up"]);
        sb.node.ip(&["link", "set", "blue0p", "up"]);
        let green = sb.bridge_net("green", "green-br", "192.168.42.0/24");
        let mut blue = json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "blue0", "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": "192.168.43.0/24", "dataDir": sb.ipam_dir()}});
        blue["name"] = "blue".into();
        let data = json!({"cniVersion": "1.0.0", "name": "data", "plugins": [
            sb.bridge_net("data", "data-br", "10.10.0.0/24"), {"type": "tuning"}]});
        for (name, config) in [("green", green), ("blue", blue), ("data", data)] {
            sb.apply(&Sandbox::nad_yaml("default", name, &config));
        }
        sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"k8s.v1.cni.cncf.io/networks": networks})));
        let pod = sb.pod("app1");
        let mut conf = sb.kactus_conf();
        conf["delegateTimeoutSeconds"] = 3.into();
        conf["apiTimeoutSeconds"] = 0.5.into();
        // The UID the apiserver gave the pod, as kubelet passes it.
        let uid = sb.api().store().get("pods", "default", "app1").expect("pod")["metadata"]["uid"].clone();
        let args = pod_args("default", "app1").replace("uid-app1", uid.as_str().unwrap_or_default());
        World { sb, pod, args, conf }
    }

    fn netns(&self) -> &Path {
        &self.sb.pods[self.pod].path
    }

    fn add(&self) -> CniOutput {
        self.timed("ADD")
    }

    fn del(&self) -> CniOutput {
        self.timed("DEL")
    }

    /// Runs one kactus call and prints how long it took (`--nocapture` shows the figures
    /// README's reliability table gives).
    fn timed(&self, command: &str) -> CniOutput {
        let started = Instant::now();
        let out = self.sb.kactus(command, CID, Some(self.netns()), "eth0", &self.args, &self.conf);
        let code = if out.success { "ok".to_string() } else { format!("code {}", out.json()["code"]) };
        eprintln!("fault matrix: {command} answered {code} in {} ms", started.elapsed().as_millis());
        out
    }

    fn start_add(&self) -> std::process::Child {
        let stdin = self.conf.to_string();
        self.sb.start_kactus("ADD", CID, Some(self.netns()), "eth0", &self.args, stdin.as_bytes())
    }

    /// The runtime's DEL succeeds (twice, as containerd sends several), and nothing is left.
    fn assert_clean_after_del(&self, case: &str) {
        for _ in 0..2 {
            let out = self.del();
            assert!(out.success, "{case}: DEL failed: {}", out.stdout);
        }
        self.sb.assert_nothing_left(self.pod, case);
    }

    /// The container's cache directory.
    fn cache(&self) -> PathBuf {
        self.sb.cache_dir().join(CID)
    }

    /// A delegate `name` that runs the real `plugin` and, on ADD only, then does `fault`
    /// (`$out` holds the real plugin's answer).
    fn faulty(&mut self, name: &str, plugin: &str, fault: &str) {
        let script = format!(
            "in=$(cat)\nif [ \"$CNI_COMMAND\" != ADD ]; then printf '%s' \"$in\" | {CNI_PATH}/{plugin}; exit $?; fi\nout=$(printf '%s' \"$in\" | {CNI_PATH}/{plugin})\n{fault}\n"
        );
        wrapper_plugin(&mut self.sb, name, &script);
    }
}

/// Waits (at most 20 s) until `path` exists.
fn wait_for(path: &Path, case: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{case}: {} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a faulty delegate does after the real plugin made its device and lease.
const DELEGATE_FAULTS: [(&str, &str); 5] = [
    ("exits 1", "echo 'injected failure' >&2; exit 1"),
    ("prints garbage", "echo 'this is not JSON {'"),
    ("crashes (SIGKILL)", "kill -9 $$"),
    ("hangs past delegateTimeoutSeconds", "sleep 30"),
    ("prints 20 MB", "head -c 20000000 /dev/zero | tr '\\0' x"),
];

/// Runs every delegate fault at one place of the ADD: `place` turns a world and the faulty
/// delegate's name into the world's config, wrapping `plugin`.
fn delegate_faults(place: &str, plugin: &str, set: impl Fn(&mut World, &str)) {
    for (what, fault) in DELEGATE_FAULTS {
        let case = format!("{place} {what}");
        eprintln!("fault matrix: case {case}");
        let mut w = World::new("green, blue, data");
        w.faulty("faulty", plugin, fault);
        set(&mut w, "faulty");
        let started = Instant::now();
        let (code, msg) = w.add().err();
        assert!(code > 0, "{case}: {msg}");
        assert!(started.elapsed() < Duration::from_secs(10), "{case}: bounded");
        w.sb.assert_nothing_left(w.pod, &format!("{case}, after the failed ADD"));
        w.assert_clean_after_del(&case);
    }
}

#[test]
fn a_faulty_master_delegate_is_rolled_back_whatever_it_does() {
    delegate_faults("the master", "bridge", |w, name| w.conf["delegates"][0]["type"] = name.into());
}

#[test]
fn a_faulty_second_attachment_is_rolled_back_with_everything_before_it() {
    delegate_faults("the 2nd attachment (blue)", "macvlan", |w, name| {
        let mut blue = json!({"cniVersion": "1.0.0", "type": name, "master": "blue0", "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": "192.168.43.0/24", "dataDir": w.sb.ipam_dir()}});
        blue["name"] = "blue".into();
        w.sb.apply(&Sandbox::nad_yaml("default", "blue", &blue));
    });
}

#[test]
fn a_faulty_step_of_a_conflist_is_rolled_back_with_the_steps_before_it() {
    delegate_faults("the 2nd step of data's conflist (tuning)", "tuning", |w, name| {
        let data = json!({"cniVersion": "1.0.0", "name": "data", "plugins": [
            w.sb.bridge_net("data", "data-br", "10.10.0.0/24"), {"type": name}]});
        w.sb.apply(&Sandbox::nad_yaml("default", "data", &data));
    });
}

/// The issue's own examples: real plugins that make their device, then fail on their IPAM.
#[test]
fn a_delegate_whose_ipam_fails_after_it_made_its_device_is_sent_del() {
    for (case, config) in [
        (
            "macvlan with static IPAM and no address",
            json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "blue0", "ipam": {"type": "static"}}),
        ),
        (
            "bridge with host-local and no subnet",
            json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "x-br", "ipam": {"type": "host-local"}}),
        ),
        (
            "macvlan with host-local and no subnet",
            json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "blue0", "ipam": {"type": "host-local"}}),
        ),
    ] {
        eprintln!("fault matrix: case {case}");
        let w = World::new("green, broken");
        w.sb.apply(&Sandbox::nad_yaml("default", "broken", &config));
        let (_, msg) = w.add().err();
        assert!(msg.contains("default/broken"), "{case}: {msg}");
        // A plugin whose DEL fails as its ADD did (host-local without a subnet) is kept in
        // the cache for the runtime's DEL, which gives it up (device removed, lease reported).
        if msg.contains("rollback of") {
            assert!(!w.sb.cache_files().is_empty(), "{case}: kept for the runtime's DEL: {msg}");
        } else {
            w.sb.assert_nothing_left(w.pod, &format!("{case}, after the failed ADD"));
        }
        w.assert_clean_after_del(case);
    }
}

/// How a delegate that made its device and lease, then failed its ADD, answers DEL.
#[derive(Debug, Clone, Copy)]
enum FailingDel {
    /// Fails the rollback's DEL with this code, then works.
    Once(u32),
    /// Fails every DEL with this code.
    Always(u32),
}

/// blue's delegate: the real macvlan makes the device and host-local the lease, then the
/// ADD fails; its DEL fails as `del` says, else runs the real macvlan.
fn flaky_blue(w: &mut World, del: FailingDel) {
    let (code, once) = match del {
        FailingDel::Once(code) => (code, "touch"),
        FailingDel::Always(code) => (code, "true"),
    };
    let script = format!(
        "in=$(cat)\nif [ \"$CNI_COMMAND\" = ADD ]; then printf '%s' \"$in\" | {CNI_PATH}/macvlan >/dev/null; echo '{{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"injected ADD failure\"}}'; exit 1; fi\n\
         if [ \"$CNI_COMMAND\" = DEL ] && [ ! -e {m} ] && [ ! -e {fixed} ]; then {once} {m}; echo '{{\"cniVersion\":\"1.0.0\",\"code\":{code},\"msg\":\"injected DEL failure\"}}'; exit 1; fi\n\
         printf '%s' \"$in\" | exec {CNI_PATH}/macvlan\n",
        m = w.sb.path("del-failed-once").display(),
        fixed = w.sb.path("del-fixed").display(),
    );
    wrapper_plugin(&mut w.sb, "flaky", &script);
    let mut blue = json!({"cniVersion": "1.0.0", "type": "flaky", "master": "blue0", "mode": "bridge",
        "ipam": {"type": "host-local", "subnet": "192.168.43.0/24", "dataDir": w.sb.ipam_dir()}});
    blue["name"] = "blue".into();
    w.sb.apply(&Sandbox::nad_yaml("default", "blue", &blue));
}

/// A delegate that made its device and lease, failed its ADD, and fails its DEL too: the
/// call stays in the cache (DESIGN: the failing call is sent DEL by the rollback and by every
/// later DEL), so the runtime's DEL tears it down when its delegate lets it (once), answers 11
/// while the delegate answers 11 (then succeeds once it works), and when the delegate fails
/// for good removes the device over netlink and reports the lease (LeaseNotReleased), so the
/// pod's deletion completes. At start-up (the runtime's ADD) and on hot-plug (a dynamic ADD).
#[test]
fn a_failing_delegate_whose_del_fails_too_is_kept_until_a_del_tears_it_down_or_reports_it() {
    for hot_plug in [false, true] {
        for del in [FailingDel::Once(999), FailingDel::Once(11), FailingDel::Always(11), FailingDel::Always(999)] {
            let case = format!("{} with blue failing its DEL {del:?}", if hot_plug { "hot-plug" } else { "start-up" });
            eprintln!("fault matrix: case {case}");
            let mut w = World::new(if hot_plug { "green" } else { "green, blue" });
            flaky_blue(&mut w, del);
            let (code, msg) = if hot_plug {
                w.add().ok();
                let args = format!("{};K8S_POD_NETWORK=blue", w.args);
                w.sb.kactus("ADD", CID, Some(w.netns()), "eth0", &args, &w.conf).err()
            } else {
                w.add().err()
            };
            assert_eq!(code, 999, "{case}: {msg}");
            assert!(msg.contains("rollback of") && msg.contains(BLUE), "{case}: {msg}");
            let kept = std::fs::read_dir(w.cache()).map(|d| d.count()).unwrap_or(0);
            assert!(kept > 0, "{case}: blue's call is kept for the runtime's DEL");
            match del {
                FailingDel::Once(_) => w.assert_clean_after_del(&case),
                FailingDel::Always(11) => {
                    let (code, msg) = w.del().err();
                    assert_eq!(code, 11, "{case}: {msg}");
                    assert!(msg.contains(BLUE), "{case}: {msg}");
                    assert!(w.sb.pods[w.pod].has_link(BLUE), "{case}: kept for the retry");
                    std::fs::write(w.sb.path("del-fixed"), "").expect("fix the delegate");
                    w.assert_clean_after_del(&case);
                }
                FailingDel::Always(_) => {
                    w.del().ok();
                    assert!(!w.sb.pods[w.pod].has_link(BLUE), "{case}: {:?}", w.sb.pod_devices(w.pod));
                    assert!(w.sb.pod_devices(w.pod).is_empty(), "{case}: {:?}", w.sb.pod_devices(w.pod));
                    assert!(w.sb.cache_files().is_empty(), "{case}: {:?}", w.sb.cache_files());
                    let leases = w.sb.leases();
                    assert!(leases.len() == 1 && leases[0].starts_with("blue/"), "{case}: {leases:?}");
                    let reported = pod_events(&w.sb, "default", "app1").into_iter().any(|(kind, reason, msg)| {
                        kind == "Warning" && reason == "LeaseNotReleased" && msg.contains(BLUE) && msg.contains(CID)
                    });
                    assert!(reported, "{case}: {:?}", pod_events(&w.sb, "default", "app1"));
                    // The operator releases it by hand, as the Event says.
                    std::fs::remove_file(w.sb.ipam_dir().join(&leases[0])).expect("release by hand");
                    w.assert_clean_after_del(&case);
                }
            }
        }
    }
}

/// podagent repeats a hot-plug that failed: the repeat finds the failing call kept, sends it
/// DEL again and, its delegate failing for good, gives it up (device removed, lease
/// reported) before trying anew, rather than fail with code 7 on the device left behind.
/// With the delegate's DEL answering 11, the repeat answers 11 naming it.
#[test]
fn a_repeated_hot_plug_after_a_failing_delegate_whose_del_fails_tries_anew() {
    for del in [FailingDel::Always(999), FailingDel::Always(11)] {
        let case = format!("repeated hot-plug with blue failing its DEL {del:?}");
        eprintln!("fault matrix: case {case}");
        let mut w = World::new("green");
        flaky_blue(&mut w, del);
        w.add().ok();
        let args = format!("{};K8S_POD_NETWORK=blue", w.args);
        let hot_plug = || w.sb.kactus("ADD", CID, Some(w.netns()), "eth0", &args, &w.conf).err();
        assert_eq!(hot_plug().0, 999, "{case}");
        let (code, msg) = hot_plug();
        match del {
            FailingDel::Always(11) => {
                assert_eq!(code, 11, "{case}: {msg}");
                assert!(msg.contains(BLUE) && msg.contains("half-made"), "{case}: {msg}");
            }
            _ => {
                assert_eq!(code, 999, "{case}: the ADD was tried anew: {msg}");
                let reported = pod_events(&w.sb, "default", "app1")
                    .into_iter()
                    .filter(|(_, reason, msg)| reason == "LeaseNotReleased" && msg.contains(BLUE))
                    .count();
                assert_eq!(reported, 1, "{case}: {:?}", pod_events(&w.sb, "default", "app1"));
            }
        }
        // host-local gave the new attempt the given-up one's lease (same container and
        // interface), which the runtime's DEL releases once the delegate's DEL works.
        std::fs::write(w.sb.path("del-fixed"), "").expect("fix the delegate's DEL");
        w.assert_clean_after_del(&case);
    }
}

/// kactus killed (SIGKILL: a runtime's timeout, the OOM killer) at each stage of an ADD; the
/// runtime's DEL then finds everything it had made or was making.
#[test]
fn kactus_killed_at_each_stage_of_an_add_leaves_nothing_after_the_runtimes_del() {
    let kill_parent = "kill -9 $PPID; printf '%s' \"$out\"";
    /// Sets the stage up; returns the file whose appearance means kactus reached it, for the
    /// stages the test kills kactus at (the others' delegates kill it).
    type Stage = dyn Fn(&mut World) -> Option<PathBuf>;
    let stages: [(&str, &Stage); 6] = [
        ("while the pod is read", &|w| {
            w.sb.api().faults().hang("/pods/app1");
            Some(w.cache())
        }),
        ("in the master delegate, after it made eth0", &|w| {
            w.faulty("killer", "bridge", kill_parent);
            w.conf["delegates"][0]["type"] = "killer".into();
            None
        }),
        ("while the networks are read, eth0 made", &|w| {
            w.sb.api().faults().hang("/network-attachment-definitions");
            Some(w.cache().join("eth0.json"))
        }),
        ("in the 2nd attachment, after it made its device", &|w| {
            w.faulty("killer", "macvlan", kill_parent);
            let mut blue = json!({"cniVersion": "1.0.0", "type": "killer", "master": "blue0", "mode": "bridge",
                "ipam": {"type": "host-local", "subnet": "192.168.43.0/24", "dataDir": w.sb.ipam_dir()}});
            blue["name"] = "blue".into();
            w.sb.apply(&Sandbox::nad_yaml("default", "blue", &blue));
            None
        }),
        ("while network-status is written, every device made", &|w| {
            w.conf["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations":
                {"k8s.v1.cni.cncf.io/networks": "green, blue, data"}});
            w.sb.api().faults().hang("/pods/app1");
            Some(w.cache().join(format!("{DATA}.json")))
        }),
        ("during the rollback of a failed attachment", &|w| {
            // data fails; green's DEL in the rollback kills kactus (once).
            let marker = w.sb.path("killed-once");
            let script = format!(
                "in=$(cat)\nif [ \"$CNI_COMMAND\" = DEL ] && [ ! -e {m} ]; then touch {m}; kill -9 $PPID; sleep 1; fi\nprintf '%s' \"$in\" | exec {CNI_PATH}/bridge\n",
                m = marker.display()
            );
            wrapper_plugin(&mut w.sb, "dies-in-rollback", &script);
            let mut green = w.sb.bridge_net("green", "green-br", "192.168.42.0/24");
            green["type"] = "dies-in-rollback".into();
            w.sb.apply(&Sandbox::nad_yaml("default", "green", &green));
            w.faulty("faulty", "tuning", "exit 1");
            let data = json!({"cniVersion": "1.0.0", "name": "data", "plugins": [
                w.sb.bridge_net("data", "data-br", "10.10.0.0/24"), {"type": "faulty"}]});
            w.sb.apply(&Sandbox::nad_yaml("default", "data", &data));
            None
        }),
    ];
    for (stage, set_up) in stages {
        let case = format!("kactus killed {stage}");
        eprintln!("fault matrix: case {case}");
        let mut w = World::new("green, blue, data");
        let kill_when = set_up(&mut w);
        let mut kactus = w.start_add();
        if let Some(path) = kill_when {
            wait_for(&path, &case);
            std::thread::sleep(Duration::from_millis(50));
            let _ = kactus.kill();
        }
        let status = kactus.wait().expect("wait kactus");
        assert!(!status.success(), "{case}: kactus was not killed");
        w.sb.api().faults().clear();
        w.assert_clean_after_del(&case);
    }
}

/// Damages the cache of a pod with eth0, green and blue made.
fn damaged_cache(case: &str, damage: impl Fn(&Path)) -> World {
    let w = World::new("green, blue");
    w.add().ok();
    let files: Vec<PathBuf> = std::fs::read_dir(w.cache()).expect("cache").flatten().map(|e| e.path()).collect();
    assert!(files.len() >= 3, "{case}: {files:?}");
    damage(&w.cache());
    w
}

fn truncate(path: &Path) {
    let bytes = std::fs::read(path).expect("read cache file");
    std::fs::write(path, &bytes[..bytes.len() / 2]).expect("truncate cache file");
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    files_ending(dir, ".json")
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let all = std::fs::read_dir(dir).expect("cache").flatten().map(|e| e.path());
    all.filter(|p| p.to_string_lossy().ends_with(suffix)).collect()
}

#[test]
fn a_damaged_cache_entry_is_rebuilt_from_its_intent_record() {
    type Damage = dyn Fn(&Path);
    let cases: [(&str, &Damage); 6] = [
        ("one attachment's entry truncated", &|dir| truncate(&dir.join(format!("{GREEN}.json")))),
        ("the master's entry truncated", &|dir| truncate(&dir.join("eth0.json"))),
        ("every entry truncated", &|dir| entries(dir).iter().for_each(|p| truncate(p))),
        ("an entry of garbage", &|dir| std::fs::write(dir.join(format!("{BLUE}.json")), "\u{1}garbage").unwrap()),
        ("an empty entry", &|dir| std::fs::write(dir.join(format!("{BLUE}.json")), "").unwrap()),
        ("an entry missing", &|dir| std::fs::remove_file(dir.join(format!("{GREEN}.json"))).unwrap()),
    ];
    for (case, damage) in cases {
        eprintln!("fault matrix: case {case}");
        let w = damaged_cache(case, damage);
        w.assert_clean_after_del(case);
    }
}

fn damage_everything(dir: &Path) {
    for path in std::fs::read_dir(dir).expect("cache").flatten().map(|e| e.path()) {
        truncate(&path);
    }
}

#[test]
fn a_cache_damaged_beyond_its_intents_is_rebuilt_from_the_pods_annotation_and_networks() {
    let case = "every entry and intent record truncated, apiserver up";
    eprintln!("fault matrix: case {case}");
    let w = damaged_cache(case, damage_everything);
    w.assert_clean_after_del(case);
}

/// While nothing can rebuild a call, DEL does not claim success: code 11 naming it, the
/// files kept, so the runtime retries; once the apiserver answers, the retry cleans up.
#[test]
fn a_damaged_cache_with_the_apiserver_unreachable_is_code_11_until_it_answers() {
    let case = "every file truncated, apiserver unreachable";
    eprintln!("fault matrix: case {case}");
    let w = damaged_cache(case, damage_everything);
    w.sb.api().faults().reset_next(1000);
    let (code, msg) = w.del().err();
    assert_eq!(code, 11, "{case}: {msg}");
    assert!(msg.contains(GREEN) && msg.contains("eth0"), "{case}: names what it could not delete: {msg}");
    assert!(!w.sb.cache_files().is_empty(), "{case}: the cache is kept for the retry");
    w.sb.api().faults().clear();
    w.assert_clean_after_del(case);
}

/// Once the pod is gone for good and nothing can rebuild a call, DEL removes what the node
/// alone knows (the devices), says which leases it could not release, and succeeds.
#[test]
fn a_damaged_cache_of_a_deleted_pod_removes_the_devices_and_reports_the_leases() {
    let case = "every file truncated, pod deleted";
    eprintln!("fault matrix: case {case}");
    let w = damaged_cache(case, damage_everything);
    let before = w.sb.leases();
    w.sb.api().store().delete("pods", "default", "app1").expect("delete pod");
    w.del().ok();
    assert!(w.sb.pod_devices(w.pod).is_empty(), "{case}: {:?}", w.sb.pod_devices(w.pod));
    assert!(w.sb.node_veths().is_empty(), "{case}: eth0's veth end: {:?}", w.sb.node_veths());
    assert!(w.sb.cache_files().is_empty(), "{case}: {:?}", w.sb.cache_files());
    // eth0's lease went with the master's DEL (rebuilt from the config on stdin); green's and
    // blue's networks are unknown without the pod: their leases stay, and are reported.
    let left = w.sb.leases();
    assert_eq!(left.len(), 2, "{case}: {left:?} of {before:?}");
    let warnings: Vec<String> = pod_events(&w.sb, "default", "app1")
        .into_iter()
        .filter(|(kind, reason, _)| kind == "Warning" && reason == "LeaseNotReleased")
        .map(|(_, _, msg)| msg)
        .collect();
    for device in [GREEN, BLUE] {
        assert!(
            warnings.iter().any(|m| m.contains(device) && m.contains(CID)),
            "{case}: a warning names {device}: {warnings:?}"
        );
    }
}

/// The container's whole cache directory gone (a node whose cacheDir did not survive, an
/// operator's cleanup) while its devices are not: DEL rebuilds every call from the pod's
/// annotation and networks, so the attachments' leases are released, not only eth0's; while
/// the apiserver does not answer, code 11 and nothing deleted; with the pod deleted, the
/// attachments are unknown and that is reported on the pod (LeaseNotReleased).
#[test]
fn a_lost_cache_directory_is_rebuilt_from_the_pods_annotation_and_networks() {
    for (case, apiserver) in [
        ("cache directory removed, apiserver up", "up"),
        ("cache directory removed, apiserver unreachable", "unreachable"),
        ("cache directory removed, pod deleted", "pod deleted"),
    ] {
        eprintln!("fault matrix: case {case}");
        let w = World::new("green, blue");
        w.add().ok();
        std::fs::remove_dir_all(w.cache()).expect("remove the cache directory");
        match apiserver {
            "up" => w.assert_clean_after_del(case),
            "unreachable" => {
                w.sb.api().faults().reset_next(1000);
                let (code, msg) = w.del().err();
                assert_eq!(code, 11, "{case}: {msg}");
                assert!(msg.contains("cache directory"), "{case}: {msg}");
                assert!(w.sb.pods[w.pod].has_link(GREEN), "{case}: nothing deleted before the retry");
                w.sb.api().faults().clear();
                w.assert_clean_after_del(case);
            }
            _ => {
                w.sb.api().store().delete("pods", "default", "app1").expect("delete pod");
                w.del().ok();
                // eth0's lease went with the master's DEL (from the config on stdin); green's
                // and blue's networks are unknown without the pod: reported.
                let left = w.sb.leases();
                assert_eq!(left.len(), 2, "{case}: {left:?}");
                let reported = pod_events(&w.sb, "default", "app1").into_iter().any(|(kind, reason, msg)| {
                    kind == "Warning"
                        && reason == "LeaseNotReleased"
                        && msg.contains("cache directory")
                        && msg.contains(CID)
                });
                assert!(reported, "{case}: {:?}", pod_events(&w.sb, "default", "app1"));
                assert!(w.sb.cache_files().is_empty(), "{case}: {:?}", w.sb.cache_files());
            }
        }
    }
}

/// A small tmpfs mounted for one test; unmounted when dropped (on failure too).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount tmpfs on {}", path.display());
        Tmpfs(path.to_path_buf())
    }

    fn remount(&self, mode: &str) {
        let ok = Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(&self.0).status();
        assert!(ok.is_ok_and(|s| s.success()), "remount {mode} {}", self.0.display());
    }

    /// Fills it, then frees `free` bytes.
    fn fill_leaving(&self, free: u64) {
        let filler = self.0.join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4096"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status();
        let size = std::fs::metadata(&filler).expect("filler").len();
        let file = std::fs::OpenOptions::new().write(true).open(&filler).expect("filler");
        file.set_len(size.saturating_sub(free)).expect("free space");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A world whose cacheDir is a tmpfs of its own (a filler file fills it where asked).
fn world_on_tmpfs() -> (World, Tmpfs) {
    let w = World::new("green, blue");
    let disk = Tmpfs::mount(&w.sb.cache_dir(), "256k");
    (w, disk)
}

#[test]
fn a_read_only_cache_dir_at_del_still_tears_everything_down_and_reports_after() {
    let case = "cacheDir read-only at DEL";
    eprintln!("fault matrix: case {case}");
    let (w, disk) = world_on_tmpfs();
    w.add().ok();
    disk.remount("ro");
    let (code, msg) = w.del().err();
    assert_eq!(code, 5, "{case}: {msg}");
    assert!(msg.contains("remove cache"), "{case}: {msg}");
    assert!(w.sb.pod_devices(w.pod).is_empty() && w.sb.leases().is_empty(), "{case}: torn down before the error");
    disk.remount("rw");
    w.assert_clean_after_del(case);
}

#[test]
fn a_read_only_or_full_cache_dir_at_add_fails_before_anything_is_made() {
    for (case, fill) in [("cacheDir read-only at ADD", None), ("cacheDir full at ADD", Some(0))] {
        eprintln!("fault matrix: case {case}");
        let (w, disk) = world_on_tmpfs();
        match fill {
            None => disk.remount("ro"),
            Some(free) => disk.fill_leaving(free),
        }
        let (code, msg) = w.add().err();
        assert_eq!(code, 5, "{case}: {msg}");
        assert!(w.sb.pod_devices(w.pod).is_empty() && w.sb.leases().is_empty(), "{case}: nothing made");
        disk.remount("rw");
        let _ = std::fs::remove_file(disk.0.join("filler"));
        w.assert_clean_after_del(case);
    }
}

/// The disk fills while the ADD runs (room for its first record only): rolled back.
#[test]
fn a_cache_dir_that_fills_during_an_add_rolls_it_back() {
    let case = "cacheDir fills during ADD";
    eprintln!("fault matrix: case {case}");
    let (w, disk) = world_on_tmpfs();
    disk.fill_leaving(4096);
    let (code, msg) = w.add().err();
    assert_eq!(code, 5, "{case}: {msg}");
    let _ = std::fs::remove_file(disk.0.join("filler"));
    w.sb.assert_nothing_left(w.pod, &format!("{case}, after the failed ADD"));
    w.assert_clean_after_del(case);
}

/// Each apiserver fault during an ADD: a clear error (or success where retries absorb it),
/// nothing left behind, and a DEL that needs no apiserver.
#[test]
fn apiserver_faults_during_an_add_fail_it_cleanly_or_are_absorbed() {
    type SetUp = dyn Fn(&World);
    let cases: [(&str, &SetUp, Option<u64>); 8] = [
        ("unreachable (connections reset)", &|w| w.sb.api().faults().reset_next(1000), Some(11)),
        ("hung after the TLS handshake", &|w| w.sb.api().faults().hang(""), Some(11)),
        ("slow (200 ms per answer)", &|w| w.sb.api().faults().set_latency(Duration::from_millis(200)), None),
        ("slower than apiTimeoutSeconds", &|w| w.sb.api().faults().set_latency(Duration::from_secs(2)), Some(11)),
        ("a burst of 429s", &|w| w.sb.api().faults().fail_next(2, 429, None), None),
        ("503s beyond the retries", &|w| w.sb.api().faults().fail_next(1000, 503, None), Some(11)),
        (
            "a garbage body for a NAD",
            &|w| w.sb.api().faults().garbage_next(1, Some("/network-attachment-definitions")),
            Some(11),
        ),
        (
            "a truncated body for a NAD",
            &|w| w.sb.api().faults().truncate_next(1, Some("/network-attachment-definitions")),
            Some(11),
        ),
    ];
    for (case, set_up, code) in cases {
        eprintln!("fault matrix: case {case}");
        let w = World::new("green, blue");
        set_up(&w);
        let started = Instant::now();
        let out = w.add();
        let took = started.elapsed();
        match code {
            Some(want) => {
                let (got, msg) = out.err();
                assert_eq!(got, want, "{case}: {msg}");
                w.sb.assert_nothing_left(w.pod, &format!("{case}, after the failed ADD"));
            }
            None => {
                out.ok();
                assert!(w.sb.pods[w.pod].has_link(GREEN) && w.sb.pods[w.pod].has_link(BLUE), "{case}");
            }
        }
        assert!(took < Duration::from_secs(20), "{case}: bounded ({took:?})");
        w.sb.api().faults().clear();
        w.assert_clean_after_del(case);
    }
}

/// A 200 for a NAD whose JSON is not that NAD (a misbehaving proxy or aggregated server) is
/// no answer about the network: 11, as for a body that is not JSON, not a missing config.
#[test]
fn a_nad_answer_that_is_json_but_not_the_nad_is_code_11() {
    let case = "a body that is JSON but not the NAD";
    eprintln!("fault matrix: case {case}");
    let w = World::new("green");
    w.sb.api().faults().foreign_next(1, Some("/network-attachment-definitions/green"));
    let (code, msg) = w.add().err();
    assert_eq!(code, 11, "{case}: {msg}");
    assert!(msg.contains("NetworkAttachmentDefinition default/green"), "{case}: {msg}");
    w.sb.assert_nothing_left(w.pod, &format!("{case}, after the failed ADD"));
    w.sb.api().faults().clear();
    w.add().ok();
    w.assert_clean_after_del(case);
}

/// The apiserver rotates the token: ADDs fail with a clear error (nothing made) until the
/// credentials on disk are rotated too, which kactus reads afresh on every call.
#[test]
fn a_rotated_token_fails_adds_cleanly_until_the_kubeconfig_has_the_new_one() {
    let case = "401 after token rotation";
    eprintln!("fault matrix: case {case}");
    let w = World::new("green, blue");
    w.sb.api().faults().rotate_token("rotated-token");
    let (code, msg) = w.add().err();
    assert_eq!(code, 100, "{case}: {msg}");
    assert!(msg.to_lowercase().contains("unauthorized") || msg.contains("401"), "{case}: {msg}");
    w.sb.assert_nothing_left(w.pod, &format!("{case}, after the failed ADD"));
    let text = std::fs::read_to_string(&w.sb.kubeconfig).expect("kubeconfig").replace(TOKEN, "rotated-token");
    std::fs::write(&w.sb.kubeconfig, text).expect("rotate kubeconfig");
    w.add().ok();
    w.assert_clean_after_del(case);
}
