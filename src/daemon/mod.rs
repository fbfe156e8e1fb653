//! What the two long-running daemons (podagent, kactus-endpoints) share: a kube-rs client
//! from the crate's one credential loader, the runtime they run on, the check that the APIs
//! they need are served, per-object retry delays, and the `/healthz` + `/metrics` server.

pub mod api;
pub mod health;
pub mod listed;
pub mod retry;

use crate::kube::{config, error_chain};
use std::future::Future;
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
/// network, not the CPU); blocking work (a CNI plugin) goes to the blocking pool.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("starting the runtime: {e}"))
}

/// How long a daemon's exit waits for blocking work still running (a plugin call the stop
/// did not wait for: the daemon failed); the process exits then anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs a daemon on [`runtime`] until it returns, then shuts the runtime down here, outside
/// any async context. A runtime is the one thing that must never be dropped inside async
/// code (tokio panics: the process would abort instead of reporting the daemon's error), so
/// the daemons own exactly one, this one, and everything they hold lives on it.
pub fn block_on<T>(daemon: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    let runtime = runtime()?;
    let outcome = runtime.block_on(daemon);
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    outcome
}

/// The signal that asks a daemon to stop (SIGTERM from kubelet, SIGINT from a terminal):
/// once received, the daemon takes no new work, lets what runs finish, and exits 0.
#[derive(Clone)]
pub struct Termination(tokio::sync::watch::Receiver<Option<&'static str>>);

impl Termination {
    /// Listens from now on, on the current runtime. A signal that cannot be listened for is
    /// logged, and only kills the process as it would without a handler.
    pub fn listen() -> Termination {
        let (received, termination) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (term, int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
                (Ok(term), Ok(int)) => (term, int),
                (Err(e), _) | (_, Err(e)) => {
                    log::warn!("cannot listen for SIGTERM/SIGINT ({e}): a stop will not wait for running work");
                    return;
                }
            };
            let (mut term, mut int) = (term, int);
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            log::info!("{name} received: stopping once the work under way is done");
            let _ = received.send(Some(name));
            // Keep the handlers installed: a second signal must not kill the stop midway.
            std::future::pending::<()>().await;
        });
        Termination(termination)
    }

    /// Completes once a stop signal was received.
    pub async fn received(mut self) {
        // An error: the listener is gone (the runtime is shutting down); never a stop.
        if self.0.wait_for(Option::is_some).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The signal received, if any.
    pub fn signal(&self) -> Option<&'static str> {
        *self.0.borrow()
    }
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
