//! podagent's test world: the node's CNI set-up (kactus first, behind a wrapper that
//! records each call), a running podagent in the node netns, and a running pod app1 that
//! kactus set up as kubelet would, with the data NAD ready to be hot-plugged.

use super::{pod_args, Sandbox, CNI_PATH};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const GREEN: &str = "net9f27410725ab";
pub const DATA: &str = "net8d777f385d3d";
pub const CONVERGE: Duration = Duration::from_secs(20);

/// The node's CNI set-up: kactus first in the conf dir, and a `kactus` in the bin dir that
/// appends `COMMAND CNI_ARGS` to calls.log before running the real one.
pub struct Node {
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub calls: PathBuf,
}

pub fn node_cni(sb: &Sandbox) -> Node {
    let (conf_dir, bin_dir, calls) = (sb.path("net.d"), sb.path("bin"), sb.path("calls.log"));
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::write(conf_dir.join("00-kactus.conf"), sb.kactus_conf().to_string()).unwrap();
    std::fs::write(
        conf_dir.join("99-other.conf"),
        json!({"cniVersion": "1.0.0", "name": "x", "type": "nope"}).to_string(),
    )
    .unwrap();
    let wrapper = format!(
        "#!/bin/sh\necho \"$CNI_COMMAND $CNI_ARGS\" >> '{}'\nexec '{}' \"$@\"\n",
        calls.display(),
        super::kactus_binary()
    );
    let path = bin_dir.join("kactus");
    std::fs::write(&path, wrapper).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    Node { conf_dir, bin_dir, calls }
}

/// [`node_cni`] with kactus's config declaring `io.kubernetes.cri.pod-annotations`, as the
/// installer writes it: podagent then hands kactus the pod's annotations, as the runtime does.
pub fn node_cni_passing_pod_annotations(sb: &Sandbox) -> Node {
    let node = node_cni(sb);
    let mut conf = sb.kactus_conf();
    conf["capabilities"] = json!({"io.kubernetes.cri.pod-annotations": true});
    std::fs::write(node.conf_dir.join("00-kactus.conf"), conf.to_string()).unwrap();
    node
}

impl Node {
    /// The calls podagent made, e.g. `ADD IgnoreUnknown=1;...;K8S_POD_NETWORK=data`.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls).unwrap_or_default().lines().map(String::from).collect()
    }
}

/// Flags that make podagent find sandboxes in the sandbox's kactus cache.
pub fn cache_lookup(sb: &Sandbox) -> [String; 2] {
    ["--sandbox-lookup=cache".to_string(), format!("--kactus-cache-dir={}", sb.cache_dir().display())]
}

/// A running podagent in the node netns, killed on drop.
pub struct PodAgent {
    pub child: Child,
    pub node_ns: PathBuf,
    pub log: PathBuf,
}

impl PodAgent {
    /// Finding sandboxes in kactus's cache, as the test's pods were set up by kactus and no
    /// runtime knows them (even if the machine runs one).
    pub fn start(sb: &Sandbox, node: &Node) -> PodAgent {
        PodAgent::start_with(sb, node, &cache_lookup(sb))
    }

    /// With more flags (a cache dir among them: podagent takes each flag once).
    pub fn start_with(sb: &Sandbox, node: &Node, flags: &[String]) -> PodAgent {
        PodAgent::start_binary(sb, node, flags, env!("CARGO_BIN_EXE_podagent"))
    }

    /// Another podagent build (the benchmark's before/after).
    pub fn start_binary(sb: &Sandbox, node: &Node, flags: &[String], binary: &str) -> PodAgent {
        let child = PodAgent::command(sb, node, flags, binary).spawn().expect("spawn podagent");
        let agent = PodAgent { child, node_ns: sb.node.path.clone(), log: sb.path("podagent.log") };
        assert!(wait_until(|| agent.get("/healthz").is_some_and(|(code, _)| code == 200)), "podagent never got ready");
        agent
    }

    /// Runs podagent expecting it to stop by itself (a start that fails): its exit code
    /// (`None`: killed by a signal, a panic's abort among them) and what it wrote.
    pub fn run_to_exit(sb: &Sandbox, node: &Node, flags: &[String]) -> (Option<i32>, String) {
        let mut child =
            PodAgent::command(sb, node, flags, env!("CARGO_BIN_EXE_podagent")).spawn().expect("spawn podagent");
        let exited = wait_until(|| child.try_wait().ok().flatten().is_some());
        if !exited {
            let _ = child.kill();
        }
        let status = child.wait().expect("wait for podagent");
        let log = std::fs::read_to_string(sb.path("podagent.log")).unwrap_or_default();
        assert!(exited, "podagent did not stop by itself:\n{log}");
        (status.code(), log)
    }

    /// Asks podagent to stop as kubelet does (SIGTERM); its exit code once it has.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM podagent");
        let exited = wait_until(|| self.child.try_wait().ok().flatten().is_some());
        assert!(exited, "podagent did not stop on SIGTERM");
        self.child.wait().expect("wait for podagent").code()
    }

    /// podagent in the node netns, its log appended to podagent.log.
    fn command(sb: &Sandbox, node: &Node, flags: &[String], binary: &str) -> Command {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(sb.path("podagent.log")).unwrap();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &sb.node.name, binary])
            .arg("--node-name=node1")
            .arg(format!("--kubeconfig={}", sb.kubeconfig.display()))
            .arg(format!("--cni-conf-dir={}", node.conf_dir.display()))
            .arg(format!("--cni-bin-dir={}", node.bin_dir.display()))
            .arg(format!("--cni-path={}:{CNI_PATH}", node.bin_dir.display()));
        // The plugin runs in the mount namespace of this test, where its files are, as in a
        // DaemonSet it runs in the host's (/proc/1/ns/mnt); either way through setns.
        if !flags.iter().any(|f| f.starts_with("--plugin-mount-namespace")) {
            command.arg(format!("--plugin-mount-namespace=/proc/{}/ns/mnt", std::process::id()));
        }
        command.args(flags).arg("--log-level=info").stdout(Stdio::null()).stderr(log);
        command
    }

    /// GET on the metrics port inside the node netns: (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let answer = kactus::netns::run_in(&self.node_ns, move || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9648")?;
            s.write_all(request.as_bytes())?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .ok()?
        .ok()?;
        let code = answer.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()))
    }

    pub fn metric(&self, name: &str) -> u64 {
        let (_, body) = self.get("/metrics").expect("metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing from {body}"))
    }
}

impl Drop for PodAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("podagent log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// Polls `cond` until it holds or [`CONVERGE`] passes.
pub fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + CONVERGE;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// Pod app1 with green, running, set up by kactus as kubelet would; and the data NAD.
pub fn running_pod(sb: &mut Sandbox) -> usize {
    let green = json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "green-br",
        "ipam": {"type": "host-local", "subnet": "192.168.42.0/24", "dataDir": sb.ipam_dir()}});
    let data = json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "data-br",
        "ipam": {"type": "host-local", "subnet": "10.10.0.0/24", "dataDir": sb.ipam_dir()}});
    sb.apply(&Sandbox::nad_yaml("default", "green", &green));
    sb.apply(&Sandbox::nad_yaml("default", "data", &data));
    sb.apply(&Sandbox::pod_yaml("default", "app1", &json!({"networks": r#"[{"name":"green"}]"#})));
    start_pod(sb, "app1")
}

/// Runs kactus ADD for a pod already in the apiserver, with its server-made UID as kubelet does.
pub fn start_pod(sb: &mut Sandbox, name: &str) -> usize {
    let p = sb.pod(name);
    let args = kubelet_args(sb, name);
    sb.kactus("ADD", &format!("c-{name}"), Some(&sb.pods[p].path), "eth0", &args, &sb.kactus_conf()).ok();
    p
}

pub fn kubelet_args(sb: &Sandbox, name: &str) -> String {
    let uid = sb.api().store().get("pods", "default", name).unwrap()["metadata"]["uid"].as_str().unwrap().to_string();
    pod_args("default", name).replace(&format!("K8S_POD_UID=uid-{name}"), &format!("K8S_POD_UID={uid}"))
}

pub fn set_networks(sb: &Sandbox, networks: &str) {
    let patch = json!({"metadata": {"annotations": {"networks": networks}}});
    sb.api().store().merge_patch("pods", "default", "app1", &patch).unwrap();
}

pub fn network_status(sb: &Sandbox) -> Value {
    let pod = sb.api().store().get("pods", "default", "app1").unwrap();
    serde_json::from_str(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].as_str().unwrap()).unwrap()
}

pub fn lists(sb: &Sandbox, dev: &str) -> bool {
    network_status(sb).as_array().unwrap().iter().any(|e| e["interface"] == dev)
}

/// Waits for `data` to be hot-plugged into pod `p`: the device in its netns with a 10.10.0.x
/// address, and listed in network-status.
pub fn assert_data_appears(sb: &Sandbox, p: usize) {
    assert!(
        wait_until(|| sb.pods[p].has_link(DATA) && lists(sb, DATA)),
        "data never appeared: {:?}",
        sb.pod_devices(p)
    );
    assert!(sb.pods[p].addrs(DATA)[0].starts_with("10.10.0."), "{:?}", sb.pods[p].addrs(DATA));
}

pub fn data_leases(sb: &Sandbox) -> usize {
    sb.leases().iter().filter(|l| l.contains("10.10.0.")).count()
}
