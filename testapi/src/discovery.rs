//! What a client learns before it lists anything: `/version`, and discovery (`/api`,
//! `/api/v1`, `/apis`, `/apis/{group}/{version}`) generated from [`resources::KINDS`]. The
//! server can play an older Kubernetes ([`Emulation`]): group versions a release did not serve
//! answer 404, as they would there, so a daemon's "this API is not served" path is tested
//! (kactus-endpoints on 1.20 has no `discovery.k8s.io/v1`). It can also play a cluster
//! without one of the custom resources it knows ([`Emulation::uninstall`]): seed 001's own
//! install has Kaloom's `kaloom.com/v1` `Network` CRD and no NetworkAttachmentDefinition one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

use super::resources::{ResourceKind, KINDS};

/// The minor version served by default: a current Kubernetes.
const CURRENT_MINOR: u32 = 33;

/// Which Kubernetes 1.x the server plays.
#[derive(Debug)]
pub struct Emulation {
    minor: AtomicU32,
    /// Kinds whose CRD is not installed, by qualified resource (`networks.kaloom.com`).
    uninstalled: Mutex<BTreeSet<String>>,
}

impl Default for Emulation {
    fn default() -> Emulation {
        Emulation { minor: AtomicU32::new(CURRENT_MINOR), uninstalled: Mutex::default() }
    }
}

impl Emulation {
    pub fn set_minor(&self, minor: u32) {
        self.minor.store(minor, Ordering::SeqCst);
    }

    pub fn minor(&self) -> u32 {
        self.minor.load(Ordering::SeqCst)
    }

    /// Whether `group/version` (empty group: core) is served by the release played.
    pub fn serves(&self, group: &str, version: &str) -> bool {
        let minor = self.minor();
        minor >= since_minor(group, version) && minor <= until_minor(group, version)
    }

    /// Plays a cluster where the CRD of `qualified` (`network-attachment-definitions.k8s.cni.cncf.io`)
    /// is not installed: its paths answer 404 for every verb with the Status a real apiserver
    /// gives for a resource it does not serve, and discovery leaves it out.
    pub fn uninstall(&self, qualified: &str) {
        self.uninstalled.lock().unwrap_or_else(|p| p.into_inner()).insert(qualified.to_string());
    }

    /// Installs the CRD of `qualified` again (after [`Emulation::uninstall`]): served and
    /// discovered from now on, as when a cluster's admin applies it.
    pub fn install(&self, qualified: &str) {
        self.uninstalled.lock().unwrap_or_else(|p| p.into_inner()).remove(qualified);
    }

    /// Whether objects of `kind` are served: its group version by the release played, and
    /// its CRD installed.
    pub fn serves_kind(&self, kind: &ResourceKind) -> bool {
        self.serves(kind.group, kind.version)
            && !self.uninstalled.lock().unwrap_or_else(|p| p.into_inner()).contains(&kind.qualified())
    }

    pub fn version(&self) -> Value {
        let minor = self.minor();
        json!({"major": "1", "minor": minor.to_string(), "gitVersion": format!("v1.{minor}.0-kactus-test"), "platform": "linux/amd64"})
    }

    /// The discovery document at `path`, if `path` is a discovery path.
    pub fn document(&self, path: &str) -> Option<Value> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["api"] => Some(json!({"kind": "APIVersions", "versions": ["v1"]})),
            ["apis"] => Some(self.groups()),
            ["api", version] => self.resources("", version),
            ["apis", group, version] => self.resources(group, version),
            _ => None,
        }
    }

    fn groups(&self) -> Value {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for kind in KINDS.iter().filter(|k| !k.group.is_empty() && self.serves_kind(k)) {
            let versions = groups.entry(kind.group).or_default();
            if !versions.contains(&kind.version) {
                versions.push(kind.version);
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(group, versions)| {
                let versions: Vec<Value> =
                    versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
                json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    fn resources(&self, group: &str, version: &str) -> Option<Value> {
        let kinds: Vec<&ResourceKind> =
            KINDS.iter().filter(|k| k.group == group && k.version == version && self.serves_kind(k)).collect();
        if kinds.is_empty() {
            return None;
        }
        let resources: Vec<Value> = kinds
            .iter()
            .flat_map(|k| {
                let main = json!({"name": k.resource, "singularName": "", "namespaced": k.namespaced(), "kind": k.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]});
                let status = k.has_status.then(|| {
                    json!({"name": format!("{}/status", k.resource), "singularName": "", "namespaced": k.namespaced(),
                        "kind": k.kind, "verbs": ["get", "patch", "update"]})
                });
                std::iter::once(main).chain(status)
            })
            .collect();
        let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        )
    }
}

/// The first Kubernetes 1.x minor that serves a group version (0: every supported one).
fn since_minor(group: &str, version: &str) -> u32 {
    match (group, version) {
        ("discovery.k8s.io", "v1") => 21,
        ("discovery.k8s.io", "v1beta1") => 17,
        ("events.k8s.io", "v1") => 19,
        ("coordination.k8s.io", "v1") => 14,
        _ => 0,
    }
}

/// The last Kubernetes 1.x minor that serves a group version (removed APIs).
fn until_minor(group: &str, version: &str) -> u32 {
    match (group, version) {
        ("discovery.k8s.io", "v1beta1") => 24,
        _ => u32::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_1_20_serves_no_discovery_v1_but_events_v1() {
        let emulation = Emulation::default();
        assert!(emulation.document("/apis/discovery.k8s.io/v1").is_some());
        emulation.set_minor(20);
        assert!(emulation.document("/apis/discovery.k8s.io/v1").is_none());
        let events = emulation.document("/apis/events.k8s.io/v1").unwrap();
        assert_eq!(events["resources"][0]["name"], "events");
        assert_eq!(emulation.version()["gitVersion"], "v1.20.0-kactus-test");
        let core = emulation.document("/api/v1").unwrap();
        assert!(core["resources"].as_array().unwrap().iter().any(|r| r["name"] == "pods/status"));
    }

    #[test]
    fn a_cluster_without_the_nad_crd_does_not_discover_its_group() {
        let emulation = Emulation::default();
        emulation.uninstall("network-attachment-definitions.k8s.cni.cncf.io");
        assert!(emulation.document("/apis/k8s.cni.cncf.io/v1").is_none());
        let groups = emulation.document("/apis").unwrap().to_string();
        // The group stays for MultiNetworkPolicy's v1beta1; its v1 (NADs) is gone.
        assert!(!groups.contains("k8s.cni.cncf.io/v1\"") && groups.contains("kaloom.com"), "{groups}");
        emulation.uninstall("multi-networkpolicies.k8s.cni.cncf.io");
        let groups = emulation.document("/apis").unwrap().to_string();
        assert!(!groups.contains("k8s.cni.cncf.io"), "{groups}");
    }
}
