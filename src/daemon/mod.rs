//! What the two long-running daemons (podagent, kactus-endpoints) share: a kube-rs client
//! from the crate's one credential loader, the runtime they run on, the check that the APIs
//! they need are served, per-object retry delays, and the `/healthz` + `/metrics` server.

pub mod api;
pub mod health;
pub mod listed;
pub mod retry;

use crate::kube::{config, error_chain};
use std::path::Path;
use std::time::Duration;

/// A kube-rs client for the kubeconfig (or the in-cluster service account), read by the same
/// loader as the plugin's. Must be called inside the runtime (the client spawns its I/O there).
///
/// A request that fails is not retried underneath the controller (kube-rs would by default
/// retry a 429/503/504 up to 15 times, for minutes, inside one request): the reconcile fails,
/// is counted and logged, and the controller retries that object with its own backoff, as
/// client-go's controllers do; the watches back off on their own.
pub fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, String> {
    let (mut config, source) = config::load(kubeconfig).map_err(|e| e.to_string())?;
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| format!("{source}: building the apiserver client: {}", error_chain(&e)))
}

/// The daemons' runtime: one thread drives every watch, reconcile and request (they wait on the
/// network, not the CPU); blocking work (a CNI plugin, the runtime's socket) goes to the
/// blocking pool.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("starting the runtime: {e}"))
}

/// For `Controller::trigger_backoff`: no pause. The Controller's own backoff pauses every
/// trigger watch whenever any one of them fails (one Service watch's 410 would freeze the pod
/// and slice triggers too); each watch backs off on its own instead (`default_backoff`).
pub struct EachWatchBacksOff;

impl Iterator for EachWatchBacksOff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for EachWatchBacksOff {
    fn reset(&mut self) {}
}
