//! The endpoints controller: EndpointSlices for Services that ask for a secondary network,
//! with the pods' addresses on that network, without fighting Kubernetes.
//!
//! Supported shape (see [`shape`]): a Service **without** `spec.selector`, annotated
//! `k8s.v1.cni.cncf.io/networks: <ns>/<name>` and `kactus.io/selector: '{"app":"hello"}'`.
//! kube-controller-manager writes no endpoints for a selector-less Service, and our slices
//! carry `endpointslice.kubernetes.io/managed-by: endpoints-controller.kactus.io`, which its
//! endpointslice controller never touches; kube-proxy serves the ClusterIP from them.
//!
//! Layout: [`run`] wires kube-rs's watchers, reflectors and `Controller` (Services, and the
//! pods and our slices that trigger them); [`controller`] reconciles one Service: [`shape`]
//! decides, [`desired`] computes, the difference is written. [`metrics`] counts; with several
//! replicas, [`leader`] lets only the Lease holder write.

pub mod controller;
pub mod desired;
pub mod leader;
pub mod metrics;
pub mod shape;
pub mod webhook;

use crate::daemon::{self, api::Needed, listed::Listed, retry::Retries};
use controller::{service_of, service_of_endpoints, services_for_pod, Context, Publishing};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::Api;
use metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the binary's flags decide.
pub struct Options {
    /// Only this namespace (else all).
    pub namespace: Option<String>,
    pub metrics_addr: SocketAddr,
    /// With more than one replica: reconcile only while holding this Lease.
    pub leader_election: Option<LeaderOptions>,
    /// Also write core/v1 Endpoints where EndpointSlices are published (they always are
    /// written where discovery.k8s.io/v1 is not served).
    pub write_endpoints: bool,
    /// The admission webhook, if served.
    pub webhook: Option<WebhookOptions>,
}

pub struct WebhookOptions {
    pub addr: SocketAddr,
    /// The names its certificate carries (the Service's DNS name, or an address).
    pub names: Vec<String>,
    /// The MutatingWebhookConfiguration whose `caBundle` is kept current.
    pub configuration: String,
}

pub struct LeaderOptions {
    /// `None`: the namespace of the kubeconfig context or service account.
    pub namespace: Option<String>,
    pub name: String,
    pub lease_duration: Duration,
}

/// What the controller cannot work without.
const NEEDED: [Needed; 2] = [
    Needed { group_version: "v1", resource: "services", since: "1.0", for_what: "the Services that ask for a network" },
    Needed {
        group_version: "events.k8s.io/v1",
        resource: "events",
        since: "1.19",
        for_what: "Warning Events on Services in a shape it does not serve",
    },
];
const LEASES: Needed =
    Needed { group_version: "coordination.k8s.io/v1", resource: "leases", since: "1.14", for_what: "leader election" };

/// Sets everything up (failing fast on a bad kubeconfig, an API the apiserver does not serve
/// or a taken port), then runs until the process is killed.
pub fn run(kubeconfig: Option<&std::path::Path>, options: Options) -> Result<(), String> {
    daemon::runtime()?.block_on(serve(kubeconfig, options))
}

async fn serve(kubeconfig: Option<&std::path::Path>, options: Options) -> Result<(), String> {
    let client = daemon::client(kubeconfig)?;
    daemon::api::require(&client, "kactus-endpoints", &NEEDED).await?;
    if options.leader_election.is_some() {
        daemon::api::require(&client, "kactus-endpoints", &[LEASES]).await?;
    }
    let served = |group_version: &'static str| {
        let client = client.clone();
        async move {
            daemon::api::serves(&client, group_version, "endpointslices")
                .await
                .map_err(|e| format!("kactus-endpoints: asking for {group_version}: {}", crate::kube::error_chain(&e)))
        }
    };
    let slices = served("discovery.k8s.io/v1").await?;
    let publishing = Publishing {
        slices,
        endpoints: !slices || options.write_endpoints,
        beta_slices: !slices && served("discovery.k8s.io/v1beta1").await?,
    };
    if !slices {
        log::info!(
            "no discovery.k8s.io/v1 (Kubernetes 1.20 or older): publishing core/v1 Endpoints (on 1.19-1.20 \
             kube-controller-manager mirrors them into the EndpointSlices kube-proxy reads)"
        );
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    if let Some(webhook) = &options.webhook {
        let identity = webhook::Identity::mint(&webhook.names)?;
        webhook::serve(webhook.addr, &identity, metrics.clone()).await?;
        tokio::spawn(webhook::keep_ca_bundle(client.clone(), webhook.configuration.clone(), identity.ca_pem));
        log::info!("admission webhook on https://{}{}", webhook.addr, webhook::PATH);
    }
    let api = |client: &kube::Client| match &options.namespace {
        Some(ns) => (Api::<Service>::namespaced(client.clone(), ns), Api::<Pod>::namespaced(client.clone(), ns), {
            Api::<EndpointSlice>::namespaced(client.clone(), ns)
        }),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone())),
    };
    let (services_api, pods_api, slices_api) = api(&client);
    let endpoints_api: Api<Endpoints> = match &options.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };

    // One watch and one local copy per resource; the copies serve both the triggers and the
    // reconciles. Only our own slices are watched.
    let (services, services_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let (slices, slices_writer) = reflector::store();
    let (our_endpoints, endpoints_writer) = reflector::store();
    let listed = [Listed::default(), Listed::default(), Listed::default(), Listed::default()];
    let service_events = watcher(services_api, watcher::Config::default()).default_backoff().reflect(services_writer);
    let service_events = listed[0].track(service_events, || {}).touched_objects();
    let pod_events = watcher(pods_api, watcher::Config::default()).default_backoff().reflect(pods_writer);
    let pod_events = listed[1].track(pod_events, || {}).touched_objects();
    // Only what this cluster gets published is watched (no v1 slices on 1.20).
    let slice_events = match publishing.slices {
        true => {
            let ours = watcher::Config::default().labels(&desired::ours_selector());
            let events = watcher(slices_api, ours).default_backoff().reflect(slices_writer);
            listed[2].track(events, || {}).touched_objects().boxed()
        }
        false => listed[2].track(not_watched::<EndpointSlice>(), || {}).touched_objects().boxed(),
    };
    let endpoints_events = match publishing.endpoints {
        true => {
            let ours = watcher::Config::default().labels(&desired::our_endpoints_selector());
            let events = watcher(endpoints_api, ours).default_backoff().reflect(endpoints_writer);
            listed[3].track(events, || {}).touched_objects().boxed()
        }
        false => listed[3].track(not_watched::<Endpoints>(), || {}).touched_objects().boxed(),
    };

    let (leading_tx, leading) = tokio::sync::watch::channel(options.leader_election.is_none());
    // Healthy once every watch has listed: before that, an empty copy means "unknown", not "none".
    let all_listed = listed.clone();
    let ready: daemon::health::Readiness = Arc::new(move || match all_listed.iter().all(Listed::is_done) {
        true => Ok(()),
        false => Err("watches not listed yet".into()),
    });
    daemon::health::serve(options.metrics_addr, registry, ready).await?;
    let (orphans_tx, orphans) = futures::channel::mpsc::unbounded::<ObjectRef<Service>>();
    let fence = match options.leader_election {
        Some(_) => leader::Fence::closed(),
        None => leader::Fence::open(),
    };
    match options.leader_election {
        Some(election) => {
            let namespace = election.namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let election = leader::LeaderElection {
                api: Api::namespaced(client.clone(), &namespace),
                lease: format!("{namespace}/{}", election.name),
                name: election.name,
                identity: leader::LeaderElection::default_identity(),
                lease_duration: election.lease_duration,
                fence: fence.clone(),
            };
            tokio::spawn(election.lead(leading_tx.clone()));
        }
        None => {
            metrics.leader.set(1);
        }
    }
    // On taking over: every Service, and the Services of all our slices (their Service may
    // have been deleted while another replica, or none, was leading).
    let took_over = futures::stream::unfold(leading.clone(), |mut leading| async move {
        loop {
            leading.changed().await.ok()?;
            if *leading.borrow() {
                return Some(((), leading));
            }
        }
    });
    {
        let (slices, our_endpoints, orphans_tx, metrics, mut leading) =
            (slices.clone(), our_endpoints.clone(), orphans_tx.clone(), metrics.clone(), leading.clone());
        tokio::spawn(async move {
            while leading.changed().await.is_ok() {
                if *leading.borrow() {
                    metrics.leader.set(1);
                    slices
                        .state()
                        .iter()
                        .filter_map(|s| service_of(s))
                        .for_each(|s| drop(orphans_tx.unbounded_send(s)));
                    our_endpoints
                        .state()
                        .iter()
                        .map(|e| service_of_endpoints(e))
                        .for_each(|s| drop(orphans_tx.unbounded_send(s)));
                }
            }
        });
    }

    let recorder = Recorder::new(client.clone(), Reporter::from("kactus-endpoints"));
    let ctx = Arc::new(Context {
        client,
        pods,
        pods_listed: listed[1].clone(),
        metrics: metrics.clone(),
        recorder,
        leading,
        fence,
        retries: Retries::new(Duration::from_millis(50), Duration::from_secs(30)),
        warned: Default::default(),
        publishing,
        our_endpoints: our_endpoints.clone(),
        clean: Default::default(),
    });
    let (for_pods, for_slices, for_endpoints) = (services.clone(), slices.clone(), our_endpoints.clone());
    log::info!(
        "kactus-endpoints watching {}",
        options.namespace.as_deref().map_or("all namespaces".to_string(), |ns| format!("namespace {ns}"))
    );
    Controller::for_stream(service_events, services)
        .watches_stream(pod_events, move |pod| services_for_pod(&pod, &for_pods, &for_slices, &for_endpoints))
        .watches_stream(slice_events, |slice| service_of(&slice))
        .watches_stream(endpoints_events, |endpoints| Some(service_of_endpoints(&endpoints)))
        .reconcile_all_on(took_over)
        .reconcile_on(orphans)
        .trigger_backoff(daemon::EachWatchBacksOff)
        .run(controller::reconcile, controller::error_policy, ctx.clone())
        .for_each(|outcome| {
            let (ctx, orphans_tx) = (ctx.clone(), orphans_tx.clone());
            async move {
                match outcome {
                    // A Service that is gone: its slices must go too (only the leader writes).
                    Err(kube::runtime::controller::Error::ObjectNotFound(gone)) if *ctx.leading.borrow() => {
                        let gone =
                            ObjectRef::<Service>::new(&gone.name).within(gone.namespace.as_deref().unwrap_or_default());
                        remove_orphaned(&ctx, gone, orphans_tx).await;
                    }
                    Err(kube::runtime::controller::Error::QueueError(e)) => {
                        ctx.metrics.watch_restarts.inc();
                        log::warn!("watch: {e}");
                    }
                    _ => {}
                }
            }
        })
        .await;
    Err("the watches stopped".into())
}

/// A watch that is not opened: listed at once (nothing), then silent.
fn not_watched<K: Send + 'static>() -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send {
    futures::stream::iter([Ok(watcher::Event::InitDone)]).chain(futures::stream::pending())
}

/// Removes the slices of a deleted Service; on failure, asks again after a growing delay
/// (the Service is then looked up again, so one recreated meanwhile is reconciled instead).
async fn remove_orphaned(
    ctx: &Context,
    service: ObjectRef<Service>,
    retry: futures::channel::mpsc::UnboundedSender<ObjectRef<Service>>,
) {
    let key = format!("{}/{}", service.namespace.as_deref().unwrap_or_default(), service.name);
    match ctx.remove_slices_of(&service).await {
        Ok(()) => {
            ctx.retries.succeeded(&key);
            ctx.forget(&key);
        }
        Err(e) => {
            ctx.metrics.failures.inc();
            let delay = ctx.retries.failed(&key, "");
            log::warn!("service {key} (deleted): removing its slices: {e}; retrying in {delay:?}");
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = retry.unbounded_send(service);
            });
        }
    }
}
