//! podagent: the node daemon that adds and removes networks in running pods when their
//! annotation changes, without restarting them.
//!
//! `watch.rs` turns the apiserver into a stream of the node's pods, `controller.rs` tells
//! the story of a reconcile, `diff.rs` compares desired and had, `locator.rs` finds the
//! pod's sandbox (from the runtime over CRI, `cri/`, or from kactus's cache), `invoke.rs`
//! runs the node's CNI plugin, `events.rs` and `metrics.rs` report.

pub mod controller;
pub mod cri;
pub mod diff;
pub mod events;
pub mod invoke;
pub mod locator;
pub mod metrics;
pub mod watch;

use crate::kube::{Client, ClientOptions};
use controller::Controller;
use invoke::NodePlugin;
use locator::SandboxLookup;
use metrics::Metrics;
use std::net::{SocketAddr, TcpListener};
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
    pub metrics_addr: SocketAddr,
    pub resync: Duration,
    pub plugin_timeout: Duration,
}

/// Sets everything up (failing fast on a bad kubeconfig or a taken port), then runs until
/// the process is killed.
pub fn run(opts: Options) -> Result<(), String> {
    let client = Client::new(
        opts.kubeconfig.as_deref(),
        ClientOptions { user_agent: format!("kactus-podagent/{}", env!("CARGO_PKG_VERSION")), ..Default::default() },
    )
    .map_err(|e| e.to_string())?;
    let locator = locator::sandbox_locator(opts.sandbox_lookup, opts.cri_socket, opts.kactus_cache_dir)?;
    let metrics = Arc::new(Metrics::default());
    let listener = TcpListener::bind(opts.metrics_addr).map_err(|e| format!("listen on {}: {e}", opts.metrics_addr))?;
    metrics::serve(listener, metrics.clone());
    let controller = Controller {
        client: client.clone(),
        node: opts.node_name.clone(),
        locator,
        plugin: NodePlugin {
            conf_dir: opts.cni_conf_dir,
            bin_dir: opts.cni_bin_dir,
            cni_path: opts.cni_path,
            timeout: opts.plugin_timeout,
        },
        metrics: metrics.clone(),
        resync: opts.resync,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let node = opts.node_name;
    std::thread::spawn(move || watch::watch_node_pods(&client, &node, &tx, &metrics));
    log::info!("podagent started for node {}", controller.node);
    controller.run(rx);
    Err("the pod watch stopped".into())
}
