//! The installer against temp dirs standing in for the host's /opt/cni/bin, /etc/cni/net.d
//! and the pod's service-account dir, and against the test apiserver holding the shipped
//! service accounts and RBAC: what an operator would check on a node after the DaemonSet pod
//! started, after it was replaced, and after kactus was uninstalled.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use kactus::install::{api_server_url, reconcile_once, run, InstallArgs, InstallError, Reconciler};
use kactus::kube::{Client, ClientOptions, KubeError};
use kactus_testapi::TestApiServer;
use serde_json::{json, Value};

/// The test apiserver's own (all-powerful) token; the installer never sees it.
const ADMIN_TOKEN: &str = "install-test-admin";
const INSTALLER_POD: &str = "kactus-abcde";

/// A throwaway "node": host dirs, the installer pod's service-account dir, and an apiserver
/// holding the shipped service accounts and RBAC and the installer's pod, whose own token
/// (bound to the pod, as kubelet mounts it) is in `sa/token`. Removed on drop.
struct Node {
    root: PathBuf,
    api: TestApiServer,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

const FLANNEL: &str = r#"{
  "name": "cbr0",
  "cniVersion": "0.3.1",
  "plugins": [
    { "type": "flannel", "delegate": { "hairpinMode": true, "isDefaultGateway": true } },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "bandwidth", "capabilities": { "bandwidth": true, "ips": false } }
  ]
}"#;

const BRIDGE_CONF: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "mynet",
  "type": "bridge",
  "bridge": "cni0",
  "isGateway": true,
  "ipMasq": true,
  "ipam": { "type": "host-local", "subnet": "10.22.0.0/16" }
}"#;

impl Node {
    fn new() -> Node {
        let root = std::env::temp_dir().join(format!(
            "kactus-install-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        for dir in ["bin", "net.d", "sa", "image"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        fs::write(root.join("image/kactus"), b"\x7fELF pretend kactus binary v1").unwrap();
        let api = TestApiServer::start(TcpListener::bind("127.0.0.1:0").unwrap(), ADMIN_TOKEN).unwrap();
        let rbac = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/kactus-serviceaccount-and-rbac.yaml"),
        );
        api.store().apply_yaml(&rbac.unwrap()).unwrap();
        let node = Node { root, api };
        fs::write(node.path("sa/ca.crt"), node.api.ca_pem()).unwrap();
        fs::write(node.path("sa/namespace"), "kube-system\n").unwrap();
        node.start_installer_pod(INSTALLER_POD);
        node
    }

    /// The DaemonSet's pod `name` exists, and kubelet mounted its own token in `sa/`.
    fn start_installer_pod(&self, name: &str) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "kube-system", "labels": {"app": "kactus"}},
            "spec": {"serviceAccountName": "kactus-installer", "nodeName": "node1"}});
        self.api.store().apply(pod).unwrap();
        let token = self.api.tokens().issue_for_pod(
            self.api.store(),
            "kube-system",
            "kactus-installer",
            name,
            Duration::from_secs(3600),
        );
        fs::write(self.path("sa/token"), token.unwrap()).unwrap();
    }

    /// The rolling update deletes the installer's pod: kubelet's token for it dies with it.
    fn delete_installer_pod(&self, name: &str) {
        self.api.store().delete("pods", "kube-system", name).unwrap();
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn conf(&self, name: &str, text: &str) {
        fs::write(self.path("net.d").join(name), text).unwrap();
    }

    /// `kactus install` flags pointing at this node, plus `extra`.
    fn args(&self, extra: &[&str]) -> InstallArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            install: InstallArgs,
        }
        let mut argv = vec![
            "kactus-install".to_string(),
            format!("--cni-bin-dir={}", self.path("bin").display()),
            format!("--cni-conf-dir={}", self.path("net.d").display()),
            format!("--service-account-dir={}", self.path("sa").display()),
            format!("--binary={}", self.path("image/kactus").display()),
            format!("--cache-dir={}", self.path("cache").display()),
            format!("--api-server={}", self.api.url()),
            format!("--plugin-log-file={}", self.path("log/kactus.log").display()),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        Cli::try_parse_from(argv).unwrap().install
    }

    fn kactus_config(&self) -> Value {
        let text = fs::read_to_string(self.path("net.d/00-kactus.conflist")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn kubeconfig(&self) -> Value {
        let text = fs::read_to_string(self.path("net.d/kactus.d/kactus-kubeconfig.yaml")).unwrap();
        serde_saphyr::from_str(&text).unwrap()
    }

    /// The token the plugin's kubeconfig holds.
    fn plugin_token(&self) -> String {
        self.kubeconfig()["users"][0]["user"]["token"].as_str().unwrap().to_string()
    }

    /// What the plugin gets for a GET with its kubeconfig, as it is on disk now.
    fn plugin_get(&self, path: &str) -> Result<Value, KubeError> {
        let opts = ClientOptions { retries: 0, ..Default::default() };
        Client::new(Some(&self.path("net.d/kactus.d/kactus-kubeconfig.yaml")), opts)?.get(path)
    }

    /// What the apiserver says to `token` (ignoring any kubeconfig).
    fn accepts(&self, token: &str) -> bool {
        let dir = self.path(&format!("probe-{}", NEXT.fetch_add(1, Ordering::SeqCst)));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("token"), token).unwrap();
        fs::write(dir.join("ca.crt"), self.api.ca_pem()).unwrap();
        let client =
            Client::for_service_account(&self.api.url(), &dir, ClientOptions { retries: 0, ..Default::default() });
        match client.unwrap().get::<Value>("/version") {
            Ok(_) => true,
            Err(KubeError::Unauthorized { .. }) => false,
            Err(e) => panic!("/version: {e}"),
        }
    }
}

/// Runs passes of one installer (as its loop does, faster) until `done` holds; panics after
/// 30 s. Passes may fail (the apiserver is down, say): the loop logs and goes on.
fn reconcile_until(reconciler: &mut Reconciler, args: &InstallArgs, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        let _ = reconciler.reconcile(args);
        if done() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `exp` of a service-account token, from its claims.
fn expiry_of(token: &str) -> u64 {
    use base64::Engine;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap();
    serde_json::from_slice::<Value>(&claims).unwrap()["exp"].as_u64().unwrap()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn mtime(path: &Path) -> SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

/// The plugin conf the runtime sends kactus on stdin: libcni injects the list's `name` and
/// `cniVersion` into the plugin entry.
fn conf_as_sent_to_plugin(conflist: &Value) -> Value {
    let mut plugin = conflist["plugins"][0].clone();
    plugin["name"] = conflist["name"].clone();
    plugin["cniVersion"] = conflist["cniVersion"].clone();
    plugin
}

#[test]
fn binary_is_copied_executable_and_identical() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    let changes = reconcile_once(&node.args(&[])).unwrap();
    assert!(changes.binary);
    let installed = node.path("bin/kactus");
    assert_eq!(fs::read(&installed).unwrap(), fs::read(node.path("image/kactus")).unwrap());
    assert_eq!(mode(&installed), 0o755);
    let leftovers: Vec<_> = fs::read_dir(node.path("bin")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temp file is left behind");
}

#[test]
fn config_wraps_an_existing_conflist_as_master_delegate_with_its_capabilities() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    let changes = reconcile_once(&node.args(&[])).unwrap();
    assert!(changes.config);
    assert_eq!(changes.default_network, node.path("net.d/10-flannel.conflist"));
    assert_eq!(changes.shadowed_by, None);

    let conflist = node.kactus_config();
    assert_eq!(conflist["cniVersion"], "0.3.1");
    assert_eq!(conflist["name"], "kactus-net");
    assert_eq!(conflist["plugins"].as_array().unwrap().len(), 1);

    let mut delegate: Value = serde_json::from_str(FLANNEL).unwrap();
    delegate["masterPlugin"] = json!(true);
    let kubeconfig = node.path("net.d/kactus.d/kactus-kubeconfig.yaml");
    assert_eq!(
        conf_as_sent_to_plugin(&conflist),
        json!({
            "cniVersion": "0.3.1",
            "name": "kactus-net",
            "type": "kactus",
            "kubeconfig": kubeconfig,
            "cacheDir": node.path("cache"),
            "logFile": node.path("log/kactus.log"),
            "logLevel": "info",
            "logOptions": {"maxSize": 10, "maxBackups": 5},
            "podagentSocket": "/run/kactus/podagent.sock",
            "capabilities": {
                "portMappings": true, "bandwidth": true, "io.kubernetes.cri.pod-annotations": true
            },
            "delegates": [delegate],
        })
    );
    // The plugin's own parser takes both what the runtime sends and the file itself (by hand).
    let sent = conf_as_sent_to_plugin(&conflist).to_string();
    let file = fs::read(node.path("net.d/00-kactus.conflist")).unwrap();
    for bytes in [sent.as_bytes(), file.as_slice()] {
        let parsed = kactus::plugin::KactusConfig::from_bytes(bytes).unwrap();
        assert_eq!(
            (parsed.name.as_str(), parsed.master.types()),
            ("kactus-net", "flannel+portmap+bandwidth".to_string())
        );
        assert_eq!(parsed.podagent_socket.as_deref(), Some(std::path::Path::new("/run/kactus/podagent.sock")));
    }
    assert_eq!(mode(&node.path("net.d/00-kactus.conflist")), 0o644);
}

#[test]
fn config_wraps_a_single_plugin_conf() {
    let node = Node::new();
    node.conf("10-bridge.conf", BRIDGE_CONF);
    reconcile_once(&node.args(&[])).unwrap();
    let plugin = conf_as_sent_to_plugin(&node.kactus_config());
    assert_eq!(plugin["cniVersion"], "1.0.0");
    assert_eq!(plugin["type"], "kactus");
    // bridge declares none: kactus's own, for the pod's annotations from the runtime, only.
    assert_eq!(plugin["capabilities"], json!({"io.kubernetes.cri.pod-annotations": true}));
    // The fast path is asked by default; an empty --podagent-socket leaves it out.
    assert_eq!(plugin["podagentSocket"], "/run/kactus/podagent.sock");
    let without = Node::new();
    without.conf("10-bridge.conf", BRIDGE_CONF);
    reconcile_once(&without.args(&["--podagent-socket="])).unwrap();
    assert!(conf_as_sent_to_plugin(&without.kactus_config()).get("podagentSocket").is_none());
    let mut delegate: Value = serde_json::from_str(BRIDGE_CONF).unwrap();
    delegate["masterPlugin"] = json!(true);
    assert_eq!(plugin["delegates"], json!([delegate]));
}

#[test]
fn config_is_rerendered_when_the_default_network_changes() {
    let node = Node::new();
    node.conf("10-bridge.conf", BRIDGE_CONF);
    let args = node.args(&[]);
    let mut reconciler = Reconciler::default();
    reconciler.reconcile(&args).unwrap();
    node.conf("10-bridge.conf", &BRIDGE_CONF.replace("10.22.0.0/16", "10.33.0.0/16"));
    let changes = reconciler.reconcile(&args).unwrap();
    assert!(changes.config && !changes.binary && !changes.kubeconfig);
    let plugin = conf_as_sent_to_plugin(&node.kactus_config());
    assert_eq!(plugin["delegates"][0]["ipam"]["subnet"], "10.33.0.0/16");
}

#[test]
fn the_kubeconfig_holds_the_plugins_own_token_with_exactly_the_plugins_rights() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    assert!(reconcile_once(&node.args(&[])).unwrap().kubeconfig);

    let kubeconfig = node.kubeconfig();
    assert_eq!(kubeconfig["apiVersion"], "v1");
    assert_eq!(kubeconfig["kind"], "Config");
    assert_eq!(kubeconfig["current-context"], "kactus-context");
    assert_eq!(kubeconfig["clusters"][0]["cluster"]["server"], node.api.url());
    let ca = kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"].as_str().unwrap();
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.decode(ca).unwrap();
    assert_eq!(ca, fs::read(node.path("sa/ca.crt")).unwrap());
    assert_eq!(mode(&node.path("net.d/kactus.d/kactus-kubeconfig.yaml")), 0o600);

    // Not the installer pod's token: the plugin's service account's, bound to no pod, a day.
    let token = node.plugin_token();
    assert_ne!(token, fs::read_to_string(node.path("sa/token")).unwrap());
    let claims: Value = {
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    assert_eq!(claims["sub"], "system:serviceaccount:kube-system:kactus");
    assert!(claims["kubernetes.io"]["pod"].is_null(), "{claims}");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 86_400);

    // With the shipped RBAC, the plugin may read NADs and pods, and no more.
    let nad = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "green", "namespace": "default"}, "spec": {"config": "{}"}});
    node.api.store().apply(nad).unwrap();
    node.plugin_get("/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/green").unwrap();
    let listed = node.plugin_get("/api/v1/namespaces/default/pods");
    assert!(matches!(listed, Err(KubeError::Forbidden { .. })), "{listed:?}");
}

#[test]
fn rerunning_on_an_installed_node_changes_nothing() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    let args = node.args(&[]);
    assert!(reconcile_once(&args).unwrap().any());
    let files = [
        node.path("bin/kactus"),
        node.path("net.d/00-kactus.conflist"),
        node.path("net.d/kactus.d/kactus-kubeconfig.yaml"),
    ];
    let before: Vec<_> = files.iter().map(|f| mtime(f)).collect();
    let tokens_issued = node.api.tokens().issued();
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Both a fresh pass (full comparison) and the loop's remembering reconciler.
    assert!(!reconcile_once(&args).unwrap().any());
    let mut reconciler = Reconciler::default();
    assert!(!reconciler.reconcile(&args).unwrap().any());
    assert!(!reconciler.reconcile(&args).unwrap().any());
    let after: Vec<_> = files.iter().map(|f| mtime(f)).collect();
    assert_eq!(before, after);
    assert_eq!(node.api.tokens().issued(), tokens_issued, "a restart reuses the plugin's token");
}

#[test]
fn a_new_binary_in_the_image_replaces_the_installed_one() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    let args = node.args(&[]);
    let mut reconciler = Reconciler::default();
    reconciler.reconcile(&args).unwrap();
    fs::write(node.path("image/kactus"), b"\x7fELF pretend kactus binary v2!").unwrap();
    assert!(reconciler.reconcile(&args).unwrap().binary);
    assert_eq!(fs::read(node.path("bin/kactus")).unwrap(), b"\x7fELF pretend kactus binary v2!");
}

#[test]
fn a_missing_default_network_is_reported_clearly_after_binary_and_kubeconfig() {
    let node = Node::new();
    let err = reconcile_once(&node.args(&[])).unwrap_err();
    assert!(matches!(err, InstallError::NoDefaultNetwork { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&node.path("net.d").display().to_string()), "{message}");
    assert!(message.contains("--master-config"), "{message}");
    // What does not depend on the default network is already in place.
    assert!(node.path("bin/kactus").is_file());
    assert!(node.path("net.d/kactus.d/kactus-kubeconfig.yaml").is_file());
    assert!(!node.path("net.d/00-kactus.conflist").exists());
}

#[test]
fn kactus_never_picks_its_own_file_or_another_kactus_config_as_default_network() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    let args = node.args(&[]);
    reconcile_once(&args).unwrap();
    // A leftover Kaloom-style kactus conf under another name sorts before flannel.
    node.conf("05-kactus.conf", r#"{"cniVersion":"0.3.1","name":"kactus-net","type":"kactus","delegates":[]}"#);
    assert_eq!(reconcile_once(&args).unwrap().default_network, node.path("net.d/10-flannel.conflist"));

    // The default network goes away (e.g. its DaemonSet is being replaced): keep waiting,
    // keep kactus's config as it was so the node keeps working.
    let rendered = fs::read(node.path("net.d/00-kactus.conflist")).unwrap();
    fs::remove_file(node.path("net.d/10-flannel.conflist")).unwrap();
    let err = reconcile_once(&args).unwrap_err();
    assert!(matches!(err, InstallError::NoDefaultNetwork { .. }), "{err:?}");
    assert_eq!(fs::read(node.path("net.d/00-kactus.conflist")).unwrap(), rendered);
}

#[test]
fn an_invalid_first_candidate_is_an_error_naming_the_file() {
    let node = Node::new();
    node.conf("10-broken.conf", "{ not json");
    node.conf("20-bridge.conf", BRIDGE_CONF);
    let err = reconcile_once(&node.args(&[])).unwrap_err();
    assert!(matches!(err, InstallError::InvalidDefaultNetwork { .. }), "{err:?}");
    assert!(err.to_string().contains("10-broken.conf"), "{err}");
}

#[test]
fn an_explicit_master_config_is_used_and_must_not_be_kactus() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    let explicit = node.path("image/master.conf");
    fs::write(&explicit, BRIDGE_CONF).unwrap();
    let master_flag = format!("--master-config={}", explicit.display());
    let changes = reconcile_once(&node.args(&[&master_flag])).unwrap();
    assert_eq!(changes.default_network, explicit);
    assert_eq!(conf_as_sent_to_plugin(&node.kactus_config())["delegates"][0]["type"], "bridge");

    let own = format!("--master-config={}", node.path("net.d/00-kactus.conflist").display());
    let err = reconcile_once(&node.args(&[&own])).unwrap_err();
    assert!(err.to_string().contains("kactus config itself"), "{err}");
}

#[test]
fn cni_version_comes_from_the_flag_when_the_default_network_has_none() {
    let node = Node::new();
    node.conf("10-old.conf", r#"{"name":"old","type":"bridge"}"#);
    let err = reconcile_once(&node.args(&[])).unwrap_err();
    assert!(err.to_string().contains("--cni-version"), "{err}");
    reconcile_once(&node.args(&["--cni-version=0.4.0"])).unwrap();
    assert_eq!(node.kactus_config()["cniVersion"], "0.4.0");
}

#[test]
fn a_config_sorting_before_kactus_is_reported_as_shadowing_it() {
    let node = Node::new();
    node.conf("00-aaa.conf", BRIDGE_CONF);
    let changes = reconcile_once(&node.args(&[])).unwrap();
    assert_eq!(changes.shadowed_by, Some(node.path("net.d/00-aaa.conf")));
}

#[test]
fn a_missing_token_names_the_file() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    fs::remove_file(node.path("sa/token")).unwrap();
    let err = reconcile_once(&node.args(&[])).unwrap_err();
    assert!(err.to_string().contains(&node.path("sa/token").display().to_string()), "{err}");
    assert!(!node.path("net.d/00-kactus.conflist").exists(), "no config without a token for the plugin");
}

#[test]
fn once_installs_and_returns() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    run(&node.args(&["--once"])).unwrap();
    assert!(node.path("net.d/00-kactus.conflist").is_file());
}

#[test]
fn apiserver_url_brackets_ipv6_literals() {
    assert_eq!(api_server_url("10.96.0.1", "443"), "https://10.96.0.1:443");
    assert_eq!(api_server_url("fd00:10:96::1", "443"), "https://[fd00:10:96::1]:443");
    assert_eq!(api_server_url("[fd00::1]", "6443"), "https://[fd00::1]:6443");
}

#[test]
fn defaults_are_the_usual_host_paths() {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        install: InstallArgs,
    }
    let args = Cli::try_parse_from(["kactus-install"]).unwrap().install;
    assert_eq!(args.cni_bin_dir, Path::new("/opt/cni/bin"));
    assert_eq!(args.cni_conf_dir, Path::new("/etc/cni/net.d"));
    assert_eq!(args.kubeconfig_path(), Path::new("/etc/cni/net.d/kactus.d/kactus-kubeconfig.yaml"));
    assert_eq!(args.config_path(), Path::new("/etc/cni/net.d/00-kactus.conflist"));
    assert_eq!(args.cache_dir, Path::new("/var/lib/cni/kactus"));
    assert_eq!((args.plugin_service_account.as_str(), args.token_expiration_seconds), ("kactus", 86_400));
}

#[test]
fn sigterm_ends_the_loop_and_leaves_the_node_working() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    let args = node.args(&["--poll-interval=1"]);
    let installer = std::thread::spawn(move || run(&args));
    // The handler is installed before the first pass, so once the config exists a SIGTERM
    // reaches the handler rather than ending the test process.
    let config = node.path("net.d/00-kactus.conflist");
    let started = std::time::Instant::now();
    while !config.exists() {
        assert!(started.elapsed().as_secs() < 10, "installer did not write its config");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
    installer.join().unwrap().unwrap();
    assert!(config.is_file());
    assert!(node.path("bin/kactus").is_file());
    assert!(node.path("net.d/kactus.d/kactus-kubeconfig.yaml").is_file());
}

#[test]
fn the_plugins_token_outlives_the_installer_pod_and_a_restart_reuses_it() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    reconcile_once(&node.args(&[])).unwrap();
    let token = node.plugin_token();
    let installer_token = fs::read_to_string(node.path("sa/token")).unwrap();

    // The DaemonSet rolls: the old pod (and kubelet's token for it) goes first.
    node.delete_installer_pod(INSTALLER_POD);
    assert!(!node.accepts(&installer_token), "the installer pod's own token died with it");
    assert!(node.accepts(&token));
    node.plugin_get("/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/x").unwrap_err();
    assert!(!matches!(node.plugin_get("/api/v1/namespaces/default/pods/x"), Err(KubeError::Unauthorized { .. })));

    // The new pod's installer keeps the plugin's token: nothing to rewrite, no TokenRequest.
    node.start_installer_pod("kactus-fghij");
    let issued = node.api.tokens().issued();
    let changes = reconcile_once(&node.args(&[])).unwrap();
    assert!(!changes.kubeconfig, "{changes:?}");
    assert_eq!(node.plugin_token(), token);
    assert_eq!(node.api.tokens().issued(), issued);
}

/// A node whose apiserver grants tokens of 4 s whatever is asked for (as its
/// `--service-account-max-token-expiration` would), installed by a long-running installer:
/// the node, the installer's flags, the installer, the plugin's first token.
fn installed_with_four_second_tokens() -> (Node, InstallArgs, Reconciler, String) {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    node.api.tokens().set_max_lifetime(Some(Duration::from_secs(4)));
    let args = node.args(&[]);
    let mut installer = Reconciler::default();
    installer.reconcile(&args).unwrap();
    let first = node.plugin_token();
    assert!(expiry_of(&first) <= unix_now() + 4);
    (node, args, installer, first)
}

#[test]
fn a_token_is_replaced_once_half_its_lifetime_passed_before_it_expires() {
    let (node, args, mut installer, first) = installed_with_four_second_tokens();
    reconcile_until(&mut installer, &args, "a second token", || node.plugin_token() != first);
    let second = node.plugin_token();
    assert!(node.accepts(&first), "replaced while the old one was still valid");
    assert!(node.accepts(&second));
    // The old one expires; the kubeconfig's is still good.
    while unix_now() <= expiry_of(&first) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!node.accepts(&first));
    let current = node.plugin_token();
    assert!(node.accepts(&current));
}

#[test]
fn an_apiserver_failing_at_refresh_time_leaves_the_old_token_in_place_and_is_retried() {
    let (node, args, mut installer, first) = installed_with_four_second_tokens();
    let issued = node.api.tokens().issued();

    // Every TokenRequest fails from now on, past the point where the token is due and past
    // its expiry: the kubeconfig keeps it (never removed, never emptied).
    node.api.faults().fail_next(1000, 503, Some("/token"));
    let until = expiry_of(&first) + 1;
    reconcile_until(&mut installer, &args, "the first token's expiry", || unix_now() > until);
    assert_eq!(node.plugin_token(), first);
    assert_eq!(node.api.tokens().issued(), issued);
    assert!(node.path("net.d/00-kactus.conflist").is_file());

    // The apiserver answers again: a new token within the backoff.
    node.api.faults().clear();
    reconcile_until(&mut installer, &args, "a new token", || node.plugin_token() != first);
    assert!(node.accepts(&node.plugin_token()));
}

#[test]
fn a_token_the_apiserver_revoked_early_is_replaced_at_the_next_check() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    let args = node.args(&["--token-check-seconds=1"]);
    let mut installer = Reconciler::default();
    installer.reconcile(&args).unwrap();
    let first = node.plugin_token();

    // The plugin's service account is deleted and recreated (say, RBAC re-applied): every
    // token of the old one is void although not expired.
    let account = node.api.store().delete("serviceaccounts", "kube-system", "kactus").unwrap();
    let recreated = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "kactus", "namespace": "kube-system"}});
    node.api.store().apply(recreated).unwrap();
    assert_ne!(
        node.api.store().get("serviceaccounts", "kube-system", "kactus").unwrap()["metadata"]["uid"],
        account["metadata"]["uid"]
    );
    assert!(!node.accepts(&first));
    reconcile_until(&mut installer, &args, "a token the apiserver accepts", || node.accepts(&node.plugin_token()));
}

#[test]
fn the_installer_may_request_tokens_for_the_plugins_account_only() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    let other = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "other", "namespace": "kube-system"}});
    node.api.store().apply(other).unwrap();
    let err = reconcile_once(&node.args(&["--plugin-service-account=other"])).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, InstallError::PluginToken { .. }), "{err:?}");
    assert!(message.contains("cannot create resource \"serviceaccounts/token\""), "{message}");
    assert!(message.contains("kactus-serviceaccount-and-rbac.yaml"), "{message}");
    assert!(!node.path("net.d/00-kactus.conflist").exists());
}

// ---- kactus uninstall ----------------------------------------------------------------------

/// `kactus uninstall` flags pointing at this node, plus `extra`.
fn uninstall_args(node: &Node, extra: &[&str]) -> kactus::install::UninstallArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        uninstall: kactus::install::UninstallArgs,
    }
    let mut argv = vec![
        "kactus-uninstall".to_string(),
        format!("--cni-bin-dir={}", node.path("bin").display()),
        format!("--cni-conf-dir={}", node.path("net.d").display()),
        "--cache-dir=/nonexistent/the-config-names-it".to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Cli::try_parse_from(argv).unwrap().uninstall
}

/// A cache entry as the plugin writes it for `container`'s call on `ifname`.
fn cache_entry(node: &Node, container: &str, ifname: &str, role: &str, network: &str) {
    let dir = node.path("cache").join(container);
    fs::create_dir_all(&dir).unwrap();
    let entry = json!({"kind": "cniCacheV1", "containerId": container, "config": "e30=", "ifName": ifname,
        "networkName": if network.is_empty() { "cbr0" } else { network }, "netns": "/var/run/netns/x",
        "cniArgs": [["K8S_POD_NAMESPACE", "default"], ["K8S_POD_NAME", "app1"]], "result": {},
        "kactus": {"seq": 1, "role": role, "network": network, "key": network}});
    fs::write(dir.join(format!("{ifname}.json")), entry.to_string()).unwrap();
}

#[test]
fn uninstall_removes_kactus_and_gives_the_node_its_own_network_back() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    reconcile_once(&node.args(&[])).unwrap();
    // A pod with only the cluster network: its DEL needs nothing of kactus.
    cache_entry(&node, "c1", "eth0", "master", "");
    assert!(kactus::install::uninstall(&uninstall_args(&node, &["--check"])).is_err());

    let outcome = kactus::install::uninstall_once(&uninstall_args(&node, &[])).unwrap();
    assert_eq!(
        outcome,
        kactus::install::uninstall::Outcome::Removed { default_network: Some(node.path("net.d/10-flannel.conflist")) }
    );
    let left = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(node.path(dir))
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(left("net.d"), ["10-flannel.conflist"]);
    assert_eq!(fs::read_to_string(node.path("net.d/10-flannel.conflist")).unwrap(), FLANNEL, "untouched");
    assert!(left("bin").is_empty());
    assert!(!node.path("cache").exists());
    kactus::install::uninstall(&uninstall_args(&node, &["--check"])).unwrap();
    // Again: nothing to do, still fine.
    kactus::install::uninstall(&uninstall_args(&node, &["--once"])).unwrap();
}

#[test]
fn uninstall_waits_while_a_pod_has_attachments_and_names_it() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    reconcile_once(&node.args(&[])).unwrap();
    cache_entry(&node, "c1", "eth0", "master", "");
    cache_entry(&node, "c1", "net9f27410725ab", "attachment", "default/green");
    let installed: Vec<PathBuf> = ["net.d/00-kactus.conflist", "net.d/kactus.d/kactus-kubeconfig.yaml", "bin/kactus"]
        .iter()
        .map(|p| node.path(p))
        .collect();

    let err = kactus::install::uninstall(&uninstall_args(&node, &["--once"])).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("default/app1 (default/green on net9f27410725ab)"), "{message}");
    assert!(message.contains("--force"), "{message}");
    assert!(installed.iter().all(|p| p.exists()), "kactus stays while its DEL is needed");

    // The pod is deleted: the runtime's DEL (kactus's) removes its cache.
    fs::remove_dir_all(node.path("cache/c1")).unwrap();
    kactus::install::uninstall(&uninstall_args(&node, &["--once"])).unwrap();
    assert!(installed.iter().all(|p| !p.exists()));
}

#[test]
fn uninstall_force_removes_kactus_although_pods_have_attachments() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    reconcile_once(&node.args(&[])).unwrap();
    cache_entry(&node, "c1", "net9f27410725ab", "attachment", "default/green");
    kactus::install::uninstall(&uninstall_args(&node, &["--once", "--force"])).unwrap();
    kactus::install::uninstall(&uninstall_args(&node, &["--check"])).unwrap();
    assert!(!node.path("cache").exists());
}

#[test]
fn uninstall_puts_the_config_back_when_a_pod_got_attachments_meanwhile() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    reconcile_once(&node.args(&[])).unwrap();
    let config = fs::read(node.path("net.d/00-kactus.conflist")).unwrap();
    // A kactus ADD the runtime started before the config went: it holds its container's lock.
    let in_flight =
        kactus::plugin::cache::ContainerCache::create(&node.path("cache"), "c2", std::time::Duration::from_secs(30))
            .unwrap();
    let args = uninstall_args(&node, &[]);
    let uninstaller = std::thread::spawn(move || kactus::install::uninstall_once(&args));
    let removed = Instant::now();
    while node.path("net.d/00-kactus.conflist").exists() {
        assert!(removed.elapsed() < Duration::from_secs(10), "uninstall did not remove the config");
        std::thread::sleep(Duration::from_millis(10));
    }
    cache_entry(&node, "c2", "net9f27410725ab", "attachment", "default/green");
    drop(in_flight);
    let outcome = uninstaller.join().unwrap().unwrap();
    assert!(matches!(outcome, kactus::install::uninstall::Outcome::Waiting(ref p) if p.len() == 1), "{outcome:?}");
    assert_eq!(fs::read(node.path("net.d/00-kactus.conflist")).unwrap(), config, "the config is back");
    assert!(node.path("bin/kactus").exists() && node.path("net.d/kactus.d/kactus-kubeconfig.yaml").exists());
}

// ---- the binary from a terminal ------------------------------------------------------------

fn kactus_binary(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kactus"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn kactus_without_cni_command_or_with_help_says_what_it_is_on_stderr() {
    for args in [&[][..], &["--help"][..], &["-h"][..]] {
        let out = kactus_binary(args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: stdout is the runtime's");
        assert!(stderr.starts_with("CNI kactus plugin version 0.1.0\n"), "{stderr}");
        assert!(
            stderr.contains("CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n"),
            "{stderr}"
        );
        assert!(stderr.contains("kactus install") && stderr.contains("kactus uninstall"), "{stderr}");
    }
    let out = kactus_binary(&[], &[("CNI_COMMAND", "")]);
    assert!(out.status.success() && out.stdout.is_empty());
    let out = kactus_binary(&["bogus"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument \"bogus\""));
    // The runtime's path is unchanged.
    let out = kactus_binary(&[], &[("CNI_COMMAND", "VERSION")]);
    assert!(out.status.success());
    let version: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(version["cniVersion"], "1.1.0");
    let help = kactus_binary(&["uninstall", "--help"], &[]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--force"));
}

#[test]
fn node_local_is_installed_beside_kactus_with_a_node_file_rewritten_by_each_new_installer() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    fs::write(node.path("image/node-local"), b"\x7fELF pretend node-local").unwrap();
    let args = node.args(&["--node-name=node1"]);
    let mut installer = Reconciler::default();
    let changes = installer.reconcile(&args).unwrap();
    assert!(changes.node_local && changes.node_file);
    let installed = node.path("bin/node-local");
    assert_eq!(fs::read(&installed).unwrap(), fs::read(node.path("image/node-local")).unwrap());
    assert_eq!(mode(&installed), 0o755);
    let file = node.path("net.d/kactus.d/node.json");
    let written: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    let kubeconfig = node.path("net.d/kactus.d/kactus-kubeconfig.yaml");
    assert_eq!(written, json!({"nodeName": "node1", "kubeconfig": kubeconfig}));
    let identity = kactus::ipam::node::NodeIdentity::read(&file).unwrap();
    assert_eq!((identity.name.as_str(), identity.kubeconfig.as_path()), ("node1", kubeconfig.as_path()));

    // The same installer leaves both alone; a new installer pod writes the node file anew,
    // which node-local sees as a new file (and checks its slices with the apiserver).
    let again = installer.reconcile(&args).unwrap();
    assert!(!again.node_local && !again.node_file);
    assert_eq!(kactus::ipam::node::NodeIdentity::read(&file).unwrap(), identity);
    assert!(reconcile_once(&args).unwrap().node_file);
    assert_ne!(kactus::ipam::node::NodeIdentity::read(&file).unwrap().fingerprint, identity.fingerprint);

    // And uninstall takes both off the node with kactus.
    kactus::install::uninstall(&uninstall_args(&node, &["--once"])).unwrap();
    assert!(!installed.exists() && !file.exists());
}

#[test]
fn without_node_local_in_the_image_or_a_node_name_kactus_installs_alone() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    let changes = reconcile_once(&node.args(&[])).unwrap();
    assert!(changes.binary && !changes.node_local && !changes.node_file);
    assert!(!node.path("bin/node-local").exists() && !node.path("net.d/kactus.d/node.json").exists());
}
