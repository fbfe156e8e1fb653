//! The few API objects the plugins read: a Pod's annotations and DRA claims, a
//! NetworkAttachmentDefinition's config, a Node's identity and labels (node-local), a LIST's
//! items, and the `Status` of a failed call. (The daemons use k8s-openapi's types through
//! kube-rs; these stay small so the plugins decode only what they need.)
//!
//! Only the fields kactus uses are modelled; everything else the apiserver sends is ignored,
//! so a newer cluster with more fields never breaks decoding.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Standard object metadata, reduced to what the plugins read and write. Empty fields are
/// left out when an object is sent, so a create carries only what its writer set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// For optimistic concurrency: a PUT or a DELETE precondition with a stale one is refused.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Kept opaque: node-local only writes its Node as owner and reads the owner's uid back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<serde_json::Value>,
}

/// A Pod, reduced to its identity, annotations and DRA claims.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    /// DRA: the claims the pod's containers may use (resource.k8s.io ResourceClaims).
    #[serde(deserialize_with = "null_as_empty")]
    pub resource_claims: Vec<PodResourceClaim>,
}

/// One of `spec.resourceClaims`: an existing claim, or a template the claim is made from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodResourceClaim {
    pub name: String,
    pub resource_claim_name: Option<String>,
    pub resource_claim_template_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(deserialize_with = "null_as_empty")]
    pub resource_claim_statuses: Vec<PodResourceClaimStatus>,
    pub extended_resource_claim_status: Option<PodExtendedResourceClaimStatus>,
}

/// One of `status.resourceClaimStatuses`: the claim made for a template entry (absent when
/// none was needed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodResourceClaimStatus {
    pub name: String,
    pub resource_claim_name: Option<String>,
}

/// `status.extendedResourceClaimStatus`: the claim that serves the pod's extended-resource
/// requests (`intel.com/sriov: 2` in `resources`) through DRA, and which request is which.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodExtendedResourceClaimStatus {
    pub resource_claim_name: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub request_mappings: Vec<ContainerExtendedResourceRequest>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerExtendedResourceRequest {
    pub container_name: String,
    pub resource_name: String,
    pub request_name: String,
}

/// `k8s.cni.cncf.io/v1` NetworkAttachmentDefinition: a named CNI config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkAttachmentDefinition {
    pub metadata: ObjectMeta,
    pub spec: NetworkAttachmentDefinitionSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkAttachmentDefinitionSpec {
    /// The CNI conf or conflist as a JSON string; empty means "look in confDir".
    pub config: String,
}

/// A core/v1 Node, reduced to its metadata: node-local owns its slice claims by the Node's
/// uid and may read its index from a label or annotation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Node {
    pub metadata: ObjectMeta,
}

/// The answer of a LIST: its items (`null` from some servers reads as none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, bound(deserialize = "T: Deserialize<'de>"))]
pub struct List<T> {
    #[serde(deserialize_with = "null_as_empty")]
    pub items: Vec<T>,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List { items: Vec::new() }
    }
}

fn null_as_empty<'de, D, T>(de: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(de)?.unwrap_or_default())
}

/// The apiserver's failure object (`kind: Status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_decodes_the_used_subset_and_ignores_the_rest() {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "app1", "namespace": "default", "uid": "u1",
                         "resourceVersion": "7", "annotations": {"networks": "[]"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5"}
        }))
        .unwrap();
        assert_eq!(pod.metadata.name, "app1");
        assert_eq!(pod.metadata.uid, "u1");
        assert_eq!(pod.metadata.annotations["networks"], "[]");
    }

    #[test]
    fn list_with_null_items_is_empty() {
        let list: List<Pod> =
            serde_json::from_value(json!({"metadata": {"resourceVersion": "12"}, "items": null})).unwrap();
        assert!(list.items.is_empty());
    }

    /// The DRA fields the devices module reads, as a 1.34 apiserver sends them (`null` lists
    /// included, as older servers write absent ones).
    #[test]
    fn pod_decodes_its_dra_claims() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "app1", "namespace": "default", "uid": "u1"},
            "spec": {"resourceClaims": [{"name": "vf", "resourceClaimTemplateName": "one-vf"}]},
            "status": {"resourceClaimStatuses": null,
                       "extendedResourceClaimStatus": {"resourceClaimName": "app1-extended",
                                                       "requestMappings": null}}
        }))
        .unwrap();
        assert_eq!(pod.spec.resource_claims[0].resource_claim_template_name.as_deref(), Some("one-vf"));
        assert!(pod.status.resource_claim_statuses.is_empty());
        let extended = pod.status.extended_resource_claim_status.unwrap();
        assert_eq!(extended.resource_claim_name, "app1-extended");
        assert!(extended.request_mappings.is_empty());
    }

    #[test]
    fn nad_without_config_has_an_empty_one() {
        let nad: NetworkAttachmentDefinition =
            serde_json::from_value(json!({"metadata": {"name": "green"}, "spec": {}})).unwrap();
        assert_eq!(nad.spec.config, "");
    }

    #[test]
    fn metadata_sent_carries_only_what_was_set() {
        let node = Node {
            metadata: ObjectMeta {
                name: "node1".into(),
                owner_references: vec![json!({"kind": "Node", "uid": "u1"})],
                ..Default::default()
            },
        };
        let value = serde_json::to_value(&node).unwrap();
        assert_eq!(value, json!({"metadata": {"name": "node1", "ownerReferences": [{"kind": "Node", "uid": "u1"}]}}));
        assert_eq!(serde_json::from_value::<Node>(value).unwrap(), node);
    }
}
