//! podagent: the node daemon that adds and removes networks in running pods when their
//! annotation changes, without restarting them.
//!
//! `controller.rs` tells the story of a reconcile (on kube-rs's `Controller`), `diff.rs`
//! compares desired and had, `sandbox.rs` and `locator.rs` find the pod's sandbox (from the
//! runtime over CRI, `cri/`, or from kactus's cache), `invoke.rs` runs the node's CNI plugin
//! in the host's filesystem (`mount_ns.rs`), `pods.rs` holds the node's pods (only what is
//! read of them), `recent.rs` remembers what the watch and the last calls told, `metrics.rs`
//! counts. `fastpath_server.rs` answers kactus's apiserver questions from the caches (the
//! fast path). `service_proxy.rs` computes a pod's in-pod Service proxy table, which
//! `dataplane/` programs in each local pod with its MultiNetworkPolicy table.

pub mod controller;
pub mod cri;
pub mod dataplane;
pub mod diff;
pub mod fastpath_server;
pub mod invoke;
pub mod locator;
pub mod metrics;
pub mod mount_ns;
pub mod pods;
pub mod recent;
pub mod sandbox;
pub mod service_proxy;

use crate::daemon::{self, api::Needed, retry::Retries};
use controller::{Context, FirstLook};
use invoke::NodePlugin;
use kube::runtime::events::{Recorder, Reporter};
use locator::SandboxLookup;
use metrics::Metrics;
use mount_ns::PluginMountNamespace;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything the daemon is told on its command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub node_name: String,
    pub kubeconfig: Option<PathBuf>,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub cni_path: String,
    pub kactus_cache_dir: PathBuf,
    pub sandbox_lookup: SandboxLookup,
    /// The runtime's CRI socket; `None`: the first of [`cri::DEFAULT_SOCKETS`] that exists.
    pub cri_socket: Option<PathBuf>,
    /// The mount namespace the node's plugin runs in.
    pub plugin_mount_namespace: PluginMountNamespace,
    pub metrics_addr: SocketAddr,
    pub resync: Duration,
    pub plugin_timeout: Duration,
    /// Pods reconciled at once.
    pub concurrent_pods: u16,
    /// The fast path's socket (`None`: no fast path) and how many requests it answers at once.
    pub fastpath_socket: Option<PathBuf>,
    pub fastpath_max_concurrent: usize,
    /// How often the data plane looks again for the MultiNetworkPolicy CRD while it is not
    /// served.
    pub policy_crd_recheck: Duration,
}

/// What podagent cannot work without: the node's pods, and Events for what failed
/// (`events.k8s.io/v1`, served since Kubernetes 1.19).
const NEEDED: [Needed; 2] = [
    Needed { group_version: "v1", resource: "pods", since: "1.0", for_what: "the pods of its node" },
    Needed {
        group_version: "events.k8s.io/v1",
        resource: "events",
        since: "1.19",
        for_what: "Warning Events on pods whose network change failed",
    },
];

/// Sets everything up (failing fast on a bad kubeconfig, an API the apiserver does not serve,
/// a mount namespace it cannot enter or a taken port), then runs until SIGTERM (`Ok`, once
/// the calls under way are done) or until its pod watch ends (an error).
pub fn run(opts: Options) -> Result<(), String> {
    daemon::block_on(serve(opts))
}

async fn serve(opts: Options) -> Result<(), String> {
    let client = daemon::client(opts.kubeconfig.as_deref())?;
    daemon::api::require(&client, "podagent", &NEEDED).await?;
    let runtime_socket = cri::runtime_socket(opts.cri_socket);
    let mount_namespace = opts.plugin_mount_namespace.open(runtime_socket.as_deref()).await?;
    if let Some(ns) = &mount_namespace {
        log::info!("the node's CNI plugin runs in mount namespace {}", ns.path().display());
    }
    let locator = locator::sandbox_locator(opts.sandbox_lookup, runtime_socket, opts.kactus_cache_dir)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let reporter = Reporter { controller: "podagent".into(), instance: Some(opts.node_name.clone()) };
    let locator: Arc<dyn sandbox::SandboxLocator> = Arc::from(locator);
    let dataplane_metrics = dataplane::Metrics::register(&mut registry);
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        node: opts.node_name,
        locator: locator.clone(),
        plugin: Arc::new(NodePlugin {
            conf_dir: opts.cni_conf_dir,
            bin_dir: opts.cni_bin_dir,
            cni_path: opts.cni_path,
            timeout: opts.plugin_timeout,
            mount_namespace: mount_namespace.map(Arc::new),
        }),
        metrics,
        resync: opts.resync,
        retries: Retries::new(controller::RETRY_BASE, controller::RETRY_MAX),
        first_look: FirstLook::default(),
        recent: Default::default(),
    });
    let (pods, pods_writer) = kube::runtime::reflector::store();
    if let Some(socket) = opts.fastpath_socket {
        fastpath_server::start(fastpath_server::FastPath {
            socket,
            max_concurrent: opts.fastpath_max_concurrent,
            client: ctx.client.clone(),
            pods,
            recorder: ctx.recorder.clone(),
            metrics: fastpath_server::FastPathMetrics::register(&mut registry),
        })?;
    }
    let first_look = ctx.first_look.clone();
    dataplane::spawn(dataplane::DataPlane {
        client: ctx.client.clone(),
        node: ctx.node.clone(),
        locator,
        recorder: ctx.recorder.clone(),
        metrics: dataplane_metrics,
        policy_crd_recheck: opts.policy_crd_recheck,
    })
    .await?;
    daemon::health::serve(opts.metrics_addr, registry, Arc::new(move || first_look.ready())).await?;
    let termination = daemon::Termination::listen();
    controller::run(ctx, pods_writer, opts.concurrent_pods, termination.clone().received()).await;
    match termination.signal() {
        Some(signal) => {
            log::info!("podagent stopped on {signal}");
            Ok(())
        }
        None => Err("the pod watch stopped".into()),
    }
}
