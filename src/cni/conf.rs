//! Network configurations: one plugin (`.conf`) or a chain (`.conflist`), as delegates get them.

use super::error::CniError;
use super::version::Version;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// A network configuration, normalised to a chain of plugins.
///
/// A single conf is a chain of one whose plugin keeps every key it had; libcni sends it to
/// the plugin as it was, and so does kactus (plus `runtimeConfig` for declared capabilities).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub name: String,
    pub cni_version: String,
    /// Each plugin's keys, without `name` and `cniVersion` (injected per call).
    pub plugins: Vec<Map<String, Value>>,
    /// Whether it came as a conflist (`plugins` key); kept so the cache holds the same shape.
    pub is_list: bool,
    pub disable_check: bool,
    pub disable_gc: bool,
}

impl NetworkConfig {
    /// Parses a conf or conflist. `name` and `cniVersion` missing from it are filled from
    /// `default_name` / `default_version` (the NAD's name, the kactus config's version).
    pub fn parse(value: &Value, default_name: &str, default_version: &str) -> Result<NetworkConfig, CniError> {
        let obj = value.as_object().ok_or_else(|| CniError::invalid_config("network config must be a JSON object"))?;
        let name = opt_str(obj, "name")?.filter(|s| !s.is_empty()).unwrap_or(default_name).to_string();
        let cni_version = match super::version::negotiate(obj).map_err(|e| e.context(format!("network {name:?}")))? {
            Some(v) => v,
            None => opt_str(obj, "cniVersion")?.filter(|s| !s.is_empty()).unwrap_or(default_version).to_string(),
        };
        Version::supported(&cni_version).map_err(|e| e.context(format!("network {name:?}")))?;
        let (plugins, is_list) = match obj.get("plugins") {
            Some(Value::Array(list)) => {
                if list.is_empty() {
                    return Err(CniError::invalid_config(format!("network {name:?}: \"plugins\" is empty")));
                }
                let mut plugins = Vec::new();
                for (i, p) in list.iter().enumerate() {
                    let p = p.as_object().ok_or_else(|| {
                        CniError::invalid_config(format!("network {name:?}: plugins[{i}] must be an object"))
                    })?;
                    plugins.push(strip_identity(p));
                }
                (plugins, true)
            }
            Some(_) => return Err(CniError::invalid_config(format!("network {name:?}: \"plugins\" must be a list"))),
            None => (vec![strip_identity(obj)], false),
        };
        for (i, p) in plugins.iter().enumerate() {
            let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
            validate_plugin_type(t).map_err(|e| {
                let at = if is_list { format!("plugins[{i}].type") } else { "type".into() };
                CniError::invalid_config(format!("network {name:?}: {at}: {e}"))
            })?;
        }
        // List-level settings, as libcni reads them; a single conf has none.
        let list_flag = |key: &str| match is_list {
            true => flag(obj, key).map_err(|e| CniError::invalid_config(format!("network {name:?}: \"{key}\" {e}"))),
            false => Ok(false),
        };
        Ok(NetworkConfig {
            disable_check: list_flag("disableCheck")?,
            disable_gc: list_flag("disableGC")?,
            name,
            cni_version,
            plugins,
            is_list,
        })
    }

    pub fn from_bytes(bytes: &[u8], default_name: &str, default_version: &str) -> Result<NetworkConfig, CniError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                super::error::code::DECODING_FAILURE,
                format!("network {default_name:?}: config is not JSON: {e}"),
            )
        })?;
        Self::parse(&value, default_name, default_version)
    }

    /// The `type` of plugin `index` (the binary looked up in `CNI_PATH`).
    pub fn plugin_type(&self, index: usize) -> &str {
        self.plugins.get(index).and_then(|p| p.get("type")).and_then(Value::as_str).unwrap_or_default()
    }

    /// Whether kactus may run this network as a delegate: no plugin of it is a meta-plugin
    /// ([`refuse_meta_plugin`]). Checked where a network is read (NAD, Kaloom `Network`,
    /// `confDir`, the kactus config's delegates) and again before every delegate call, so a
    /// cache written before this check cannot run one either.
    pub fn check_delegable(&self) -> Result<(), CniError> {
        for i in 0..self.plugins.len() {
            refuse_meta_plugin(self.plugin_type(i))
                .map_err(|e| CniError::invalid_config(format!("network {:?}: {e}", self.name)))?;
        }
        Ok(())
    }

    /// The plugin types of the chain, for messages ("macvlan+tuning").
    pub fn types(&self) -> String {
        (0..self.plugins.len()).map(|i| self.plugin_type(i)).collect::<Vec<_>>().join("+")
    }

    /// Capabilities any plugin of the chain declares (`"capabilities": {"mac": true}`).
    pub fn capabilities(&self) -> BTreeSet<String> {
        self.plugins.iter().flat_map(plugin_capabilities).collect()
    }

    /// The config as JSON, in the shape it came in (conf or conflist).
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), self.cni_version.clone().into());
        out.insert("name".into(), self.name.clone().into());
        if self.is_list {
            if self.disable_check {
                out.insert("disableCheck".into(), true.into());
            }
            if self.disable_gc {
                out.insert("disableGC".into(), true.into());
            }
            out.insert("plugins".into(), Value::Array(self.plugins.iter().cloned().map(Value::Object).collect()));
        } else if let Some(p) = self.plugins.first() {
            out.extend(p.clone());
        }
        Value::Object(out)
    }

    /// What plugin `index` receives on stdin: its keys, the network's name and version, the
    /// runtime config for the capabilities it declares (as libcni does), and `prevResult`.
    pub fn plugin_stdin(
        &self,
        index: usize,
        runtime_config: &Map<String, Value>,
        prev_result: Option<&Value>,
    ) -> Value {
        let plugin = self.plugins.get(index).cloned().unwrap_or_default();
        let caps = plugin_capabilities(&plugin);
        let mut out = Map::new();
        out.insert("cniVersion".into(), self.cni_version.clone().into());
        out.insert("name".into(), self.name.clone().into());
        out.extend(plugin);
        let rc: Map<String, Value> =
            runtime_config.iter().filter(|(k, _)| caps.contains(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        if !rc.is_empty() {
            out.insert("runtimeConfig".into(), Value::Object(rc));
        }
        if let Some(prev) = prev_result {
            out.insert("prevResult".into(), prev.clone());
        }
        Value::Object(out)
    }

    pub fn version(&self) -> Version {
        Version::parse(&self.cni_version).unwrap_or(Version(0, 1, 0))
    }
}

fn strip_identity(obj: &Map<String, Value>) -> Map<String, Value> {
    let mut m = obj.clone();
    m.remove("name");
    m.remove("cniVersion");
    m.remove("plugins");
    m.remove("disableCheck");
    m.remove("disableGC");
    m
}

fn plugin_capabilities(plugin: &Map<String, Value>) -> Vec<String> {
    match plugin.get("capabilities") {
        Some(Value::Object(caps)) => {
            caps.iter().filter(|(_, on)| on.as_bool() == Some(true)).map(|(k, _)| k.clone()).collect()
        }
        _ => Vec::new(),
    }
}

/// A boolean setting, read as libcni reads a conflist's: `true`/`false`, or those words in a
/// string (any case). Anything else is refused rather than read as false, so a quoted or
/// misspelt value cannot quietly switch off what the operator switched on.
pub fn flag(obj: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!("must be true or false, not {other}")),
    }
}

fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(CniError::invalid_config(format!("\"{key}\" must be a string"))),
    }
}

/// A delegate `type` is a bare binary name looked up in `CNI_PATH`; anything that could
/// reach outside it (`/`, `..`) is refused, so a NAD cannot make kactus exec an arbitrary file.
pub fn validate_plugin_type(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("plugin type is missing".into());
    }
    if t.contains('/') || t.contains('\0') || t == "." || t == ".." {
        return Err(format!("plugin type {t:?} must be a bare binary name found in CNI_PATH"));
    }
    Ok(())
}

/// Meta-plugins: plugins that read a kubeconfig, a cache directory, a log file and more
/// delegates from the config they are given. kactus runs as root with a config a tenant may
/// have written (a NAD, a Kaloom `Network`), so a network's config must never run one of them:
/// through it the tenant would choose the files root opens, the directories its GC empties and
/// the networks namespace isolation refuses. kactus itself is here under every name it ships
/// as; the running binary's own name is refused too (an install under another name).
pub const META_PLUGINS: &[&str] = &["kactus", "multus", "multus-shim", "danm", "genie", "cni-genie"];

/// Refuses a delegate `type` that is a meta-plugin ([`META_PLUGINS`], or this binary's own
/// name): kactus delegates to plugins that make devices, never to another meta-plugin.
pub fn refuse_meta_plugin(t: &str) -> Result<(), String> {
    let own = std::env::current_exe().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if META_PLUGINS.contains(&t) || own.as_deref() == Some(t) {
        return Err(format!(
            "plugin type {t:?} is a meta-plugin: a network's config may only name plugins that make devices, \
             never kactus or another meta-plugin (it would run as root with a config the network's author wrote)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conf_gets_nad_name_and_default_version() {
        let n = NetworkConfig::parse(&json!({"type": "macvlan", "master": "eth0"}), "green", "1.0.0").unwrap();
        assert_eq!((n.name.as_str(), n.cni_version.as_str(), n.types()), ("green", "1.0.0", "macvlan".to_string()));
        let stdin = n.plugin_stdin(0, &Map::new(), None);
        assert_eq!(stdin, json!({"cniVersion": "1.0.0", "name": "green", "type": "macvlan", "master": "eth0"}));
    }

    #[test]
    fn conflist_plugins_get_runtime_config_only_for_their_capabilities() {
        let list = json!({"cniVersion": "0.4.0", "name": "macvlan100", "plugins": [
            {"type": "macvlan", "capabilities": {"ips": true}, "ipam": {"type": "static"}},
            {"type": "tuning", "capabilities": {"mac": true}}]});
        let n = NetworkConfig::parse(&list, "x", "1.0.0").unwrap();
        assert_eq!(n.name, "macvlan100");
        let rc: Map<String, Value> =
            json!({"ips": ["10.1.1.5/24"], "mac": "c2:11:22:33:44:55"}).as_object().unwrap().clone();
        let first = n.plugin_stdin(0, &rc, None);
        assert_eq!(first["runtimeConfig"], json!({"ips": ["10.1.1.5/24"]}));
        let prev = json!({"cniVersion": "0.4.0"});
        let second = n.plugin_stdin(1, &rc, Some(&prev));
        assert_eq!(second["runtimeConfig"], json!({"mac": "c2:11:22:33:44:55"}));
        assert_eq!(second["prevResult"], prev);
        assert_eq!(n.to_json()["plugins"][1]["type"], "tuning");
    }

    #[test]
    fn paths_in_plugin_type_are_refused() {
        for t in ["../../bin/sh", "/usr/bin/id", ""] {
            let e = NetworkConfig::parse(&json!({"type": t}), "n", "1.0.0").unwrap_err();
            assert_eq!(e.code, 7, "{t}: {}", e.msg);
        }
    }

    #[test]
    fn list_flags_are_read_as_libcni_reads_them() {
        let list = |v: Value| json!({"name": "n", "disableCheck": v, "plugins": [{"type": "bridge"}]});
        for (v, want) in [(json!(true), true), (json!("True"), true), (json!("false"), false), (json!(null), false)] {
            assert_eq!(NetworkConfig::parse(&list(v.clone()), "n", "1.0.0").unwrap().disable_check, want, "{v}");
        }
        // The network_config fuzz target's check: these were read as false, so CHECK ran.
        for v in [json!("yes"), json!(1), json!(["true"])] {
            let e = NetworkConfig::parse(&list(v.clone()), "n", "1.0.0").unwrap_err();
            assert!(e.code == 7 && e.msg.contains("disableCheck"), "{v}: {}", e.msg);
        }
    }

    #[test]
    fn unsupported_version_is_code_1() {
        let e = NetworkConfig::parse(&json!({"type": "bridge", "cniVersion": "3.0.0"}), "n", "1.0.0").unwrap_err();
        assert_eq!(e.code, 1);
    }
}
