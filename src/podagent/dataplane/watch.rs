//! What the data plane reads from the apiserver, each in a kube-runtime reflector of its own
//! (separate from the hot-plug controller's store of the node's pods): the Services labelled
//! for kactus, kactus's endpoints (EndpointSlices, or on Kubernetes 1.20 the core/v1
//! Endpoints kactus-endpoints writes there), MultiNetworkPolicies when their CRD is served,
//! Namespaces (their labels, for `namespaceSelector`) and the cluster's pods with kactus
//! attachments as policy peers (plus this node's), stripped before the store to what policies
//! and the proxy read.
//!
//! Every event of every watch records the object it is about in [`Changed`] and wakes the
//! reconcile loop, which coalesces them (`dirty.rs` turns them into the pods to recompute).

use crate::endpoints::desired::{
    ENDPOINTS_MANAGED_BY, ENDPOINTS_MANAGED_BY_LABEL, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL,
};
use crate::podagent::service_proxy::{MULTUS_PROXY_NAME, PROXY_NAME, PROXY_NAME_LABEL};
use crate::policy::pod::ATTACHMENTS_CONDITION;
use crate::policy::MultiNetworkPolicy;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Endpoints, Namespace, Pod, PodSpec, PodStatus, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

/// The objects that changed since the loop last looked, and its wake-up (wakes pile up into
/// one).
#[derive(Default)]
pub struct Changes {
    wake: Notify,
    touched: Mutex<Touched>,
}

pub type Changed = Arc<Changes>;

/// The kinds the data plane watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Service,
    /// EndpointSlices, or 1.20's Endpoints.
    Endpoints,
    Policy,
    Namespace,
    Pod,
}

/// Changed objects by kind, each `namespace/name` (a Namespace: its name).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    /// A watch (re)listed: what it missed is not known object by object.
    pub relisted: bool,
    pub services: BTreeSet<String>,
    pub endpoints: BTreeSet<String>,
    pub policies: BTreeSet<String>,
    pub namespaces: BTreeSet<String>,
    pub pods: BTreeSet<String>,
}

impl Changes {
    /// `key` of `kind` changed.
    pub fn touch(&self, kind: Kind, key: String) {
        if let Ok(mut t) = self.touched.lock() {
            let keys = match kind {
                Kind::Service => &mut t.services,
                Kind::Endpoints => &mut t.endpoints,
                Kind::Policy => &mut t.policies,
                Kind::Namespace => &mut t.namespaces,
                Kind::Pod => &mut t.pods,
            };
            keys.insert(key);
        }
        self.wake.notify_one();
    }

    /// A watch listed its kind anew.
    pub fn relisted(&self) {
        if let Ok(mut t) = self.touched.lock() {
            t.relisted = true;
        }
        self.wake.notify_one();
    }

    /// What changed since the last call.
    pub fn take(&self) -> Touched {
        self.touched.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default()
    }

    pub async fn notified(&self) {
        self.wake.notified().await
    }
}

/// An object's `namespace/name` (a cluster-scoped one's: its name), as [`Touched`] holds it.
pub fn key_of(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// The store lookup of a key [`key_of`] made.
pub fn get<K>(store: &Store<K>, key: &str) -> Option<Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let reference = match key.split_once('/') {
        Some((ns, name)) => reflector::ObjectRef::new(name).within(ns),
        None => reflector::ObjectRef::new(key),
    };
    store.get(&reference)
}

/// The data plane's stores.
#[derive(Clone)]
pub struct Stores {
    pub services: Store<Service>,
    pub endpoints: EndpointsStore,
    /// Empty while the cluster serves no MultiNetworkPolicy CRD (filled once it does).
    pub policies: Arc<OnceLock<Store<MultiNetworkPolicy>>>,
    pub namespaces: Store<Namespace>,
    /// The pods [`kept_pod`] keeps, stripped by [`strip_pod`].
    pub pods: Store<Pod>,
}

/// Where kactus's endpoints are read.
#[derive(Clone)]
pub enum EndpointsStore {
    Slices(Store<EndpointSlice>),
    /// Kubernetes 1.20: no `discovery.k8s.io/v1`.
    Legacy(Store<Endpoints>),
}

impl Stores {
    /// Starts every watch (each on a task of its own, backing off while the apiserver is
    /// away); the stores fill as they list.
    /// `recheck`: how often to look again for the MultiNetworkPolicy CRD while it is not
    /// served.
    pub async fn start(
        client: &kube::Client,
        node: &str,
        changed: &Changed,
        recheck: Duration,
    ) -> Result<Stores, String> {
        let proxied =
            watcher::Config::default().labels(&format!("{PROXY_NAME_LABEL} in ({PROXY_NAME},{MULTUS_PROXY_NAME})"));
        let services = reflect(Api::<Service>::all(client.clone()), proxied, changed, Kind::Service, |_| {}, every);
        let ours = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
        let endpoints = if served(client, "discovery.k8s.io/v1", "endpointslices").await? {
            EndpointsStore::Slices(reflect(Api::all(client.clone()), ours, changed, Kind::Endpoints, |_| {}, every))
        } else {
            log::info!("discovery.k8s.io/v1 is not served: Service endpoints are read from core/v1 Endpoints");
            // kactus-endpoints labels the Endpoints it writes with its own managed-by label.
            let ours =
                watcher::Config::default().labels(&format!("{ENDPOINTS_MANAGED_BY_LABEL}={ENDPOINTS_MANAGED_BY}"));
            EndpointsStore::Legacy(reflect(Api::all(client.clone()), ours, changed, Kind::Endpoints, |_| {}, every))
        };
        let policies = Arc::new(OnceLock::new());
        if served(client, POLICY_GROUP_VERSION, POLICY_RESOURCE).await? {
            let _ = policies.set(watch_policies(client, changed));
        } else {
            log::info!(
                "the MultiNetworkPolicy CRD ({POLICY_GROUP_VERSION}) is not served: no policy is enforced until \
                 it is (looked for every {}s)",
                recheck.as_secs()
            );
            tokio::spawn(watch_policies_once_served(client.clone(), changed.clone(), policies.clone(), recheck));
        }
        let all = watcher::Config::default();
        let namespaces =
            reflect(Api::all(client.clone()), all.clone(), changed, Kind::Namespace, strip_namespace, every);
        // A pod's own attachments make its proxy table; every pod is a policy peer.
        let node = node.to_string();
        let kept = move |pod: &Pod, had: Option<&Pod>| kept_pod(pod, had, &node);
        // Listed in small pages: each page is decoded whole before it is stripped.
        let pods = reflect(Api::all(client.clone()), all.page_size(100), changed, Kind::Pod, strip_pod, kept);
        Ok(Stores { services, endpoints, policies, namespaces, pods })
    }

    /// Waits until every store has its first list: before that, an empty store would read as
    /// "nothing wanted" and delete working rules.
    pub async fn ready(&self) {
        let _ = self.services.wait_until_ready().await;
        match &self.endpoints {
            EndpointsStore::Slices(s) => drop(s.wait_until_ready().await),
            EndpointsStore::Legacy(s) => drop(s.wait_until_ready().await),
        }
        if let Some(p) = self.policies.get() {
            let _ = p.wait_until_ready().await;
        }
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.pods.wait_until_ready().await;
    }

    /// The keys of kactus's slices (on 1.20: of its Endpoints).
    pub fn endpoints_keys(&self) -> Vec<String> {
        match &self.endpoints {
            EndpointsStore::Slices(s) => s.state().iter().map(|s| key_of(&s.metadata)).collect(),
            EndpointsStore::Legacy(s) => s.state().iter().map(|e| key_of(&e.metadata)).collect(),
        }
    }

    /// The Service (`namespace/name`) the slice (or Endpoints) `key` holds endpoints of;
    /// `None` when it is gone.
    pub fn service_of(&self, key: &str) -> Option<String> {
        match &self.endpoints {
            EndpointsStore::Slices(s) => {
                let slice = get(s, key)?;
                let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
                Some(format!("{}/{service}", slice.metadata.namespace.as_deref().unwrap_or_default()))
            }
            EndpointsStore::Legacy(s) => get(s, key).map(|_| key.to_string()),
        }
    }

    /// The slice `key` (on 1.20: the slices its Endpoints stand for).
    pub fn slices_at(&self, key: &str) -> Vec<EndpointSlice> {
        match &self.endpoints {
            EndpointsStore::Slices(s) => get(s, key).map(|s| EndpointSlice::clone(&s)).into_iter().collect(),
            EndpointsStore::Legacy(s) => get(s, key).map(|e| as_slices(&e)).unwrap_or_default(),
        }
    }
}

const POLICY_GROUP_VERSION: &str = "k8s.cni.cncf.io/v1beta1";
const POLICY_RESOURCE: &str = "multi-networkpolicies";

fn watch_policies(client: &kube::Client, changed: &Changed) -> Store<MultiNetworkPolicy> {
    reflect(Api::all(client.clone()), watcher::Config::default(), changed, Kind::Policy, |_| {}, every)
}

/// Asks discovery every `recheck` whether the MultiNetworkPolicy CRD is served now, and once
/// it is, starts its watch (whose first list recomputes every pod): installing the CRD
/// after podagent needs no restart.
async fn watch_policies_once_served(
    client: kube::Client,
    changed: Changed,
    slot: Arc<OnceLock<Store<MultiNetworkPolicy>>>,
    recheck: Duration,
) {
    loop {
        tokio::time::sleep(recheck).await;
        match served(&client, POLICY_GROUP_VERSION, POLICY_RESOURCE).await {
            Ok(true) => {
                log::info!("MultiNetworkPolicies are served now: enforcing them");
                let _ = slot.set(watch_policies(&client, &changed));
                return;
            }
            Ok(false) => {}
            Err(e) => log::debug!("{e}"),
        }
    }
}

/// One reflector on a task of its own, `strip` applied to each object before the store
/// (with its resourceVersion and managed fields). An update that leaves the stripped object
/// as stored (a pod's readiness, another controller's annotation) is dropped before the
/// store and wakes nothing: what the data plane does not read does not cost it a pass.
///
/// `keep(new, stored)` leaves out objects the data plane never needs (they are not stored and
/// wake nothing).
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: &Changed,
    kind: Kind,
    strip: fn(&mut K),
    keep: impl Fn(&K, Option<&K>) -> bool + Send + 'static,
) -> Store<K>
where
    K: Resource + Clone + Debug + PartialEq + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let changed = changed.clone();
    let stored = store.clone();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |object: &mut K| {
            strip(object);
            object.meta_mut().resource_version = None;
            object.meta_mut().managed_fields = None;
        })
        .filter(move |event| {
            let pass = match event {
                Ok(watcher::Event::Apply(object)) => {
                    let had = stored.get(&reflector::ObjectRef::from_obj(object));
                    had.as_deref() != Some(object) && keep(object, had.as_deref())
                }
                Ok(watcher::Event::InitApply(object)) => keep(object, None),
                _ => true,
            };
            futures::future::ready(pass)
        })
        .reflect(writer);
    tokio::spawn(stream.for_each(move |event| {
        match event {
            Ok(watcher::Event::InitApply(_)) | Ok(watcher::Event::Init) => {}
            Ok(watcher::Event::InitDone) => changed.relisted(),
            Ok(watcher::Event::Apply(object)) | Ok(watcher::Event::Delete(object)) => {
                changed.touch(kind, key_of(object.meta()))
            }
            Err(e) => log::warn!("data plane watch of {}: {e}", K::plural(&Default::default())),
        }
        futures::future::ready(())
    }));
    store
}

/// Every object of the kind is kept.
fn every<K>(_: &K, _: Option<&K>) -> bool {
    true
}

/// The pods the data plane stores: those with kactus attachments (peers, and the local pods
/// it programs), the ones that just lost them (so their tables go), and every pod of this
/// node. A cluster's other pods (most of them) are neither stored nor wake the loop.
fn kept_pod(pod: &Pod, had: Option<&Pod>, node: &str) -> bool {
    let attached = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == ATTACHMENTS_CONDITION))
    };
    let local = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
    attached(pod) || local || had.is_some_and(attached)
}

/// What the data plane keeps of a pod: name, namespace, UID, labels, node, container ports,
/// phase and kactus's attachments condition. Everything else (annotations, managed fields,
/// volumes, images, other conditions...) is dropped before the store: podagent's memory.
pub fn strip_pod(pod: &mut Pod) {
    let meta = std::mem::take(&mut pod.metadata);
    pod.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        labels: meta.labels,
        ..Default::default()
    };
    let spec = pod.spec.take().unwrap_or_default();
    let containers = spec
        .containers
        .into_iter()
        .filter(|c| c.ports.as_ref().is_some_and(|p| !p.is_empty()))
        .map(|c| Container { name: c.name, ports: c.ports, ..Default::default() })
        .collect();
    pod.spec = Some(PodSpec { node_name: spec.node_name, containers, ..Default::default() });
    let status = pod.status.take().unwrap_or_default();
    let conditions: Vec<_> =
        status.conditions.into_iter().flatten().filter(|c| c.type_ == ATTACHMENTS_CONDITION).collect();
    pod.status = Some(PodStatus {
        phase: status.phase,
        conditions: (!conditions.is_empty()).then_some(conditions),
        ..Default::default()
    });
}

/// Namespaces: their name and labels only.
fn strip_namespace(namespace: &mut Namespace) {
    let meta = std::mem::take(&mut namespace.metadata);
    *namespace = Namespace {
        metadata: ObjectMeta { name: meta.name, labels: meta.labels, ..Default::default() },
        ..Default::default()
    };
}

/// A core/v1 Endpoints kactus-endpoints wrote (Kubernetes 1.20) as the slices it stands for:
/// one per subset and family, labelled as kactus labels its slices (its own labels kept,
/// `kubernetes.io/service-name` its name), ready addresses ready and not-ready ones not.
pub fn as_slices(endpoints: &Endpoints) -> Vec<EndpointSlice> {
    let mut labels = endpoints.metadata.labels.clone().unwrap_or_default();
    // Only kactus-endpoints' own Endpoints are watched: their slices are kactus's too.
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    if let Some(name) = &endpoints.metadata.name {
        labels.insert(SERVICE_NAME_LABEL.to_string(), name.clone());
    }
    let mut out = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: p.name.clone(),
                port: Some(p.port),
                protocol: p.protocol.clone(),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        for v6 in [false, true] {
            let endpoint = |ip: &str, ready: bool| {
                let family_ok = ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_ipv6() == v6);
                family_ok.then(|| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions { ready: Some(ready), ..Default::default() }),
                    ..Default::default()
                })
            };
            let ready = subset.addresses.iter().flatten().filter_map(|a| endpoint(&a.ip, true));
            let not_ready = subset.not_ready_addresses.iter().flatten().filter_map(|a| endpoint(&a.ip, false));
            let endpoints_here: Vec<Endpoint> = ready.chain(not_ready).collect();
            if endpoints_here.is_empty() {
                continue;
            }
            out.push(EndpointSlice {
                metadata: ObjectMeta {
                    name: endpoints.metadata.name.clone(),
                    namespace: endpoints.metadata.namespace.clone(),
                    labels: Some(labels.clone()),
                    ..Default::default()
                },
                address_type: if v6 { "IPv6" } else { "IPv4" }.into(),
                endpoints: endpoints_here,
                ports: Some(ports.clone()),
            });
        }
    }
    out
}

/// [`crate::daemon::api::serves`], its error told as the watches tell theirs.
async fn served(client: &kube::Client, group_version: &str, resource: &str) -> Result<bool, String> {
    crate::daemon::api::serves(client, group_version, resource).await.map_err(|e| {
        format!("asking the apiserver whether it serves {group_version}: {}", crate::kube::error_chain(&e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_stripped_pod_keeps_what_policies_and_the_proxy_read_and_nothing_else() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u1", "labels": {"app": "a"},
                         "annotations": {"k8s.v1.cni.cncf.io/network-status": "[]"},
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"nodeName": "node1", "containers": [
                {"name": "c", "image": "big", "ports": [{"name": "http", "containerPort": 80}]},
                {"name": "sidecar", "image": "x"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": ATTACHMENTS_CONDITION, "status": "True", "message": "[]"}]}
        }))
        .unwrap();
        let before = crate::policy::PodView::from_pod(&pod);
        strip_pod(&mut pod);
        assert_eq!(crate::policy::PodView::from_pod(&pod), before, "policies see the same pod");
        assert!(pod.metadata.annotations.is_none() && pod.metadata.managed_fields.is_none());
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node1"));
        assert_eq!(spec.containers.len(), 1);
        assert!(spec.containers[0].image.is_none());
        let status = pod.status.as_ref().unwrap();
        assert!(status.pod_ip.is_none());
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn only_pods_with_attachments_or_on_this_node_are_kept() {
        let pod = |node: &str, attached: bool| -> Pod {
            let conditions =
                if attached { json!([{"type": ATTACHMENTS_CONDITION, "status": "True"}]) } else { json!([]) };
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"nodeName": node, "containers": []},
                "status": {"conditions": conditions}}))
            .unwrap()
        };
        assert!(kept_pod(&pod("node2", true), None, "node1"), "a peer");
        assert!(kept_pod(&pod("node1", false), None, "node1"), "a local pod");
        assert!(!kept_pod(&pod("node2", false), None, "node1"), "neither");
        assert!(kept_pod(&pod("node2", false), Some(&pod("node2", true)), "node1"), "a peer that left the network");
    }

    #[test]
    fn legacy_endpoints_read_as_kactus_slices_per_family() {
        let endpoints: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "hello", "namespace": "mep", "labels": {ENDPOINTS_MANAGED_BY_LABEL: ENDPOINTS_MANAGED_BY}},
            "subsets": [{"addresses": [{"ip": "200.1.1.2"}, {"ip": "fd00::2"}],
                         "notReadyAddresses": [{"ip": "200.1.1.3"}],
                         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]
        }))
        .unwrap();
        let slices = as_slices(&endpoints);
        assert_eq!(slices.len(), 2);
        let labels = slices[0].metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get(SERVICE_NAME_LABEL).map(String::as_str), Some("hello"));
        assert_eq!(slices[0].address_type, "IPv4");
        assert_eq!(slices[0].endpoints.len(), 2);
        assert_eq!(slices[0].endpoints[1].conditions.as_ref().unwrap().ready, Some(false));
        assert_eq!(slices[1].endpoints[0].addresses, vec!["fd00::2".to_string()]);
    }
}
