//! Calling the node's CNI plugin the way the runtime does, for one network of a running pod.
//!
//! The node's plugin is the first config in lexical order in the CNI conf dir (kactus when it
//! is installed as it should be), run from the CNI bin dir with `K8S_POD_NETWORK` in
//! `CNI_ARGS`, so kactus acts on that one network only, in the host's filesystem (see
//! [`super::mount_ns`]).

use super::diff::Change;
use super::mount_ns::MountNamespace;
use super::sandbox::Sandbox;
use crate::cni::env::{K8S_POD_INFRA_CONTAINER_ID, K8S_POD_NAME, K8S_POD_NAMESPACE, K8S_POD_NETWORK, K8S_POD_UID};
use crate::cni::{exec, CniArgs, CniError, Command, Invocation, NetworkConfig};
use crate::plugin::plan::POD_ANNOTATIONS_CAPABILITY;
use k8s_openapi::api::core::v1::Pod;
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
        let meta = &pod.metadata;
        let mut args = CniArgs(vec![("IgnoreUnknown".into(), "1".into())]);
        args.set(K8S_POD_NAMESPACE, meta.namespace.as_deref().unwrap_or_default());
        args.set(K8S_POD_NAME, meta.name.as_deref().unwrap_or_default());
        args.set(K8S_POD_INFRA_CONTAINER_ID, &sandbox.container_id);
        args.set(K8S_POD_UID, meta.uid.as_deref().unwrap_or_default());
        args.set(K8S_POD_NETWORK, &change.network);
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

/// What the runtime hands the plugin about the pod, as podagent has it from its watch: the
/// pod's annotations under the capability containerd and CRI-O pass them with (given, as they
/// give it, only to a config that declares it: the installer's does). kactus then reads the
/// network to change from them instead of GETting the pod again.
fn runtime_config(pod: &Pod) -> Map<String, Value> {
    let annotations: Map<String, Value> =
        pod.metadata.annotations.iter().flatten().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
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
