//! The endpoints controller: EndpointSlices for Services that ask for a secondary network,
//! with the pods' addresses on that network, without fighting Kubernetes.
//!
//! Supported shape (see [`shape`]): a Service **without** `spec.selector`, annotated
//! `k8s.v1.cni.cncf.io/networks: <ns>/<name>` and `kactus.io/selector: '{"app":"hello"}'`.
//! kube-controller-manager writes no endpoints for a selector-less Service, and our slices
//! carry `endpointslice.kubernetes.io/managed-by: kactus.io/endpoints-controller`, which its
//! endpointslice controller never touches; kube-proxy serves the ClusterIP from them.
//!
//! Layout: [`informer`] (list + watch + local copy) feeds a [`queue`] of Service keys;
//! [`controller`] reconciles one key: [`shape`] decides, [`desired`] computes, the
//! difference is written. [`metrics`] serves `/healthz` and `/metrics`; with several
//! replicas, [`leader`] lets only the Lease holder write.

pub mod controller;
pub mod desired;
mod event;
pub mod informer;
pub mod leader;
pub mod metrics;
pub mod queue;
pub mod shape;

use crate::kube::{Client, EndpointSlice, Pod, Service};
use controller::{service_of, Controller};
use informer::{Cache, Change, Informer, Object};
use metrics::Metrics;
use queue::WorkQueue;
use std::net::TcpListener;
use std::sync::Arc;

/// What the binary's flags decide.
pub struct Options {
    /// Only this namespace (else all).
    pub namespace: Option<String>,
    pub metrics: TcpListener,
    /// With more than one replica: reconcile only while holding this Lease.
    pub leader_election: Option<leader::LeaderElection>,
}

/// Starts the watches, the metrics server and the worker; returns only if a thread
/// cannot be started.
pub fn run(client: Client, options: Options) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let services: Arc<Cache<Service>> = Cache::new();
    let pods: Arc<Cache<Pod>> = Cache::new();
    let slices: Arc<Cache<EndpointSlice>> = Cache::new();
    let queue = Arc::new(WorkQueue::default());
    let controller =
        Arc::new(Controller::new(client.clone(), services.clone(), pods.clone(), queue.clone(), metrics.clone()));

    let prefix = match &options.namespace {
        Some(ns) => format!("namespaces/{ns}/"),
        None => String::new(),
    };
    fn informer<T: Object>(
        client: &Client,
        metrics: &Arc<Metrics>,
        path: String,
        label_selector: Option<String>,
        cache: &Arc<Cache<T>>,
    ) -> Informer<T> {
        Informer { client: client.clone(), path, label_selector, cache: cache.clone(), metrics: metrics.clone() }
    }

    let service_informer = informer(&client, &metrics, format!("/api/v1/{prefix}services"), None, &services);
    let (q, all_services) = (queue.clone(), services.clone());
    spawn("watch-services", move || {
        // Only Services that ask (or asked) for a network: the others cost nothing. One that
        // stopped asking while we were away is found through its slices instead.
        service_informer.run(|change| match change {
            Change::Applied { old, new } => {
                if asks(new) || old.is_some_and(asks) {
                    q.add(&new.key())
                }
            }
            Change::Deleted(old) => {
                if asks(old) {
                    q.add(&old.key())
                }
            }
            // Services deleted while the watch was down need their slices removed too.
            Change::Relisted { previous } => previous
                .values()
                .filter(|s| asks(s))
                .map(Object::key)
                .chain(all_services.all().iter().filter(|s| asks(s)).map(Object::key))
                .for_each(|k| q.add(&k)),
        })
    })?;

    let pod_informer = informer(&client, &metrics, format!("/api/v1/{prefix}pods"), None, &pods);
    let (c, q) = (controller.clone(), queue.clone());
    spawn("watch-pods", move || {
        pod_informer.run(|change| {
            let keys = match change {
                Change::Applied { old, new } => {
                    let mut labels = vec![&new.metadata.labels];
                    labels.extend(old.map(|o| &o.metadata.labels));
                    c.services_selecting(&new.metadata.namespace, &labels)
                }
                Change::Deleted(old) => c.services_selecting(&old.metadata.namespace, &[&old.metadata.labels]),
                Change::Relisted { .. } => c.services.all().iter().filter(|s| asks(s)).map(Object::key).collect(),
            };
            keys.iter().for_each(|k| q.add(k));
        })
    })?;

    let slice_informer = informer(
        &client,
        &metrics,
        format!("/apis/discovery.k8s.io/v1/{prefix}endpointslices"),
        Some(format!("{}={}", desired::MANAGED_BY_LABEL, desired::MANAGED_BY)),
        &slices,
    );
    let (q, all_slices) = (queue.clone(), slices.clone());
    spawn("watch-slices", move || {
        slice_informer.run(|change| match change {
            Change::Applied { new, .. } => service_of(new).iter().for_each(|k| q.add(k)),
            Change::Deleted(old) => service_of(old).iter().for_each(|k| q.add(k)),
            // Slices of Services deleted while we were away are found here.
            Change::Relisted { previous } => {
                previous.values().chain(all_slices.all().iter()).filter_map(service_of).for_each(|k| q.add(&k))
            }
        })
    })?;

    let ready = {
        let (s, p, e) = (services.clone(), pods.clone(), slices.clone());
        move || s.synced() && p.synced() && e.synced()
    };
    let metrics_listener = options.metrics;
    let (m, r) = (metrics.clone(), ready.clone());
    spawn("metrics", move || metrics::serve(metrics_listener, m, r))?;
    log::info!(
        "kactus-endpoints watching {}",
        options.namespace.as_deref().map_or("all namespaces".to_string(), |ns| format!("namespace {ns}"))
    );
    match options.leader_election {
        Some(election) => election.acquire_and_hold(metrics.clone())?,
        None => metrics.set_leader(true),
    }
    controller.run(ready);
    Ok(())
}

/// Whether a Service has the network annotation (in any shape).
fn asks(service: &Service) -> bool {
    service.metadata.annotations.contains_key(shape::NETWORKS_ANNOTATION)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().name(name.to_string()).spawn(f).map(|_| ())
}
