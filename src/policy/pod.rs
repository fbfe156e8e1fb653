//! What the policy compiler needs of a pod, read once from the Pod object: its labels, its
//! container ports (for named ports), whether it has finished, and its secondary attachments
//! as kactus recorded them in the pod condition `kactus.io/attachments` (status, which only
//! kactus writes), never the `network-status` annotation, which any tenant who may patch the
//! pod can make claim any address.

use super::policy_for::NetworkRef;
use super::selection::Labels;
use k8s_openapi::api::core::v1::Pod;
use std::net::IpAddr;

/// The pod condition kactus writes its attachments to: one place for its name and format.
pub use crate::attachment::attested::CONDITION as ATTACHMENTS_CONDITION;

/// A pod as policies see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// Succeeded or Failed: its addresses may already be someone else's.
    pub finished: bool,
    pub ports: Vec<ContainerPort>,
    pub attachments: Vec<Attachment>,
}

/// A named container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub number: u16,
}

/// One secondary device of the pod: its network, its name in the pod, its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub network: NetworkRef,
    pub interface: String,
    pub ips: Vec<IpAddr>,
}

impl PodView {
    pub fn from_pod(pod: &Pod) -> PodView {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let ports = spec
            .into_iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(ContainerPort {
                    name: p.name.clone()?,
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    number: u16::try_from(p.container_port).ok()?,
                })
            })
            .collect();
        let status = pod.status.as_ref();
        let message = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == ATTACHMENTS_CONDITION))
            .and_then(|c| c.message.as_deref());
        PodView {
            attachments: message.map(|m| attachments(m, &namespace)).unwrap_or_default(),
            namespace,
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            finished: matches!(status.and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")),
            ports,
        }
    }

    /// The pod's addresses on `network` (every device on it).
    pub fn addresses_on<'a>(&'a self, network: &'a NetworkRef) -> impl Iterator<Item = IpAddr> + 'a {
        self.attachments.iter().filter(move |a| &a.network == network).flat_map(|a| a.ips.iter().copied())
    }
}

/// The condition's entries; a message that is not kactus's list gives none.
fn attachments(message: &str, pod_namespace: &str) -> Vec<Attachment> {
    let entries = crate::attachment::attested::decode(message).unwrap_or_default();
    entries
        .into_iter()
        .filter_map(|e| {
            Some(Attachment {
                network: NetworkRef::relative(&e.name, pod_namespace)?,
                interface: e.interface,
                ips: e.ips.iter().filter_map(|ip| ip.split('/').next()?.trim().parse().ok()).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_is_read_from_its_condition_not_its_annotation() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "hello", "namespace": "mep", "labels": {"app": "hello"},
                         "annotations": {"k8s.v1.cni.cncf.io/network-status": "[{\"name\":\"mep/mp1\",\"interface\":\"net1\",\"ips\":[\"10.96.0.1\"]}]"}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 80}, {"containerPort": 81}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": ATTACHMENTS_CONDITION, "status": "True", "message": "[{\"name\":\"mep/mp1\",\"interface\":\"netc890d403fb27\",\"ips\":[\"200.1.1.6/24\",\"fd00::6/64\"]},{\"name\":\"green\",\"interface\":\"net9f27410725ab\"}]"}
            ]}
        }))
        .unwrap();
        let view = PodView::from_pod(&pod);
        assert_eq!(
            view.ports,
            vec![
                ContainerPort { name: "http".into(), protocol: "TCP".into(), number: 80 },
                ContainerPort { name: "dns".into(), protocol: "UDP".into(), number: 53 },
            ]
        );
        let mp1 = NetworkRef { namespace: "mep".into(), name: "mp1".into() };
        let got: Vec<IpAddr> = view.addresses_on(&mp1).collect();
        assert_eq!(
            got,
            vec!["200.1.1.6".parse::<IpAddr>().unwrap(), "fd00::6".parse().unwrap()],
            "the condition's, not the annotation's 10.96.0.1"
        );
        assert_eq!(view.attachments[1].network, NetworkRef { namespace: "mep".into(), name: "green".into() });
        assert!(!view.finished);
    }

    #[test]
    fn a_pod_without_kactus_condition_has_no_attachments() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "n"},
            "status": {"phase": "Failed", "conditions": [{"type": ATTACHMENTS_CONDITION, "status": "True", "message": "not json"}]}})).unwrap();
        let view = PodView::from_pod(&pod);
        assert!(view.attachments.is_empty() && view.finished);
    }
}
