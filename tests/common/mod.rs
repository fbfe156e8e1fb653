//! Test sandbox: a throwaway "node" network namespace in which kactus, its delegates and the
//! test apiserver run, "pod" namespaces beside it, a temp dir for IPAM data, cache and logs,
//! and guards that remove all of it, on failure too. Nothing touches the machine's own links.
#![allow(dead_code)]

pub mod grpc;
pub mod nodes;
pub mod podagent;

use kactus_testapi::TestApiServer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub const CNI_PATH: &str = "/usr/lib/cni";
pub const TOKEN: &str = "kactus-test-token";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `ip` with arguments; panics with its stderr on failure (tests want to know).
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace, deleted on drop (taking its links with it).
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        Netns { name: name.to_string(), path: PathBuf::from(format!("/var/run/netns/{name}")) }
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Link names in this namespace.
    pub fn links(&self) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.ip(&["-j", "link", "show"])).unwrap_or(json!([]));
        v.as_array().into_iter().flatten().filter_map(|l| l["ifname"].as_str().map(String::from)).collect()
    }

    pub fn has_link(&self, name: &str) -> bool {
        self.links().iter().any(|l| l == name)
    }

    /// Global addresses of a device, as `a.b.c.d/len`.
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(&self.ip(&["-j", "addr", "show", "dev", dev])).unwrap_or(json!([]));
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["scope"] == "global")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or_default(), a["prefixlen"]))
            .collect()
    }

    pub fn mac(&self, dev: &str) -> String {
        let v: Value = serde_json::from_str(&self.ip(&["-j", "link", "show", "dev", dev])).unwrap_or(json!([]));
        v[0]["address"].as_str().unwrap_or_default().to_string()
    }

    /// Default route gateway (v4), if any.
    pub fn default_gateway(&self) -> Option<(String, String)> {
        let v: Value = serde_json::from_str(&self.ip(&["-j", "route", "show", "default"])).unwrap_or(json!([]));
        let r = v.as_array()?.first()?.clone();
        Some((r["gateway"].as_str()?.to_string(), r["dev"].as_str()?.to_string()))
    }

    /// Every default route of a family (`-4` or `-6`) as (gateway, device).
    pub fn default_routes(&self, family: &str) -> Vec<(String, String)> {
        let v: Value = serde_json::from_str(&self.ip(&[family, "-j", "route", "show", "default"])).unwrap_or(json!([]));
        v.as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["gateway"].as_str().unwrap_or_default().to_string(),
                    r["dev"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// One ping from this namespace; only ever to addresses inside the sandbox.
    pub fn ping(&self, addr: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "ping", "-c", "1", "-W", "2", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// What one kactus run printed.
#[derive(Debug)]
pub struct CniOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CniOutput {
    /// What a started plugin printed, once it has exited.
    pub fn of(child: std::process::Child) -> CniOutput {
        let out = child.wait_with_output().expect("wait for the plugin");
        CniOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }

    /// Asserts success and returns the result JSON (or Null for an empty stdout).
    pub fn ok(&self) -> Value {
        assert!(self.success, "kactus failed: {}\nstderr: {}", self.stdout, self.stderr);
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts failure with an error JSON and returns (code, msg).
    pub fn err(&self) -> (u64, String) {
        assert!(!self.success, "kactus unexpectedly succeeded: {}", self.stdout);
        let v = self.json();
        (v["code"].as_u64().unwrap_or(0), v["msg"].as_str().unwrap_or_default().to_string())
    }
}

/// One test's world: node netns, test apiserver inside it, pods, temp dir.
pub struct Sandbox {
    pub tag: String,
    pub dir: tempfile::TempDir,
    pub api: Option<TestApiServer>,
    pub kubeconfig: PathBuf,
    pub pods: Vec<Netns>,
    /// `CNI_PATH` kactus is run with (tests may put recording wrappers first).
    pub cni_path: String,
    // Dropped last: pods go first so their veth peers vanish with them.
    pub node: Netns,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let tag = unique_tag();
        let node = Netns::new(&format!("{tag}-node"));
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = kactus::netns::run_in(&node.path, || std::net::TcpListener::bind("127.0.0.1:0"))
            .expect("enter node netns")
            .expect("bind apiserver in node netns");
        let api = TestApiServer::start(listener, TOKEN).expect("start test apiserver");
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        api.write_kubeconfig(&kubeconfig).expect("write kubeconfig");
        Sandbox { tag, dir, api: Some(api), kubeconfig, pods: Vec::new(), cni_path: CNI_PATH.to_string(), node }
    }

    pub fn api(&self) -> &TestApiServer {
        self.api.as_ref().expect("apiserver is running")
    }

    /// Stops the apiserver (for "DEL works with the apiserver down").
    pub fn stop_api(&mut self) {
        if let Some(api) = self.api.take() {
            api.shutdown();
        }
    }

    pub fn apply(&self, yaml: &str) {
        self.api().store().apply_yaml(yaml).expect("apply yaml");
    }

    /// A pod netns; returns its index in `pods`.
    pub fn pod(&mut self, name: &str) -> usize {
        self.pods.push(Netns::new(&format!("{}-{name}", self.tag)));
        self.pods.len() - 1
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.path("ipam")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.path("cache")
    }

    /// A bridge + host-local network config; leases live in this sandbox's temp dir.
    pub fn bridge_net(&self, name: &str, bridge: &str, subnet: &str) -> Value {
        json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge, "isGateway": true,
               "ipam": {"type": "host-local", "subnet": subnet, "dataDir": self.ipam_dir()}})
    }

    /// The cluster network ("masterPlugin") of the tests: a bridge with 10.244.0.0/24.
    pub fn kactus_conf(&self) -> Value {
        let mut master = self.bridge_net("cluster", "cni0", "10.244.0.0/24");
        master["masterPlugin"] = true.into();
        json!({"cniVersion": "1.0.0", "name": "kactus-net", "type": "kactus",
               "kubeconfig": self.kubeconfig, "cacheDir": self.cache_dir(),
               "logFile": self.path("kactus.log"), "logLevel": "debug",
               "apiTimeoutSeconds": 2, "delegates": [master]})
    }

    /// A NAD object in YAML with the given config.
    pub fn nad_yaml(namespace: &str, name: &str, config: &Value) -> String {
        let obj = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                         "metadata": {"name": name, "namespace": namespace}, "spec": {"config": config.to_string()}});
        obj.to_string()
    }

    /// Kaloom's `kaloom.com/v1` `Network` in YAML, as Kaloom's examples write it: the plugin
    /// in `spec.plugin`, the rest of the config (its `type` left out) in `spec.config`.
    pub fn kaloom_network_yaml(namespace: &str, name: &str, config: &Value) -> String {
        let mut config = config.clone();
        let plugin = config.as_object_mut().and_then(|c| c.remove("type")).unwrap_or_default();
        let obj = json!({"apiVersion": "kaloom.com/v1", "kind": "Network",
                         "metadata": {"name": name, "namespace": namespace},
                         "spec": {"plugin": plugin, "config": config.to_string()}});
        obj.to_string()
    }

    /// Plays seed 001's own install: no NetworkAttachmentDefinition CRD (every NAD path
    /// answers 404), Kaloom's `Network` CRD only.
    pub fn without_nad_crd(&self) {
        self.api().uninstall_crd("network-attachment-definitions.k8s.cni.cncf.io");
    }

    /// A pod object with annotations, on node "node1".
    pub fn pod_yaml(namespace: &str, name: &str, annotations: &Value) -> String {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"), "annotations": annotations},
               "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "alpine"}]},
               "status": {"phase": "Running"}})
        .to_string()
    }

    /// Runs kactus inside the node netns, as the runtime would.
    pub fn kactus(
        &self,
        command: &str,
        container: &str,
        netns: Option<&Path>,
        ifname: &str,
        cni_args: &str,
        conf: &Value,
    ) -> CniOutput {
        self.kactus_raw(command, container, netns, ifname, cni_args, conf.to_string().as_bytes())
    }

    pub fn kactus_raw(
        &self,
        command: &str,
        container: &str,
        netns: Option<&Path>,
        ifname: &str,
        cni_args: &str,
        stdin: &[u8],
    ) -> CniOutput {
        let child = self.start_kactus(command, container, netns, ifname, cni_args, stdin);
        CniOutput::of(child)
    }

    /// Starts kactus inside the node netns and returns at once (`ip netns exec` execs it, so
    /// killing the child kills kactus: what a runtime's timeout or the OOM killer does).
    pub fn start_kactus(
        &self,
        command: &str,
        container: &str,
        netns: Option<&Path>,
        ifname: &str,
        cni_args: &str,
        stdin: &[u8],
    ) -> std::process::Child {
        let env = cni_env(command, container, netns, ifname, cni_args, &self.cni_path);
        start_plugin(&self.node.name, &kactus_binary(), &env, stdin)
    }

    /// host-local lease files (one per allocated IP) left in the IPAM data dir.
    pub fn leases(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(nets) = std::fs::read_dir(self.ipam_dir()) else { return out };
        for net in nets.flatten() {
            for f in std::fs::read_dir(net.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.parse::<std::net::IpAddr>().is_ok() {
                    out.push(format!("{}/{name}", net.file_name().to_string_lossy()));
                }
            }
        }
        out
    }

    /// Everything left under the kactus cache dir (lock files, container directories and the
    /// files in them), as paths relative to it.
    pub fn cache_files(&self) -> Vec<String> {
        fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = format!("{rel}{}", entry.file_name().to_string_lossy());
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), &format!("{name}/"), out);
                }
                out.push(name);
            }
        }
        let mut out = Vec::new();
        walk(&self.cache_dir(), "", &mut out);
        out
    }

    /// Device links in a pod netns other than lo.
    pub fn pod_devices(&self, pod: usize) -> Vec<String> {
        self.pods[pod].links().into_iter().filter(|l| l != "lo").collect()
    }

    /// Host ends of pod veths in the node netns (the bridge plugin names them `veth...`;
    /// masters the tests make are named otherwise).
    pub fn node_veths(&self) -> Vec<String> {
        self.node.links().into_iter().filter(|l| l.starts_with("veth")).collect()
    }

    /// Nothing of pod `pod` is left: no device in it, no veth end on the node, no IPAM lease,
    /// no file under the cache dir.
    pub fn assert_nothing_left(&self, pod: usize, case: &str) {
        assert!(self.pod_devices(pod).is_empty(), "{case}: devices left: {:?}", self.pod_devices(pod));
        assert!(self.node_veths().is_empty(), "{case}: veths left on the node: {:?}", self.node_veths());
        assert!(self.leases().is_empty(), "{case}: leases left: {:?}", self.leases());
        assert!(self.cache_files().is_empty(), "{case}: cache left: {:?}", self.cache_files());
    }
}

/// The kactus binary the tests run: this build's, or `KACTUS_TEST_BINARY` (to show that a
/// test fails on another build, e.g. one without a fix).
pub fn kactus_binary() -> String {
    std::env::var("KACTUS_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kactus").to_string())
}

/// The `CNI_*` environment of one call.
pub fn cni_env(
    command: &str,
    container: &str,
    netns: Option<&Path>,
    ifname: &str,
    cni_args: &str,
    cni_path: &str,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", container.to_string()),
        ("CNI_IFNAME", ifname.to_string()),
        ("CNI_ARGS", cni_args.to_string()),
        ("CNI_PATH", cni_path.to_string()),
    ];
    if let Some(ns) = netns {
        env.push(("CNI_NETNS", ns.display().to_string()));
    }
    env
}

/// Runs a plugin binary inside the network namespace `node` (by name), as the runtime
/// would: a clean environment with only `PATH` and `env`, `stdin` fed, everything captured.
pub fn run_plugin(node: &str, binary: &str, env: &[(&str, String)], stdin: &[u8]) -> CniOutput {
    CniOutput::of(start_plugin(node, binary, env, stdin))
}

/// [`run_plugin`] without waiting for it.
pub fn start_plugin(node: &str, binary: &str, env: &[(&str, String)], stdin: &[u8]) -> std::process::Child {
    use std::io::Write;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", node, binary])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
    child.stdin.take().expect("stdin").write_all(stdin).expect("write stdin");
    child
}

/// A tag unique to this process and call, for names of namespaces and links.
pub fn unique_tag() -> String {
    format!("k{}x{}", std::process::id() % 100000, COUNTER.fetch_add(1, Ordering::SeqCst))
}

pub fn pod_args(namespace: &str, name: &str) -> String {
    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID=c-{name};K8S_POD_UID=uid-{name}")
}

/// Records a visible skip: printed now and collected for scripts/test.sh's summary.
pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    eprintln!("SKIPPED {test}: {reason}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kactus-test-skips.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "SKIPPED {test}: {reason}");
    }
}

/// Whether the kernel can make a link of this kind (vlan needs 8021q, ipvlan, dummy ...).
pub fn kernel_supports(kind: &str) -> bool {
    let ns = Netns::new(&format!("kprobe{}x{}", std::process::id() % 100000, COUNTER.fetch_add(1, Ordering::SeqCst)));
    let base = Command::new("ip").args(["-n", &ns.name, "link", "add", "p0", "type", "veth", "peer", "p1"]).status();
    if !matches!(base, Ok(s) if s.success()) {
        return false;
    }
    let args: Vec<&str> = match kind {
        "vlan" => vec!["link", "add", "link", "p0", "name", "v42", "type", "vlan", "id", "42"],
        "ipvlan" => vec!["link", "add", "link", "p0", "name", "iv0", "type", "ipvlan"],
        other => vec!["link", "add", "x0", "type", other],
    };
    let mut all = vec!["-n", ns.name.as_str()];
    all.extend(args);
    Command::new("ip").args(&all).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// A plugin `name` in a bin dir of the sandbox, a shell script with `body`; puts that dir
/// first in the sandbox's `CNI_PATH` (once). Returns the script's path.
pub fn wrapper_plugin(sb: &mut Sandbox, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = sb.path("recbin");
    std::fs::create_dir_all(&bin).expect("recbin");
    let path = bin.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write wrapper plugin");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let first = format!("{}:", bin.display());
    if !sb.cni_path.starts_with(&first) {
        sb.cni_path = format!("{first}{}", sb.cni_path);
    }
    path
}

/// A delegate named `rec-<plugin>` in a bin dir of the sandbox that records every call
/// (command, interface, `CNI_ARGS`, stdin) as a JSON line, then execs the real plugin.
/// Puts that dir first in the sandbox's `CNI_PATH`; returns the log path.
pub fn recording_plugin(sb: &mut Sandbox, plugin: &str) -> PathBuf {
    recording_plugin_filtered(sb, plugin, "")
}

/// [`recording_plugin`] whose real plugin gets stdin through `sed -E <filter>` (the record
/// keeps what kactus sent): for hardware this machine lacks, say PCI addresses of VFs.
pub fn recording_plugin_filtered(sb: &mut Sandbox, plugin: &str, filter: &str) -> PathBuf {
    let log = sb.path(&format!("rec-{plugin}.log"));
    let feed = if filter.is_empty() { String::new() } else { format!(" | sed -E '{filter}'") };
    let script = format!(
        "in=$(cat)\nprintf '{{\"command\":\"%s\",\"ifname\":\"%s\",\"args\":\"%s\",\"stdin\":%s}}\\n' \"$CNI_COMMAND\" \"$CNI_IFNAME\" \"$CNI_ARGS\" \"$in\" >> {log}\nprintf '%s' \"$in\"{feed} | exec {CNI_PATH}/{plugin}\n",
        log = log.display()
    );
    wrapper_plugin(sb, &format!("rec-{plugin}"), &script);
    log
}

/// The calls a recording plugin saw.
pub fn recorded_calls(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l}: {e}")))
        .collect()
}

/// (type, reason, message) of the events recorded on a pod.
pub fn pod_events(sb: &Sandbox, namespace: &str, pod: &str) -> Vec<(String, String, String)> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    sb.api()
        .store()
        .list("events", Some(namespace))
        .iter()
        .filter(|e| e["involvedObject"]["name"] == pod && e["involvedObject"]["kind"] == "Pod")
        .map(|e| (s(&e["type"]), s(&e["reason"]), s(&e["message"])))
        .collect()
}

/// A NAD as `kubectl apply` leaves it on a real apiserver: its config, the last-applied
/// annotation (the whole object again) and managedFields; a null delegate's config.
pub fn realistic_nad(namespace: &str, name: &str) -> Value {
    let config = json!({"cniVersion": "1.0.0", "name": name, "type": "null", "bridge": "br-big", "isGateway": true,
        "ipam": {"type": "host-local", "subnet": "10.250.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]},
        "address": "10.250.0.2/24"});
    kubectl_applied_nad(namespace, name, &config)
}

/// NAD `namespace/name` holding `config`, as `kubectl apply` leaves it (see [`realistic_nad`]).
pub fn kubectl_applied_nad(namespace: &str, name: &str, config: &Value) -> Value {
    let config = config.to_string();
    let applied = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"annotations": {}, "name": name, "namespace": namespace}, "spec": {"config": config}});
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": namespace, "generation": 1,
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": format!("{applied}\n")},
            "managedFields": [{"apiVersion": "k8s.cni.cncf.io/v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
                    "f:spec": {".": {}, "f:config": {}}},
                "manager": "kubectl-client-side-apply", "operation": "Update", "time": "2025-01-01T00:00:00Z"}]},
        "spec": {"config": config}})
}
