//! Bad input gets a clear CNI error (right code, actionable message, exit 1) and loses
//! nothing: no device, no lease, no cache entry is left behind.

mod common;
use common::*;
use serde_json::json;

fn assert_clean(sb: &Sandbox, pod: usize) {
    assert!(sb.pod_devices(pod).is_empty(), "devices left: {:?}", sb.pod_devices(pod));
    assert!(sb.leases().is_empty(), "leases left: {:?}", sb.leases());
    assert!(sb.cache_files().is_empty(), "cache left: {:?}", sb.cache_files());
}

#[test]
fn missing_nad_is_code_101_naming_it_and_nothing_is_left() {
    let mut sb = Sandbox::new();
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"nosuchnet"}]"#})));
    let p = sb.pod("app1");
    let log = recording_plugin(&mut sb, "bridge");
    let mut conf = sb.kactus_conf();
    conf["delegates"][0]["type"] = "rec-bridge".into();
    let out = sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &conf);
    let (code, msg) = out.err();
    assert_eq!(code, 101, "{msg}");
    assert!(msg.contains("default/nosuchnet"), "{msg}");
    assert_clean(&sb, p);
    // eth0 is made while the networks are read; the missing one rolls it back.
    let master: Vec<(String, String)> = recorded_calls(&log)
        .iter()
        .map(|c| (c["command"].as_str().unwrap_or_default().into(), c["ifname"].as_str().unwrap_or_default().into()))
        .collect();
    assert_eq!(master, [("ADD".into(), "eth0".into()), ("DEL".into(), "eth0".into())]);
}

#[test]
fn bad_stdin_json_is_code_6() {
    let mut sb = Sandbox::new();
    let p = sb.pod("app1");
    let out = sb.kactus_raw("ADD", "c1", Some(&sb.pods[p].path), "eth0", "", b"{\"name\": \"kactus\",");
    let (code, msg) = out.err();
    assert_eq!(code, 6, "{msg}");
    assert!(msg.contains("not JSON"), "{msg}");
    assert!(out.stdout.trim_start().starts_with('{'), "stdout carries only the error JSON");
    assert_clean(&sb, p);
}

#[test]
fn missing_netns_is_code_4() {
    let sb = Sandbox::new();
    let (code, msg) = sb.kactus("ADD", "c1", None, "eth0", "", &sb.kactus_conf()).err();
    assert_eq!(code, 4);
    assert!(msg.contains("CNI_NETNS"), "{msg}");
}

#[test]
fn contradictory_config_is_code_7_naming_the_field() {
    let mut sb = Sandbox::new();
    let p = sb.pod("app1");
    let mut conf = sb.kactus_conf();
    conf["delegates"][0]["masterPlugin"] = false.into();
    let (code, msg) = sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", "", &conf).err();
    assert_eq!(code, 7);
    assert!(msg.contains("masterPlugin"), "{msg}");
}

#[test]
fn bad_annotation_is_code_102_naming_the_element() {
    let mut sb = Sandbox::new();
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"green","ifMac":"not-a-mac"}]"#})));
    let p = sb.pod("app1");
    let (code, msg) =
        sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &sb.kactus_conf()).err();
    assert_eq!(code, 102);
    assert!(msg.contains("\"green\"") && msg.contains("not-a-mac"), "{msg}");
    assert_clean(&sb, p);
}

#[test]
fn wrong_token_is_a_clear_apiserver_error() {
    let mut sb = Sandbox::new();
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({})));
    let p = sb.pod("app1");
    let text = std::fs::read_to_string(&sb.kubeconfig).unwrap().replace(TOKEN, "wrong-token");
    std::fs::write(&sb.kubeconfig, text).unwrap();
    let (code, msg) =
        sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &sb.kactus_conf()).err();
    assert_eq!(code, 100, "{msg}");
    assert!(
        msg.to_lowercase().contains("credentials")
            || msg.contains("401")
            || msg.to_lowercase().contains("unauthorized"),
        "{msg}"
    );
    assert_clean(&sb, p);
}

#[test]
fn apiserver_down_on_add_is_try_again_later() {
    let mut sb = Sandbox::new();
    let p = sb.pod("app1");
    sb.stop_api();
    let (code, msg) =
        sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", &pod_args("default", "app1"), &sb.kactus_conf()).err();
    assert_eq!(code, 11, "{msg}");
    assert_clean(&sb, p);
}

#[test]
fn version_lists_every_supported_version() {
    let sb = Sandbox::new();
    let out = sb.kactus_raw("VERSION", "", None, "", "", br#"{"cniVersion":"1.0.0"}"#).ok();
    assert_eq!(out["cniVersion"], "1.0.0");
    assert_eq!(out["supportedVersions"], json!(["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
}

#[test]
fn unknown_command_is_code_4() {
    let sb = Sandbox::new();
    let (code, msg) = sb.kactus("BOGUS", "c1", None, "eth0", "", &sb.kactus_conf()).err();
    assert_eq!(code, 4);
    assert!(msg.contains("BOGUS"), "{msg}");
}

#[test]
fn a_result_the_runtimes_version_cannot_hold_is_code_1_and_rolled_back() {
    let mut sb = Sandbox::new();
    let p = sb.pod("app1");
    let mut conf = sb.kactus_conf();
    // Two IPv4 addresses on eth0: a 0.2.0 result holds one per family.
    conf["cniVersion"] = "0.2.0".into();
    conf["delegates"][0]["ipam"] = json!({"type": "host-local", "dataDir": sb.ipam_dir(),
        "ranges": [[{"subnet": "10.244.0.0/24"}], [{"subnet": "10.245.0.0/24"}]]});
    conf["delegates"][0]["isGateway"] = false.into(); // bridge gateways one v4 subnet only
    let (code, msg) = sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", "", &conf).err();
    assert_eq!(code, 1, "{msg}");
    assert!(msg.contains("0.2.0"), "{msg}");
    assert_clean(&sb, p);
}

/// The kernel reads a name with `%` as a template (`eth%d` -> `eth0`): handed one, a delegate
/// makes a device under another name, fails, and leaves it. Refused in every place a name is
/// taken, before anything is made.
#[test]
fn a_device_name_with_percent_is_refused_wherever_it_comes_from_and_nothing_is_made() {
    let mut sb = Sandbox::new();
    let data = sb.bridge_net("data", "data-br", "10.10.0.0/24");
    sb.apply(&Sandbox::nad_yaml("default", "data", &data));
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"k8s.v1.cni.cncf.io/networks": "data@net%d"})));
    let p = sb.pod("app1");
    let conf = sb.kactus_conf();
    let (code, msg) = sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth%d", "", &conf).err();
    assert_eq!(code, 4, "CNI_IFNAME: {msg}");
    assert!(msg.contains("eth%d"), "{msg}");
    sb.assert_nothing_left(p, "CNI_IFNAME eth%d");
    let args = pod_args("default", "app1");
    let (code, msg) = sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", &args, &conf).err();
    assert_eq!(code, 102, "@ifname in the annotation: {msg}");
    assert!(msg.contains("net%d"), "{msg}");
    sb.assert_nothing_left(p, "data@net%d");
    let valid = json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/networks": "data"}}});
    sb.api().store().merge_patch("pods", "default", "app1", &valid).unwrap();
    let dynamic = format!("{args};K8S_POD_NETWORK=data@e%d");
    let (code, msg) = sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", &dynamic, &conf).err();
    assert_eq!(code, 4, "K8S_POD_NETWORK: {msg}");
    sb.assert_nothing_left(p, "K8S_POD_NETWORK=data@e%d");
    let selection = json!([{"name": "data", "interface": "%d"}]).to_string();
    let dynamic = format!("{args};K8S_POD_NETWORK={selection}");
    let (code, msg) = sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", &dynamic, &conf).err();
    assert_eq!(code, 4, "interface in a JSON selection: {msg}");
    sb.assert_nothing_left(p, "interface %d");
}

/// Nothing kactus creates outlives the container: a DEL that finds no cache (a container never
/// added, a second DEL, a DEL after a failed ADD) creates nothing, not even a lock file.
#[test]
fn a_del_that_finds_no_cache_leaves_no_file_behind() {
    let mut sb = Sandbox::new();
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"nosuchnet"}]"#})));
    let p = sb.pod("app1");
    let (conf, args) = (sb.kactus_conf(), pod_args("default", "app1"));
    sb.kactus("DEL", "c-never", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    assert!(sb.cache_files().is_empty(), "after a DEL of a container never added: {:?}", sb.cache_files());
    sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", &args, &conf).err();
    for attempt in ["first", "second"] {
        sb.kactus("DEL", "c1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
        sb.kactus("DEL", "c1", None, "eth0", &args, &conf).ok();
        sb.assert_nothing_left(p, &format!("{attempt} DELs after a failed ADD"));
    }
}

/// The device-exists check runs under the container's lock: of two ADDs of one container at
/// once, the second fails with kactus's code 7 before anything runs, instead of reaching the
/// delegate (its own "already exists" error) and rolling back the first one's eth0.
#[test]
fn of_two_concurrent_adds_of_one_container_the_second_gets_code_7_and_the_first_keeps_its_eth0() {
    let mut sb = Sandbox::new();
    let p = sb.pod("app1");
    // A master slow enough that the second ADD arrives while the first is making eth0.
    wrapper_plugin(
        &mut sb,
        "slow-bridge",
        &format!("[ \"$CNI_COMMAND\" = ADD ] && sleep 0.5\nexec {CNI_PATH}/bridge\n"),
    );
    let mut conf = sb.kactus_conf();
    conf["delegates"][0]["type"] = "slow-bridge".into();
    let stdin = conf.to_string();
    let start = || sb.start_kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", "", stdin.as_bytes());
    let (first, second) = (start(), start());
    let outs: Vec<(bool, String)> = [first, second]
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait kactus"))
        .map(|o| (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned()))
        .collect();
    let failed: Vec<&String> = outs.iter().filter(|(ok, _)| !ok).map(|(_, out)| out).collect();
    assert_eq!(failed.len(), 1, "exactly one ADD fails: {outs:?}");
    let err: serde_json::Value = serde_json::from_str(failed[0]).expect("error JSON");
    assert_eq!(err["code"], 7, "{err}");
    assert!(err["msg"].as_str().unwrap_or_default().contains("already exists"), "{err}");
    assert_eq!(sb.pod_devices(p), ["eth0"], "the first ADD's eth0 survives the second");
    assert_eq!(sb.leases().len(), 1);
    sb.kactus("DEL", "c1", Some(&sb.pods[p].path), "eth0", "", &conf).ok();
    sb.assert_nothing_left(p, "after the DEL");
}

/// Issue 22: a delegate that closes its output and lives on reached EOF at once, and kactus
/// then waited for its exit without bound, holding the container's lock (a concurrent DEL
/// blocked). It is killed at `delegateTimeoutSeconds` like any hung delegate, and rolled back.
#[test]
fn a_master_that_closes_its_output_and_lives_on_is_killed_at_the_bound_and_rolled_back() {
    let mut sb = Sandbox::new();
    let p = sb.pod("app1");
    wrapper_plugin(
        &mut sb,
        "detaching-bridge",
        &format!(
            "if [ \"$CNI_COMMAND\" != ADD ]; then exec {CNI_PATH}/bridge; fi\n{CNI_PATH}/bridge >/dev/null\nexec >/dev/null 2>&1\nsleep 30\n"
        ),
    );
    let mut conf = sb.kactus_conf();
    conf["delegates"][0]["type"] = "detaching-bridge".into();
    conf["delegateTimeoutSeconds"] = 2.into();
    let started = std::time::Instant::now();
    let (code, msg) = sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", "", &conf).err();
    eprintln!("ADD answered after {:?}", started.elapsed());
    assert_eq!(code, 103, "{msg}");
    assert!(msg.contains("detaching-bridge did not answer ADD") && msg.contains("was killed"), "{msg}");
    assert_clean(&sb, p);
}

/// Issue 22: the plugin now logs to a file on every node by default; whatever the level, the
/// apiserver's token never reaches it (neither one it accepts nor one it refuses).
#[test]
fn the_plugins_log_at_trace_never_holds_its_token() {
    let mut sb = Sandbox::new();
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({})));
    let p = sb.pod("app1");
    let mut conf = sb.kactus_conf();
    conf["logLevel"] = "trace".into();
    let args = pod_args("default", "app1");
    sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    sb.kactus("DEL", "c1", Some(&sb.pods[p].path), "eth0", &args, &conf).ok();
    let text = std::fs::read_to_string(&sb.kubeconfig).unwrap().replace(TOKEN, "refused-token");
    std::fs::write(&sb.kubeconfig, text).unwrap();
    sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", &args, &conf).err();
    let log = std::fs::read_to_string(sb.path("kactus.log")).unwrap();
    assert!(log.contains("ADD c1 answered (ok)") && log.contains("ADD c1 answered (error)"), "{log}");
    assert!(!log.contains(TOKEN) && !log.contains("refused-token"), "{log}");
}

/// Issue 22: a call waiting for the container's lock waited as long as its holder chose. Here
/// the holder is this test (standing for a call stuck beyond its own bounds): the runtime's
/// DEL gives up after `delegateTimeoutSeconds` with code 11 naming the lock, and succeeds once
/// the lock is free.
#[test]
fn a_del_behind_a_stuck_call_on_its_container_answers_11_naming_the_lock() {
    let mut sb = Sandbox::new();
    let p = sb.pod("app1");
    let mut conf = sb.kactus_conf();
    conf["delegateTimeoutSeconds"] = 1.into();
    sb.kactus("ADD", "c1", Some(&sb.pods[p].path), "eth0", "", &conf).ok();
    let stuck =
        kactus::plugin::cache::ContainerCache::open(&sb.cache_dir(), "c1", std::time::Duration::from_secs(30)).unwrap();
    let (code, msg) = sb.kactus("DEL", "c1", Some(&sb.pods[p].path), "eth0", "", &conf).err();
    assert_eq!(code, 11, "{msg}");
    let lock = sb.cache_dir().join("c1").display().to_string();
    assert!(msg.contains("still holds the lock") && msg.contains(&lock), "{msg}");
    drop(stuck);
    sb.kactus("DEL", "c1", Some(&sb.pods[p].path), "eth0", "", &conf).ok();
    assert_clean(&sb, p);
}
