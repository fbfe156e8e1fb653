//! From a pod's annotations to the list of attachments to make: selection parsing,
//! device naming, and the pod-level rules (one primary, unique device names).

pub mod attested;
pub mod dynamic;
pub mod naming;
pub mod selection;

pub use dynamic::DynamicTarget;
pub use naming::{attachment_key, check_attachment_key, device_name_for};
pub use selection::{
    parse_kactus_networks, parse_npwg_networks, NetworkSelection, SelectionError, KACTUS_NETWORKS, NPWG_NETWORKS,
};

use std::collections::{BTreeMap, HashMap, HashSet};

/// A selection resolved for one pod: which namespace its network lives in, its key and device.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub selection: NetworkSelection,
    pub namespace: String,
    /// The name a dynamic `K8S_POD_NETWORK` refers to and the device name is hashed from.
    pub key: String,
    pub ifname: String,
}

impl Attachment {
    /// `namespace/name` for messages and the network-status annotation.
    pub fn network_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.selection.name)
    }
}

/// The pod annotations attachments are read from, and the only ones: podagent keeps these
/// of each pod to hand kactus (see `podagent::pods`), so reading another here means adding it.
pub const NETWORK_ANNOTATIONS: [&str; 2] = [NPWG_NETWORKS, KACTUS_NETWORKS];

/// Reads the pod's selections: the NPWG annotation if present (the kactus one is then
/// ignored, with a warning), else the kactus `networks` annotation, else none.
pub fn selections_from_annotations(
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    match (annotations.get(NPWG_NETWORKS), annotations.get(KACTUS_NETWORKS)) {
        (Some(npwg), kactus) => {
            if kactus.is_some() {
                log::warn!(
                    "pod has both {NPWG_NETWORKS:?} and {KACTUS_NETWORKS:?} annotations; using {NPWG_NETWORKS:?}"
                );
            }
            parse_npwg_networks(npwg)
        }
        (None, Some(kactus)) => parse_kactus_networks(kactus),
        (None, None) => Ok(Vec::new()),
    }
}

/// Resolves namespaces, keys and device names for a pod, refusing duplicate device names
/// (code 7 territory) before anything is created. `primary_ifname` is what an `isPrimary`
/// network gets (the runtime's `CNI_IFNAME`).
pub fn resolve(
    pod_namespace: &str,
    selections: Vec<NetworkSelection>,
    primary_ifname: &str,
) -> Result<Vec<Attachment>, String> {
    let mut repeats: HashMap<(String, String), usize> = HashMap::new();
    let mut seen_ifnames: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for sel in selections {
        let namespace = sel.namespace.clone().unwrap_or_else(|| pod_namespace.to_string());
        let count = repeats.entry((namespace.clone(), sel.name.clone())).or_insert(0);
        let key = attachment_key(pod_namespace, &namespace, &sel.name, *count);
        *count += 1;
        let ifname = if sel.is_primary {
            primary_ifname.to_string()
        } else {
            sel.interface.clone().unwrap_or_else(|| device_name_for(&key))
        };
        if !seen_ifnames.insert(ifname.clone()) {
            return Err(format!(
                "two attachments would both be device {ifname:?} (second: network {namespace}/{})",
                sel.name
            ));
        }
        out.push(Attachment { selection: sel, namespace, key, ifname });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_and_cross_namespace_get_distinct_devices() {
        let sels = parse_npwg_networks("green, green, mep/mp1").unwrap();
        let atts = resolve("default", sels, "eth0").unwrap();
        assert_eq!(atts[0].ifname, "net9f27410725ab");
        assert_eq!(atts[1].key, "green#1");
        assert_eq!(atts[1].ifname, device_name_for("green#1"));
        assert_eq!(atts[2].key, "mep/mp1");
        assert_eq!(atts[2].network_ref(), "mep/mp1");
    }

    #[test]
    fn explicit_interface_collision_is_refused() {
        let sels = parse_npwg_networks("a@net1, b@net1").unwrap();
        assert!(resolve("default", sels, "eth0").unwrap_err().contains("net1"));
    }

    #[test]
    fn npwg_wins_over_kactus() {
        let mut ann = BTreeMap::new();
        ann.insert(KACTUS_NETWORKS.to_string(), r#"[{"name":"green"}]"#.to_string());
        ann.insert(NPWG_NETWORKS.to_string(), "blue".to_string());
        assert_eq!(selections_from_annotations(&ann).unwrap()[0].name, "blue");
    }
}
