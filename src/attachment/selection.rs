//! What a pod asks for: network selection elements from its annotations.
//!
//! Two annotations are understood. Kaloom's `networks` (a JSON list of `name`, `namespace`,
//! `ifMac`, `isPrimary`) and the NPWG `k8s.v1.cni.cncf.io/networks` (a comma list
//! `[ns/]name[@ifname]` or a JSON list of selection elements). Both become [`NetworkSelection`]s.

use crate::cni::validate_ifname;
use serde::Deserialize;
use serde_json::{Map, Value};
use thiserror::Error;

/// The kactus (Kaloom) annotation key.
pub const KACTUS_NETWORKS: &str = "networks";
/// The NPWG annotation key; wins over the kactus one when both are present.
pub const NPWG_NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SelectionError {
    #[error("annotation {annotation:?} is not valid: {reason}")]
    Malformed { annotation: &'static str, reason: String },
    #[error("annotation {annotation:?}, element {index} ({name:?}): {reason}")]
    Element { annotation: &'static str, index: usize, name: String, reason: String },
}

/// One network the pod asks for, with the options it gives for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkSelection {
    pub name: String,
    /// `None`: the pod's own namespace.
    pub namespace: Option<String>,
    /// An explicit device name; otherwise it is derived from the attachment key.
    pub interface: Option<String>,
    pub mac: Option<String>,
    pub ips: Vec<String>,
    /// kactus `isPrimary`: this network becomes the pod's eth0 instead of the master.
    pub is_primary: bool,
    /// NPWG `default-route`: gateways to move the pod's default route to.
    pub default_route: Vec<String>,
    /// NPWG `cni-args`: merged into each delegate's `args.cni`.
    pub cni_args: Map<String, Value>,
    /// Other NPWG runtime options passed as capability args (portMappings, bandwidth, ...).
    pub runtime_options: Map<String, Value>,
}

/// Unknown keys are ignored, as Kaloom's kactus did.
#[derive(Deserialize)]
struct KactusElement {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default, rename = "ifMac")]
    if_mac: Option<String>,
    #[serde(default, rename = "isPrimary")]
    is_primary: bool,
}

/// Parses Kaloom's `networks` annotation: `[ { "name": "green" }, { "name": "blue", "ifMac": ".." } ]`.
pub fn parse_kactus_networks(text: &str) -> Result<Vec<NetworkSelection>, SelectionError> {
    let annotation = KACTUS_NETWORKS;
    let raw: Vec<Value> = serde_json::from_str(text).map_err(|e| SelectionError::Malformed {
        annotation,
        reason: format!("want a JSON list of {{\"name\": ...}}: {e}"),
    })?;
    let mut out = Vec::new();
    for (index, v) in raw.into_iter().enumerate() {
        let name_hint = v.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let elem: KactusElement = serde_json::from_value(v).map_err(|e| SelectionError::Element {
            annotation,
            index,
            name: name_hint.clone(),
            reason: e.to_string(),
        })?;
        let sel = NetworkSelection {
            name: elem.name,
            namespace: elem.namespace,
            mac: elem.if_mac,
            is_primary: elem.is_primary,
            ..Default::default()
        };
        validate(&sel).map_err(|reason| SelectionError::Element { annotation, index, name: name_hint, reason })?;
        out.push(sel);
    }
    check_list(annotation, &out)?;
    Ok(out)
}

/// Parses the NPWG annotation in either form.
pub fn parse_npwg_networks(text: &str) -> Result<Vec<NetworkSelection>, SelectionError> {
    let annotation = NPWG_NETWORKS;
    let trimmed = text.trim();
    let sels = if trimmed.starts_with('[') {
        let raw: Vec<Map<String, Value>> = serde_json::from_str(trimmed).map_err(|e| SelectionError::Malformed {
            annotation,
            reason: format!("want a JSON list of selection elements: {e}"),
        })?;
        let mut out = Vec::new();
        for (index, obj) in raw.into_iter().enumerate() {
            let name = obj.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let sel = npwg_element(obj).map_err(|reason| SelectionError::Element {
                annotation,
                index,
                name: name.clone(),
                reason,
            })?;
            validate(&sel).map_err(|reason| SelectionError::Element { annotation, index, name, reason })?;
            out.push(sel);
        }
        out
    } else {
        let mut out = Vec::new();
        for (index, item) in trimmed.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
            let (path, interface) = match item.split_once('@') {
                Some((p, i)) => (p, Some(i.to_string())),
                None => (item, None),
            };
            let (namespace, name) = match path.split_once('/') {
                Some((ns, n)) => (Some(ns.to_string()), n.to_string()),
                None => (None, path.to_string()),
            };
            let sel = NetworkSelection { name, namespace, interface, ..Default::default() };
            validate(&sel).map_err(|reason| SelectionError::Element {
                annotation,
                index,
                name: item.to_string(),
                reason,
            })?;
            out.push(sel);
        }
        out
    };
    check_list(annotation, &sels)?;
    Ok(sels)
}

fn npwg_element(mut obj: Map<String, Value>) -> Result<NetworkSelection, String> {
    let take_str = |obj: &mut Map<String, Value>, key: &str| -> Result<Option<String>, String> {
        match obj.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("\"{key}\" must be a string")),
        }
    };
    let take_list = |obj: &mut Map<String, Value>, key: &str| -> Result<Vec<String>, String> {
        match obj.remove(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("\"{key}\" must be a list of strings")))
                .collect(),
            Some(_) => Err(format!("\"{key}\" must be a list of strings")),
        }
    };
    let name = take_str(&mut obj, "name")?.ok_or("\"name\" is required")?;
    let namespace = take_str(&mut obj, "namespace")?;
    let interface = take_str(&mut obj, "interface")?;
    let mac = take_str(&mut obj, "mac")?;
    let ips = take_list(&mut obj, "ips")?;
    let default_route = take_list(&mut obj, "default-route")?;
    let cni_args = match obj.remove("cni-args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err("\"cni-args\" must be an object".into()),
    };
    let mut runtime_options = Map::new();
    for (key, cap) in [
        ("portMappings", "portMappings"),
        ("bandwidth", "bandwidth"),
        ("infiniband-guid", "infinibandGUID"),
        ("ipam-claim-reference", "ipamClaimReference"),
    ] {
        if let Some(v) = obj.remove(key) {
            runtime_options.insert(cap.to_string(), v);
        }
    }
    if runtime_options.contains_key("ipamClaimReference") && !ips.is_empty() {
        return Err("\"ipam-claim-reference\" cannot be given together with \"ips\"".into());
    }
    // multus (Go's decoder) ignores keys it does not know, and manifests in the wild carry
    // some (the seeds' "gateway"); refusing them would break pods that work with multus.
    for unknown in obj.keys() {
        log::warn!("network {name:?}: ignoring unknown selection key {unknown:?}");
    }
    Ok(NetworkSelection {
        name,
        namespace,
        interface,
        mac,
        ips,
        default_route,
        cni_args,
        runtime_options,
        ..Default::default()
    })
}

/// Per-element value checks shared by both annotations.
fn validate(sel: &NetworkSelection) -> Result<(), String> {
    check_dns1123("name", &sel.name, super::naming::MAX_NAME)?;
    if let Some(ns) = &sel.namespace {
        check_dns1123("namespace", ns, super::naming::MAX_NAMESPACE)?;
    }
    if let Some(ifname) = &sel.interface {
        validate_ifname(ifname)?;
    }
    if let Some(mac) = &sel.mac {
        check_mac(mac)?;
    }
    for ip in &sel.ips {
        check_cidr(ip)?;
    }
    for gw in &sel.default_route {
        gw.parse::<std::net::IpAddr>().map_err(|_| format!("default-route {gw:?} is not an IP address"))?;
    }
    Ok(())
}

fn check_list(annotation: &'static str, sels: &[NetworkSelection]) -> Result<(), SelectionError> {
    if sels.iter().filter(|s| s.is_primary).count() > 1 {
        return Err(SelectionError::Malformed { annotation, reason: "at most one network may be isPrimary".into() });
    }
    if sels.iter().filter(|s| !s.default_route.is_empty()).count() > 1 {
        return Err(SelectionError::Malformed {
            annotation,
            reason: "at most one element may set default-route".into(),
        });
    }
    Ok(())
}

/// A Kubernetes object name (DNS-1123: lower-case letters, digits, '-', '.', at most `max`
/// bytes, alphanumeric at both ends): what a name may hold, so none can carry a `;`, `=`, `/`
/// or `#` into a key or `CNI_ARGS`.
pub(crate) fn check_dns1123(what: &str, s: &str, max: usize) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= max
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {s:?} is not a DNS-1123 name (lower-case letters, digits, '-', '.')"))
    }
}

fn check_mac(mac: &str) -> Result<(), String> {
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!("mac {mac:?} is not a MAC address (want 6 hex pairs like 00:11:22:33:44:55)"))
    }
}

fn check_cidr(cidr: &str) -> Result<(), String> {
    let bad = || format!("ips entry {cidr:?} is not an address with prefix length (like 10.1.1.5/24)");
    let (ip, len) = cidr.split_once('/').ok_or_else(bad)?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kactus_seed_annotation() {
        let s = parse_kactus_networks(r#"[ { "name": "green" }, { "name": "blue", "ifMac": "00:11:22:33:44:55" }, { "name": "core", "isPrimary": true } ]"#).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].mac.as_deref(), Some("00:11:22:33:44:55"));
        assert!(s[2].is_primary);
    }

    #[test]
    fn kactus_errors_name_the_element() {
        let e = parse_kactus_networks(r#"[ { "name": "green" }, { "name": "blue", "ifMac": "zz" } ]"#).unwrap_err();
        assert!(e.to_string().contains("element 1 (\"blue\")"), "{e}");
        assert!(e.to_string().contains("mac \"zz\""), "{e}");
        let e = parse_kactus_networks("green").unwrap_err();
        assert!(e.to_string().contains("JSON list"), "{e}");
        let e = parse_kactus_networks(r#"[{"name":"a","isPrimary":true},{"name":"b","isPrimary":true}]"#).unwrap_err();
        assert!(e.to_string().contains("isPrimary"), "{e}");
    }

    #[test]
    fn npwg_comma_form() {
        let s = parse_npwg_networks("green, mep/mp1, other@eth5").unwrap();
        assert_eq!(s[1].namespace.as_deref(), Some("mep"));
        assert_eq!(s[1].name, "mp1");
        assert_eq!(s[2].interface.as_deref(), Some("eth5"));
    }

    #[test]
    fn npwg_json_form_with_options() {
        let s = parse_npwg_networks(
            r#"[{"name":"macvlan100","ips":["10.1.1.5/24"],"mac":"c2:11:22:33:44:55","default-route":["10.1.1.1"],"cni-args":{"foo":"bar"},"portMappings":[]}]"#,
        )
        .unwrap();
        assert_eq!(s[0].ips, vec!["10.1.1.5/24"]);
        assert_eq!(s[0].default_route, vec!["10.1.1.1"]);
        assert_eq!(s[0].cni_args["foo"], "bar");
        assert!(s[0].runtime_options.contains_key("portMappings"));
    }

    #[test]
    fn unknown_keys_are_ignored_like_multus_does() {
        let s = parse_npwg_networks(r#"[{"name":"macvlan100","gateway":["10.158.100.254"]}]"#).unwrap();
        assert_eq!(s[0].name, "macvlan100");
    }

    #[test]
    fn npwg_invalid_values() {
        let cases = [
            (r#"[{"name":"Green"}]"#, "DNS-1123"),
            (r#"[{"name":"a","ips":["10.1.1.5"]}]"#, "prefix length"),
            (r#"[{"name":"a","interface":"a/b"}]"#, "not a valid Linux device name"),
            (r#"[{"name":"a","interface":"waytoolongname16"}]"#, "longer than 15"),
            (r#"[{"name":"a","default-route":["1.1.1.1"]},{"name":"b","default-route":["2.2.2.2"]}]"#, "at most one"),
            (r#"[{"name":"a","ips":["1.1.1.1/24"],"ipam-claim-reference":"c"}]"#, "ipam-claim-reference"),
            (r#"[{"name":"a","ips":"10.1.1.5/24"}]"#, "list of strings"),
            ("a/b/c", "DNS-1123"),
        ];
        for (text, want) in cases {
            let e = parse_npwg_networks(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
