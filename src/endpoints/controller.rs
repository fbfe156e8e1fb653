//! The story of one reconcile: decide the Service's shape, compute the slices it should have
//! from the pods it selects, read the slices it has (fresh from the apiserver, never a stale
//! copy), and write only the difference. And for a Service that is gone: remove its slices.
//!
//! kube-rs's `Controller` (wired in `super::run`) calls [`reconcile`] for a Service whenever it,
//! a pod it selects (or selected), or one of its slices changes, and [`error_policy`] decides
//! when a failed one is tried again.

use super::desired::{self, desired_endpoints, desired_slices, endpoints_up_to_date, slices_selector, up_to_date};
use super::leader::Fence;
use super::metrics::Metrics;
use super::shape::{selector_json, selects, shape_of, NetworkRef, Shape, SELECTOR_ANNOTATION};
use crate::daemon::retry::Retries;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const UNSUPPORTED_REASON: &str = "UnsupportedServiceShape";
/// The Warning on a seed-shaped Service the controller moved (the webhook did not).
pub const MOVED_REASON: &str = "SelectorMoved";
/// The Event on a Service whose leftover kube-controller-manager endpoints were removed.
pub const LEFTOVERS_REASON: &str = "PrimaryNetworkEndpointsRemoved";
/// The Warning on a Service whose selected pods have no address on its network.
pub const NO_ADDRESSES_REASON: &str = "NoAddressesOnNetwork";
/// The Warning on a Service whose ports some selected pods do not declare.
pub const PORTS_REASON: &str = "PortsUnresolved";
/// After moving a Service's selector, look for kube-controller-manager's leftovers again this
/// much later (its informers may still have acted on the selector after our first look).
const RECHECK_AFTER_MOVE: Duration = Duration::from_secs(3);

/// What this cluster gets published, decided once at start from discovery.
#[derive(Debug, Clone, Copy)]
pub struct Publishing {
    /// `discovery.k8s.io/v1` EndpointSlices (Kubernetes 1.21+).
    pub slices: bool,
    /// core/v1 Endpoints: where there are no v1 slices, or on request.
    pub endpoints: bool,
    /// `discovery.k8s.io/v1beta1` is what kube-controller-manager writes (1.17-1.20): its
    /// leftovers are looked for there.
    pub beta_slices: bool,
}
/// The Event on a pod whose network-status claims addresses kactus did not give it.
pub const UNATTESTED_REASON: &str = "NetworkStatusIgnored";
/// Bound on one reconcile's apiserver calls: a hung apiserver fails it, and it is retried.
const RECONCILE_BOUND: Duration = Duration::from_secs(30);
/// How the warnings about a pod (not a Service) are keyed in `Context::warned`.
const POD_KEY: &str = "pod:";

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    /// The pods of the watched namespaces (selected by each Service's annotation).
    pub pods: Store<Pod>,
    pub pods_listed: crate::daemon::listed::Listed,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// Whether this replica leads (always true without leader election).
    pub leading: tokio::sync::watch::Receiver<bool>,
    /// Whether it may write this instant (see [`Fence`]).
    pub fence: Fence,
    pub retries: Retries,
    /// Per Service: the uid and message last warned about, so one problem makes one Event.
    pub warned: Mutex<HashMap<String, (String, String)>>,
    pub publishing: Publishing,
    /// Our Endpoints objects (watched only when Endpoints are published).
    pub our_endpoints: Store<Endpoints>,
    /// Per Service: the uid found free of kube-controller-manager's leftovers since this
    /// process started (so each served Service costs that look once, not on every pod change).
    pub clean: Mutex<HashMap<String, String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(String);

impl From<kube::Error> for Failed {
    fn from(e: kube::Error) -> Failed {
        Failed(crate::kube::error_chain(&e))
    }
}

pub async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Failed> {
    if !*ctx.leading.borrow() {
        return Ok(Action::await_change());
    }
    let key = key_of(&service);
    match tokio::time::timeout(RECONCILE_BOUND, ctx.sync(&service, &key)).await {
        Ok(Ok(again)) => {
            ctx.metrics.syncs.inc();
            ctx.retries.succeeded(&key);
            Ok(again.map_or_else(Action::await_change, Action::requeue))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Failed(format!("no answer from the apiserver within {RECONCILE_BOUND:?}"))),
    }
}

/// Retries a failed Service after 50 ms, doubling to 30 s.
pub fn error_policy(service: Arc<Service>, failed: &Failed, ctx: Arc<Context>) -> Action {
    ctx.metrics.failures.inc();
    let key = key_of(&service);
    let delay = ctx.retries.failed(&key, service.metadata.resource_version.as_deref().unwrap_or_default());
    log::warn!("service {key}: {failed}; retrying in {delay:?}");
    Action::requeue(delay)
}

impl Context {
    /// One Service brought to what it should have; `Some` asks to look again that much later.
    async fn sync(&self, service: &Service, key: &str) -> Result<Option<Duration>, Failed> {
        // An unlisted pod cache would look like "no pods" and empty every slice.
        self.pods_listed.wait().await;
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        let desired = match shape_of(service) {
            Shape::SeedShaped { selector } => {
                self.move_selector(service, key, &selector).await?;
                // The write triggers the next reconcile, which removes the leftovers.
                lock(&self.clean).remove(key);
                return Ok(Some(RECHECK_AFTER_MOVE));
            }
            Shape::Supported { network, selector } => return self.serve(service, key, &network, &selector).await,
            Shape::Unsupported { message } => {
                self.warn_once(key, service, &message).await?;
                // Kubernetes' controllers own this Service's endpoints now; ours must go.
                Vec::new()
            }
            Shape::NotOurs => {
                self.forget_warning(key);
                Vec::new()
            }
        };
        if self.publishing.endpoints && self.our_endpoints.get(&ObjectRef::new(name).within(namespace)).is_some() {
            self.apply_endpoints(namespace, name, None).await?;
        }
        self.apply(namespace, name, desired).await?;
        Ok(None)
    }

    /// A Service in the served shape: its endpoints from the selected pods' addresses on
    /// `network`, after removing what kube-controller-manager left for it (looked for once per
    /// Service, and again after each removal).
    async fn serve(
        &self,
        service: &Service,
        key: &str,
        network: &NetworkRef,
        selector: &BTreeMap<String, String>,
    ) -> Result<Option<Duration>, Failed> {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        let uid = service.metadata.uid.clone().unwrap_or_default();
        self.forget_warning(key);
        let pods = self.pods.state();
        forget_gone_pods(&mut lock(&self.warned), &pods);
        let selected: Vec<&Pod> = pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| p.metadata.labels.as_ref().is_some_and(|labels| selects(selector, labels)))
            .collect();
        for pod in &selected {
            self.warn_of_unattested_claims(pod, network).await?;
        }
        let slices = desired_slices(service, network, &selected);
        self.warn_of_selection(key, service, network, &selected).await?;
        let mut removed = Vec::new();
        if lock(&self.clean).get(key) != Some(&uid) {
            removed = self.remove_kubernetes_leftovers(namespace, name).await?;
        }
        if self.publishing.endpoints {
            let endpoints = desired_endpoints(service, &slices, self.publishing.slices);
            if let Some(replaced) = self.apply_endpoints(namespace, name, Some(endpoints)).await? {
                removed.push(replaced);
            }
        }
        self.apply(namespace, name, slices).await?;
        if !removed.is_empty() {
            let message = format!(
                "removed what kube-controller-manager had published for this Service with the pods' \
                 primary-network addresses while it had spec.selector: {}",
                removed.join(", ")
            );
            log::info!("service {key}: {message}");
            self.metrics.leftovers_removed.inc_by(removed.len() as u64);
            self.publish(service, EventType::Normal, LEFTOVERS_REASON, &message).await?;
            // Look once more: it may still have been acting on the selector.
            return Ok(Some(RECHECK_AFTER_MOVE));
        }
        lock(&self.clean).insert(key.to_string(), uid);
        Ok(None)
    }

    /// A seed-shaped Service that got past the webhook (down, or not installed): its
    /// `spec.selector` moves into the annotation, exactly as the webhook would have moved it.
    /// The write is conditional on the resourceVersion read, so a concurrent edit is never lost.
    async fn move_selector(
        &self,
        service: &Service,
        key: &str,
        selector: &BTreeMap<String, String>,
    ) -> Result<(), Failed> {
        if !self.fence.may_write() {
            return Err(Failed("not holding the lease: writing nothing".into()));
        }
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        let value = selector_json(selector);
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": service.metadata.resource_version, "annotations": {SELECTOR_ANNOTATION: value}},
            "spec": {"selector": null},
        });
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        self.metrics.conversions.inc();
        let message = format!(
            "spec.selector {value} moved into the {SELECTOR_ANNOTATION} annotation by kactus-endpoints after the \
             Service was stored: the admission webhook did not see this write (down, or not installed), so \
             Kubernetes may have published primary-network endpoints for it meanwhile; they are being removed"
        );
        log::warn!("service {key}: {message}");
        self.publish(service, EventType::Warning, MOVED_REASON, &message).await
    }

    /// Removes what kube-controller-manager published for a Service while it had a selector
    /// (it does not remove them itself when the selector goes: kubernetes#91072): its
    /// EndpointSlices (`managed-by: endpointslice-controller.k8s.io`) and, where we publish no
    /// Endpoints of our own (which then replace it), its Endpoints object, which the mirroring
    /// controller would otherwise copy into slices. Returns what it removed, for the Event.
    async fn remove_kubernetes_leftovers(&self, namespace: &str, name: &str) -> Result<Vec<String>, Failed> {
        let mut removed = Vec::new();
        let selector = desired::kubernetes_slices_selector(name);
        let fenced = || match self.fence.may_write() {
            true => Ok(()),
            false => Err(Failed("not holding the lease: writing nothing".into())),
        };
        let version = match (self.publishing.slices, self.publishing.beta_slices) {
            (true, _) => Some("v1"),
            (false, true) => Some("v1beta1"),
            (false, false) => None,
        };
        if let Some(version) = version {
            let gvk = GroupVersionKind::gvk("discovery.k8s.io", version, "EndpointSlice");
            let resource = ApiResource::from_gvk_with_plural(&gvk, "endpointslices");
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &resource);
            for slice in api.list(&ListParams::default().labels(&selector)).await?.items {
                let slice_name = slice.metadata.name.unwrap_or_default();
                fenced()?;
                match api.delete(&slice_name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                removed.push(format!("EndpointSlice {slice_name}"));
            }
        }
        if !self.publishing.endpoints {
            let api: Api<Endpoints> = Api::namespaced(self.client.clone(), namespace);
            if let Some(leftover) = api.get_opt(name).await?.filter(|e| !desired::is_our_endpoints(e)) {
                fenced()?;
                let precondition = DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        uid: leftover.metadata.uid.clone(),
                        resource_version: leftover.metadata.resource_version.clone(),
                    }),
                    ..Default::default()
                };
                match api.delete(name, &precondition).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                removed.push(format!("Endpoints {name}"));
            }
        }
        Ok(removed)
    }

    /// Makes the Service's core/v1 Endpoints `desired` (`None`: ours removed). Returns
    /// `Some(what)` when it replaced an Endpoints object someone else wrote (kube-controller-
    /// manager's, from when the Service had a selector).
    async fn apply_endpoints(
        &self,
        namespace: &str,
        name: &str,
        desired: Option<Endpoints>,
    ) -> Result<Option<String>, Failed> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), namespace);
        let existing = api.get_opt(name).await?;
        let fenced = || match self.fence.may_write() {
            true => Ok(()),
            false => Err(Failed("not holding the lease: writing nothing".into())),
        };
        match (existing, desired) {
            (None, None) => Ok(None),
            (Some(have), None) => {
                if desired::is_our_endpoints(&have) {
                    fenced()?;
                    match api.delete(name, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) if status.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                    log::info!("deleted endpoints {namespace}/{name}");
                    self.metrics.endpoints_writes.inc();
                }
                Ok(None)
            }
            (None, Some(want)) => {
                fenced()?;
                api.create(&PostParams::default(), &want).await?;
                log::info!("created endpoints {namespace}/{name}");
                self.metrics.endpoints_writes.inc();
                Ok(None)
            }
            (Some(have), Some(want)) if desired::is_our_endpoints(&have) && endpoints_up_to_date(&have, &want) => {
                Ok(None)
            }
            (Some(mut have), Some(want)) => {
                fenced()?;
                let foreign = !desired::is_our_endpoints(&have);
                have.metadata.labels = want.metadata.labels;
                have.metadata.owner_references = want.metadata.owner_references;
                have.subsets = want.subsets;
                api.replace(name, &PostParams::default(), &have).await?;
                log::info!("updated endpoints {namespace}/{name}");
                self.metrics.endpoints_writes.inc();
                Ok(foreign.then(|| format!("Endpoints {name} (replaced)")))
            }
        }
    }

    /// Removes the slices of a Service that no longer exists (deleted while we ran, or while
    /// we were away: nothing else would, on a cluster without a garbage collector for them).
    pub async fn remove_slices_of(&self, service: &ObjectRef<Service>) -> Result<(), Failed> {
        let namespace = service.namespace.as_deref().unwrap_or_default();
        let removal = async {
            if self.publishing.endpoints {
                self.apply_endpoints(namespace, &service.name, None).await?;
            }
            self.apply(namespace, &service.name, Vec::new()).await
        };
        tokio::time::timeout(RECONCILE_BOUND, removal)
            .await
            .map_err(|_| Failed(format!("no answer from the apiserver within {RECONCILE_BOUND:?}")))?
    }

    /// Creates, updates and deletes slices so that the Service's existing ones become `desired`.
    async fn apply(&self, namespace: &str, service: &str, desired: Vec<EndpointSlice>) -> Result<(), Failed> {
        if !self.publishing.slices {
            return Ok(());
        }
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), namespace);
        let existing = api.list(&ListParams::default().labels(&slices_selector(service))).await?;
        let mut existing: HashMap<String, EndpointSlice> =
            existing.items.into_iter().map(|s| (s.metadata.name.clone().unwrap_or_default(), s)).collect();
        let fenced = || match self.fence.may_write() {
            true => Ok(()),
            false => Err(Failed("not holding the lease: writing nothing".into())),
        };
        for want in desired {
            let name = want.metadata.name.clone().unwrap_or_default();
            match existing.remove(&name) {
                Some(have) if up_to_date(&have, &want) => {}
                Some(mut update) => {
                    fenced()?;
                    update.metadata.labels = want.metadata.labels;
                    update.metadata.owner_references = want.metadata.owner_references;
                    update.endpoints = want.endpoints;
                    update.ports = want.ports;
                    api.replace(&name, &PostParams::default(), &update).await?;
                    log::info!("updated endpointslice {namespace}/{name}");
                    self.metrics.slice_writes.inc();
                }
                None => {
                    fenced()?;
                    api.create(&PostParams::default(), &want).await?;
                    log::info!("created endpointslice {namespace}/{name}");
                    self.metrics.slice_writes.inc();
                }
            }
        }
        for name in existing.keys() {
            fenced()?;
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            log::info!("deleted endpointslice {namespace}/{name}");
            self.metrics.slice_writes.inc();
        }
        Ok(())
    }

    /// One Warning Event per problem (Service uid and message); kube's Recorder would fold
    /// repeats into a count, but a Service re-checked on every pod change need not say it again.
    async fn warn_once(&self, key: &str, service: &Service, message: &str) -> Result<(), Failed> {
        log::warn!("service {key}: {message}");
        self.warn_once_about(key, service, UNSUPPORTED_REASON, message).await
    }

    /// Selected pods that give no endpoint: none on the network (a misspelt network, or pods
    /// that do not ask for it), or serving none of the Service's ports. One Event per problem.
    async fn warn_of_selection(
        &self,
        key: &str,
        service: &Service,
        network: &NetworkRef,
        selected: &[&Pod],
    ) -> Result<(), Failed> {
        let on_network = selected.iter().filter(|p| !desired::addresses_on(p, network).is_empty()).count();
        let network_key = format!("{key}#network");
        if !selected.is_empty() && on_network == 0 {
            let message = format!(
                "none of the pods this Service selects has an address kactus attached on network {network}: no \
                 endpoints. Check the network's name in k8s.v1.cni.cncf.io/networks, and that the pods ask for it"
            );
            log::warn!("service {key}: {message}");
            self.warn_once_about(&network_key, service, NO_ADDRESSES_REASON, &message).await?;
        } else {
            self.forget_warning(&network_key);
        }
        let ports_key = format!("{key}#ports");
        let unresolved = desired::unresolved_pods(service, network, selected);
        if unresolved.is_empty() {
            self.forget_warning(&ports_key);
            return Ok(());
        }
        let target_ports: Vec<String> = service
            .spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .map(|p| match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => s.clone(),
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => n.to_string(),
                None => p.port.to_string(),
            })
            .collect();
        let message = format!(
            "no container port named {} in pod(s) {}, which have addresses on {network}: left out of the endpoints",
            target_ports.join(", "),
            unresolved.join(", ")
        );
        log::warn!("service {key}: {message}");
        self.warn_once_about(&ports_key, service, PORTS_REASON, &message).await
    }

    /// A pod whose `network-status` annotation claims addresses kactus did not record for it
    /// (someone edited it): the claim is ignored (see [`desired::addresses_on`]) and the pod's
    /// owner told why, once per claim.
    async fn warn_of_unattested_claims(&self, pod: &Pod, network: &NetworkRef) -> Result<(), Failed> {
        let claims = desired::unattested_claims(pod, network);
        let key = format!(
            "{POD_KEY}{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        if claims.is_empty() {
            lock(&self.warned).remove(&key);
            return Ok(());
        }
        let listed: Vec<String> = claims.iter().map(ToString::to_string).collect();
        let message = format!(
            "network-status claims {} on {network}, which kactus did not assign to this pod: ignored; \
             endpoints list only the addresses kactus recorded in the pod's {} condition",
            listed.join(", "),
            crate::attachment::attested::CONDITION
        );
        log::warn!("{key}: {message}");
        self.warn_once_about(&key, pod, UNATTESTED_REASON, &message).await
    }

    async fn warn_once_about<K: Resource<DynamicType = ()>>(
        &self,
        key: &str,
        object: &K,
        reason: &str,
        message: &str,
    ) -> Result<(), Failed> {
        let seen = (object.meta().uid.clone().unwrap_or_default(), message.to_string());
        if lock(&self.warned).get(key) == Some(&seen) {
            return Ok(());
        }
        self.publish(object, EventType::Warning, reason, message).await?;
        lock(&self.warned).insert(key.to_string(), seen);
        Ok(())
    }

    async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), Failed> {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(message.chars().take(1000).collect()),
            action: "PublishEndpoints".into(),
            secondary: None,
        };
        self.recorder
            .publish(&event, &object.object_ref(&()))
            .await
            .map_err(|e| Failed(format!("writing the {reason} event: {}", crate::kube::error_chain(&e))))?;
        Ok(())
    }

    fn forget_warning(&self, key: &str) {
        lock(&self.warned).remove(key);
    }

    /// Forgets everything kept about a Service that is gone.
    pub fn forget(&self, key: &str) {
        let mut warned = lock(&self.warned);
        for suffix in ["", "#network", "#ports"] {
            warned.remove(&format!("{key}{suffix}"));
        }
        lock(&self.clean).remove(key);
    }
}

/// Forgets the warnings about pods that are gone: a deleted pod is never reconciled again, so
/// without this every pod ever warned about would stay in memory for the process's life.
/// Costs nothing while no pod is warned about.
fn forget_gone_pods(warned: &mut HashMap<String, (String, String)>, pods: &[Arc<Pod>]) {
    if !warned.keys().any(|key| key.starts_with(POD_KEY)) {
        return;
    }
    let live: std::collections::HashSet<&str> = pods.iter().filter_map(|p| p.metadata.uid.as_deref()).collect();
    warned.retain(|key, (uid, _)| !key.starts_with(POD_KEY) || live.contains(uid.as_str()));
}

/// The Services a pod change concerns: those whose selector picks the pod now, and those
/// whose slices list it (it may have been picked before the change, or be gone).
pub fn services_for_pod(
    pod: &Pod,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    endpoints: &Store<Endpoints>,
) -> Vec<ObjectRef<Service>> {
    let namespace = pod.metadata.namespace.as_deref();
    let no_labels = Default::default();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&no_labels);
    let selecting =
        services.state().into_iter().filter(|s| s.metadata.namespace.as_deref() == namespace).filter(
            |s| match shape_of(s) {
                Shape::Supported { selector, .. } => selects(&selector, labels),
                _ => false,
            },
        );
    let mut refs: Vec<ObjectRef<Service>> = selecting.map(|s| ObjectRef::from_obj(s.as_ref())).collect();
    let listing = slices
        .state()
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == namespace)
        .filter(|s| s.endpoints.iter().any(|e| e.target_ref.as_ref().is_some_and(|r| r.name == pod.metadata.name)));
    refs.extend(listing.filter_map(|s| service_of(&s)));
    let listing_endpoints =
        endpoints.state().into_iter().filter(|e| e.metadata.namespace.as_deref() == namespace).filter(|e| {
            e.subsets.iter().flatten().any(|s| {
                s.addresses
                    .iter()
                    .chain(s.not_ready_addresses.iter())
                    .flatten()
                    .any(|a| a.target_ref.as_ref().is_some_and(|r| r.name == pod.metadata.name))
            })
        });
    refs.extend(listing_endpoints.map(|e| service_of_endpoints(&e)));
    refs
}

/// The Service an Endpoints object of ours belongs to (same name).
pub fn service_of_endpoints(endpoints: &Endpoints) -> ObjectRef<Service> {
    ObjectRef::new(endpoints.metadata.name.as_deref().unwrap_or_default())
        .within(endpoints.metadata.namespace.as_deref().unwrap_or_default())
}

/// The Service a slice of ours belongs to.
pub fn service_of(slice: &EndpointSlice) -> Option<ObjectRef<Service>> {
    let name = slice.metadata.labels.as_ref()?.get(desired::SERVICE_NAME_LABEL)?;
    Some(ObjectRef::new(name).within(slice.metadata.namespace.as_deref().unwrap_or_default()))
}

pub fn key_of(service: &Service) -> String {
    format!(
        "{}/{}",
        service.metadata.namespace.as_deref().unwrap_or_default(),
        service.metadata.name.as_deref().unwrap_or_default()
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> Arc<Pod> {
        let mut pod = Pod::default();
        pod.metadata.uid = Some(uid.into());
        Arc::new(pod)
    }

    #[test]
    fn warnings_about_gone_pods_are_forgotten_and_services_and_live_pods_kept() {
        let mut warned: HashMap<String, (String, String)> = [
            ("ns/svc#ports", "svc-uid"),
            ("pod:ns/live", "uid-live"),
            ("pod:ns/gone", "uid-gone"),
            // Recreated under the same name: the warning was about the old pod.
            ("pod:ns/again", "uid-old"),
        ]
        .into_iter()
        .map(|(k, uid)| (k.to_string(), (uid.to_string(), "message".to_string())))
        .collect();
        forget_gone_pods(&mut warned, &[pod("uid-live"), pod("uid-new")]);
        let mut left: Vec<&str> = warned.keys().map(String::as_str).collect();
        left.sort();
        assert_eq!(left, ["ns/svc#ports", "pod:ns/live"]);
    }
}
