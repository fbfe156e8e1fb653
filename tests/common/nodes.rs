//! Simulated nodes for the node-local IPAM: one test apiserver in a "cluster" network
//! namespace, and per node a namespace linked to it by a veth (its own path to the apiserver),
//! with what the installer would have written on that node (the node file, a kubeconfig)
//! and its own lease dir, kactus cache and confDir. Every namespace, link and file goes
//! away with the [`Cluster`].

use super::{cni_env, ip, kactus_binary, pod_args, run_plugin, unique_tag, CniOutput, Netns, CNI_PATH, TOKEN};
use kactus_testapi::TestApiServer;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub const NODE_LOCAL: &str = env!("CARGO_BIN_EXE_node-local");

pub struct SimNode {
    pub name: String,
    pub root: PathBuf,
    pub pods: Vec<Netns>,
    /// Dropped after its pods.
    pub ns: Netns,
}

pub struct Cluster {
    pub tag: String,
    pub nodes: Vec<SimNode>,
    pub api: Option<TestApiServer>,
    /// `CNI_PATH`: node-local first, then the reference plugins.
    pub cni_path: String,
    pub dir: tempfile::TempDir,
    pub api_ns: Netns,
}

impl Cluster {
    /// An apiserver and `count` nodes `node-a`, `node-b`, ..., each with a Node object.
    pub fn new(count: usize) -> Cluster {
        let tag = unique_tag();
        let api_ns = Netns::new(&format!("{tag}-api"));
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = kactus::netns::run_in(&api_ns.path, || std::net::TcpListener::bind("0.0.0.0:0"))
            .expect("enter the apiserver's netns")
            .expect("bind the apiserver");
        let api = TestApiServer::start(listener, TOKEN).expect("start the test apiserver");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        std::os::unix::fs::symlink(NODE_LOCAL, bin.join("node-local")).expect("link node-local");
        let cni_path = format!("{}:{CNI_PATH}", bin.display());
        let mut cluster = Cluster { tag, nodes: Vec::new(), api: Some(api), cni_path, dir, api_ns };
        for i in 0..count {
            cluster.add_node(i);
        }
        cluster
    }

    /// Adds node number `i` (named `node-<letter i>`).
    pub fn add_node(&mut self, i: usize) {
        let name = format!("node-{}", (b'a' + i as u8) as char);
        let ns = Netns::new(&format!("{}-{}", self.tag, &name[5..]));
        // The node's link to the apiserver: 10.255.<i>.2 -> 10.255.<i>.1.
        ip(&[
            "-n",
            &self.api_ns.name,
            "link",
            "add",
            &format!("up{i}"),
            "type",
            "veth",
            "peer",
            "name",
            "api",
            "netns",
            &ns.name,
        ]);
        ip(&["-n", &self.api_ns.name, "addr", "add", &format!("10.255.{i}.1/30"), "dev", &format!("up{i}")]);
        ip(&["-n", &self.api_ns.name, "link", "set", &format!("up{i}"), "up"]);
        ns.ip(&["addr", "add", &format!("10.255.{i}.2/30"), "dev", "api"]);
        ns.ip(&["link", "set", "api", "up"]);
        let root = self.dir.path().join(&name);
        std::fs::create_dir_all(root.join("net.d")).expect("node dir");
        let api = self.api();
        let server = format!("https://10.255.{i}.1:{}", api.addr().port());
        let kubeconfig =
            api.kubeconfig_yaml().replace(&api.url(), &format!("{server}\n    tls-server-name: localhost"));
        std::fs::write(root.join("kubeconfig.yaml"), kubeconfig).expect("kubeconfig");
        let node = SimNode { name, root, pods: Vec::new(), ns };
        node.write_node_file();
        self.api()
            .store()
            .apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node.name}}))
            .expect("Node");
        self.nodes.push(node);
    }

    pub fn api(&self) -> &TestApiServer {
        self.api.as_ref().expect("the apiserver is running")
    }

    pub fn stop_api(&mut self) {
        if let Some(api) = self.api.take() {
            api.shutdown();
        }
    }

    pub fn node(&self, i: usize) -> &SimNode {
        &self.nodes[i]
    }

    /// Every SliceClaim in the apiserver.
    pub fn claims(&self) -> Vec<Value> {
        self.api().store().list("sliceclaims", None)
    }

    /// (node, slice) of every claim, sorted.
    pub fn held(&self) -> Vec<(String, String)> {
        let mut held: Vec<(String, String)> = self
            .claims()
            .iter()
            .map(|c| {
                (c["spec"]["node"].as_str().unwrap().to_string(), c["spec"]["slice"].as_str().unwrap().to_string())
            })
            .collect();
        held.sort();
        held
    }

    /// Apiserver writes so far (create, update, patch, delete).
    pub fn writes(&self) -> u64 {
        let stats = self.api().stats();
        ["create", "update", "patch", "delete"].iter().map(|v| stats.per_verb.get(*v).copied().unwrap_or(0)).sum()
    }

    pub fn requests(&self) -> u64 {
        self.api().stats().requests
    }

    /// Deletes a node's Node object and makes a new one of the same name (a new uid).
    pub fn recreate_node_object(&self, i: usize) {
        let store = self.api().store();
        store.delete("nodes", "", &self.nodes[i].name).expect("delete the Node");
        store
            .apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.nodes[i].name}}))
            .expect("Node");
    }
}

impl SimNode {
    pub fn node_file(&self) -> PathBuf {
        self.root.join("node.json")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("ipam")
    }

    /// Makes the node's kubeconfig use `token` instead of the apiserver's all-powerful one.
    pub fn use_token(&self, token: &str) {
        let path = self.root.join("kubeconfig.yaml");
        let text = std::fs::read_to_string(&path).expect("kubeconfig");
        let text = text.lines().map(|l| {
            if l.trim_start().starts_with("token: ") {
                format!("    token: {token}")
            } else {
                l.to_string()
            }
        });
        std::fs::write(&path, text.collect::<Vec<_>>().join("\n") + "\n").expect("kubeconfig");
    }

    /// What `kactus install` writes (and writes again when its pod starts).
    pub fn write_node_file(&self) {
        let text = json!({"nodeName": self.name, "kubeconfig": self.root.join("kubeconfig.yaml")}).to_string();
        let tmp = self.root.join(".node.json.tmp");
        std::fs::write(&tmp, text).expect("node file");
        std::fs::rename(&tmp, self.node_file()).expect("node file");
    }

    /// The node-local `ipam` section for this node: `ipam` plus its lease dir and node file.
    pub fn ipam(&self, ipam: &Value) -> Value {
        let mut ipam = ipam.clone();
        ipam["type"] = "node-local".into();
        ipam["dataDir"] = json!(self.data_dir());
        ipam["nodeFile"] = json!(self.node_file());
        ipam
    }

    /// Puts a network config in this node's confDir (for a NAD with an empty config).
    pub fn put_network(&self, conf: &Value) {
        let name = conf["name"].as_str().expect("name");
        std::fs::write(self.root.join("net.d").join(format!("{name}.conf")), conf.to_string()).expect("conf");
    }

    /// kactus's config on this node: the cluster network on a bridge, networks from confDir.
    pub fn kactus_conf(&self) -> Value {
        let master = json!({"cniVersion": "1.0.0", "name": "cluster", "type": "bridge", "bridge": "cni0",
            "isGateway": true, "masterPlugin": true,
            "ipam": {"type": "host-local", "subnet": "10.244.0.0/24", "dataDir": self.root.join("ipam-cluster")}});
        json!({"cniVersion": "1.0.0", "name": "kactus-net", "type": "kactus",
               "kubeconfig": self.root.join("kubeconfig.yaml"), "cacheDir": self.root.join("cache"),
               "confDir": self.root.join("net.d"), "logFile": self.root.join("kactus.log"), "logLevel": "debug",
               "apiTimeoutSeconds": 2, "delegates": [master]})
    }

    /// A pod namespace on this node; returns its index.
    pub fn pod(&mut self, tag: &str, name: &str) -> usize {
        self.pods.push(Netns::new(&format!("{tag}-{}{name}", &self.name[5..])));
        self.pods.len() - 1
    }

    /// kactus for a pod, in this node's namespace.
    pub fn kactus(&self, cni_path: &str, command: &str, pod: &str, netns: Option<&Path>) -> CniOutput {
        let env = cni_env(command, &format!("c-{pod}"), netns, "eth0", &pod_args("default", pod), cni_path);
        run_plugin(&self.ns.name, &kactus_binary(), &env, self.kactus_conf().to_string().as_bytes())
    }

    /// node-local itself, as a delegate would run it, in this node's namespace.
    pub fn node_local(&self, command: &str, container: &str, ifname: &str, conf: &Value) -> CniOutput {
        let netns = (command == "ADD" || command == "CHECK").then(|| Path::new("/var/run/netns/none"));
        let env = cni_env(command, container, netns, ifname, "IgnoreUnknown=1", CNI_PATH);
        run_plugin(&self.ns.name, NODE_LOCAL, &env, conf.to_string().as_bytes())
    }

    /// Leased addresses of a network on this node, as file names.
    pub fn leases(&self, network: &str) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.data_dir().join(network))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        out.sort();
        out
    }

    /// The node's recorded holding of a network.
    pub fn record(&self, network: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.data_dir().join(network).join("node-local.json")).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// A network config with node-local IPAM for `node`.
pub fn network(node: &SimNode, name: &str, plugin: Value, ipam: &Value) -> Value {
    let mut conf = plugin;
    conf["cniVersion"] = "1.0.0".into();
    conf["name"] = name.into();
    conf["ipam"] = node.ipam(ipam);
    conf
}
