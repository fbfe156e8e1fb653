//! The node's pods as podagent holds them: the reflector's store, which the controller
//! reconciles from and other parts of podagent may read (a clone of the [`Store`] is cheap).
//!
//! A pod is kept as [`Pod`], only what podagent and the kactus it calls read: its identity,
//! its network annotations and `network-status`, whether it is deleted, `hostNetwork` and its
//! phase. k8s-openapi's Pod holds every field the apiserver sends (containers, volumes,
//! conditions, managedFields, every annotation such as kubectl's last-applied-configuration),
//! several KiB per pod on every node. This type is a partial view of the same API object
//! (kube reads, watches and references it as a Pod, through kube-runtime's watcher and
//! reflector as any other): serde skips the rest while decoding, so not even the watch's list
//! pages hold it, and the annotations nobody reads are dropped as it is decoded.

use crate::attachment::NETWORK_ANNOTATIONS;
use crate::plugin::status::NETWORK_STATUS;
use futures::Stream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use serde::Deserialize;
use std::collections::BTreeMap;

/// A pod of the node, as podagent reads it (field names and nesting as the API's), decoded
/// through `ApiPod` so that nothing else is kept.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "ApiPod")]
pub struct Pod {
    /// Identity, version and deletion only.
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
    /// The kept annotations (see [`kept`]), out of the metadata: a map node per pod costs
    /// more than the values.
    annotations: Box<[(&'static str, String)]>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub host_network: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodStatus {
    #[serde(default)]
    pub phase: Option<String>,
}

/// The pod as decoded from the apiserver, before [`Pod`] keeps its part of it.
#[derive(Deserialize)]
struct ApiPod {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<PodSpec>,
    #[serde(default)]
    status: Option<PodStatus>,
}

impl From<ApiPod> for Pod {
    fn from(pod: ApiPod) -> Pod {
        let meta = pod.metadata;
        let annotations = meta.annotations.into_iter().flatten().filter_map(|(k, v)| Some((kept(&k)?, v))).collect();
        let metadata = ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            resource_version: meta.resource_version,
            deletion_timestamp: meta.deletion_timestamp,
            ..ObjectMeta::default()
        };
        Pod { metadata, spec: pod.spec, status: pod.status, annotations }
    }
}

impl Pod {
    /// A pod known by its identity only (name, namespace, UID): what finding its sandbox needs,
    /// for parts of podagent that hold pods of their own (the data plane).
    pub fn identified_by(meta: &ObjectMeta) -> Pod {
        let metadata = ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            ..ObjectMeta::default()
        };
        Pod { metadata, ..Pod::default() }
    }

    /// A kept annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }

    /// The kept annotations, as the parsers and the runtime's `runtimeConfig` take them.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.annotations.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }
}

type FullPod = k8s_openapi::api::core::v1::Pod;

/// The same API object as k8s-openapi's Pod: kube builds the same URLs and Event references.
impl k8s_openapi::Resource for Pod {
    const API_VERSION: &'static str = <FullPod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <FullPod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <FullPod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <FullPod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <FullPod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <FullPod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for Pod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The annotations kept: those kactus reads attachments from (podagent hands them on as the
/// runtime hands on all), the `network-status` podagent compares them with, and a static pod's
/// mirror annotation (the fast path matches the runtime's UID of a static pod by it).
fn kept(annotation: &str) -> Option<&'static str> {
    [NETWORK_STATUS, MIRROR_OF].into_iter().chain(NETWORK_ANNOTATIONS).find(|k| *k == annotation)
}

/// kubelet's annotation on a static pod's mirror: the UID the runtime knows the pod by.
pub const MIRROR_OF: &str = "kubernetes.io/config.mirror";

/// The watch events of the pods of `node`, filling `writer`'s store as they are polled (the
/// controller reconciles from that store; the fast path answers from a reader of it).
pub fn watch(
    client: kube::Client,
    node: &str,
    writer: reflector::store::Writer<Pod>,
) -> impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send + 'static {
    let pods: Api<Pod> = Api::all(client);
    let on_this_node = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    watcher(pods, on_this_node).default_backoff().reflect(writer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    /// A pod as the apiserver sends it decodes into what podagent reads, and the rest is gone.
    #[test]
    fn a_full_pod_keeps_identity_network_annotations_deletion_host_network_and_phase() {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "app1", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                "deletionTimestamp": "2024-01-01T00:00:00Z", "labels": {"app": "x"},
                "managedFields": [{"manager": "kubectl", "operation": "Update"}],
                "annotations": {"networks": "[]", "k8s.v1.cni.cncf.io/networks": "green",
                    NETWORK_STATUS: "[]", "kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
            "spec": {"nodeName": "node1", "hostNetwork": true, "containers": [{"name": "c", "image": "alpine"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let meta = &pod.metadata;
        assert_eq!(
            (meta.name.as_deref(), meta.namespace.as_deref(), meta.uid.as_deref()),
            (Some("app1"), Some("default"), Some("u1"))
        );
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert!(meta.deletion_timestamp.is_some());
        assert!(meta.labels.is_none() && meta.managed_fields.is_none() && meta.annotations.is_none());
        let kept: Vec<String> = pod.annotations().into_keys().collect();
        assert_eq!(kept, vec!["k8s.v1.cni.cncf.io/network-status", "k8s.v1.cni.cncf.io/networks", "networks"]);
        assert_eq!(pod.annotation("networks"), Some("[]"));
        assert_eq!(pod.annotation("kubectl.kubernetes.io/last-applied-configuration"), None);
        assert_eq!(pod.spec.as_ref().and_then(|s| s.host_network), Some(true));
        assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Running"));
        // Events reference it as the Pod it is.
        let reference = Pod::default().object_ref(&());
        assert_eq!((reference.api_version.as_deref(), reference.kind.as_deref()), (Some("v1"), Some("Pod")));
        assert_eq!(Pod::url_path(&(), Some("default")), "/api/v1/namespaces/default/pods");
    }
}
