//! Calling the node's CNI plugin the way the runtime does, for one network of a running pod.
//!
//! The node's plugin is the first config in lexical order in the CNI conf dir (kactus when it
//! is installed as it should be), run from the CNI bin dir with `K8S_POD_NETWORK` in
//! `CNI_ARGS`, so kactus acts on that one network only, in the host's filesystem (see
//! [`super::mount_ns`]).

use super::diff::Change;
use super::mount_ns::MountNamespace;
use super::pods::Pod;
use super::sandbox::Sandbox;
use crate::attachment::check_attachment_key;
use crate::attachment::naming::{MAX_NAME, MAX_NAMESPACE};
use crate::attachment::selection::check_dns1123;
use crate::cni::env::{
    valid_container_id, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_NAME, K8S_POD_NAMESPACE, K8S_POD_NETWORK, K8S_POD_UID,
};
use crate::cni::{exec, CniArgs, CniError, Command, Invocation, NetworkConfig};
use crate::plugin::plan::POD_ANNOTATIONS_CAPABILITY;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The runtime's `CNI_IFNAME`: kactus names the dynamic device itself.
const RUNTIME_IFNAME: &str = "eth0";

#[derive(Debug, Clone)]
pub struct NodePlugin {
    pub conf_dir: PathBuf,
    pub bin_dir: PathBuf,
    /// `CNI_PATH` for the plugin; the bin dir is put first if missing, as it must hold the plugin.
    pub cni_path: String,
    pub timeout: Duration,
    /// Where the plugin runs (the host's mount namespace); `None`: podagent's own.
    pub mount_namespace: Option<Arc<MountNamespace>>,
}

impl NodePlugin {
    /// Runs one change. The config is read afresh each time: the installer may rewrite it.
    pub fn run(&self, pod: &Pod, sandbox: &Sandbox, change: &Change) -> Result<(), CniError> {
        let (conf, file) = self.node_config()?;
        let plugin = conf.plugins.first().and_then(|p| p.get("type")).and_then(Value::as_str).unwrap_or_default();
        let bin_dir = self.bin_dir.to_string_lossy();
        exec::find_plugin(plugin, &bin_dir).map_err(|e| e.context(format!("node CNI config {}", file.display())))?;
        let cni_path = if self.cni_path.split(':').any(|d| d == bin_dir) {
            self.cni_path.clone()
        } else {
            format!("{bin_dir}:{}", self.cni_path)
        };
        let args = cni_args(pod, sandbox, change).map_err(CniError::invalid_env)?;
        let inv = Invocation {
            command: if change.add { Command::Add } else { Command::Del },
            container_id: &sandbox.container_id,
            netns: Some(&sandbox.netns),
            ifname: RUNTIME_IFNAME,
            args: &args,
            cni_path: &cni_path,
            timeout: self.timeout,
        };
        let stdin = conf.plugin_stdin(0, &runtime_config(pod), None).to_string();
        let enter = |command: &mut std::process::Command| {
            if let Some(ns) = &self.mount_namespace {
                ns.enter_in_child(command);
            }
        };
        exec::exec_plugin_with(&inv, plugin, stdin.as_bytes(), &enter).map(|_| ())
    }

    /// The first `.conf`, `.conflist` or `.json` in lexical order; of a conflist, its first
    /// plugin (the meta-plugin) with the list's name and version.
    fn node_config(&self) -> Result<(NetworkConfig, PathBuf), CniError> {
        let dir = &self.conf_dir;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| CniError::io(format!("read CNI conf dir {}", dir.display()), e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "conf" || e == "conflist" || e == "json"))
            .collect();
        files.sort();
        let file = files
            .into_iter()
            .next()
            .ok_or_else(|| CniError::invalid_config(format!("no CNI config in {}", dir.display())))?;
        let bytes = std::fs::read(&file).map_err(|e| CniError::io(format!("read {}", file.display()), e))?;
        let conf = NetworkConfig::from_bytes(&bytes, &file_stem(&file), "")
            .map_err(|e| e.context(format!("node CNI config {}", file.display())))?;
        Ok((conf, file))
    }
}

/// `CNI_ARGS` for one change, as the runtime's with `K8S_POD_NETWORK`. Each value is checked
/// for what it is, whoever wrote it (the apiserver, the runtime, a tenant's annotation): the
/// pod's namespace and name DNS-1123 names, its UID and the sandbox's ID the spec's container
/// ID characters, the network an attachment key. None can then hold a `;` or `=` that would
/// add a `CNI_ARGS` item (`CNI_CONTAINERID` is the same checked ID).
fn cni_args(pod: &Pod, sandbox: &Sandbox, change: &Change) -> Result<CniArgs, String> {
    let meta = &pod.metadata;
    let (namespace, name) = (meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default());
    let uid = meta.uid.as_deref().unwrap_or_default();
    check_dns1123("pod namespace", namespace, MAX_NAMESPACE)?;
    check_dns1123("pod name", name, MAX_NAME)?;
    // An empty UID is left out by kactus (a pod from an apiserver always has one).
    if !valid_container_id(uid) {
        return Err(format!("pod UID {uid:?} may only hold letters, digits, '_', '.' and '-'"));
    }
    let id = &sandbox.container_id;
    if id.is_empty() || !valid_container_id(id) {
        return Err(format!("sandbox ID {id:?} is not a container ID (letters, digits, '_', '.' and '-')"));
    }
    check_attachment_key(&change.network)?;
    let mut args = CniArgs(vec![("IgnoreUnknown".into(), "1".into())]);
    args.set(K8S_POD_NAMESPACE, namespace);
    args.set(K8S_POD_NAME, name);
    args.set(K8S_POD_INFRA_CONTAINER_ID, id);
    args.set(K8S_POD_UID, uid);
    args.set(K8S_POD_NETWORK, &change.network);
    Ok(args)
}

/// What the runtime hands the plugin about the pod, as podagent has it from its watch: the
/// pod's annotations under the capability containerd and CRI-O pass them with (given, as they
/// give it, only to a config that declares it: the installer's does). kactus then reads the
/// network to change from them instead of GETting the pod again. podagent keeps, and so
/// passes, only those kactus reads attachments from (and network-status; see `pods.rs`).
fn runtime_config(pod: &Pod) -> Map<String, Value> {
    let annotations: Map<String, Value> = pod.annotations().into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    Map::from_iter([(POD_ANNOTATIONS_CAPABILITY.to_string(), Value::Object(annotations))])
}

fn file_stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_cni_args_value_is_checked_so_none_adds_an_item() {
        let pod = |namespace: &str, name: &str, uid: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"namespace": namespace, "name": name, "uid": uid}})).unwrap()
        };
        let sandbox = |id: &str| Sandbox { container_id: id.into(), netns: "/var/run/netns/x".into() };
        let change = |network: &str| Change { add: false, network: network.into(), ifname: "net1".into() };
        let args = cni_args(&pod("default", "app1", "0f3c-9a"), &sandbox("c-app1"), &change("mep/mp1#1")).unwrap();
        assert_eq!(
            args.render(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=app1;K8S_POD_INFRA_CONTAINER_ID=c-app1;\
             K8S_POD_UID=0f3c-9a;K8S_POD_NETWORK=mep/mp1#1"
        );
        let hostile = [
            cni_args(&pod("default", "app1", "u"), &sandbox("c"), &change("a/b;X=1")),
            cni_args(&pod("default;X=1", "app1", "u"), &sandbox("c"), &change("data")),
            cni_args(&pod("default", "app1;X=1", "u"), &sandbox("c"), &change("data")),
            cni_args(&pod("default", "app1", "u;X=1"), &sandbox("c"), &change("data")),
            cni_args(&pod("default", "app1", "u"), &sandbox("c;X=1"), &change("data")),
            cni_args(&pod("default", "app1", "u"), &sandbox(""), &change("data")),
        ];
        for outcome in hostile {
            assert!(outcome.as_ref().is_err_and(|e| e.contains("X=1") || e.contains("\"\"")), "{outcome:?}");
        }
    }

    #[test]
    fn first_config_in_lexical_order_and_first_plugin_of_a_conflist() {
        let dir = tempfile::tempdir().unwrap();
        let list = json!({"cniVersion": "1.0.0", "name": "k8s", "plugins": [{"type": "kactus", "delegates": []}, {"type": "portmap"}]});
        std::fs::write(dir.path().join("10-kactus.conflist"), list.to_string()).unwrap();
        std::fs::write(
            dir.path().join("20-other.conf"),
            json!({"cniVersion": "1.0.0", "name": "x", "type": "bridge"}).to_string(),
        )
        .unwrap();
        std::fs::write(dir.path().join("00-readme.txt"), "not a config").unwrap();
        let node = NodePlugin {
            conf_dir: dir.path().into(),
            bin_dir: "/nonexistent".into(),
            cni_path: String::new(),
            timeout: Duration::from_secs(1),
            mount_namespace: None,
        };
        let (conf, file) = node.node_config().unwrap();
        assert!(file.ends_with("10-kactus.conflist"));
        let stdin = conf.plugin_stdin(0, &Default::default(), None);
        assert_eq!(stdin, json!({"cniVersion": "1.0.0", "name": "k8s", "type": "kactus", "delegates": []}));
    }
}
