//! The reconcile loop: keeps the latest state of each pod of the node, compares it with
//! what the pod has, runs the CNI calls that close the gap, and retries failures per pod
//! with backoff so one bad pod never holds up the others.
//!
//! Level-triggered: a pod is compared again on every change, on every relist and every
//! resync, and acting twice is harmless because the plan is recomputed from a fresh GET of
//! the pod just before acting (kactus updates `network-status` before its call returns).

use super::diff::{self, Change};
use super::events;
use super::invoke::NodePlugin;
use super::locator::SandboxLocator;
use super::metrics::Metrics;
use super::watch::Update;
use crate::kube::{Client, KubeError, Pod};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

type PodKey = (String, String);

pub struct Controller {
    pub client: Client,
    pub node: String,
    pub locator: Box<dyn SandboxLocator>,
    pub plugin: NodePlugin,
    pub metrics: Arc<Metrics>,
    pub resync: Duration,
}

/// When a pod is next due and how many attempts in a row failed.
struct Due {
    at: Instant,
    failures: u32,
}

impl Controller {
    /// Runs until the watch side hangs up.
    pub fn run(&self, updates: Receiver<Update>) {
        let mut pods: HashMap<PodKey, Pod> = HashMap::new();
        let mut queue: HashMap<PodKey, Due> = HashMap::new();
        let mut next_resync = Instant::now() + self.resync;
        let mut listed = false;
        loop {
            let now = Instant::now();
            let wake = queue.values().map(|d| d.at).min().unwrap_or(next_resync).min(next_resync);
            match updates.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(Update::Listed(list)) => {
                    listed = true;
                    pods = list.into_iter().map(|p| (key(&p), p)).collect();
                    queue.retain(|k, _| pods.contains_key(k));
                    for k in pods.keys() {
                        queue.entry(k.clone()).or_insert(Due { at: now, failures: 0 }).at = now;
                    }
                }
                Ok(Update::Changed(pod)) => {
                    let k = key(&pod);
                    // A new version may fix what failed: retry at once, from a clean slate.
                    queue.insert(k.clone(), Due { at: now, failures: 0 });
                    pods.insert(k, pod);
                }
                Ok(Update::Deleted(pod)) => {
                    let k = key(&pod);
                    pods.remove(&k);
                    queue.remove(&k);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if now >= next_resync {
                next_resync = now + self.resync;
                for k in pods.keys() {
                    queue.entry(k.clone()).or_insert(Due { at: now, failures: 0 });
                }
            }
            let due: Vec<PodKey> = queue.iter().filter(|(_, d)| d.at <= now).map(|(k, _)| k.clone()).collect();
            for k in due {
                let Some(pod) = pods.get(&k) else { continue };
                match self.reconcile(pod) {
                    Ok(()) => {
                        queue.remove(&k);
                    }
                    Err(message) => {
                        Metrics::inc(&self.metrics.failures);
                        log::error!("pod {}/{}: {message}", k.0, k.1);
                        events::warn(&self.client, &self.node, pod, events::REASON_ATTACH_FAILED, &message);
                        if let Some(d) = queue.get_mut(&k) {
                            d.at = Instant::now() + retry_delay(d.failures);
                            d.failures += 1;
                        }
                    }
                }
            }
            // Ready once every pod of the first list has been looked at.
            if listed {
                self.metrics.ready.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Brings one pod's devices in line with its annotations.
    fn reconcile(&self, cached: &Pod) -> Result<(), String> {
        Metrics::inc(&self.metrics.reconciles);
        if plan(cached)?.is_empty() {
            return Ok(());
        }
        // The cached pod may predate kactus's last network-status write: act only on what
        // the apiserver says now, so a change is never applied twice.
        let meta = &cached.metadata;
        let pod = match self.client.get_pod(&meta.namespace, &meta.name) {
            Ok(pod) => pod,
            Err(KubeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(format!("get pod: {e}")),
        };
        let changes = plan(&pod)?;
        if changes.is_empty() {
            return Ok(());
        }
        let sandbox = self.locator.locate(&pod)?;
        let mut errors = Vec::new();
        for change in &changes {
            log::info!("pod {}/{}: {change} in sandbox {}", meta.namespace, meta.name, sandbox.container_id);
            match self.plugin.run(&pod, &sandbox, change) {
                Ok(()) => Metrics::inc(if change.add { &self.metrics.adds } else { &self.metrics.dels }),
                Err(e) => errors.push(format!("{change}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// The pod's pending changes; none for a pod kubelet owns right now.
fn plan(pod: &Pod) -> Result<Vec<Change>, String> {
    match diff::changes_for(pod)? {
        Ok(changes) => Ok(changes),
        Err(skip) => {
            log::trace!("pod {}/{}: skipped ({skip:?})", pod.metadata.namespace, pod.metadata.name);
            Ok(Vec::new())
        }
    }
}

fn key(pod: &Pod) -> PodKey {
    (pod.metadata.namespace.clone(), pod.metadata.name.clone())
}

fn retry_delay(failures: u32) -> Duration {
    RETRY_BASE.saturating_mul(1 << failures.min(16)).min(RETRY_MAX)
}
