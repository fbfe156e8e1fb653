//! The fast path end to end: the real podagent serving its socket against the test
//! apiserver, the real kactus asking it, the real reference plugins. On the fast path kactus
//! reads nothing from the apiserver itself (its own kubeconfig points nowhere); on every
//! reason to fall back it takes its in-process path at once. Either way the pod ends with
//! exactly the networks its annotation names, and DEL leaves nothing behind.

mod common;
use common::podagent::*;
use common::*;
use serde_json::{json, Value};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

const RED: &str = "netbda9643ac660";
const FRESH: &str = "net76010858c836";

#[test]
fn device_names_are_the_networks_hashes() {
    assert_eq!(kactus::attachment::device_name_for("green"), GREEN);
    assert_eq!(kactus::attachment::device_name_for("red"), RED);
    assert_eq!(kactus::attachment::device_name_for("fresh"), FRESH);
}

fn socket(sb: &Sandbox) -> PathBuf {
    sb.path("run/kactus/podagent.sock")
}

/// podagent serving the fast path on [`socket`].
fn agent(sb: &Sandbox, node: &Node, extra: &[&str]) -> PodAgent {
    let mut flags = vec![
        "--sandbox-lookup=cache".to_string(),
        format!("--kactus-cache-dir={}", sb.cache_dir().display()),
        format!("--fastpath-socket={}", socket(sb).display()),
    ];
    flags.extend(extra.iter().map(|f| f.to_string()));
    let agent = PodAgent::start_with(sb, node, &flags);
    assert!(wait_until(|| socket(sb).exists()), "podagent never made its socket");
    agent
}

/// kactus's config asking podagent at `socket`.
fn conf(sb: &Sandbox, socket: &Path) -> Value {
    let mut conf = sb.kactus_conf();
    conf["podagentSocket"] = json!(socket);
    conf
}

/// [`conf`] with a kubeconfig whose apiserver does not exist: an ADD that succeeds with it
/// read and wrote nothing through the apiserver itself.
fn conf_without_apiserver(sb: &Sandbox, socket: &Path) -> Value {
    let text = std::fs::read_to_string(&sb.kubeconfig).unwrap();
    let server = text.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap().trim().to_string();
    let dead = sb.path("dead-kubeconfig.yaml");
    std::fs::write(&dead, text.replace(&server, "https://127.0.0.1:1")).unwrap();
    let mut conf = conf(sb, socket);
    conf["kubeconfig"] = json!(dead);
    conf
}

/// The green (192.168.42.0/24) and red (192.168.43.0/24) NADs.
fn networks(sb: &Sandbox) {
    sb.apply(&Sandbox::nad_yaml("default", "green", &sb.bridge_net("green", "green-br", "192.168.42.0/24")));
    sb.apply(&Sandbox::nad_yaml("default", "red", &sb.bridge_net("red", "red-br", "192.168.43.0/24")));
}

/// Pod `name` asking for `networks`; its server-made UID.
fn pod_with(sb: &Sandbox, name: &str, networks: &str) -> String {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": {"k8s.v1.cni.cncf.io/networks": networks}},
        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "alpine"}]},
        "status": {"phase": "Pending"}});
    let made = sb.api().store().apply(pod).unwrap();
    made["metadata"]["uid"].as_str().unwrap().to_string()
}

fn args(name: &str, uid: &str) -> String {
    pod_args("default", name).replace(&format!("K8S_POD_UID=uid-{name}"), &format!("K8S_POD_UID={uid}"))
}

fn status_of(sb: &Sandbox, name: &str) -> Vec<String> {
    let pod = sb.api().store().get("pods", "default", name).unwrap();
    let Some(text) = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str() else {
        return Vec::new();
    };
    let list: Value = serde_json::from_str(text).unwrap();
    list.as_array().unwrap().iter().map(|e| e["interface"].as_str().unwrap_or_default().to_string()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn kactus_log(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.path("kactus.log")).unwrap_or_default()
}

/// ADD of pod `name`, then: exactly `devices` in it and in network-status; then DEL, and
/// nothing left.
fn add_check_del(sb: &Sandbox, p: usize, name: &str, uid: &str, conf: &Value, devices: &[&str], case: &str) {
    let out = sb.kactus("ADD", &format!("c-{name}"), Some(&sb.pods[p].path), "eth0", &args(name, uid), conf);
    assert!(out.success, "{case}: ADD: {}\n{}", out.stdout, kactus_log(sb));
    let want = sorted(devices.iter().map(|d| d.to_string()).collect());
    assert_eq!(sorted(sb.pod_devices(p)), want, "{case}: devices");
    assert_eq!(sorted(status_of(sb, name)), want, "{case}: network-status");
    let out = sb.kactus("DEL", &format!("c-{name}"), Some(&sb.pods[p].path), "eth0", &args(name, uid), conf);
    assert!(out.success, "{case}: DEL: {}", out.stdout);
    sb.assert_nothing_left(p, case);
}

#[test]
fn on_the_fast_path_kactus_reads_and_writes_nothing_through_the_apiserver_itself() {
    let mut sb = Sandbox::new();
    let node = node_cni(&sb);
    networks(&sb);
    let agent = agent(&sb, &node, &[]);
    let u_app = pod_with(&sb, "app", r#"[{"name":"green"},{"name":"red"}]"#);
    let p = sb.pod("app");
    let conf = conf_without_apiserver(&sb, &socket(&sb));
    let rv = |n: &str| {
        sb.api().store().get("network-attachment-definitions", "default", n).unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (green_rv, red_rv) = (rv("green"), rv("red"));

    let out = sb.kactus("ADD", "c-app", Some(&sb.pods[p].path), "eth0", &args("app", &u_app), &conf);
    out.ok();
    assert_eq!(sorted(sb.pod_devices(p)), sorted(vec!["eth0".into(), GREEN.into(), RED.into()]));
    assert!(sb.pods[p].addrs(GREEN)[0].starts_with("192.168.42."));
    assert!(sb.pods[p].addrs(RED)[0].starts_with("192.168.43."));
    // podagent wrote network-status and the condition before kactus answered.
    assert_eq!(sorted(status_of(&sb, "app")), sorted(vec!["eth0".into(), GREEN.into(), RED.into()]));
    let pod = sb.api().store().get("pods", "default", "app").unwrap();
    assert!(pod["status"]["conditions"].to_string().contains("kactus.io/attachments"), "{pod}");
    // The Event goes out from podagent, in the background.
    assert!(
        wait_until(|| sb
            .api()
            .store()
            .list("events", Some("default"))
            .iter()
            .any(|e| e.to_string().contains("AddedInterface"))),
        "no AddedInterface event"
    );
    // Each attachment records the NAD version it was made from.
    let cache: String =
        sb.cache_files().iter().filter_map(|f| std::fs::read_to_string(sb.cache_dir().join(f)).ok()).collect();
    assert!(cache.contains(&format!("\"networkVersion\":\"{green_rv}\"")), "{cache}");
    assert!(cache.contains(&format!("\"networkVersion\":\"{red_rv}\"")), "{cache}");
    assert!(!kactus_log(&sb).contains("in-process"), "{}", kactus_log(&sb));
    assert_eq!(agent.metric("podagent_fastpath_answers_total"), 2, "resolve + report");

    // DEL never asks podagent (its own apiserver is not needed either).
    let out = sb.kactus("DEL", "c-app", Some(&sb.pods[p].path), "eth0", &args("app", &u_app), &conf);
    assert!(out.success, "{}", out.stdout);
    assert_eq!(agent.metric("podagent_fastpath_answers_total"), 2);
    sb.assert_nothing_left(p, "fast path");
}

/// A NAD as `kubectl apply` leaves it carries its whole object again (the last-applied
/// annotation) and managedFields: podagent's cache holds neither and its answers send neither
/// (most of a NAD's bytes, for every attachment of every pod start), while kactus still gets
/// what it reads (spec, resourceVersion, the other annotations) and makes the attachment.
#[test]
fn podagent_keeps_and_sends_a_nad_without_what_kubectl_apply_added() {
    let mut sb = Sandbox::new();
    let node = node_cni(&sb);
    let mut green = kubectl_applied_nad("default", "green", &sb.bridge_net("green", "green-br", "192.168.42.0/24"));
    green["metadata"]["annotations"]["example.com/owner"] = json!("team-a");
    sb.api().store().apply(green).unwrap();
    let agent = agent(&sb, &node, &[]);
    let uid = pod_with(&sb, "app", r#"[{"name":"green"}]"#);
    let p = sb.pod("app");
    assert!(wait_until(|| agent.metric("podagent_fastpath_nad_events_total") >= 3), "green never reached the cache");

    let ask = kactus::fastpath::Ask::Resolve {
        pod: kactus::fastpath::PodKey { namespace: "default".into(), name: "app".into(), uid: uid.clone() },
        networks: Vec::new(),
    };
    let answer = kactus::fastpath::client::ask(&socket(&sb), ask, std::time::Duration::from_secs(5)).unwrap();
    let networks = match answer {
        kactus::fastpath::Answer::Resolved { networks, .. } => networks,
        other => panic!("{other:?}"),
    };
    assert_eq!(networks.len(), 1, "{networks:?}");
    let object = &networks[0].object;
    let stored = sb.api().store().get("network-attachment-definitions", "default", "green").unwrap();
    assert_eq!(object["metadata"]["managedFields"], Value::Null, "{object}");
    let annotations = object["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(annotations.keys().collect::<Vec<_>>(), vec!["example.com/owner"], "{object}");
    assert_eq!(object["metadata"]["resourceVersion"], stored["metadata"]["resourceVersion"]);
    assert_eq!(object["spec"], stored["spec"]);

    add_check_del(&sb, p, "app", &uid, &conf_without_apiserver(&sb, &socket(&sb)), &["eth0", GREEN], "applied NAD");
}

/// A server on `path` answering each request with `reply` (or holding it unanswered).
fn fake_podagent(path: &Path, reply: Option<Value>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let reply = reply.clone();
            std::thread::spawn(move || {
                let _ = kactus::fastpath::read_frame(&mut conn);
                match reply {
                    Some(r) => {
                        let _ = kactus::fastpath::write_frame(&mut conn, r.to_string().as_bytes());
                    }
                    None => std::thread::sleep(std::time::Duration::from_secs(5)),
                }
            });
        }
    });
}

#[test]
fn every_reason_to_fall_back_takes_the_in_process_path_at_once_with_the_right_networks() {
    let mut sb = Sandbox::new();
    let node = node_cni(&sb);
    networks(&sb);
    let u_app = pod_with(&sb, "app", r#"[{"name":"green"},{"name":"red"}]"#);
    let p = sb.pod("app");
    let all = ["eth0", GREEN, RED];
    let cases: Vec<(&str, Option<Option<Value>>, &str)> = vec![
        ("socket absent", None, "no socket at"),
        ("protocol mismatch", Some(Some(json!({"version": 2, "answer": "reported"}))), "protocol version 2"),
        (
            "busy",
            Some(Some(json!({"version": 1, "answer": "refused", "reason": "busy", "message": "16 under way"}))),
            "podagent is busy",
        ),
        (
            "not synced",
            Some(Some(json!({"version": 1, "answer": "refused", "reason": "notSynced", "message": "x"}))),
            "not synced yet",
        ),
        ("no answer in time", Some(None), "no answer from podagent within"),
    ];
    for (i, (case, server, said)) in cases.into_iter().enumerate() {
        let path = sb.path(&format!("fake{i}/podagent.sock"));
        if let Some(reply) = server {
            fake_podagent(&path, reply);
        }
        let started = std::time::Instant::now();
        add_check_del(&sb, p, "app", &u_app, &conf(&sb, &path), &all, case);
        let log = kactus_log(&sb);
        assert!(log.contains(said), "{case}: the log does not say {said:?}:\n{log}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{case}: waited");
    }

    // podagent killed: its socket file stays, nobody listens.
    let agent = agent(&sb, &node, &[]);
    drop(agent);
    add_check_del(&sb, p, "app", &u_app, &conf(&sb, &socket(&sb)), &all, "podagent killed");
    assert!(kactus_log(&sb).contains("refused the connection"), "{}", kactus_log(&sb));
}

#[test]
fn podagent_answers_busy_beyond_its_cap_and_kactus_still_starts_the_pod() {
    let mut sb = Sandbox::new();
    let node = node_cni(&sb);
    networks(&sb);
    let agent = agent(&sb, &node, &["--fastpath-max-concurrent=0"]);
    let u_app = pod_with(&sb, "app", r#"[{"name":"green"}]"#);
    let p = sb.pod("app");
    add_check_del(&sb, p, "app", &u_app, &conf(&sb, &socket(&sb)), &["eth0", GREEN], "busy");
    assert!(kactus_log(&sb).contains("podagent is busy"), "{}", kactus_log(&sb));
    assert!(agent.get("/metrics").unwrap().1.contains("podagent_fastpath_refusals_total{reason=\"busy\"} 1"));
}

#[test]
fn a_changed_nad_is_used_in_its_new_version_and_a_nad_created_a_moment_before_works() {
    let mut sb = Sandbox::new();
    let node = node_cni(&sb);
    networks(&sb);
    let agent = agent(&sb, &node, &[]);
    let u_app = pod_with(&sb, "app", r#"[{"name":"green"}]"#);
    let p = sb.pod("app");
    let conf = conf_without_apiserver(&sb, &socket(&sb));
    add_check_del(&sb, p, "app", &u_app, &conf, &["eth0", GREEN], "before the change");

    // green moves to another subnet: once podagent's watch has it, the next pod gets it.
    let events = agent.metric("podagent_fastpath_nad_events_total");
    sb.apply(&Sandbox::nad_yaml("default", "green", &sb.bridge_net("green", "green-br2", "192.168.52.0/24")));
    assert!(wait_until(|| agent.metric("podagent_fastpath_nad_events_total") > events), "the change never arrived");
    let rv = sb.api().store().get("network-attachment-definitions", "default", "green").unwrap()["metadata"]
        ["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let out = sb.kactus("ADD", "c-app", Some(&sb.pods[p].path), "eth0", &args("app", &u_app), &conf);
    out.ok();
    assert!(sb.pods[p].addrs(GREEN)[0].starts_with("192.168.52."), "{:?}", sb.pods[p].addrs(GREEN));
    let cache: String =
        sb.cache_files().iter().filter_map(|f| std::fs::read_to_string(sb.cache_dir().join(f)).ok()).collect();
    assert!(cache.contains(&format!("\"networkVersion\":\"{rv}\"")), "{cache}");
    sb.kactus("DEL", "c-app", Some(&sb.pods[p].path), "eth0", &args("app", &u_app), &conf);
    sb.assert_nothing_left(p, "after the change");

    // A NAD podagent's watch cannot have yet (it may not list or watch them now): read live.
    sb.api().faults().forbid("list", "network-attachment-definitions");
    sb.api().faults().forbid("watch", "network-attachment-definitions");
    sb.api().faults().expire_watches();
    sb.apply(&Sandbox::nad_yaml("default", "fresh", &sb.bridge_net("fresh", "fresh-br", "192.168.44.0/24")));
    let u_app2 = pod_with(&sb, "app2", r#"[{"name":"fresh"}]"#);
    let p2 = sb.pod("app2");
    let live = agent.metric("podagent_fastpath_live_reads_total");
    add_check_del(&sb, p2, "app2", &u_app2, &conf, &["eth0", FRESH], "just-created NAD");
    assert!(agent.metric("podagent_fastpath_live_reads_total") > live, "fresh was not read live");
}

#[test]
fn a_pod_recreated_under_its_name_is_matched_by_uid_and_gets_its_own_networks() {
    let mut sb = Sandbox::new();
    let node = node_cni(&sb);
    networks(&sb);
    let agent = agent(&sb, &node, &[]);
    let u_first = pod_with(&sb, "app", r#"[{"name":"green"}]"#);
    let p = sb.pod("app");
    let conf = conf_without_apiserver(&sb, &socket(&sb));
    add_check_del(&sb, p, "app", &u_first, &conf, &["eth0", GREEN], "first pod");
    // podagent's store keeps the first pod (its pod watch can neither resume nor relist):
    // the recreated one is a UID mismatch there, waited for, then read live.
    sb.api().faults().forbid("list", "pods");
    sb.api().faults().forbid("watch", "pods");
    sb.api().faults().expire_watches();
    let reads = agent.metric("podagent_fastpath_live_reads_total");

    sb.api().store().delete("pods", "default", "app").unwrap();
    let u_second = pod_with(&sb, "app", r#"[{"name":"red"}]"#);
    add_check_del(&sb, p, "app", &u_second, &conf, &["eth0", RED], "recreated pod");
    assert_eq!(agent.metric("podagent_fastpath_live_reads_total"), reads + 1, "the pod was read live");
    assert!(!kactus_log(&sb).contains("in-process"), "{}", kactus_log(&sb));
}

#[test]
fn podagent_killed_mid_add_leaves_network_status_to_kactus_and_the_pod_whole() {
    let mut sb = Sandbox::new();
    let node = node_cni(&sb);
    networks(&sb);
    let mut agent = agent(&sb, &node, &[]);
    // The socket is root's alone: 0600 in a 0700 directory.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(socket(&sb).parent().unwrap()), mode(&socket(&sb))), (0o700, 0o600));
    let u_app = pod_with(&sb, "app", r#"[{"name":"green"},{"name":"red"}]"#);
    let p = sb.pod("app");
    let conf = conf(&sb, &socket(&sb));

    // network-status waits in the apiserver until the test lets it through: podagent is
    // killed after it answered the pod and its networks (the devices are being made), while
    // kactus waits for it or is about to hand it the write.
    let release = sb.path("release");
    sb.api().faults().hold("/status", &release);
    let child = sb.start_kactus(
        "ADD",
        "c-app",
        Some(&sb.pods[p].path),
        "eth0",
        &args("app", &u_app),
        &conf.to_string().into_bytes(),
    );
    assert!(wait_until(|| sb.pods[p].has_link(GREEN) && sb.pods[p].has_link(RED)), "the devices were never made");
    let _ = agent.child.kill();
    let _ = agent.child.wait();
    std::fs::write(&release, "").unwrap();
    let out = CniOutput::of(child);
    assert!(out.success, "ADD: {}\n{}", out.stdout, kactus_log(&sb));
    let want = sorted(vec!["eth0".into(), GREEN.into(), RED.into()]);
    assert_eq!(sorted(sb.pod_devices(p)), want);
    assert_eq!(sorted(status_of(&sb, "app")), want, "network-status");
    assert!(kactus_log(&sb).contains("writing network-status in-process"), "{}", kactus_log(&sb));
    let out = sb.kactus("DEL", "c-app", Some(&sb.pods[p].path), "eth0", &args("app", &u_app), &conf);
    assert!(out.success, "DEL: {}", out.stdout);
    sb.assert_nothing_left(p, "podagent killed mid-ADD");
}

/// A static pod is known to the runtime (and kactus) by its own UID, which its mirror in the
/// apiserver carries in `kubernetes.io/config.mirror`: matched by that, on the fast path.
#[test]
fn a_static_pod_is_matched_by_its_mirrors_annotation() {
    let mut sb = Sandbox::new();
    let node = node_cni(&sb);
    networks(&sb);
    let _agent = agent(&sb, &node, &[]);
    pod_with(&sb, "static", r#"[{"name":"green"}]"#);
    let patch =
        json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"}}});
    sb.api().store().merge_patch("pods", "default", "static", &patch).unwrap();
    let p = sb.pod("static");
    let conf = conf_without_apiserver(&sb, &socket(&sb));
    add_check_del(&sb, p, "static", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", &conf, &["eth0", GREEN], "static pod");
}

/// The socket's answers steer root code: a connection from another uid is closed unanswered,
/// even where the socket's modes would let it in (an operator's mistake).
#[test]
fn a_connection_from_another_uid_than_root_gets_no_answer() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let sb = Sandbox::new();
    let node = node_cni(&sb);
    let agent = agent(&sb, &node, &[]);
    let open = |p: &Path, mode| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    for dir in [sb.path(""), sb.path("run"), sb.path("run/kactus")] {
        open(&dir, 0o755);
    }
    open(&socket(&sb), 0o666);
    // kactus as nobody: it reaches the socket, and podagent closes the connection.
    // (It cannot enter the netns it is given: nothing is made.)
    let env = cni_env("ADD", "c-x", Some(&sb.node.path), "eth0", &pod_args("default", "x"), CNI_PATH);
    let mut cmd = std::process::Command::new(kactus_binary());
    cmd.uid(65534).gid(65534).env_clear().stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let mut conf = conf(&sb, &socket(&sb));
    conf["logFile"] = Value::Null;
    let cache = sb.path("nobody-cache");
    std::fs::create_dir_all(&cache).unwrap();
    open(&cache, 0o777);
    conf["cacheDir"] = json!(cache);
    let mut child = cmd.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let log = || std::fs::read_to_string(&agent.log).unwrap_or_default();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(wait_until(|| log().contains("refused a connection from uid 65534")), "{}\nkactus: {said}", log());
    assert_eq!(agent.metric("podagent_fastpath_answers_total"), 0);
}

/// With the pod's annotations from the runtime, podagent is asked beside the master, for the
/// networks those annotations name: the runtime's selection is the one made, even where the
/// pod object podagent holds says otherwise (kubelet started the sandbox with the former).
#[test]
fn with_the_runtimes_annotations_podagent_is_asked_beside_the_master_for_their_networks() {
    let mut sb = Sandbox::new();
    let node = node_cni(&sb);
    networks(&sb);
    let agent = agent(&sb, &node, &[]);
    let u_app = pod_with(&sb, "app", r#"[{"name":"red"}]"#);
    let p = sb.pod("app");
    let mut conf = conf_without_apiserver(&sb, &socket(&sb));
    conf["runtimeConfig"] =
        json!({"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": r#"[{"name":"green"}]"#}});
    add_check_del(&sb, p, "app", &u_app, &conf, &["eth0", GREEN], "runtime's annotations");
    assert!(!kactus_log(&sb).contains("in-process"), "{}", kactus_log(&sb));
    assert_eq!(agent.metric("podagent_fastpath_answers_total"), 2, "resolve + report");
}
