//! The story of one reconcile: decide the Service's shape, compute the slices it should have
//! from the pods it selects, read the slices it has (fresh from the apiserver, never a stale
//! copy), and write only the difference. And for a Service that is gone: remove its slices.
//!
//! kube-rs's `Controller` (wired in `super::run`) calls [`reconcile`] for a Service whenever it,
//! a pod it selects (or selected), or one of its slices changes, and [`error_policy`] decides
//! when a failed one is tried again.

use super::desired::{self, desired_slices, slices_selector, up_to_date};
use super::leader::Fence;
use super::metrics::Metrics;
use super::shape::{selects, shape_of, Shape};
use crate::daemon::retry::Retries;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const UNSUPPORTED_REASON: &str = "UnsupportedServiceShape";
/// The Event on a pod whose network-status claims addresses kactus did not give it.
pub const UNATTESTED_REASON: &str = "NetworkStatusIgnored";
/// Bound on one reconcile's apiserver calls: a hung apiserver fails it, and it is retried.
const RECONCILE_BOUND: Duration = Duration::from_secs(30);

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
        Ok(Ok(())) => {
            ctx.metrics.syncs.inc();
            ctx.retries.succeeded(&key);
            Ok(Action::await_change())
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
    async fn sync(&self, service: &Service, key: &str) -> Result<(), Failed> {
        // An unlisted pod cache would look like "no pods" and empty every slice.
        self.pods_listed.wait().await;
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        let desired = match shape_of(service) {
            Shape::Supported { network, selector } => {
                self.forget_warning(key);
                let pods = self.pods.state();
                let selected: Vec<&Pod> = pods
                    .iter()
                    .map(|p| p.as_ref())
                    .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
                    .filter(|p| p.metadata.labels.as_ref().is_some_and(|labels| selects(&selector, labels)))
                    .collect();
                for pod in &selected {
                    self.warn_of_unattested_claims(pod, &network).await?;
                }
                desired_slices(service, &network, &selected)
            }
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
        self.apply(namespace, name, desired).await
    }

    /// Removes the slices of a Service that no longer exists (deleted while we ran, or while
    /// we were away: nothing else would, on a cluster without a garbage collector for them).
    pub async fn remove_slices_of(&self, service: &ObjectRef<Service>) -> Result<(), Failed> {
        let namespace = service.namespace.as_deref().unwrap_or_default();
        let removal = self.apply(namespace, &service.name, Vec::new());
        tokio::time::timeout(RECONCILE_BOUND, removal)
            .await
            .map_err(|_| Failed(format!("no answer from the apiserver within {RECONCILE_BOUND:?}")))?
    }

    /// Creates, updates and deletes slices so that the Service's existing ones become `desired`.
    async fn apply(&self, namespace: &str, service: &str, desired: Vec<EndpointSlice>) -> Result<(), Failed> {
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
                    let labels = update.metadata.labels.get_or_insert_default();
                    labels.extend(want.metadata.labels.unwrap_or_default());
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

    /// A pod whose `network-status` annotation claims addresses kactus did not record for it
    /// (someone edited it): the claim is ignored (see [`desired::addresses_on`]) and the pod's
    /// owner told why, once per claim.
    async fn warn_of_unattested_claims(&self, pod: &Pod, network: &super::shape::NetworkRef) -> Result<(), Failed> {
        let claims = desired::unattested_claims(pod, network);
        let key = format!(
            "pod:{}/{}",
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
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(message.chars().take(1000).collect()),
            action: "PublishEndpoints".into(),
            secondary: None,
        };
        self.recorder
            .publish(&event, &object.object_ref(&()))
            .await
            .map_err(|e| Failed(format!("writing the {reason} event: {}", crate::kube::error_chain(&e))))?;
        lock(&self.warned).insert(key.to_string(), seen);
        Ok(())
    }

    fn forget_warning(&self, key: &str) {
        lock(&self.warned).remove(key);
    }
}

/// The Services a pod change concerns: those whose selector picks the pod now, and those
/// whose slices list it (it may have been picked before the change, or be gone).
pub fn services_for_pod(
    pod: &Pod,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
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
    refs
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
