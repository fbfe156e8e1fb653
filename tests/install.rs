//! The installer against temp dirs standing in for the host's /opt/cni/bin, /etc/cni/net.d
//! and the pod's service-account dir: what an operator would check on a node after the
//! DaemonSet pod started.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use clap::Parser;
use kactus::install::{api_server_url, reconcile_once, run, InstallArgs, InstallError, Reconciler};
use serde_json::{json, Value};

/// A throwaway "node": host dirs plus a service-account dir, removed on drop.
struct Node {
    root: PathBuf,
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
        fs::write(root.join("sa/token"), "token-one").unwrap();
        fs::write(root.join("sa/ca.crt"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
        fs::write(root.join("image/kactus"), b"\x7fELF pretend kactus binary v1").unwrap();
        Node { root }
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
            "--api-server=https://10.96.0.1:443".to_string(),
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
            "cacheDir": "/var/lib/cni/kactus",
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
fn kubeconfig_is_rewritten_after_the_token_rotates() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    let args = node.args(&[]);
    let mut reconciler = Reconciler::default();
    assert!(reconciler.reconcile(&args).unwrap().kubeconfig);

    let kubeconfig = node.kubeconfig();
    assert_eq!(kubeconfig["apiVersion"], "v1");
    assert_eq!(kubeconfig["kind"], "Config");
    assert_eq!(kubeconfig["current-context"], "kactus-context");
    assert_eq!(kubeconfig["users"][0]["user"]["token"], "token-one");
    assert_eq!(kubeconfig["clusters"][0]["cluster"]["server"], "https://10.96.0.1:443");
    let ca = kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"].as_str().unwrap();
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.decode(ca).unwrap();
    assert_eq!(ca, fs::read(node.path("sa/ca.crt")).unwrap());
    let path = node.path("net.d/kactus.d/kactus-kubeconfig.yaml");
    assert_eq!(mode(&path), 0o600);

    // kubelet swaps the projected token; the file content is what counts.
    fs::write(node.path("sa/token"), "token-two\n").unwrap();
    let changes = reconciler.reconcile(&args).unwrap();
    assert!(changes.kubeconfig && !changes.config && !changes.binary);
    assert_eq!(node.kubeconfig()["users"][0]["user"]["token"], "token-two");
    assert_eq!(mode(&path), 0o600);
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
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Both a fresh pass (full comparison) and the loop's remembering reconciler.
    assert!(!reconcile_once(&args).unwrap().any());
    let mut reconciler = Reconciler::default();
    assert!(!reconciler.reconcile(&args).unwrap().any());
    assert!(!reconciler.reconcile(&args).unwrap().any());
    let after: Vec<_> = files.iter().map(|f| mtime(f)).collect();
    assert_eq!(before, after);
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
}

#[test]
fn without_node_local_in_the_image_or_a_node_name_kactus_installs_alone() {
    let node = Node::new();
    node.conf("10-flannel.conflist", FLANNEL);
    let changes = reconcile_once(&node.args(&[])).unwrap();
    assert!(changes.binary && !changes.node_local && !changes.node_file);
    assert!(!node.path("bin/node-local").exists() && !node.path("net.d/kactus.d/node.json").exists());
}
