//! What a pod asks for against what it has, as the CNI calls that close the gap.
//!
//! Desired: the pod's network annotations, read by the same parser kactus uses. Had: the
//! `network-status` annotation kactus writes after every ADD and dynamic add/delete, so the
//! answer survives a podagent restart and reflects what kactus really did. The two are
//! compared by device name, which is stable per network (see `attachment::naming`).

use super::pods::Pod;
use crate::attachment::naming::{MAX_NAME, MAX_NAMESPACE};
use crate::attachment::selection::check_dns1123;
use crate::attachment::{self, attachment_key, device_name_for};
use crate::plugin::status::NETWORK_STATUS;
use serde::Deserialize;
use std::collections::HashSet;

/// Why a pod is left alone this time: kubelet owns pods being created or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NotRunning,
    Deleting,
    HostNetwork,
    /// kactus has not finished the pod's first ADD (or is not the node's plugin).
    NoNetworkStatus,
}

/// One dynamic CNI call for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub add: bool,
    /// What goes in `K8S_POD_NETWORK`: the attachment key (`data`, `mep/mp1`, `green#1`).
    pub network: String,
    /// The device the call creates or removes.
    pub ifname: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.add { "add" } else { "delete" };
        write!(f, "{verb} network {} ({})", self.network, self.ifname)
    }
}

/// A pod's pending changes, ADDs first, and the `network-status` entries left out of the
/// comparison because their name cannot be a network's (`namespace/name` of DNS-1123 names):
/// whoever can write the pod's annotations can write that one too, and a name like
/// `a/b;X=1` must never reach `K8S_POD_NETWORK`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub ignored: Vec<String>,
}

/// One entry of `network-status`, the fields compared.
#[derive(Debug, Deserialize)]
struct StatusEntry {
    #[serde(default)]
    name: String,
    #[serde(default)]
    interface: String,
    #[serde(default)]
    default: bool,
}

/// The calls that make the pod's devices match its annotations; or why the pod is skipped;
/// or why its annotations cannot be acted on.
pub fn changes_for(pod: &Pod) -> Result<Result<Plan, Skip>, String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(Err(Skip::Deleting));
    }
    if pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false) {
        return Ok(Err(Skip::HostNetwork));
    }
    if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
        return Ok(Err(Skip::NotRunning));
    }
    let annotations = pod.annotations();
    let Some(status) = annotations.get(NETWORK_STATUS) else {
        return Ok(Err(Skip::NoNetworkStatus));
    };
    let had: Vec<StatusEntry> =
        serde_json::from_str(status).map_err(|e| format!("annotation {NETWORK_STATUS} is not a status list: {e}"))?;
    // Annotation attachments are `namespace/name`; kactus-config delegates carry their CNI
    // network name, which cannot hold a `/`, and are not podagent's to remove.
    let mut ignored = Vec::new();
    let had: Vec<StatusEntry> = had
        .into_iter()
        .filter(|e| !e.default && e.name.contains('/'))
        .filter(|e| match check_network_name(&e.name) {
            Ok(()) => true,
            Err(why) => {
                ignored
                    .push(format!("{NETWORK_STATUS} entry {:?} (interface {:?}) ignored: {why}", e.name, e.interface));
                false
            }
        })
        .collect();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let selections = attachment::selections_from_annotations(&annotations).map_err(|e| e.to_string())?;
    let wanted: Vec<_> =
        attachment::resolve(namespace, selections, "eth0")?.into_iter().filter(|a| !a.selection.is_primary).collect();
    let had_devices: HashSet<&str> = had.iter().map(|e| e.interface.as_str()).collect();
    let wanted_devices: HashSet<&str> = wanted.iter().map(|a| a.ifname.as_str()).collect();
    let adds = wanted.iter().filter(|a| !had_devices.contains(a.ifname.as_str())).map(|a| Change {
        add: true,
        network: a.key.clone(),
        ifname: a.ifname.clone(),
    });
    let dels = had.iter().filter(|e| !wanted_devices.contains(e.interface.as_str())).map(|e| Change {
        add: false,
        network: key_of(namespace, e),
        ifname: e.interface.clone(),
    });
    Ok(Ok(Plan { changes: adds.chain(dels).collect(), ignored }))
}

/// A status entry's network: `namespace/name` of DNS-1123 names.
fn check_network_name(name: &str) -> Result<(), String> {
    let (namespace, name) = name.split_once('/').ok_or("not namespace/name")?;
    check_dns1123("namespace", namespace, MAX_NAMESPACE)?;
    check_dns1123("name", name, MAX_NAME)
}

/// The attachment key of a status entry, recovered from its device name, so a DEL of the
/// second `green` names `green#1` and never removes the first. A device named explicitly
/// (`green@eth5`) hides the repeat count; `namespace/name` then picks the network's first.
fn key_of(pod_namespace: &str, entry: &StatusEntry) -> String {
    if let Some((namespace, name)) = entry.name.split_once('/') {
        for repeat in 0..64 {
            let key = attachment_key(pod_namespace, namespace, name, repeat);
            if device_name_for(&key) == entry.interface {
                return key;
            }
        }
    }
    entry.name.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(networks: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "app1", "namespace": "default",
                         "annotations": {"networks": networks, NETWORK_STATUS: status.to_string()}},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    fn eth0() -> serde_json::Value {
        json!({"name": "kactus-net", "interface": "eth0", "default": true})
    }

    #[test]
    fn data_added_to_the_annotation_is_one_add() {
        let p = pod(
            r#"[{"name":"green"},{"name":"data"}]"#,
            json!([eth0(), {"name": "default/green", "interface": "net9f27410725ab"}]),
        );
        let changes = changes_for(&p).unwrap().unwrap().changes;
        assert_eq!(changes, vec![Change { add: true, network: "data".into(), ifname: "net8d777f385d3d".into() }]);
    }

    #[test]
    fn data_removed_from_the_annotation_is_one_del_and_config_delegates_stay() {
        let p = pod(
            r#"[{"name":"green"}]"#,
            json!([eth0(), {"name": "default/green", "interface": "net9f27410725ab"},
                   {"name": "default/data", "interface": "net8d777f385d3d"},
                   {"name": "sidecar-net", "interface": "net1"}]),
        );
        let changes = changes_for(&p).unwrap().unwrap().changes;
        assert_eq!(changes, vec![Change { add: false, network: "data".into(), ifname: "net8d777f385d3d".into() }]);
    }

    #[test]
    fn in_sync_pod_needs_nothing() {
        let p =
            pod(r#"[{"name":"green"}]"#, json!([eth0(), {"name": "default/green", "interface": "net9f27410725ab"}]));
        assert_eq!(changes_for(&p).unwrap().unwrap(), Plan::default());
    }

    #[test]
    fn the_second_repeat_is_deleted_by_its_own_key() {
        let second = device_name_for("green#1");
        let p = pod(
            r#"[{"name":"green"}]"#,
            json!([eth0(), {"name": "default/green", "interface": "net9f27410725ab"},
                   {"name": "default/green", "interface": second}]),
        );
        let changes = changes_for(&p).unwrap().unwrap().changes;
        assert_eq!(changes, vec![Change { add: false, network: "green#1".into(), ifname: second }]);
        let other_ns = StatusEntry { name: "mep/mp1".into(), interface: device_name_for("mep/mp1"), default: false };
        assert_eq!(key_of("default", &other_ns), "mep/mp1");
    }

    /// A tenant writes network-status too: names that are not `namespace/name` of valid
    /// names are left out (and said), so none reaches `K8S_POD_NETWORK`.
    #[test]
    fn hostile_network_status_names_are_ignored_not_deleted() {
        let p = pod(
            r#"[{"name":"green"}]"#,
            json!([eth0(), {"name": "default/green", "interface": "net9f27410725ab"},
                   {"name": "a/b;X=1", "interface": "net1"},
                   {"name": "default/data;K8S_POD_NAME=victim", "interface": "net8d777f385d3d"},
                   {"name": "a/b/c", "interface": "net2"},
                   {"name": "Other/x", "interface": "net3"},
                   {"name": "default/data", "interface": "net8d777f385d3d"}]),
        );
        let plan = changes_for(&p).unwrap().unwrap();
        assert_eq!(plan.changes, vec![Change { add: false, network: "data".into(), ifname: "net8d777f385d3d".into() }]);
        assert_eq!(plan.ignored.len(), 4, "{:?}", plan.ignored);
        assert!(plan.ignored[0].contains("\"a/b;X=1\"") && plan.ignored[0].contains("DNS-1123"), "{:?}", plan.ignored);
    }

    #[test]
    fn pods_kubelet_owns_are_skipped() {
        let mut p = pod("[]", json!([eth0()]));
        let phase = |p: &mut Pod, phase: &str| p.status.get_or_insert_default().phase = Some(phase.into());
        phase(&mut p, "Pending");
        assert_eq!(changes_for(&p).unwrap(), Err(Skip::NotRunning));
        phase(&mut p, "Running");
        p.metadata.deletion_timestamp = serde_json::from_value(json!("2024-01-01T00:00:00Z")).unwrap();
        assert_eq!(changes_for(&p).unwrap(), Err(Skip::Deleting));
        p.metadata.deletion_timestamp = None;
        let unlisted: Pod = serde_json::from_value(json!({"metadata": {"annotations": {"networks": "[]"}},
            "status": {"phase": "Running"}}))
        .unwrap();
        assert_eq!(changes_for(&unlisted).unwrap(), Err(Skip::NoNetworkStatus));
    }

    #[test]
    fn primary_network_is_not_hot_plugged_and_bad_annotations_are_errors() {
        let p = pod(r#"[{"name":"core","isPrimary":true}]"#, json!([eth0()]));
        assert_eq!(changes_for(&p).unwrap().unwrap(), Plan::default());
        assert!(changes_for(&pod("[{", json!([eth0()]))).is_err());
    }
}
