//! The kactus network configuration read from stdin, validated before anything runs.

use crate::cni::conf::flag;
use crate::cni::{CniError, NetworkConfig, Version};
use crate::devices::DevicePaths;
use crate::logging::{LogFile, LogOptions};
use log::LevelFilter;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni/kactus";
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/kactus/net.d";
const DEFAULT_API_TIMEOUT_SECS: f64 = 10.0;
const DEFAULT_DELEGATE_TIMEOUT_SECS: f64 = 120.0;

/// kactus's own config (DESIGN.md section 2). Drop-in for Kaloom's: `cniDir` is `cacheDir`,
/// `masterplugin` is `masterPlugin`. Unknown keys are ignored, as the spec asks.
#[derive(Debug, Clone)]
pub struct KactusConfig {
    pub cni_version: String,
    pub name: String,
    pub kubeconfig: Option<PathBuf>,
    /// The cluster's own network: sets up `CNI_IFNAME` and its result is ADD's result.
    pub master: NetworkConfig,
    /// Other delegates of the config: attached to every pod, devices named after them.
    pub delegates: Vec<NetworkConfig>,
    pub cache_dir: PathBuf,
    pub conf_dir: PathBuf,
    /// `logFile` with its `logOptions` (rotation); stderr without one.
    pub log_file: Option<LogFile>,
    pub log_level: LevelFilter,
    /// Bound on each apiserver request (retries come on top, bounded too).
    pub api_timeout: Duration,
    /// Bound on each delegate exec; a hung delegate is killed.
    pub delegate_timeout: Duration,
    pub namespace_isolation: bool,
    pub global_namespaces: Vec<String>,
    /// kubelet's `runtimeConfig` (portMappings, bandwidth, ...): for the pod's eth0 only.
    pub runtime_config: Map<String, Value>,
    pub prev_result: Option<Value>,
    /// CNI 1.1: CHECK and GC on the kactus network are no-ops when these are set.
    pub disable_check: bool,
    pub disable_gc: bool,
    /// CNI 1.1 GC: `cni.dev/valid-attachments`, the runtime's live (containerID, ifname).
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// kubelet's pod-resources socket and device-plugin checkpoint, the device-info dir.
    pub devices: DevicePaths,
    /// `podagentSocket`: podagent's fast-path socket, asked before the apiserver (see
    /// `plugin/node_answers.rs`); `None`: the apiserver only.
    pub podagent_socket: Option<PathBuf>,
}

pub use crate::cni::chain::{ValidAttachment, VALID_ATTACHMENTS};

impl KactusConfig {
    /// Parses stdin: undecodable JSON is code 6, anything malformed or contradictory code 7,
    /// each message naming the field.
    pub fn from_bytes(bytes: &[u8]) -> Result<KactusConfig, CniError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(crate::cni::code::DECODING_FAILURE, format!("config on stdin is not JSON: {e}"))
        })?;
        let obj = value.as_object().ok_or_else(|| CniError::invalid_config("config on stdin must be a JSON object"))?;
        Self::from_object(&own_plugin_of_conflist(obj))
    }

    fn from_object(obj: &Map<String, Value>) -> Result<KactusConfig, CniError> {
        let cni_version = match crate::cni::version::negotiate(obj)? {
            Some(v) => v,
            None => string(obj, "cniVersion")?.unwrap_or_default(),
        };
        Version::supported(&cni_version)?;
        let name = string(obj, "name")?.filter(|s| !s.is_empty()).ok_or_else(|| field("name", "is required"))?;
        let delegates_raw = match obj.get("delegates") {
            Some(Value::Array(list)) if !list.is_empty() => list,
            Some(Value::Array(_)) | None => {
                return Err(field("delegates", "must list at least the masterPlugin delegate"))
            }
            Some(_) => return Err(field("delegates", "must be a list")),
        };
        let mut master = None;
        let mut delegates = Vec::new();
        for (i, d) in delegates_raw.iter().enumerate() {
            let mut d = d.as_object().cloned().ok_or_else(|| field(&format!("delegates[{i}]"), "must be an object"))?;
            let is_master = ["masterPlugin", "masterplugin"].iter().try_fold(false, |any, key| {
                let set = flag(&d, key).map_err(|e| field(&format!("delegates[{i}].{key}"), &e))?;
                d.remove(*key);
                Ok::<_, CniError>(any || set)
            })?;
            let default_name = if is_master { name.clone() } else { String::new() };
            let net = NetworkConfig::parse(&Value::Object(d), &default_name, &cni_version)
                .and_then(|net| net.check_delegable().map(|()| net))
                .map_err(|e| e.context(format!("delegates[{i}]")))?;
            if is_master {
                if master.is_some() {
                    return Err(field("delegates", "more than one delegate has masterPlugin: true"));
                }
                master = Some(net);
            } else {
                if net.name.is_empty() {
                    return Err(field(
                        &format!("delegates[{i}].name"),
                        "is required for a delegate that is not the masterPlugin (its device is named after it)",
                    ));
                }
                if delegates.iter().any(|d: &NetworkConfig| d.name == net.name) {
                    return Err(field(
                        &format!("delegates[{i}].name"),
                        &format!("{:?} names another delegate too: both would be the same device", net.name),
                    ));
                }
                delegates.push(net);
            }
        }
        let master = master.ok_or_else(|| field("delegates", "no delegate has masterPlugin: true"))?;
        let cache_dir = path(obj, "cacheDir")?.or(path(obj, "cniDir")?).unwrap_or_else(|| DEFAULT_CACHE_DIR.into());
        let log_level = match string(obj, "logLevel")? {
            None => LevelFilter::Warn,
            Some(l) => crate::logging::parse_level(&l).ok_or_else(|| {
                field("logLevel", &format!("{l:?} is not one of error, warn, info, debug, trace, off"))
            })?,
        };
        let global_namespaces = match obj.get("globalNamespaces") {
            None | Some(Value::Null) => vec!["default".to_string()],
            Some(Value::String(s)) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(String::from).collect(),
            Some(_) => return Err(field("globalNamespaces", "must be a comma-separated string or a list")),
        };
        Ok(KactusConfig {
            cni_version,
            name,
            kubeconfig: path(obj, "kubeconfig")?,
            master,
            delegates,
            cache_dir,
            conf_dir: path(obj, "confDir")?.unwrap_or_else(|| DEFAULT_CONF_DIR.into()),
            log_file: log_file(obj)?,
            log_level,
            api_timeout: seconds(obj, "apiTimeoutSeconds", DEFAULT_API_TIMEOUT_SECS)?,
            delegate_timeout: seconds(obj, "delegateTimeoutSeconds", DEFAULT_DELEGATE_TIMEOUT_SECS)?,
            namespace_isolation: flag(obj, "namespaceIsolation").map_err(|e| field("namespaceIsolation", &e))?,
            global_namespaces,
            runtime_config: obj.get("runtimeConfig").and_then(Value::as_object).cloned().unwrap_or_default(),
            prev_result: obj.get("prevResult").filter(|v| !v.is_null()).cloned(),
            disable_check: flag(obj, "disableCheck").map_err(|e| field("disableCheck", &e))?,
            disable_gc: flag(obj, "disableGC").map_err(|e| field("disableGC", &e))?,
            valid_attachments: crate::cni::chain::valid_attachments(obj)?,
            devices: device_paths(obj)?,
            podagent_socket: path(obj, "podagentSocket")?,
        })
    }

    /// How long a call waits for its container's lock before it gives up with code 11 (the
    /// runtime tries again). The holder is another call on the same container, each of whose
    /// steps is bounded; this bound is for one that is stuck all the same. One delegate's
    /// bound: a call that waits longer than the slowest delegate may take is better retried.
    pub fn lock_wait(&self) -> Duration {
        self.delegate_timeout
    }
}

/// A runtime hands kactus its own plugin config, but an operator driving kactus by hand
/// feeds it the node's file, which the installer writes as a one-plugin conflist
/// (`00-kactus.conflist`). Such a list is read as the runtime would present it: the kactus
/// plugin with the list's `name`, `cniVersion` and `cniVersions`.
fn own_plugin_of_conflist(obj: &Map<String, Value>) -> Map<String, Value> {
    let own = match obj.get("plugins") {
        Some(Value::Array(plugins)) if !obj.contains_key("delegates") => plugins
            .iter()
            .filter_map(Value::as_object)
            .find(|p| p.get("type").and_then(Value::as_str) == Some("kactus")),
        _ => None,
    };
    let Some(own) = own else { return obj.clone() };
    let mut out = own.clone();
    for key in ["name", "cniVersion", "cniVersions"] {
        if let Some(v) = obj.get(key) {
            out.insert(key.to_string(), v.clone());
        }
    }
    out
}

/// Where kubelet and device plugins keep what allocated devices need, kubelet's and the
/// NPWG's paths unless the config says otherwise.
fn device_paths(obj: &Map<String, Value>) -> Result<DevicePaths, CniError> {
    let defaults = DevicePaths::default();
    let path = |key: &str, default: PathBuf| -> Result<PathBuf, CniError> {
        Ok(string(obj, key)?.filter(|s| !s.is_empty()).map(PathBuf::from).unwrap_or(default))
    };
    Ok(DevicePaths {
        pod_resources_socket: path("podResourcesSocket", defaults.pod_resources_socket)?,
        checkpoint_file: path("devicePluginCheckpoint", defaults.checkpoint_file)?,
        device_info_dir: path("deviceInfoDir", defaults.device_info_dir)?,
    })
}

fn field(name: &str, problem: &str) -> CniError {
    CniError::invalid_config(format!("config field \"{name}\" {problem}"))
}

fn string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(field(key, "must be a string")),
    }
}

/// A path setting; an empty one means unset, as for `kubeconfig` and `logFile` (an empty
/// `cacheDir` would otherwise put the cache in whatever directory the runtime runs in).
fn path(obj: &Map<String, Value>, key: &str) -> Result<Option<PathBuf>, CniError> {
    Ok(string(obj, key)?.filter(|s| !s.is_empty()).map(PathBuf::from))
}

/// `logFile`, rotated as `logOptions` says (multus's keys), else at the defaults: the plugin
/// runs on every pod start, and a log without a bound would fill the node's disk.
fn log_file(obj: &Map<String, Value>) -> Result<Option<LogFile>, CniError> {
    let Some(path) = path(obj, "logFile")? else { return Ok(None) };
    let options = match obj.get("logOptions") {
        None | Some(Value::Null) => LogOptions::default(),
        Some(v) => LogOptions::from_json(v).map_err(|e| field("logOptions", &e))?,
    };
    Ok(Some(LogFile { path, options }))
}

fn seconds(obj: &Map<String, Value>, key: &str, default: f64) -> Result<Duration, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Duration::from_secs_f64(default)),
        Some(v) => match v.as_f64() {
            // From a millisecond: a smaller positive number rounds to a bound of zero, which
            // fails every request or delegate at once.
            Some(s) if (0.001..=3600.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
            _ => Err(field(key, "must be a number of seconds between 0.001 and 3600")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<KactusConfig, CniError> {
        KactusConfig::from_bytes(v.to_string().as_bytes())
    }

    #[test]
    fn seed_config_with_kaloom_spellings() {
        let c = parse(json!({"name": "kactus-net", "type": "kactus", "cniDir": "/tmp/k",
            "delegates": [{"type": "flannel", "masterplugin": true, "delegate": {"isDefaultGateway": true}}]}))
        .unwrap();
        assert_eq!(c.master.types(), "flannel");
        assert_eq!(c.master.name, "kactus-net");
        assert!(!c.master.plugins[0].contains_key("masterplugin"));
        assert_eq!(c.cache_dir, PathBuf::from("/tmp/k"));
        assert_eq!(c.devices, DevicePaths::default(), "kubelet's and the NPWG's paths");
    }

    #[test]
    fn device_paths_can_be_moved() {
        let c = parse(json!({"name": "k", "delegates": [{"type": "a", "masterPlugin": true}],
            "podResourcesSocket": "/t/kubelet.sock", "devicePluginCheckpoint": "/t/cp", "deviceInfoDir": "/t/devinfo"}))
        .unwrap();
        assert_eq!(c.devices.pod_resources_socket, PathBuf::from("/t/kubelet.sock"));
        assert_eq!(c.devices.checkpoint_file, PathBuf::from("/t/cp"));
        assert_eq!(c.devices.device_info_dir, PathBuf::from("/t/devinfo"));
        let e = parse(json!({"name": "k", "deviceInfoDir": 7, "delegates": [{"type": "a", "masterPlugin": true}]}))
            .unwrap_err();
        assert!(e.code == 7 && e.msg.contains("deviceInfoDir"), "{}", e.msg);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"name": "k", "delegates": []}), "delegates"),
            (json!({"name": "k", "delegates": [{"type": "bridge"}]}), "masterPlugin"),
            (
                json!({"name": "k", "delegates": [{"type": "a", "masterPlugin": true}, {"type": "b", "masterPlugin": true}]}),
                "more than one",
            ),
            (json!({"delegates": [{"type": "a", "masterPlugin": true}]}), "\"name\""),
            (json!({"name": "k", "logLevel": "loud", "delegates": [{"type": "a", "masterPlugin": true}]}), "logLevel"),
            (json!({"name": "k", "delegates": [{"type": "../sh", "masterPlugin": true}]}), "delegates[0]"),
        ];
        for (cfg, want) in cases {
            let e = parse(cfg.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{cfg}");
            assert!(e.msg.contains(want), "{cfg}: {}", e.msg);
        }
    }

    #[test]
    fn cni_versions_and_cni_1_1_keys() {
        let c = parse(json!({"name": "k", "cniVersion": "0.4.0", "cniVersions": ["1.0.0", "1.1.0", "5.0.0"],
            "disableCheck": true, "disableGC": true,
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
            "delegates": [{"type": "a", "masterPlugin": true}]}))
        .unwrap();
        assert_eq!(c.cni_version, "1.1.0");
        assert_eq!(c.master.cni_version, "1.1.0", "a delegate without its own version gets kactus's");
        assert!(c.disable_check && c.disable_gc);
        assert_eq!(
            c.valid_attachments,
            Some(vec![ValidAttachment { container_id: "c1".into(), ifname: "eth0".into() }])
        );
        let e =
            parse(json!({"name": "k", "cniVersions": ["3.0.0"], "delegates": [{"type": "a", "masterPlugin": true}]}))
                .unwrap_err();
        assert_eq!(e.code, 1, "{}", e.msg);
        let e = parse(json!({"name": "k", "cni.dev/valid-attachments": [{"ifname": 3}],
            "delegates": [{"type": "a", "masterPlugin": true}]}))
        .unwrap_err();
        assert!(e.code == 7 && e.msg.contains("valid-attachments"), "{}", e.msg);
    }

    #[test]
    fn the_nodes_conflist_can_be_fed_by_hand() {
        let list = json!({"cniVersion": "1.0.0", "name": "kactus-net", "plugins": [
            {"type": "kactus", "cacheDir": "/tmp/k", "delegates": [{"type": "flannel", "masterPlugin": true}]}]});
        let c = parse(list).unwrap();
        assert_eq!((c.name.as_str(), c.cni_version.as_str()), ("kactus-net", "1.0.0"));
        assert_eq!(c.master.types(), "flannel");
        assert_eq!(c.cache_dir, PathBuf::from("/tmp/k"));
    }

    #[test]
    fn booleans_are_booleans() {
        let with = |key: &str, v: Value| {
            let mut c = json!({"name": "k", "delegates": [{"type": "a", "masterPlugin": true}]});
            c[key] = v;
            parse(c)
        };
        assert!(with("namespaceIsolation", json!("true")).unwrap().namespace_isolation);
        // The stdin_config fuzz target's check: each of these was read as false, so a quoted
        // or misspelt "namespaceIsolation" quietly let pods use other namespaces' networks.
        for key in ["namespaceIsolation", "disableCheck", "disableGC"] {
            let e = with(key, json!("yes")).unwrap_err();
            assert!(e.code == 7 && e.msg.contains(key), "{}", e.msg);
        }
        let e = parse(json!({"name": "k", "delegates": [{"type": "a", "masterPlugin": 1}]})).unwrap_err();
        assert!(e.msg.contains("delegates[0].masterPlugin"), "{}", e.msg);
    }

    #[test]
    fn config_delegates_have_distinct_names_and_empty_paths_mean_the_default() {
        let two = json!({"name": "k", "cacheDir": "", "confDir": "", "delegates": [{"type": "a", "masterPlugin": true},
            {"name": "side", "type": "b"}, {"name": "side", "type": "c"}]});
        let e = parse(two).unwrap_err();
        assert!(e.code == 7 && e.msg.contains("delegates[2].name"), "{}", e.msg);
        let c = parse(json!({"name": "k", "cacheDir": "", "cniDir": "", "confDir": "",
            "delegates": [{"type": "a", "masterPlugin": true}]}))
        .unwrap();
        assert_eq!((c.cache_dir.to_str(), c.conf_dir.to_str()), (Some(DEFAULT_CACHE_DIR), Some(DEFAULT_CONF_DIR)));
    }

    #[test]
    fn bounds_are_never_zero() {
        // The stdin_config fuzz target's check: 1e-10 was accepted and became a zero bound.
        for key in ["apiTimeoutSeconds", "delegateTimeoutSeconds"] {
            let mut c = json!({"name": "k", "delegates": [{"type": "a", "masterPlugin": true}]});
            c[key] = json!(1e-10);
            let e = parse(c.clone()).unwrap_err();
            assert!(e.code == 7 && e.msg.contains(key), "{}", e.msg);
            c[key] = json!(0.001);
            assert!(!parse(c).unwrap().api_timeout.is_zero());
        }
    }

    #[test]
    fn bad_json_is_code_6() {
        assert_eq!(KactusConfig::from_bytes(b"{not json").unwrap_err().code, 6);
    }
}
