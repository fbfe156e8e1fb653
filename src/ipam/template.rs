//! Seed-compatible mode: the seeds' "node-local" shell wrapper, without the shell.
//!
//! ```sh
//! i=$(hostname | cut -d- -f2 | sed -re 's,^0+,,')
//! cfg=$(jq -r .ipam.cfg)
//! sed -e "s,\.x,\.$i," < /etc/cni/node-local/$cfg | /opt/cni/bin/host-local
//! ```
//!
//! `"ipam": {"type": "node-local", "cfg": "default", "nodeIndex": {"from": "hostname"}}` reads
//! `/etc/cni/node-local/default` (`templateDir` to change it), replaces every `.x` with `.`
//! and the node's index, exactly as the script's `sed` does, and hands out addresses from the
//! template's `ipam` section as host-local would, with the leases where host-local would
//! have put them (`<template dataDir>/<template name>`), so a node moves from the script to
//! this plugin without losing a lease. The index comes from the source the config names,
//! never from a guess: the seed's hostname rule (`vm-004` -> 4), or a label or annotation of
//! the node's Node object.

use super::fields::{invalid, opt_str};
use super::leases::DEFAULT_DATA_DIR;
use super::pools::Pools;
use crate::cni::CniError;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub const DEFAULT_TEMPLATE_DIR: &str = "/etc/cni/node-local";

/// Where a node's index comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexSource {
    /// The seed's rule: the second `-`-separated field of the hostname, a decimal number.
    Hostname,
    /// A field of the node's Node object.
    Node(NodeField),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeField {
    /// A label (e.g. `kactus.io/node-index: "4"`).
    Label(String),
    Annotation(String),
}

impl NodeField {
    /// What the field is called in messages, and its value on the Node.
    pub fn read<'a>(&self, meta: &'a crate::kube::ObjectMeta) -> (String, Option<&'a String>) {
        match self {
            NodeField::Label(key) => (format!("label {key}"), meta.labels.get(key)),
            NodeField::Annotation(key) => (format!("annotation {key}"), meta.annotations.get(key)),
        }
    }
}

/// A template as found on the node.
#[derive(Debug, Clone)]
pub struct Template {
    pub path: PathBuf,
    text: String,
    /// The template's `name`: the lease directory, as host-local would have used it.
    pub network: Option<String>,
    pub data_dir: PathBuf,
    pub index: IndexSource,
}

impl Template {
    pub fn load(ipam: &Map<String, Value>, cfg: &str) -> Result<Template, CniError> {
        if cfg.is_empty() || cfg.contains('/') || cfg == "." || cfg == ".." {
            return Err(invalid(format!("ipam.cfg {cfg:?} must be a file name in the template directory")));
        }
        let index = index_source(ipam.get("nodeIndex"))?;
        let dir = opt_str(ipam, "templateDir", "ipam.templateDir")?.unwrap_or(DEFAULT_TEMPLATE_DIR);
        let path = Path::new(dir).join(cfg);
        let text = crate::bounded::read_text(&path, crate::bounded::MAX_SMALL_FILE)
            .map_err(|e| invalid(format!("ipam.cfg {cfg:?}: template {} cannot be read ({e})", path.display())))?;
        // The template is JSON before substitution too (`.x` sits inside strings): where its
        // leases live must not depend on the index, or DEL could not find them.
        let raw: Value = serde_json::from_str(&text)
            .map_err(|e| invalid(format!("template {} is not JSON: {e}", path.display())))?;
        let network = raw.get("name").and_then(Value::as_str).map(str::to_string);
        let data_dir = raw["ipam"].get("dataDir").and_then(Value::as_str).filter(|s| !s.is_empty());
        for (key, value) in [("name", network.as_deref()), ("ipam.dataDir", data_dir)] {
            if value.is_some_and(|v| v.contains(".x")) {
                return Err(invalid(format!(
                    "template {}: {key} contains \".x\": the lease directory must not depend on the node index",
                    path.display()
                )));
            }
        }
        let data_dir = PathBuf::from(data_dir.unwrap_or(DEFAULT_DATA_DIR));
        Ok(Template { path, text, network, data_dir, index })
    }

    /// The template's pools for node index `index`: `.x` replaced, then read as host-local's
    /// `ipam` section.
    pub fn pools(&self, index: u32) -> Result<Pools, CniError> {
        let at = format!("template {} with node index {index}", self.path.display());
        let text = self.text.replace(".x", &format!(".{index}"));
        let conf: Value = serde_json::from_str(&text).map_err(|e| invalid(format!("{at}: not JSON: {e}")))?;
        let ipam = conf.get("ipam").and_then(Value::as_object).ok_or_else(|| {
            invalid(format!("{at}: no \"ipam\" object (the template is a host-local network config)"))
        })?;
        if ipam.contains_key("cfg") || mentions_key(&conf["ipam"], "nodeSliceSize") {
            return Err(invalid(format!(
                "{at}: a template is a host-local config; cfg and nodeSliceSize belong in the network config"
            )));
        }
        Pools::parse(ipam, &at)
    }
}

/// Whether `key` appears anywhere in `v`.
fn mentions_key(v: &Value, key: &str) -> bool {
    match v {
        Value::Object(m) => m.contains_key(key) || m.values().any(|v| mentions_key(v, key)),
        Value::Array(a) => a.iter().any(|v| mentions_key(v, key)),
        _ => false,
    }
}

/// `nodeIndex`: `{"from": "hostname"}`, `{"from": "label", "key": ...}` or
/// `{"from": "annotation", "key": ...}`; required, so no node guesses its index.
fn index_source(v: Option<&Value>) -> Result<IndexSource, CniError> {
    let usage = "say where this node's index comes from: ipam.nodeIndex {\"from\": \"hostname\"} (the seed's \
                 vm-004 -> 4 rule), {\"from\": \"label\", \"key\": \"<label>\"} or {\"from\": \"annotation\", \
                 \"key\": \"<annotation>\"} of the Node";
    let Some(obj) = v.and_then(Value::as_object) else {
        return Err(invalid(format!("ipam.cfg needs a node index source: {usage}")));
    };
    let key = || {
        obj.get("key")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .ok_or_else(|| invalid(format!("ipam.nodeIndex.key is required: {usage}")))
    };
    match obj.get("from").and_then(Value::as_str) {
        Some("hostname") => Ok(IndexSource::Hostname),
        Some("label") => Ok(IndexSource::Node(NodeField::Label(key()?))),
        Some("annotation") => Ok(IndexSource::Node(NodeField::Annotation(key()?))),
        _ => Err(invalid(format!("ipam.nodeIndex.from is not one of hostname, label, annotation: {usage}"))),
    }
}

/// The seed's `cut -d- -f2 | sed 's,^0+,,'`: `vm-004` -> 4. A hostname without a number in
/// that place is an error naming it (the script would have written `11.0..0/24`).
pub fn index_from_hostname(hostname: &str) -> Result<u32, String> {
    let field = hostname.trim().split('-').nth(1).unwrap_or_default();
    if field.is_empty() || !field.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "hostname {:?} has no node index: the seed's rule takes the number after the first '-' (vm-004 -> 4)",
            hostname.trim()
        ));
    }
    field.parse().map_err(|_| format!("hostname {hostname:?}: node index {field} is too large"))
}

/// A node index written in a label or annotation.
pub fn index_from_text(what: &str, text: &str) -> Result<u32, String> {
    text.trim().parse().map_err(|_| format!("{what} is {text:?}, not a node index (a whole number)"))
}

/// This machine's hostname (of the plugin's UTS namespace, which is the node's).
pub fn hostname() -> Result<String, CniError> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .map_err(|e| CniError::io("read the hostname", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The seed's "default" template, as the seed README has it.
    const SEED_DEFAULT: &str = include_str!("../../examples/node-local/default");

    fn template(dir: &Path, text: &str, ipam: Value) -> Result<Template, CniError> {
        std::fs::write(dir.join("default"), text).unwrap();
        let mut ipam = ipam.as_object().unwrap().clone();
        ipam.insert("templateDir".into(), json!(dir));
        Template::load(&ipam, "default")
    }

    #[test]
    fn the_seed_template_on_node_4() {
        let dir = tempfile::tempdir().unwrap();
        let t = template(dir.path(), SEED_DEFAULT, json!({"nodeIndex": {"from": "hostname"}})).unwrap();
        assert_eq!((t.network.as_deref(), t.data_dir.as_path()), (Some("default"), Path::new(DEFAULT_DATA_DIR)));
        let pools = t.pools(index_from_hostname("vm-004").unwrap()).unwrap();
        let super::super::range::RangeSpec::Fixed(r) = &pools.range_sets[0][0] else { panic!("fixed") };
        assert_eq!(
            (r.subnet.to_string(), r.gateway.map(|g| g.to_string())),
            ("11.0.4.0/24".into(), Some("11.0.4.1".into()))
        );
    }

    #[test]
    fn hostname_rule_is_the_seeds() {
        assert_eq!(index_from_hostname("vm-004"), Ok(4));
        assert_eq!(index_from_hostname("vm-12-b"), Ok(12));
        assert_eq!(index_from_hostname("vm-000"), Ok(0));
        assert!(index_from_hostname("node4").unwrap_err().contains("no node index"));
        assert!(index_from_hostname("vm-a4").is_err());
    }

    #[test]
    fn no_index_source_and_other_bad_templates() {
        let dir = tempfile::tempdir().unwrap();
        let e = template(dir.path(), SEED_DEFAULT, json!({})).unwrap_err();
        assert!(e.code == 7 && e.msg.contains("needs a node index source"), "{}", e.msg);
        let e = template(dir.path(), SEED_DEFAULT, json!({"nodeIndex": {"from": "label"}})).unwrap_err();
        assert!(e.msg.contains("nodeIndex.key is required"), "{}", e.msg);
        let moving = SEED_DEFAULT.replace("\"default\"", "\"net.x\"");
        let e = template(dir.path(), &moving, json!({"nodeIndex": {"from": "hostname"}})).unwrap_err();
        assert!(e.msg.contains("must not depend on the node index"), "{}", e.msg);
        let t = template(dir.path(), SEED_DEFAULT, json!({"nodeIndex": {"from": "hostname"}})).unwrap();
        let e = t.pools(300).unwrap_err();
        assert!(e.msg.contains("with node index 300") && e.msg.contains("11.0.300.0/24"), "{}", e.msg);
        let mut ipam = Map::new();
        ipam.insert("nodeIndex".into(), json!({"from": "hostname"}));
        assert!(Template::load(&ipam, "../etc/passwd").unwrap_err().msg.contains("must be a file name"));
        ipam.insert("templateDir".into(), json!("/dev"));
        let endless = Template::load(&ipam, "zero").unwrap_err();
        assert!(endless.msg.contains("larger than 1048576 bytes"), "{}", endless.msg);
        ipam.insert("templateDir".into(), json!(dir.path().join("none")));
        assert!(Template::load(&ipam, "default").unwrap_err().msg.contains("cannot be read"));
    }
}
