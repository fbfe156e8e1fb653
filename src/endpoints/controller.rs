//! The story of one reconcile: read the Service, decide its shape, compute the slices it
//! should have, read the slices it has (fresh from the apiserver, never a stale copy), and
//! write only the difference.

use super::desired::{self, desired_slices, slices_selector, up_to_date};
use super::event;
use super::informer::Cache;
use super::metrics::Metrics;
use super::queue::WorkQueue;
use super::shape::{selects, shape_of, Shape};
use crate::kube::{Client, EndpointSlice, KubeError, Pod, Service};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const UNSUPPORTED_REASON: &str = "UnsupportedServiceShape";

pub struct Controller {
    pub client: Client,
    pub services: Arc<Cache<Service>>,
    pub pods: Arc<Cache<Pod>>,
    pub queue: Arc<WorkQueue>,
    pub metrics: Arc<Metrics>,
    /// Per Service: the uid and message last warned about, so one problem makes one Event.
    warned: Mutex<HashMap<String, (String, String)>>,
    /// Per Service: consecutive failures, for the retry delay.
    failures: Mutex<HashMap<String, u32>>,
}

impl Controller {
    pub fn new(
        client: Client,
        services: Arc<Cache<Service>>,
        pods: Arc<Cache<Pod>>,
        queue: Arc<WorkQueue>,
        metrics: Arc<Metrics>,
    ) -> Controller {
        Controller { client, services, pods, queue, metrics, warned: Mutex::default(), failures: Mutex::default() }
    }

    /// Works the queue forever, once `ready` says every cache has listed (an unlisted pod
    /// cache would look like "no pods" and empty every slice).
    pub fn run(&self, ready: impl Fn() -> bool) {
        while !ready() {
            std::thread::sleep(Duration::from_millis(20));
        }
        loop {
            let key = self.queue.next();
            match self.reconcile(&key) {
                Ok(()) => {
                    self.metrics.syncs.inc();
                    lock(&self.failures).remove(&key);
                }
                Err(e) => {
                    self.metrics.failures.inc();
                    let n = {
                        let mut failures = lock(&self.failures);
                        let n = failures.entry(key.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    let delay = Duration::from_millis(100).saturating_mul(1 << n.min(8)).min(Duration::from_secs(30));
                    log::warn!("service {key}: {e}; retrying in {delay:?}");
                    self.queue.add_after(&key, delay);
                }
            }
        }
    }

    /// Services of `namespace` whose selector picks a pod with these labels.
    pub fn services_selecting(
        &self,
        namespace: &str,
        labels: &[&std::collections::BTreeMap<String, String>],
    ) -> Vec<String> {
        self.services
            .in_namespace(namespace, |s| match shape_of(s) {
                Shape::Supported { selector, .. } => labels.iter().any(|l| selects(&selector, l)),
                _ => false,
            })
            .iter()
            .map(|s| format!("{}/{}", s.metadata.namespace, s.metadata.name))
            .collect()
    }

    pub fn reconcile(&self, key: &str) -> Result<(), KubeError> {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        let service = self.services.get(key);
        let shape = service.as_ref().map_or(Shape::NotOurs, shape_of);
        let existing = self.existing_slices(namespace, name)?;
        let desired = match (&shape, &service) {
            (Shape::Supported { network, selector }, Some(service)) => {
                lock(&self.warned).remove(key);
                let pods = self.pods.in_namespace(namespace, |p| selects(selector, &p.metadata.labels));
                let selected: Vec<&Pod> = pods.iter().collect();
                desired_slices(service, network, &selected)
            }
            (Shape::Unsupported { message }, Some(service)) => {
                self.warn_once(key, service, message);
                // Kubernetes' controllers own this Service's endpoints now; ours must go.
                Vec::new()
            }
            _ => {
                lock(&self.warned).remove(key);
                Vec::new()
            }
        };
        self.apply(namespace, existing, desired)
    }

    fn existing_slices(&self, namespace: &str, service: &str) -> Result<Vec<EndpointSlice>, KubeError> {
        let selector = slices_selector(service);
        Ok(self.client.list::<EndpointSlice>(&slices_path(namespace), &[("labelSelector", &selector)])?.items)
    }

    /// Creates, updates and deletes slices so that `existing` becomes `desired`.
    fn apply(
        &self,
        namespace: &str,
        existing: Vec<EndpointSlice>,
        desired: Vec<EndpointSlice>,
    ) -> Result<(), KubeError> {
        let mut existing: HashMap<String, EndpointSlice> =
            existing.into_iter().map(|s| (s.metadata.name.clone(), s)).collect();
        for want in desired {
            let name = want.metadata.name.clone();
            match existing.remove(&name) {
                Some(have) if up_to_date(&have, &want) => {}
                Some(have) => {
                    let mut update = have;
                    update.metadata.labels.extend(want.metadata.labels);
                    update.metadata.owner_references = want.metadata.owner_references;
                    update.endpoints = want.endpoints;
                    update.ports = want.ports;
                    let body = serde_json::to_value(&update).map_err(decode)?;
                    self.client.replace::<EndpointSlice>(&slice_path(namespace, &name), &body)?;
                    log::info!("updated endpointslice {namespace}/{name}");
                    self.metrics.slice_writes.inc();
                }
                None => {
                    let mut body = serde_json::to_value(&want).map_err(decode)?;
                    body["apiVersion"] = "discovery.k8s.io/v1".into();
                    body["kind"] = "EndpointSlice".into();
                    self.client.create::<EndpointSlice>(&slices_path(namespace), &body)?;
                    log::info!("created endpointslice {namespace}/{name}");
                    self.metrics.slice_writes.inc();
                }
            }
        }
        for name in existing.keys() {
            match self.client.delete(&slice_path(namespace, name)) {
                Ok(()) | Err(KubeError::NotFound { .. }) => {
                    log::info!("deleted endpointslice {namespace}/{name}");
                    self.metrics.slice_writes.inc();
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn warn_once(&self, key: &str, service: &Service, message: &str) {
        let seen = (service.metadata.uid.clone(), message.to_string());
        if lock(&self.warned).get(key) == Some(&seen) {
            return;
        }
        log::warn!("service {key}: {message}");
        match event::warn(&self.client, service, UNSUPPORTED_REASON, message) {
            Ok(()) => {
                lock(&self.warned).insert(key.to_string(), seen);
            }
            Err(e) => {
                log::warn!("service {key}: writing the warning event: {e}");
                self.metrics.failures.inc();
                self.queue.add_after(key, Duration::from_secs(1));
            }
        }
    }
}

pub fn slices_path(namespace: &str) -> String {
    format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices")
}

fn slice_path(namespace: &str, name: &str) -> String {
    format!("{}/{name}", slices_path(namespace))
}

fn decode(e: serde_json::Error) -> KubeError {
    KubeError::Decode { message: format!("encoding an endpointslice: {e}") }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Service key a slice of ours belongs to.
pub fn service_of(slice: &EndpointSlice) -> Option<String> {
    let name = slice.metadata.labels.get(desired::SERVICE_NAME_LABEL)?;
    Some(format!("{}/{name}", slice.metadata.namespace))
}
