//! The MultiNetworkPolicy object (`k8s.cni.cncf.io/v1beta1`) as the apiserver serves it: its
//! spec is NetworkPolicy's (`networking.k8s.io/v1`), `ports[].endPort` included. Every field
//! is optional and a `null` reads as absent, so an object written by another tool for the
//! same CRD never fails to parse; what the CRD's schema cannot check (a bad CIDR, an unknown
//! operator) is found by `compile.rs`, which ignores that part and says so.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Deserializer, Serialize};

/// The annotation naming the networks a policy governs: `net1, ns/net2`.
pub const POLICY_FOR: &str = "k8s.v1.cni.cncf.io/policy-for";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MultiNetworkPolicy {
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "null_as_default")]
    pub spec: PolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// The pods of the policy's namespace it isolates; empty selects them all.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pod_selector: LabelSelector,
    /// `Ingress`, `Egress`; empty means Ingress, plus Egress when there are egress rules.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub policy_types: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRule>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngressRule {
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PolicyPort>,
    /// Empty: every source.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Peer>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EgressRule {
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PolicyPort>,
    /// Empty: every destination.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Peer>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPort {
    /// `TCP` (when absent), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// A number, or the name of a container port; absent: every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    /// With a numeric `port`: the range `port..=endPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i32>,
}

/// A peer: selectors (`podSelector` alone: the policy's namespace; `namespaceSelector` alone:
/// every pod of those namespaces; both: AND) or an `ipBlock`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpBlock {
    #[serde(default)]
    pub cidr: String,
    /// Parts of `cidr` this peer does not include (and only this peer).
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// What kube-rs needs to list and watch these (`kube::Api<MultiNetworkPolicy>`).
impl k8s_openapi::Resource for MultiNetworkPolicy {
    const API_VERSION: &'static str = "k8s.cni.cncf.io/v1beta1";
    const GROUP: &'static str = "k8s.cni.cncf.io";
    const KIND: &'static str = "MultiNetworkPolicy";
    const VERSION: &'static str = "v1beta1";
    const URL_PATH_SEGMENT: &'static str = "multi-networkpolicies";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::ListableResource for MultiNetworkPolicy {
    const LIST_KIND: &'static str = "MultiNetworkPolicyList";
}

impl k8s_openapi::Metadata for MultiNetworkPolicy {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl MultiNetworkPolicy {
    /// `namespace/name`, how reports name it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace(), self.metadata.name.as_deref().unwrap_or_default())
    }

    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// The `policy-for` annotation, if any.
    pub fn policy_for(&self) -> Option<&str> {
        self.metadata.annotations.as_ref()?.get(POLICY_FOR).map(String::as_str)
    }
}

/// A field that is `null` reads as its default, as when it is absent.
fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_policy_parses_with_end_port_and_named_ports() {
        let p: MultiNetworkPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
            "metadata": {"name": "db", "namespace": "mep", "annotations": {POLICY_FOR: "mp1"}},
            "spec": {
                "podSelector": {"matchLabels": {"app": "db"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                                      {"namespaceSelector": {}, "podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}],
                             "ports": [{"port": 5000, "endPort": 5010}, {"protocol": "UDP", "port": "dns"}]}],
                "egress": null
            }
        }))
        .unwrap();
        assert_eq!(p.key(), "mep/db");
        assert_eq!(p.policy_for(), Some("mp1"));
        let rule = &p.spec.ingress[0];
        assert_eq!(rule.ports[0].end_port, Some(5010));
        assert_eq!(rule.ports[1].port, Some(IntOrString::String("dns".into())));
        assert_eq!(rule.from[0].ip_block.as_ref().unwrap().except, vec!["10.1.0.0/16"]);
        assert!(p.spec.egress.is_empty());
    }

    #[test]
    fn kube_rs_lists_them_at_the_crds_path() {
        use kube::Resource;
        let path = MultiNetworkPolicy::url_path(&(), Some("mep"));
        assert_eq!(path, "/apis/k8s.cni.cncf.io/v1beta1/namespaces/mep/multi-networkpolicies");
    }

    #[test]
    fn nulls_and_absent_fields_are_defaults() {
        let p: MultiNetworkPolicy = serde_json::from_str(
            r#"{"metadata": null, "spec": {"podSelector": null, "ingress": [{"from": null, "ports": null}]}}"#,
        )
        .unwrap();
        assert_eq!(p.spec.ingress, vec![IngressRule::default()]);
        assert_eq!(p.key(), "/");
        assert!(p.policy_for().is_none());
    }
}
