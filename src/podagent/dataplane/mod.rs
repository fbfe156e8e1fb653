//! podagent as each local pod's data plane: the in-pod Service proxy (`nft::service_proxy`,
//! its ports from `podagent::service_proxy`) and MultiNetworkPolicy (`policy`), programmed in
//! the pod's network namespace.
//!
//! `watch.rs` keeps the stores, `program.rs` brings one pod's tables and routes to what is
//! wanted. This file is the loop: any watch event wakes it; it waits a few milliseconds for the
//! rest of a burst (never more than [`MAX_DELAY`] after the first), then computes every local
//! pod's desired tables and touches only the pods whose tables differ from what it last
//! applied (`policy::plan`: nothing, a set refill, or one replacing transaction).
//!
//! When an endpoint leaves a pod's proxy table, the pod's UDP conntrack entries to it are
//! deleted (`nft::conntrack`), so UDP flows move to the remaining endpoints at once.
//!
//! Never flushed: a restart keeps every rule in place and its first pass replaces each wanted
//! table (one transaction) and deletes the unwanted ones it finds; a clean shutdown leaves
//! them (pods keep working through an upgrade); `kactus uninstall` removes them.

pub mod program;
pub mod watch;

use crate::podagent::sandbox::SandboxLocator;
use crate::podagent::service_proxy;
use crate::policy::{self, report, PodView};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::Resource;
use program::{Desired, Programmed};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use watch::{Changed, Stores};

/// How long a pass waits for the rest of a burst of changes.
const QUIET: Duration = Duration::from_millis(5);
/// The longest a change waits for the burst it is in to end.
const MAX_DELAY: Duration = Duration::from_millis(50);
/// How soon a pod that failed (no sandbox yet, a refused transaction) is tried again.
const RETRY: Duration = Duration::from_secs(2);
/// Pods programmed at once (each on a blocking thread in its own namespace).
const PARALLEL: usize = 8;

pub const REASON_PROXY: &str = "ServiceProxyFailed";

/// The data plane's numbers on /metrics.
#[derive(Clone, Default)]
pub struct Metrics {
    pub tables_applied: Counter,
    pub refills: Counter,
    pub tables_deleted: Counter,
    pub conntrack_flushed: Counter,
    pub failures: Counter,
    pub passes: Counter,
    pub pods_programmed: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        for (name, help, counter) in [
            ("podagent_dataplane_tables_applied", "nftables tables applied whole in pods", &m.tables_applied),
            ("podagent_dataplane_refills", "Policy tables whose peer sets were refilled", &m.refills),
            ("podagent_dataplane_tables_deleted", "nftables tables deleted from pods", &m.tables_deleted),
            (
                "podagent_dataplane_conntrack_flushed",
                "UDP conntrack entries to gone endpoints deleted in pods",
                &m.conntrack_flushed,
            ),
            ("podagent_dataplane_failures", "Pods whose tables or routes could not be made", &m.failures),
            ("podagent_dataplane_passes", "Passes over the node's pods", &m.passes),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "podagent_dataplane_pods_programmed",
            "Local pods with a kactus proxy or policy table",
            m.pods_programmed.clone(),
        );
        m
    }
}

/// What the loop needs from podagent.
pub struct DataPlane {
    pub client: kube::Client,
    pub node: String,
    pub locator: Arc<dyn SandboxLocator>,
    pub recorder: Recorder,
    pub metrics: Metrics,
}

/// Starts the watches and the loop on tasks of their own; they end with the process.
pub async fn spawn(dp: DataPlane) -> Result<(), String> {
    let changed: Changed = Arc::default();
    let stores = Stores::start(&dp.client, &dp.node, &changed).await?;
    tokio::spawn(run(dp, stores, changed));
    Ok(())
}

async fn run(dp: DataPlane, stores: Stores, changed: Changed) {
    stores.ready().await;
    log::info!("data plane: stores listed, reconciling the node's pods");
    let mut state = State::default();
    let mut what = watch::ALL; // the first pass: everything, as after any restart
    loop {
        let started = Instant::now();
        what |= changed.take();
        let retry = state.pass(&dp, &stores, what).await;
        dp.metrics.passes.inc();
        log::debug!("data plane pass ({what:#b}): {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
        // A pod that failed is recomputed whole next time.
        what = if retry { watch::ALL } else { 0 };
        if retry {
            let _ = tokio::time::timeout(RETRY, changed.notified()).await;
        } else {
            changed.notified().await;
        }
        let first = Instant::now();
        while first.elapsed() < MAX_DELAY {
            if tokio::time::timeout(QUIET, changed.notified()).await.is_err() {
                break;
            }
        }
    }
}

/// One pod to bring to what it should have.
struct Job {
    uid: String,
    pod: Arc<Pod>,
    /// No attachments left: once its tables are gone it is forgotten.
    forget: bool,
    /// What was made in it; after [`Job::run`], what is made now (`None`: no sandbox found).
    had: Option<Programmed>,
    desired: Desired,
}

impl Job {
    /// Finds the pod's namespace when not known yet and programs it on the blocking pool.
    async fn run(mut self, dp: &DataPlane) -> (Job, Result<program::Done, String>) {
        let mut programmed = match self.had.take() {
            Some(p) => p,
            None => match dp.locator.locate(&super::pods::Pod::identified_by(&self.pod.metadata)).await {
                Ok(sandbox) => Programmed::new(sandbox.netns),
                Err(e) => return (self, Err(e)),
            },
        };
        let desired = self.desired.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = programmed.bring_to(&desired);
            (programmed, outcome)
        })
        .await;
        match outcome {
            Ok((programmed, outcome)) => {
                if let Ok(done) = &outcome {
                    log::debug!(
                        "data plane: pod {}: {} table(s) applied, {} refilled, {} deleted, {} ClusterIP route(s)",
                        key(&self.pod),
                        done.applied,
                        done.refills,
                        done.deleted,
                        self.desired.routes.len()
                    );
                }
                self.had = Some(programmed);
                (self, outcome)
            }
            Err(e) => (self, Err(format!("programming did not finish: {e}"))),
        }
    }
}

#[derive(Default)]
struct State {
    /// By pod UID (a pod re-made under the same name is another pod).
    programmed: HashMap<String, Programmed>,
    /// The Events last published per pod: published again only when they change.
    warned: HashMap<String, Vec<String>>,
}

impl State {
    /// One pass over the node's pods, recomputing the tables `what` says may have changed
    /// (the others are taken as last applied); `true` when some pod should be tried again.
    async fn pass(&mut self, dp: &DataPlane, stores: &Stores, what: u8) -> bool {
        let services: Vec<_> = stores.services.state().iter().map(|s| (**s).clone()).collect();
        let slices = stores.slices();
        let policies: Vec<_> = stores.policies.iter().flat_map(|p| p.state()).map(|p| (*p).clone()).collect::<Vec<_>>();
        let all_pods = stores.pods.state();
        let local: Vec<Arc<Pod>> = all_pods
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(dp.node.as_str()))
            .cloned()
            .collect();
        // Peers and namespaces matter only when some policy exists and may have changed.
        let (peers, namespaces) = if policies.is_empty() || what & watch::POLICY == 0 {
            (Vec::new(), BTreeMap::new())
        } else {
            let peers: Vec<PodView> = all_pods.iter().map(|p| PodView::from_pod(p)).collect();
            let namespaces = stores
                .namespaces
                .state()
                .iter()
                .filter_map(|n| Some((n.metadata.name.clone()?, n.metadata.labels.clone().unwrap_or_default())))
                .collect();
            (peers, namespaces)
        };
        let cluster = policy::Cluster { policies: &policies, pods: &peers, namespaces: &namespaces };
        let mut retry = false;
        let mut seen = HashSet::new();
        let mut jobs = Vec::new();
        for pod in &local {
            let Some(uid) = pod.metadata.uid.clone() else { continue };
            let view = PodView::from_pod(pod);
            // Nothing to do in a pod never programmed that has no attachments or has finished
            // (its sandbox is gone or going: no retry loop on a namespace that will never be).
            if (view.attachments.is_empty() || view.finished) && !self.programmed.contains_key(&uid) {
                continue;
            }
            seen.insert(uid.clone());
            let (desired, events) = if view.finished {
                (Desired::nothing(), Some(Vec::new()))
            } else {
                let had = self.programmed.get(&uid);
                let computed = Computed { cluster: &cluster, services: &services, slices: &slices, what };
                computed.desire(pod, &view, had)
            };
            if let Some(events) = events {
                self.warn(dp, pod, &uid, events).await;
            }
            if self.programmed.get(&uid).is_some_and(|p| p.matches(&desired)) {
                continue;
            }
            let had = self.programmed.remove(&uid).filter(|p| p.netns.exists());
            if had.is_none() && view.finished {
                continue; // its namespace went with its rules
            }
            jobs.push(Job { uid, pod: pod.clone(), forget: view.attachments.is_empty(), had, desired });
        }
        // Pods in parallel (each its own namespace and transaction), a few at a time.
        let outcomes: Vec<_> =
            futures::stream::iter(jobs).map(|job| job.run(dp)).buffer_unordered(PARALLEL).collect().await;
        let changed = outcomes.len();
        for (job, outcome) in outcomes {
            match outcome {
                Ok(done) => {
                    dp.metrics.tables_applied.inc_by(done.applied);
                    dp.metrics.refills.inc_by(done.refills);
                    dp.metrics.tables_deleted.inc_by(done.deleted);
                    dp.metrics.conntrack_flushed.inc_by(done.conntrack_flushed);
                }
                Err(e) => {
                    dp.metrics.failures.inc();
                    retry = true;
                    if job.had.is_some() {
                        log::error!("data plane: pod {}: {e}", key(&job.pod));
                        self.publish(dp, &job.pod, REASON_PROXY, &e).await;
                    } else {
                        log::debug!("data plane: pod {}: {e}", key(&job.pod));
                    }
                }
            }
            // A pod without attachments whose tables are gone needs no memory.
            if let Some(programmed) = job.had {
                if !(job.forget && programmed.matches(&Desired::nothing())) {
                    self.programmed.insert(job.uid, programmed);
                }
            }
        }
        // Pods gone from the node: their namespace went with them, nothing to undo.
        self.programmed.retain(|uid, _| seen.contains(uid));
        self.warned.retain(|uid, _| seen.contains(uid));
        let programmed = self.programmed.values().filter(|p| !p.matches(&Desired::nothing())).count();
        dp.metrics.pods_programmed.set(programmed as i64);
        if changed > 0 {
            log::info!("data plane: {changed} pod(s) brought in line, {programmed} programmed");
        }
        retry
    }

    /// Publishes the pod's policy Events when they differ from the last ones.
    async fn warn(&mut self, dp: &DataPlane, pod: &Pod, uid: &str, events: Vec<(&'static str, String)>) {
        let notes: Vec<String> = events.iter().map(|(r, m)| format!("{r}: {m}")).collect();
        if self.warned.get(uid) == Some(&notes) {
            return;
        }
        for (reason, message) in &events {
            log::warn!("data plane: pod {}: {message}", key(pod));
            self.publish(dp, pod, reason, message).await;
        }
        self.warned.insert(uid.to_string(), notes);
    }

    async fn publish(&self, dp: &DataPlane, pod: &Pod, reason: &str, message: &str) {
        let mut note = message.to_string();
        if note.len() > 1000 {
            let mut end = 1000;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "DataPlane".into(),
            secondary: None,
        };
        if let Err(e) = dp.recorder.publish(&event, &pod.object_ref(&())).await {
            log::warn!("pod {}: event {reason} not recorded: {e}", key(pod));
        }
    }
}

/// What a pass computes pods' tables from.
struct Computed<'a> {
    cluster: &'a policy::Cluster<'a>,
    services: &'a [k8s_openapi::api::core::v1::Service],
    slices: &'a [k8s_openapi::api::discovery::v1::EndpointSlice],
    what: u8,
}

impl Computed<'_> {
    /// A pod's desired tables and routes, and the Events its policies call for (`None`: its
    /// policies were not recomputed). A part whose inputs did not change (`what`) is what was
    /// last applied, when that is known.
    fn desire(
        &self,
        pod: &Pod,
        view: &PodView,
        had: Option<&Programmed>,
    ) -> (Desired, Option<Vec<(&'static str, String)>>) {
        use program::Known;
        let last = |known: &Known| match known {
            Known::Applied(t) => Some(Some(t.clone())),
            Known::Absent => Some(None),
            Known::Unknown => None,
        };
        let proxy_was =
            had.filter(|_| self.what & watch::PROXY == 0).and_then(|h| Some((last(&h.proxy)?, h.routes.clone()?)));
        let (proxy, routes) = match proxy_was {
            Some(was) => was,
            None => {
                let ports = service_proxy::service_ports(pod, self.services, self.slices);
                let proxy = (!ports.is_empty()).then(|| crate::nft::service_proxy::table(&ports));
                let routes = if ports.is_empty() { Vec::new() } else { service_proxy::routes(pod, self.services) };
                (proxy, routes)
            }
        };
        let policy_was = had.filter(|_| self.what & watch::POLICY == 0).and_then(|h| last(&h.policy));
        let (policy, events) = match policy_was {
            Some(was) => (was, None),
            None if self.cluster.policies.is_empty() => (None, Some(Vec::new())),
            None => {
                let compiled = policy::compile(self.cluster, view);
                // Devices that are no kernel device (DPDK, vhost-user) are not looked for: that
                // would enter the pod's namespace on every pass. TODO: once per pod and device.
                let events = report::events(&compiled, &[]).into_iter().map(|e| (e.reason, e.message)).collect();
                (compiled.table, Some(events))
            }
        };
        (Desired { proxy, policy, routes }, events)
    }
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::{Family, Table};
    use program::Known;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "mep", "uid": "u"},
            "status": {"conditions": [{"type": policy::pod::ATTACHMENTS_CONDITION, "status": "True",
                "message": "[{\"name\":\"mep/mp1\",\"interface\":\"net1\",\"ips\":[\"200.1.1.9\"]}]"}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_part_whose_inputs_did_not_change_is_taken_as_last_applied_and_the_other_is_recomputed() {
        let (pod, namespaces) = (pod(), BTreeMap::new());
        let view = PodView::from_pod(&pod);
        let mut had = Programmed::new("/nonexistent".into());
        let applied = Table::new(Family::Inet, "kactus-policy");
        had.policy = Known::Applied(applied.clone());
        had.proxy = Known::Applied(Table::new(Family::Inet, "kactus-proxy"));
        had.routes = Some(Vec::new());
        // No policy in the cluster any more, but only Services changed: the policy table is
        // not recomputed (it would be deleted), and the proxy table is (no Service: none).
        let cluster = policy::Cluster { policies: &[], pods: &[], namespaces: &namespaces };
        let computed = Computed { cluster: &cluster, services: &[], slices: &[], what: watch::PROXY };
        let (desired, events) = computed.desire(&pod, &view, Some(&had));
        assert_eq!(desired, Desired { proxy: None, policy: Some(applied), routes: Vec::new() });
        assert!(events.is_none(), "no policy Events without a policy pass");
        let computed = Computed { what: watch::POLICY, ..computed };
        let (desired, events) = computed.desire(&pod, &view, Some(&had));
        assert_eq!(desired.policy, None);
        assert_eq!(desired.proxy, Some(Table::new(Family::Inet, "kactus-proxy")));
        assert_eq!(events, Some(Vec::new()));
        // Unknown (after a restart): always computed.
        let fresh = Programmed::new("/nonexistent".into());
        let (desired, _) = Computed { what: 0, ..computed }.desire(&pod, &view, Some(&fresh));
        assert_eq!(desired, Desired::nothing());
    }

    /// `cargo test --lib compute_cost -- --ignored --nocapture`: what a pass computes for
    /// 1,001 local pods on one network, all peers of one policy selecting them all (a policy
    /// or pod change), and for a Service change alone.
    #[test]
    #[ignore]
    fn compute_cost() {
        let pods: Vec<Pod> = (0..1001)
            .map(|i| {
                let message = format!(
                    "[{{\"name\":\"mep/mp1\",\"interface\":\"net1\",\"ips\":[\"200.1.{}.{}\"]}}]",
                    i / 250,
                    i % 250 + 1
                );
                serde_json::from_value(json!({
                    "metadata": {"name": format!("p{i}"), "namespace": "mep", "uid": format!("u{i}"), "labels": {"app": "a"}},
                    "status": {"conditions": [{"type": policy::pod::ATTACHMENTS_CONDITION, "status": "True", "message": message}]}
                }))
                .unwrap()
            })
            .collect();
        let policy: policy::MultiNetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "mep", "annotations": {"k8s.v1.cni.cncf.io/policy-for": "mp1"}},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}]}
        }))
        .unwrap();
        let namespaces = BTreeMap::new();
        let start = Instant::now();
        let views: Vec<PodView> = pods.iter().map(PodView::from_pod).collect();
        let policies = [policy];
        let cluster = policy::Cluster { policies: &policies, pods: &views, namespaces: &namespaces };
        let computed = Computed { cluster: &cluster, services: &[], slices: &[], what: watch::ALL };
        let desired: Vec<Desired> = pods.iter().zip(&views).map(|(p, v)| computed.desire(p, v, None).0).collect();
        let all = start.elapsed();
        let mut had = Programmed::new("/nonexistent".into());
        had.policy = program::Known::Applied(desired[0].policy.clone().unwrap());
        had.proxy = program::Known::Absent;
        had.routes = Some(Vec::new());
        let start = Instant::now();
        let computed = Computed { what: watch::PROXY, ..computed };
        for (p, v) in pods.iter().zip(&views) {
            assert!(computed.desire(p, v, Some(&had)).0.policy.is_some());
        }
        eprintln!("1,001 pods: policy and proxy recomputed {all:?}; proxy only {:?}", start.elapsed());
    }
}
