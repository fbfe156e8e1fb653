//! The pod's secondary addresses as kactus itself recorded them, where tenants cannot write.
//!
//! NPWG's `network-status` annotation is what the field reads, but annotations are written by
//! anyone who may patch the pod: a tenant can make it claim any address (the apiserver's
//! ClusterIP, another namespace's pod, a node). Whatever publishes or enforces on a pod's
//! secondary addresses (EndpointSlices, the in-pod proxy, policy peers) must read them from a
//! source only kactus writes. That source is a pod condition, [`CONDITION`], written in the
//! same `pods/status` PATCH as the annotation: Kubernetes' own roles (`admin`, `edit`) do not
//! grant `pods/status`, the apiserver ignores `status` in writes to the pod itself and resets
//! it when a pod is created, and kubelet keeps conditions it does not own. So it costs no
//! extra request per ADD and holds only what kactus's delegates returned.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// The pod condition type holding [`Attested`] entries (JSON) in its `message`.
pub const CONDITION: &str = "kactus.io/attachments";
/// The condition's `reason` while the pod has secondary devices kactus made.
pub const REASON: &str = "Attached";

/// One attachment as kactus made it: its network (`namespace/name`), its device in the pod
/// and the addresses its delegate assigned there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attested {
    pub name: String,
    pub interface: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

/// The condition's `message`: the entries as compact JSON.
pub fn encode(entries: &[Attested]) -> String {
    serde_json::to_string(entries).unwrap_or_else(|_| "[]".into())
}

/// The entries of a condition `message`; `None` when it is not one kactus wrote.
pub fn decode(message: &str) -> Option<Vec<Attested>> {
    serde_json::from_str(message).ok()
}

/// The addresses (without prefix length) attested for `network` (`namespace/name`) among
/// `entries`. A network in the pod's own namespace may appear bare (`name`), as NPWG allows.
pub fn addresses_on(entries: &[Attested], pod_namespace: &str, network_namespace: &str, network: &str) -> Vec<IpAddr> {
    let full = format!("{network_namespace}/{network}");
    let matches = |name: &str| name == full || (name == network && pod_namespace == network_namespace);
    entries
        .iter()
        .filter(|e| matches(&e.name))
        .flat_map(|e| e.ips.iter())
        .filter_map(|ip| ip.split('/').next().and_then(|a| a.trim().parse().ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_match_by_namespace() {
        let entries = vec![
            Attested { name: "mep/mp1".into(), interface: "netc890d403fb27".into(), ips: vec!["200.1.1.6/24".into()] },
            Attested { name: "tenant/n1".into(), interface: "net1".into(), ips: vec!["fd00::5/64".into()] },
        ];
        let back = decode(&encode(&entries)).unwrap();
        assert_eq!(back, entries);
        let v4: IpAddr = "200.1.1.6".parse().unwrap();
        assert_eq!(addresses_on(&back, "other", "mep", "mp1"), vec![v4]);
        assert!(addresses_on(&back, "other", "other", "mp1").is_empty(), "a bare name is the pod's namespace");
        assert_eq!(addresses_on(&back, "tenant", "tenant", "n1").len(), 1);
        assert!(decode("not json").is_none() && decode("{\"name\":1}").is_none());
    }
}
