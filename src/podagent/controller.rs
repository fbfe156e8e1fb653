//! The reconcile of one pod: compare what its annotations ask for with what it has, run the
//! CNI calls that close the gap, report a failure on the pod and retry it with backoff.
//!
//! kube-rs's `Controller` does the rest: it lists and watches the node's pods (relisting on
//! 410, backing off while the apiserver is unreachable), reconciles each pod on every change,
//! several pods at once (`--concurrent-pods`) but never one pod twice at the same time, and
//! requeues it after the delay [`error_policy`] says, or after the resync period on success.
//!
//! Level-triggered, on the pod as the watch delivered it (no second read): a change is
//! planned from the pod's annotations against the `network-status` kactus writes before its
//! call returns, and one just made is not planned again while the watch has not yet
//! delivered that write (see `recent.rs`).

use super::diff::{self, Change, Plan};
use super::invoke::NodePlugin;
use super::metrics::Metrics;
use super::pods::{self, Pod};
use super::recent::Recent;
use super::sandbox::SandboxLocator;
use crate::daemon::listed::Listed;
use crate::daemon::retry::Retries;
use crate::plugin::status::NETWORK_STATUS;
use futures::{StreamExt, TryStreamExt};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, Store};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const REASON_ATTACH_FAILED: &str = "NetworkAttachFailed";
pub const RETRY_BASE: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// The apiserver refuses longer Event notes (1 KiB).
const MAX_NOTE: usize = 1000;

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub node: String,
    pub locator: Arc<dyn SandboxLocator>,
    pub plugin: Arc<NodePlugin>,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub resync: Duration,
    pub retries: Retries,
    pub first_look: FirstLook,
    pub recent: Recent,
}

/// The failure of one reconcile, as reported on the pod.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(String);

/// Runs the controller for the node's pods until `stop` completes (then the reconciles under
/// way finish first) or its watch ends (it does not, by itself). `writer` fills the store the
/// fast path reads too.
pub async fn run(
    ctx: Arc<Context>,
    writer: reflector::store::Writer<Pod>,
    concurrent_pods: u16,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let store = writer.as_reader();
    let events = pods::watch(ctx.client.clone(), &ctx.node, writer);
    let (first_look, listed_pods) = (ctx.first_look.clone(), store.clone());
    let arrivals = ctx.clone();
    let events = Listed::default()
        .track(events, move || first_look.listed(&listed_pods))
        .applied_objects()
        .inspect_ok(move |pod| arrivals.recent.arrived(&key(pod)));
    let controller = Controller::for_stream(events, store)
        .with_config(controller::Config::default().concurrency(concurrent_pods.max(1)))
        .trigger_backoff(crate::daemon::EachWatchBacksOff)
        .graceful_shutdown_on(stop);
    log::info!("podagent started for node {}", ctx.node);
    let metrics = ctx.metrics.clone();
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|outcome| {
            match outcome {
                // Watch failures (410 Gone, the apiserver unreachable): kube relists or reopens.
                Err(controller::Error::QueueError(e)) => {
                    metrics.watch_restarts.inc();
                    log::warn!("watching the node's pods: {e}");
                }
                Err(controller::Error::ReconcilerFailed(..)) | Err(controller::Error::ObjectNotFound(_)) | Ok(_) => {}
                Err(e) => log::warn!("{e}"),
            }
            futures::future::ready(())
        })
        .await;
}

async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, Failed> {
    ctx.metrics.reconciles.inc();
    let key = key(&pod);
    let outcome = ctx.bring_in_line(&pod).await;
    ctx.first_look.looked_at(&key);
    match outcome {
        Ok(waiting) => {
            ctx.retries.succeeded(&key);
            Ok(Action::requeue(waiting.unwrap_or(ctx.resync)))
        }
        Err(message) => {
            ctx.metrics.failures.inc();
            log::error!("pod {key}: {message}");
            ctx.warn(&pod, &message).await;
            Err(Failed(message))
        }
    }
}

/// Retries a failed pod after 1 s, doubling to 5 min, from 1 s again once the pod changes.
fn error_policy(pod: Arc<Pod>, _: &Failed, ctx: Arc<Context>) -> Action {
    Action::requeue(ctx.retries.failed(&key(&pod), pod.metadata.resource_version.as_deref().unwrap_or_default()))
}

impl Context {
    /// Brings one pod's devices in line with its annotations; when changes just made were
    /// left out (their status write is still on its way), how soon to look again.
    async fn bring_in_line(&self, pod: &Pod) -> Result<Option<Duration>, String> {
        let key = key(pod);
        let arrived = self.recent.take_arrival(&key);
        let status = pod.annotation(NETWORK_STATUS).map(str::to_string);
        let plan = plan(pod)?;
        if !plan.ignored.is_empty() {
            let note = plan.ignored.join("; ");
            log::warn!("pod {key}: {note}");
            self.warn(pod, &note).await;
        }
        let (changes, waiting) = self.recent.not_yet_shown(&key, status.as_deref(), plan.changes);
        if changes.is_empty() {
            return Ok(waiting);
        }
        let sandbox = self.locator.locate(pod).await?;
        // The plugin blocks: on the blocking pool, beside other pods.
        let (plugin, metrics) = (self.plugin.clone(), self.metrics.clone());
        let (pod, logged) = (pod.clone(), key.clone());
        let calls = move || -> (Vec<Change>, Result<(), String>) {
            let (mut made, mut errors) = (Vec::new(), Vec::new());
            for change in changes {
                let exec = Instant::now();
                let outcome = plugin.run(&pod, &sandbox, &change);
                let react = arrived.map_or(String::new(), |t| {
                    format!(", exec'd {:.1} ms after the watch event", ms(exec.duration_since(t)))
                });
                log::info!(
                    "pod {logged}: {change} in sandbox {}: {:.1} ms in the plugin{react}",
                    sandbox.container_id,
                    ms(exec.elapsed())
                );
                match outcome {
                    Ok(()) => {
                        (if change.add { &metrics.adds } else { &metrics.dels }).inc();
                        made.push(change);
                    }
                    Err(e) => errors.push(format!("{change}: {e}")),
                }
            }
            (made, if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) })
        };
        let (made, outcome) =
            tokio::task::spawn_blocking(calls).await.map_err(|e| format!("the plugin call did not finish: {e}"))?;
        self.recent.made(&key, status.as_deref(), made);
        outcome.map(|()| None)
    }

    /// A Warning Event on the pod; kube's Recorder makes repeats of it one Event with a count.
    /// Best effort: an Event that cannot be written is logged.
    async fn warn(&self, pod: &Pod, message: &str) {
        let mut note = message.to_string();
        if note.len() > MAX_NOTE {
            let mut end = MAX_NOTE;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        let event = Event {
            type_: EventType::Warning,
            reason: REASON_ATTACH_FAILED.into(),
            note: Some(note),
            action: "HotPlug".into(),
            secondary: None,
        };
        // kube's object_ref leaves out the resourceVersion: the Recorder aggregates Events by
        // their reference, and every status change of the pod would otherwise start a new one.
        if let Err(e) = self.recorder.publish(&event, &pod.object_ref(&())).await {
            log::warn!("pod {}: event {REASON_ATTACH_FAILED} not recorded: {e}", key(pod));
        }
    }
}

/// The pod's pending changes; none for a pod kubelet owns right now.
fn plan(pod: &Pod) -> Result<Plan, String> {
    match diff::changes_for(pod)? {
        Ok(plan) => Ok(plan),
        Err(skip) => {
            log::trace!("pod {}: skipped ({skip:?})", key(pod));
            Ok(Plan::default())
        }
    }
}

fn namespace(pod: &Pod) -> String {
    pod.metadata.namespace.clone().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", namespace(pod), pod.metadata.name.as_deref().unwrap_or_default())
}

/// Readiness: podagent is ready once every pod of its first list has been looked at (or has
/// gone since), so a restarted podagent reports ready only after it has checked every pod.
#[derive(Clone, Default)]
pub struct FirstLook {
    state: Arc<Mutex<Looks>>,
}

#[derive(Default)]
struct Looks {
    /// The pods of the first list and the store they are in, once listed.
    listed: Option<(HashSet<String>, Store<Pod>)>,
    /// Pods looked at so far (until ready: then it is no longer needed).
    looked: HashSet<String>,
    ready: bool,
}

impl FirstLook {
    /// The first list is in `store`: those pods must be looked at before podagent is ready.
    fn listed(&self, store: &Store<Pod>) {
        let listed = store.state().iter().map(|p| key(p)).collect();
        lock(&self.state).listed = Some((listed, store.clone()));
    }

    fn looked_at(&self, key: &str) {
        let mut state = lock(&self.state);
        if !state.ready {
            state.looked.insert(key.to_string());
        }
    }

    /// `Ok` once every listed pod was looked at; else what is left.
    pub fn ready(&self) -> Result<(), String> {
        let mut state = lock(&self.state);
        if state.ready {
            return Ok(());
        }
        let Looks { listed, looked, .. } = &*state;
        let Some((listed, store)) = listed else { return Err("the node's pods are not listed yet".into()) };
        let left = listed.iter().filter(|k| !looked.contains(*k)).filter(|k| store_has(store, k)).count();
        if left > 0 {
            return Err(format!("{left} listed pod(s) not looked at yet"));
        }
        *state = Looks { ready: true, ..Default::default() };
        Ok(())
    }
}

fn store_has(store: &Store<Pod>, key: &str) -> bool {
    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
    store.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace)).is_some()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
