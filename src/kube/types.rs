//! The few API objects the plugin reads: a Pod's annotations, a NetworkAttachmentDefinition's
//! config, and the `Status` of a failed call. (The daemons use k8s-openapi's types through
//! kube-rs; these stay small so the plugin decodes only what it needs.)
//!
//! Only the fields kactus uses are modelled; everything else the apiserver sends is ignored,
//! so a newer cluster with more fields never breaks decoding.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Standard object metadata, reduced to what the plugin reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub annotations: BTreeMap<String, String>,
}

/// A Pod, reduced to its identity and annotations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pod {
    pub metadata: ObjectMeta,
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
    fn nad_without_config_has_an_empty_one() {
        let nad: NetworkAttachmentDefinition =
            serde_json::from_value(json!({"metadata": {"name": "green"}, "spec": {}})).unwrap();
        assert_eq!(nad.spec.config, "");
    }
}
