//! The kactus CNI config the installer writes: the cluster's default network wrapped as the
//! `masterPlugin` delegate (DESIGN.md section 2).
//!
//! The file is written as a one-plugin `.conflist`. The kactus plugin reads a single plugin
//! conf on stdin either way (libcni injects the list's `name` and `cniVersion` into it), and
//! runtimes load `.conf` files by converting them into such a list; but CNI spec 1.0+ defines
//! only the list format, and list-level settings (`disableCheck`, `disableGC` of CNI 1.1) only
//! exist there.
//!
//! Capabilities: a runtime passes `runtimeConfig` (kubelet's `portMappings`, `bandwidth`,
//! `ipRanges`, `dns`, ...) only for capabilities the *invoked* plugin's config declares. kactus
//! is the invoked plugin, so it declares the union of the capabilities its master delegate's
//! plugins declare; otherwise e.g. hostPort would silently stop working behind kactus. It
//! also declares `io.kubernetes.cri.pod-annotations`, under which containerd and CRI-O pass
//! the pod's annotations, so an ADD need not read the pod from the apiserver (it is never
//! forwarded to the master unless the master declares it too).
//!
//! `podagentSocket` names podagent's fast-path socket: on a node where podagent runs, kactus
//! asks it before the apiserver; where it does not, the socket is absent and kactus reads the
//! apiserver itself at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::default_network::DefaultNetwork;
use super::InstallError;
use crate::plugin::plan::POD_ANNOTATIONS_CAPABILITY;

/// What the generated config needs besides the default network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// `name` of the kactus network.
    pub name: String,
    /// Host path of the plugin's kubeconfig.
    pub kubeconfig: PathBuf,
    /// Host path of the plugin's cache.
    pub cache_dir: PathBuf,
    /// `cniVersion` override; the default network's when `None`.
    pub cni_version: Option<String>,
    /// `podagentSocket`: podagent's fast-path socket (see `plugin/node_answers.rs`).
    pub podagent_socket: Option<PathBuf>,
    pub log: PluginLog,
}

/// The plugin's `logFile`, `logLevel` and `logOptions`: by default a file the node keeps,
/// rotated, so an operator debugging a pod start finds what kactus did on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLog {
    /// A host path; `None` leaves the plugin on the runtime's stderr.
    pub file: Option<PathBuf>,
    pub level: log::LevelFilter,
    pub max_size_mib: u64,
    pub max_backups: u32,
}

/// The kactus plugin conf wrapping `default` as its master delegate:
/// `{"cniVersion","name","type":"kactus","kubeconfig","cacheDir","logLevel","logFile",
/// "logOptions","delegates":[..],"capabilities"}`.
pub fn render_kactus_config(default: &DefaultNetwork, opts: &RenderOptions) -> Result<Value, InstallError> {
    let cni_version = match (&opts.cni_version, default.config.get("cniVersion")) {
        (Some(version), _) => version.clone(),
        (None, Some(Value::String(version))) if !version.is_empty() => version.clone(),
        _ => {
            return Err(InstallError::InvalidDefaultNetwork {
                path: default.path.clone(),
                reason: "it has no \"cniVersion\", so kactus cannot pick one; pass --cni-version".into(),
            })
        }
    };

    let mut delegate = default.config.clone();
    if let Some(object) = delegate.as_object_mut() {
        object.insert("masterPlugin".into(), Value::Bool(true));
    }

    let mut config = json!({
        "cniVersion": cni_version,
        "name": opts.name,
        "type": "kactus",
        "kubeconfig": opts.kubeconfig,
        "cacheDir": opts.cache_dir,
        "logLevel": opts.log.level.as_str().to_ascii_lowercase(),
        "delegates": [delegate],
    });
    if let (Some(file), Some(object)) = (&opts.log.file, config.as_object_mut()) {
        object.insert("logFile".into(), json!(file));
        object
            .insert("logOptions".into(), json!({"maxSize": opts.log.max_size_mib, "maxBackups": opts.log.max_backups}));
    }
    if let (Some(socket), Some(object)) = (&opts.podagent_socket, config.as_object_mut()) {
        object.insert("podagentSocket".into(), json!(socket));
    }
    let mut capabilities = delegate_capabilities(&default.config);
    capabilities.insert(POD_ANNOTATIONS_CAPABILITY.into(), Value::Bool(true));
    if let Some(object) = config.as_object_mut() {
        object.insert("capabilities".into(), Value::Object(capabilities));
    }
    Ok(config)
}

/// The capabilities (set to `true`) declared by a conf, or by any plugin of a conflist.
pub fn delegate_capabilities(delegate: &Value) -> Map<String, Value> {
    let plugins: Vec<&Value> = match delegate.get("plugins").and_then(Value::as_array) {
        Some(plugins) => plugins.iter().collect(),
        None => vec![delegate],
    };
    let mut union = BTreeMap::new();
    for plugin in plugins {
        if let Some(capabilities) = plugin.get("capabilities").and_then(Value::as_object) {
            for (name, enabled) in capabilities {
                if enabled.as_bool() == Some(true) {
                    union.insert(name.clone(), Value::Bool(true));
                }
            }
        }
    }
    union.into_iter().collect()
}

/// The file content: the kactus conf as the single plugin of a list carrying its `cniVersion`
/// and `name` (which libcni injects back into the plugin conf when invoking it).
pub fn render_kactus_conflist(kactus_config: &Value) -> Value {
    let mut plugin = kactus_config.clone();
    let mut list = Map::new();
    if let Some(object) = plugin.as_object_mut() {
        for key in ["cniVersion", "name"] {
            if let Some(value) = object.remove(key) {
                list.insert(key.into(), value);
            }
        }
    }
    list.insert("plugins".into(), Value::Array(vec![plugin]));
    Value::Object(list)
}
