//! What a tenant can and cannot make kactus do. A tenant here is what most clusters give
//! whoever deploys into a namespace: create NADs and pods and patch pods there, nothing
//! elsewhere, acting through the apiserver with its own token and RBAC. kactus runs as root
//! on the node with the operator's config; nothing the tenant writes may steer it beyond the
//! tenant's own pod's networks.

mod common;
use base64::Engine;
use common::*;
use kactus::kube::{Client, ClientOptions, KubeError};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const NPWG: &str = "k8s.v1.cni.cncf.io/networks";

/// The tenant's namespace, service account, Role (NADs, Kaloom Networks and pods in its own
/// namespace) and a kubeconfig acting as it.
struct Tenant {
    kubeconfig: PathBuf,
    node: PathBuf,
}

impl Tenant {
    fn new(sb: &Sandbox, namespace: &str) -> Tenant {
        let rbac = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": namespace}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "deployer", "namespace": namespace},
             "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "create", "update", "patch", "delete"]},
                {"apiGroups": ["k8s.cni.cncf.io"], "resources": ["network-attachment-definitions"],
                 "verbs": ["get", "list", "create", "update", "patch", "delete"]},
                {"apiGroups": ["kaloom.com"], "resources": ["networks"], "verbs": ["get", "list", "create", "update", "patch", "delete"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "deployer", "namespace": namespace},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
             "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": namespace}]}]});
        for item in rbac["items"].as_array().unwrap() {
            sb.apply(&item.to_string());
        }
        let token = sb.api().tokens().issue(sb.api().store(), namespace, "deployer").expect("tenant token");
        let kubeconfig = sb.path(&format!("tenant-{namespace}.kubeconfig"));
        let yaml = sb.api().kubeconfig_yaml().replace(sb.api().token(), &token);
        std::fs::write(&kubeconfig, yaml).unwrap();
        Tenant { kubeconfig, node: sb.node.path.clone() }
    }

    /// `f` with a client acting as the tenant, from the node netns (where the apiserver is).
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Client) -> Result<T, KubeError> + Send + 'static,
    ) -> Result<T, KubeError> {
        let kubeconfig = self.kubeconfig.clone();
        kactus::netns::run_in(&self.node, move || f(&Client::new(Some(&kubeconfig), ClientOptions::default())?))
            .expect("enter node netns")
    }

    fn create(&self, path: &str, body: Value) -> Result<Value, KubeError> {
        let path = path.to_string();
        self.call(move |c| c.create(&path, &body))
    }

    fn nad(&self, namespace: &str, name: &str, config: &Value) -> Result<Value, KubeError> {
        let obj: Value = serde_json::from_str(&Sandbox::nad_yaml(namespace, name, config)).unwrap();
        self.create(&format!("/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions"), obj)
    }

    fn pod(&self, namespace: &str, name: &str, annotations: Value) -> Result<Value, KubeError> {
        let obj: Value = serde_json::from_str(&Sandbox::pod_yaml(namespace, name, &annotations)).unwrap();
        self.create(&format!("/api/v1/namespaces/{namespace}/pods"), obj)
    }
}

/// A file root must not touch: its bytes and mode, to compare after.
fn snapshot(path: &Path) -> (Vec<u8>, u32) {
    (std::fs::read(path).unwrap(), std::fs::metadata(path).unwrap().permissions().mode() & 0o7777)
}

/// The CNI_PATH of a node where the kactus binary is installed beside the delegates, as it
/// is on every real node: a network naming `kactus` would find it.
fn with_kactus_in_cni_path(sb: &mut Sandbox) {
    let dir = Path::new(&kactus_binary()).parent().unwrap().to_path_buf();
    sb.cni_path = format!("{CNI_PATH}:{}", dir.display());
}

/// The issue's hostile config: kactus itself, with the tenant's log file, cache, kubeconfig,
/// no isolation and another namespace's network in its own runtimeConfig.
fn nested_kactus(victim: &Path, evil_cache: &Path, key_file: &Path, plugin_type: &str) -> Value {
    json!({"cniVersion": "1.0.0", "type": plugin_type, "name": "evil",
           "logFile": victim, "logLevel": "debug", "cacheDir": evil_cache, "kubeconfig": key_file,
           "namespaceIsolation": false,
           "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {NPWG: "other/secretnet"}},
           "delegates": [{"type": "bridge", "name": "m", "bridge": "evilbr", "masterPlugin": true,
                          "ipam": {"type": "host-local", "subnet": "10.99.0.0/24"}}]})
}

struct Hostile {
    victim: PathBuf,
    evil_cache: PathBuf,
    key_file: PathBuf,
}

impl Hostile {
    fn new(sb: &Sandbox) -> Hostile {
        let victim = sb.path("victim.conf");
        std::fs::write(&victim, b"precious\n").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let evil_cache = sb.path("evil-cache");
        std::fs::create_dir_all(evil_cache.join("a-directory")).unwrap();
        std::fs::write(evil_cache.join("a-directory").join("data"), b"keep").unwrap();
        let key_file = sb.path("root-only.key");
        std::fs::write(&key_file, b"-----BEGIN PRIVATE KEY-----\nSECRETKEYMATERIAL\n").unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        Hostile { victim, evil_cache, key_file }
    }

    fn config(&self, plugin_type: &str) -> Value {
        nested_kactus(&self.victim, &self.evil_cache, &self.key_file, plugin_type)
    }

    /// Nothing of the node was touched through the tenant's config.
    fn assert_untouched(&self, before: &(Vec<u8>, u32), case: &str) {
        assert_eq!(&snapshot(&self.victim), before, "{case}: the victim file changed");
        assert!(self.evil_cache.join("a-directory").join("data").exists(), "{case}: the tenant's cacheDir was emptied");
    }
}

fn isolated_conf(sb: &Sandbox) -> Value {
    let mut conf = sb.kactus_conf();
    conf["namespaceIsolation"] = true.into();
    conf
}

/// Issue 26 item 1: a NAD, a Kaloom Network or a confDir file whose type is kactus (or another
/// meta-plugin) is refused before it runs: no file of the node opened through its `logFile`,
/// no directory emptied through its `cacheDir`, no other namespace's network attached through
/// its own annotations, no key file quoted into an Event; the pod gets a clear Warning.
#[test]
fn a_network_that_names_a_meta_plugin_is_refused_and_steers_nothing() {
    let mut sb = Sandbox::new();
    with_kactus_in_cni_path(&mut sb);
    let hostile = Hostile::new(&sb);
    let before = snapshot(&hostile.victim);
    sb.apply(&Sandbox::nad_yaml("other", "secretnet", &sb.bridge_net("secretnet", "secretbr", "10.98.0.0/24")));
    let tenant = Tenant::new(&sb, "tenant");
    // The tenant's reach: its own namespace only.
    let elsewhere = tenant.nad("other", "mine", &json!({"type": "bridge"}));
    assert!(matches!(elsewhere, Err(KubeError::Forbidden { .. })), "{elsewhere:?}");

    tenant.nad("tenant", "evil", &hostile.config("kactus")).expect("tenant may write its NADs");
    tenant.nad("tenant", "evil-multus", &hostile.config("multus")).unwrap();
    let mut kaloom_config = hostile.config("kactus");
    kaloom_config.as_object_mut().unwrap().remove("type");
    let kaloom = json!({"apiVersion": "kaloom.com/v1", "kind": "Network", "metadata": {"name": "evil-kaloom", "namespace": "tenant"},
                        "spec": {"plugin": "kactus", "config": kaloom_config.to_string()}});
    tenant.create("/apis/kaloom.com/v1/namespaces/tenant/networks", kaloom).unwrap();
    // An operator's confDir file that is itself a meta-plugin (a copied 00-multus.conf, say),
    // picked up by an empty NAD of the tenant's.
    let conf_dir = sb.path("confdir");
    std::fs::create_dir_all(conf_dir.join("tenant")).unwrap();
    let mut file_net = hostile.config("multus");
    file_net["name"] = "evil-file".into();
    std::fs::write(conf_dir.join("tenant").join("evil-file.conf"), file_net.to_string()).unwrap();
    let empty: Value = serde_json::from_str(&Sandbox::nad_yaml("tenant", "evil-file", &json!(null))).unwrap();
    let mut empty = empty;
    empty["spec"]["config"] = "".into();
    tenant.create("/apis/k8s.cni.cncf.io/v1/namespaces/tenant/network-attachment-definitions", empty).unwrap();

    let mut conf = isolated_conf(&sb);
    conf["confDir"] = json!(conf_dir);
    for (i, network) in ["evil", "evil-multus", "evil-kaloom", "evil-file"].into_iter().enumerate() {
        let pod = format!("victim-{i}");
        tenant.pod("tenant", &pod, json!({NPWG: network})).expect("tenant may create pods");
        let p = sb.pod(&pod);
        let out =
            sb.kactus("ADD", &format!("c-{pod}"), Some(&sb.pods[p].path), "eth0", &pod_args("tenant", &pod), &conf);
        let (code, msg) = out.err();
        assert_eq!(code, 7, "{network}: {msg}");
        assert!(msg.contains("meta-plugin"), "{network}: {msg}");
        assert!(!msg.contains("SECRETKEYMATERIAL"), "{network}: {msg}");
        hostile.assert_untouched(&before, network);
        assert_eq!(sb.pod_devices(p), Vec::<String>::new(), "{network}: rolled back, secretnet never attached");
        let events = pod_events(&sb, "tenant", &pod);
        assert!(
            events.iter().any(|(t, _, m)| t == "Warning" && m.contains("meta-plugin")),
            "{network}: the pod's owner is told why: {events:?}"
        );
        assert!(events.iter().all(|(_, _, m)| !m.contains("SECRETKEYMATERIAL")), "{events:?}");
    }
    assert!(sb.leases().is_empty(), "{:?}", sb.leases());
    assert!(sb.cache_files().is_empty(), "{:?}", sb.cache_files());
}

/// A cache written before meta-plugins were refused (or by hand) holding a nested kactus:
/// neither the runtime's DEL nor the node's GC runs it.
#[test]
fn a_cached_meta_plugin_call_is_never_run_by_del_or_gc() {
    let mut sb = Sandbox::new();
    with_kactus_in_cni_path(&mut sb);
    let hostile = Hostile::new(&sb);
    let before = snapshot(&hostile.victim);
    sb.apply(&Sandbox::nad_yaml("default", "n1", &sb.bridge_net("n1", "n1br", "10.97.0.0/24")));
    let conf = sb.kactus_conf();
    for pod in ["old-a", "old-b"] {
        sb.apply(&Sandbox::pod_yaml("default", pod, &json!({NPWG: "n1"})));
        let p = sb.pod(pod);
        sb.kactus("ADD", &format!("c-{pod}"), Some(&sb.pods[p].path), "eth0", &pod_args("default", pod), &conf).ok();
        // Rewrite the attachment's cached config into the hostile one, as a poisoned cache.
        let entry_path =
            sb.cache_dir().join(format!("c-{pod}")).join(format!("{}.json", kactus::attachment::device_name_for("n1")));
        let mut entry: Value = serde_json::from_slice(&std::fs::read(&entry_path).unwrap()).unwrap();
        let mut evil = hostile.config("kactus");
        evil["name"] = "n1".into();
        entry["config"] = base64::engine::general_purpose::STANDARD.encode(evil.to_string()).into();
        std::fs::write(&entry_path, entry.to_string()).unwrap();
    }
    // The runtime's DEL of one, the node's GC of the other.
    let p = 0;
    let out = sb.kactus("DEL", "c-old-a", Some(&sb.pods[p].path), "eth0", &pod_args("default", "old-a"), &conf);
    out.ok();
    hostile.assert_untouched(&before, "DEL");
    let mut gc_conf = sb.kactus_conf();
    gc_conf["cniVersion"] = "1.1.0".into();
    gc_conf["cni.dev/valid-attachments"] = json!([]);
    // The GC itself may report the refusal; what matters is what it did not do.
    let _ = sb.kactus("GC", "", None, "", "", &gc_conf);
    hostile.assert_untouched(&before, "GC");
    let log = std::fs::read_to_string(sb.path("kactus.log")).unwrap_or_default();
    assert!(log.contains("meta-plugin"), "refusals are logged:\n{log}");
}

/// Issue 26 item 3: with namespaceIsolation, a tenant's empty NAD cannot pick up an
/// operator's cluster-wide confDir network; the operator's per-namespace directory serves it.
#[test]
fn conf_dir_networks_are_scoped_by_namespace_under_isolation() {
    let mut sb = Sandbox::new();
    let conf_dir = sb.path("confdir");
    std::fs::create_dir_all(conf_dir.join("team-a")).unwrap();
    let opnet = sb.bridge_net("opnet", "opbr", "10.96.10.0/24");
    std::fs::write(conf_dir.join("opnet.conf"), opnet.to_string()).unwrap();
    let mut teamnet = sb.bridge_net("teamnet", "teambr", "10.96.11.0/24");
    teamnet["name"] = "teamnet".into();
    std::fs::write(conf_dir.join("team-a").join("teamnet.conf"), teamnet.to_string()).unwrap();
    let empty_nad = |ns: &str, name: &str| {
        let mut nad: Value = serde_json::from_str(&Sandbox::nad_yaml(ns, name, &json!(null))).unwrap();
        nad["spec"]["config"] = "".into();
        nad.to_string()
    };
    sb.apply(&empty_nad("team-a", "opnet"));
    sb.apply(&empty_nad("team-a", "teamnet"));
    let mut conf = isolated_conf(&sb);
    conf["confDir"] = json!(conf_dir);

    sb.apply(&Sandbox::pod_yaml("team-a", "p1", &json!({NPWG: "opnet"})));
    let p1 = sb.pod("p1");
    let out = sb.kactus("ADD", "c-p1", Some(&sb.pods[p1].path), "eth0", &pod_args("team-a", "p1"), &conf);
    let (code, msg) = out.err();
    assert!(msg.contains("confdir/team-a") && !msg.contains("10.96.10."), "{code} {msg}");
    assert!(sb.pod_devices(p1).is_empty());

    sb.apply(&Sandbox::pod_yaml("team-a", "p2", &json!({NPWG: "teamnet"})));
    let p2 = sb.pod("p2");
    sb.kactus("ADD", "c-p2", Some(&sb.pods[p2].path), "eth0", &pod_args("team-a", "p2"), &conf).ok();
    let dev = kactus::attachment::device_name_for("teamnet");
    assert!(sb.pods[p2].addrs(&dev)[0].starts_with("10.96.11."), "{:?}", sb.pods[p2].addrs(&dev));
    sb.kactus("DEL", "c-p2", Some(&sb.pods[p2].path), "eth0", &pod_args("team-a", "p2"), &conf).ok();

    // Without isolation the cluster-wide file serves every namespace, as multus's confDir does.
    let open = {
        let mut c = sb.kactus_conf();
        c["confDir"] = json!(conf_dir);
        c
    };
    sb.kactus("ADD", "c-p1", Some(&sb.pods[p1].path), "eth0", &pod_args("team-a", "p1"), &open).ok();
    assert!(sb.pods[p1].addrs(&kactus::attachment::device_name_for("opnet"))[0].starts_with("10.96.10."));
    sb.kactus("DEL", "c-p1", Some(&sb.pods[p1].path), "eth0", &pod_args("team-a", "p1"), &open).ok();
    assert!(sb.leases().is_empty() && sb.cache_files().is_empty());
}

/// Issue 26 item 2's ground: what kactus-endpoints trusts is out of the tenant's reach. The
/// tenant may rewrite its pod's network-status annotation, but not the pod's status: its
/// role has no pods/status, and a pod created with a forged condition starts with the
/// server's status.
#[test]
fn a_tenant_cannot_write_the_attested_condition() {
    let sb = Sandbox::new();
    let tenant = Tenant::new(&sb, "tenant");
    let forged = json!({"type": "kactus.io/attachments", "status": "True",
                        "message": json!([{"name": "tenant/n1", "interface": "net1", "ips": ["10.96.0.1"]}]).to_string()});
    let mut pod: Value = serde_json::from_str(&Sandbox::pod_yaml("tenant", "p", &json!({}))).unwrap();
    pod["status"]["conditions"] = json!([forged]);
    let created = tenant.create("/api/v1/namespaces/tenant/pods", pod).unwrap();
    assert!(created["status"]["conditions"].is_null(), "status is the server's: {}", created["status"]);

    let status_patch = json!({"status": {"conditions": [forged]}});
    let as_status = tenant.call(move |c| c.patch_pod_status("tenant", "p", &status_patch));
    assert!(matches!(as_status, Err(KubeError::Forbidden { .. })), "{as_status:?}");
    let path = "/api/v1/namespaces/tenant/pods/p";
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(
        "k8s.v1.cni.cncf.io/network-status".to_string(),
        Some(json!([{"name": "tenant/n1", "ips": ["10.96.0.1"]}]).to_string()),
    );
    tenant.call(move |c| c.patch_pod_annotations("tenant", "p", &annotations)).expect("the annotation is the tenant's");
    let stored = sb.api().store().get("pods", "tenant", "p").unwrap();
    assert!(stored["status"]["conditions"].is_null(), "{path}: {}", stored["status"]);
}
