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
