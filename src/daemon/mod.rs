//! What the two long-running daemons (podagent, kactus-endpoints) share: a kube-rs client
//! from the crate's one credential loader, the runtime they run on, the check that the APIs
//! they need are served, per-object retry delays, and the `/healthz` + `/metrics` server.

pub mod api;
pub mod health;
pub mod listed;
pub mod retry;

use crate::kube::{config, error_chain};
use kube::client::retry::RetryPolicy;
use std::path::Path;
use std::time::Duration;

/// Retries of a request the apiserver answered 429, 503 or 504 (honouring `Retry-After`), as
/// the plugin's client does: a blip costs little, and an apiserver that stays unavailable fails
/// the reconcile, which the controller then retries with its own per-object backoff and counts.
/// (kube-rs's default is 15 retries, up to many minutes inside one request.)
const RETRIES: u32 = 3;
const RETRY_BASE: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// A kube-rs client for the kubeconfig (or the in-cluster service account), read by the same
/// loader as the plugin's. Must be called inside the runtime (the client spawns its I/O there).
pub fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, String> {
    let (mut config, source) = config::load(kubeconfig).map_err(|e| e.to_string())?;
    let fail = |e: &dyn std::error::Error| format!("{source}: building the apiserver client: {}", error_chain(e));
    config.default_retry = false;
    let retries = RetryPolicy::new(RETRY_BASE, RETRY_MAX, RETRIES, true).map_err(|e| fail(&e))?;
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| fail(&e))?
        // Retrying re-sends a request, so the stack below it must be shareable.
        .with_layer(&tower::buffer::BufferLayer::new(1024))
        .with_layer(&tower::retry::RetryLayer::new(retries))
        .build();
    Ok(client)
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
