//! podagent as each local pod's data plane: the in-pod Service proxy (`nft::service_proxy`,
//! its ports from `podagent::service_proxy`) and MultiNetworkPolicy (`policy`), programmed in
//! the pod's network namespace.
//!
//! `watch.rs` keeps the stores and records which objects changed, `dirty.rs` turns those into
//! the local pods (and which of their two tables) they concern, `program.rs` brings one pod's
//! tables and routes to what is wanted. This file is the loop: any watch event wakes it; it
//! waits a few milliseconds for the rest of a burst (never more than [`MAX_DELAY`] after the
//! first), then computes the desired tables of the pods the burst concerns only (the other
//! table of such a pod is taken as last applied) and touches only the pods whose tables differ
//! from what it last applied (`policy::plan`: nothing, a set refill, or one replacing
//! transaction). A change that concerns no local pod computes nothing; the first pass, and
//! one after a watch relisted, computes every pod.
//!
//! When an endpoint leaves a pod's proxy table, the pod's UDP conntrack entries to it are
//! deleted (`nft::conntrack`), so UDP flows move to the remaining endpoints at once.
//!
//! Never flushed: a restart keeps every rule in place and its first pass replaces each wanted
//! table (one transaction) and deletes the unwanted ones it finds; a clean shutdown leaves
//! them (pods keep working through an upgrade); `kactus uninstall` removes them.

pub mod applied;
pub mod dirty;
pub mod program;
pub mod watch;

use crate::podagent::sandbox::SandboxLocator;
use crate::podagent::service_proxy;
use crate::policy::{self, report, PodView};
use dirty::{Dirty, Index, Parts, PodEntry};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::Resource;
use policy::NetworkRef;
use program::{Desired, Programmed};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use watch::{Changed, Stores, Touched};

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
    /// Pods whose tables a pass computed (a part at least): what a change costs.
    pub pods_computed: Counter,
    pub pods_programmed: Gauge,
    /// Which policies govern which local pod's device.
    pub applied: applied::AppliedPolicies,
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
            (
                "podagent_dataplane_pods_computed",
                "Local pods whose proxy or policy table a pass computed (the others were unconcerned)",
                &m.pods_computed,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "podagent_dataplane_pods_programmed",
            "Local pods with a kactus proxy or policy table",
            m.pods_programmed.clone(),
        );
        m.applied.register(registry);
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
    /// How often to look again for the MultiNetworkPolicy CRD while it is not served.
    pub policy_crd_recheck: Duration,
}

/// Starts the watches and the loop on tasks of their own; they end with the process.
pub async fn spawn(dp: DataPlane) -> Result<(), String> {
    let changed: Changed = Arc::default();
    let stores = Stores::start(&dp.client, &dp.node, &changed, dp.policy_crd_recheck).await?;
    tokio::spawn(run(dp, stores, changed));
    Ok(())
}

async fn run(dp: DataPlane, stores: Stores, changed: Changed) {
    stores.ready().await;
    log::info!("data plane: stores listed, reconciling the node's pods");
    let mut state = State::default();
    let mut first = true;
    loop {
        let started = Instant::now();
        let mut touched = changed.take();
        // The first pass: everything, as after any restart.
        touched.relisted |= std::mem::take(&mut first);
        let retry = state.pass(&dp, &stores, touched).await;
        dp.metrics.passes.inc();
        log::debug!("data plane pass: {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
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
    /// The devices its policies govern, when they were computed: each is looked for in the
    /// pod once, and one that is no network device there is told on the pod.
    governed: Vec<policy::Governed>,
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
        let governed: Vec<String> = self.governed.iter().map(|g| g.device.clone()).collect();
        let outcome = tokio::task::spawn_blocking(move || {
            let outcome = programmed.bring_to(&desired, &governed);
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
    /// What each watched object last meant, to turn changes into the pods they concern.
    index: Index,
    /// By pod UID (a pod re-made under the same name is another pod).
    programmed: HashMap<String, Programmed>,
    /// The Events last published per pod: published again only when they change.
    warned: HashMap<String, Vec<String>>,
    /// Local pods (`namespace/name`) that failed: recomputed whole next pass.
    retry: BTreeSet<String>,
}

/// What a pass found one local pod needs, computed by [`State::plan`].
struct Planned {
    uid: String,
    pod: Arc<Pod>,
    /// The policy Events it calls for (`None`: its policies were not recomputed).
    events: Option<Vec<(&'static str, String)>>,
    /// `None`: its tables are what was last applied.
    job: Option<Job>,
}

impl State {
    /// One pass over the local pods `touched` concerns (all of them after a relist, and the
    /// ones that failed last time); `true` when some pod should be tried again.
    async fn pass(&mut self, dp: &DataPlane, stores: &Stores, touched: Touched) -> bool {
        let planned = self.plan(stores, &dp.node, &dp.metrics, touched);
        let mut jobs = Vec::new();
        for Planned { uid, pod, events, job } in planned {
            if let Some(events) = events {
                self.warn(dp, &pod, &uid, events).await;
            }
            jobs.extend(job);
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
                    let unfiltered = job.governed.iter().filter(|g| done.unfiltered.contains(&g.device));
                    for event in unfiltered.map(report::not_enforced) {
                        log::warn!("data plane: pod {}: {}", key(&job.pod), event.message);
                        self.publish(dp, &job.pod, event.reason, &event.message).await;
                    }
                }
                Err(e) => {
                    dp.metrics.failures.inc();
                    self.retry.insert(key(&job.pod));
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
        let programmed = self.programmed.values().filter(|p| !p.matches(&Desired::nothing())).count();
        dp.metrics.pods_programmed.set(programmed as i64);
        if changed > 0 {
            log::info!("data plane: {changed} pod(s) brought in line, {programmed} programmed");
        }
        !self.retry.is_empty()
    }

    /// Learns what `touched` changed and computes the tables of the local pods it concerns;
    /// returns the pods whose tables differ from what was last applied.
    fn plan(&mut self, stores: &Stores, node: &str, metrics: &Metrics, touched: Touched) -> Vec<Planned> {
        let mut dirty = self.learn(stores, node, touched);
        dirty.pods.extend(std::mem::take(&mut self.retry));
        for uid in &dirty.gone {
            self.programmed.remove(uid);
            self.warned.remove(uid);
            metrics.applied.forget(uid);
        }
        if dirty.all {
            // Pods gone while a watch was away: their namespace went with them.
            let local: HashSet<&str> = self.index.local_uids().collect();
            self.programmed.retain(|uid, _| local.contains(uid.as_str()));
            self.warned.retain(|uid, _| local.contains(uid.as_str()));
            metrics.applied.retain(|uid| local.contains(uid));
        }
        let mut visits = Vec::new();
        for key in self.index.visit(&dirty) {
            let (Some(pod), Some(entry)) = (watch::get(&stores.pods, &key), self.index.pod_entry(&key)) else {
                continue;
            };
            // Nothing to do in a pod never programmed that has no attachments or has finished
            // (its sandbox is gone or going: no retry loop on a namespace that will never be).
            let view = &entry.view;
            if (view.attachments.is_empty() || view.finished) && !self.programmed.contains_key(&entry.uid) {
                continue;
            }
            // A pod whose tables are not known (never made, or not since a restart): both.
            let known = self.programmed.get(&entry.uid).is_some_and(|p| p.knows_tables());
            visits.push((pod, entry, if known { dirty.parts(&key, view) } else { Parts::BOTH }));
        }
        let policy_inputs = PolicyInputs::gather(stores, &self.index, visits.iter().filter(|v| v.2.policy));
        let cluster = policy_inputs.cluster();
        // The Services and slices of a set of networks, gathered once per pass: a Service's
        // change concerns every pod on its network, all of them with the same inputs.
        let mut proxy_inputs_of: BTreeMap<BTreeSet<NetworkRef>, ProxyInputs> = BTreeMap::new();
        let no_proxy_inputs = ProxyInputs::default();
        let mut planned = Vec::new();
        for (pod, entry, parts) in visits {
            let (uid, view) = (&entry.uid, &entry.view);
            let had = self.programmed.get(uid);
            let mut governed = Vec::new();
            let (desired, events) = if view.finished {
                (Desired::nothing(), Some(Vec::new()))
            } else {
                let (services, slices) = if parts.proxy {
                    let networks: BTreeSet<NetworkRef> = view.attachments.iter().map(|a| a.network.clone()).collect();
                    &*proxy_inputs_of.entry(networks).or_insert_with_key(|n| proxy_inputs(stores, &self.index, n))
                } else {
                    &no_proxy_inputs
                };
                let computed = Computed { cluster: &cluster, services, slices, parts };
                let wanted = computed.desire(&pod, view, had);
                if wanted.computed {
                    metrics.pods_computed.inc();
                }
                governed = wanted.governed;
                (wanted.desired, wanted.events)
            };
            if events.is_some() {
                // Its policies were recomputed: `governed` is what governs it now.
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                metrics.applied.set(uid, &view.namespace, name, &governed);
            }
            let job = if had.is_some_and(|p| p.matches(&desired)) {
                None
            } else {
                let had = self.programmed.remove(uid).filter(|p| p.netns.exists());
                // A finished pod's namespace went with its rules.
                let forget = view.attachments.is_empty();
                (had.is_some() || !view.finished).then(|| Job {
                    uid: uid.clone(),
                    pod: pod.clone(),
                    forget,
                    had,
                    desired,
                    governed,
                })
            };
            planned.push(Planned { uid: uid.clone(), pod, events, job });
        }
        planned
    }

    /// Feeds what `touched` names, read from the stores, to the index (the whole stores
    /// after a relist): which pods and parts it concerns.
    fn learn(&mut self, stores: &Stores, node: &str, touched: Touched) -> Dirty {
        let index = &mut self.index;
        let (mut dirty, touched) = if touched.relisted {
            // What a watch missed while away is not known object by object: learn it all.
            *index = Index::default();
            let all = Touched {
                relisted: true,
                services: stores.services.state().iter().map(|s| watch::key_of(&s.metadata)).collect(),
                endpoints: stores.endpoints_keys().into_iter().collect(),
                policies: stores
                    .policies
                    .get()
                    .iter()
                    .flat_map(|p| p.state())
                    .map(|p| watch::key_of(&p.metadata))
                    .collect(),
                namespaces: BTreeSet::new(),
                pods: stores.pods.state().iter().map(|p| watch::key_of(&p.metadata)).collect(),
            };
            (Dirty::everything(), all)
        } else {
            (Dirty::default(), touched)
        };
        // Slices before Services: a slice's change dirties its Service's network as it was.
        for key in &touched.endpoints {
            index.endpoints(key, stores.service_of(key), &mut dirty);
        }
        for key in &touched.services {
            let network = watch::get(&stores.services, key).and_then(|s| match service_proxy::proxied_network(&s) {
                Some(Ok(n)) => Some(NetworkRef { namespace: n.namespace, name: n.name }),
                _ => None,
            });
            index.service(key, network, &mut dirty);
        }
        for key in &touched.policies {
            let policy = stores.policies.get().and_then(|p| watch::get(p, key));
            let networks = policy.map(|p| match p.policy_for() {
                Some(annotation) => policy::policy_for::parse(annotation, p.namespace()).0.into_iter().collect(),
                None => BTreeSet::new(),
            });
            index.policy(key, networks, &mut dirty);
        }
        if !touched.namespaces.is_empty() {
            index.namespace(&mut dirty);
        }
        for key in &touched.pods {
            let entry = watch::get(&stores.pods, key).map(|pod| PodEntry {
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                // A pod without a UID cannot be told from its successor: not programmed.
                local: pod.metadata.uid.is_some()
                    && pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node),
                view: PodView::from_pod(&pod),
            });
            index.pod(key, entry, &mut dirty);
        }
        dirty
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

/// The Services on a pod's networks and their endpoints: all its proxy table can hold.
type ProxyInputs = (Vec<Service>, Vec<EndpointSlice>);

/// Gathers the [`ProxyInputs`] of `networks` from the stores.
fn proxy_inputs(stores: &Stores, index: &Index, networks: &BTreeSet<NetworkRef>) -> ProxyInputs {
    let (mut services, mut slices) = (Vec::new(), Vec::new());
    for key in networks.iter().flat_map(|n| index.services_on(n)) {
        if let Some(service) = watch::get(&stores.services, key) {
            services.push(Service::clone(&service));
            slices.extend(index.slices_of(key).flat_map(|k| stores.slices_at(k)));
        }
    }
    (services, slices)
}

/// What the policy part of a pass's pods is computed from: their namespaces' policies, the
/// pods on their networks (the only peers their tables can hold), every namespace's labels.
#[derive(Default)]
struct PolicyInputs {
    policies: Vec<policy::MultiNetworkPolicy>,
    peers: Vec<PodView>,
    namespaces: BTreeMap<String, policy::selection::Labels>,
}

impl PolicyInputs {
    fn gather<'a>(
        stores: &Stores,
        index: &Index,
        pods: impl Iterator<Item = &'a (Arc<Pod>, &'a PodEntry, Parts)>,
    ) -> PolicyInputs {
        let (mut namespaces, mut networks) = (BTreeSet::new(), BTreeSet::new());
        for (_, entry, _) in pods {
            namespaces.insert(entry.view.namespace.as_str());
            networks.extend(entry.view.attachments.iter().map(|a| a.network.clone()));
        }
        let Some(store) = stores.policies.get() else { return PolicyInputs::default() };
        let keys = namespaces.into_iter().flat_map(|ns| index.policies_in(ns));
        let policies: Vec<_> = keys.filter_map(|k| watch::get(store, k)).map(|p| (*p).clone()).collect();
        if policies.is_empty() {
            return PolicyInputs::default();
        }
        let namespaces = stores
            .namespaces
            .state()
            .iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, n.metadata.labels.clone().unwrap_or_default())))
            .collect();
        PolicyInputs { policies, peers: index.peers_on(&networks), namespaces }
    }

    fn cluster(&self) -> policy::Cluster<'_> {
        policy::Cluster { policies: &self.policies, pods: &self.peers, namespaces: &self.namespaces }
    }
}

/// What one pod's tables are computed from.
struct Computed<'a> {
    cluster: &'a policy::Cluster<'a>,
    services: &'a [Service],
    slices: &'a [EndpointSlice],
    /// The parts whose inputs changed.
    parts: Parts,
}

/// A pod's desired tables and routes.
struct Wanted {
    desired: Desired,
    /// The Events its policies call for (`None`: its policies were not recomputed).
    events: Option<Vec<(&'static str, String)>>,
    /// Some part was computed rather than taken as last applied.
    computed: bool,
    /// The devices its policies govern (empty: none, or its policies were not recomputed).
    governed: Vec<policy::Governed>,
}

impl Computed<'_> {
    /// A part whose inputs did not change (`parts`) is what was last applied, when that is
    /// known.
    fn desire(&self, pod: &Pod, view: &PodView, had: Option<&Programmed>) -> Wanted {
        use program::Known;
        let last = |known: &Known| match known {
            Known::Applied(t) => Some(Some(t.clone())),
            Known::Absent => Some(None),
            Known::Unknown => None,
        };
        let mut computed = false;
        let proxy_was = had.filter(|_| !self.parts.proxy).and_then(|h| Some((last(&h.proxy)?, h.routes.clone()?)));
        let (proxy, routes) = match proxy_was {
            Some(was) => was,
            None => {
                computed = true;
                let ports = service_proxy::service_ports(pod, self.services, self.slices);
                let proxy = (!ports.is_empty()).then(|| crate::nft::service_proxy::table(&ports));
                let routes = if ports.is_empty() { Vec::new() } else { service_proxy::routes(pod, self.services) };
                (proxy, routes)
            }
        };
        let policy_was = had.filter(|_| !self.parts.policy).and_then(|h| last(&h.policy));
        let (policy, events, governed) = match policy_was {
            Some(was) => (was, None, Vec::new()),
            None if self.cluster.policies.is_empty() => (None, Some(Vec::new()), Vec::new()),
            None => {
                computed = true;
                let compiled = policy::compile(self.cluster, view);
                // Devices that are no kernel device (DPDK, vhost-user) are looked for when the
                // pod is programmed (in its namespace, once per device) and told then.
                let events = report::events(&compiled).into_iter().map(|e| (e.reason, e.message)).collect();
                (compiled.table, Some(events), compiled.devices)
            }
        };
        Wanted { desired: Desired { proxy, policy, routes }, events, computed, governed }
    }
}

/// A pod's `namespace/name`, as the index and the retry set hold it.
fn key(pod: &Pod) -> String {
    watch::key_of(&pod.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::{Family, Table};
    use kube::runtime::reflector;
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
        let proxy = Parts { proxy: true, policy: false };
        let computed = Computed { cluster: &cluster, services: &[], slices: &[], parts: proxy };
        let wanted = computed.desire(&pod, &view, Some(&had));
        assert_eq!(wanted.desired, Desired { proxy: None, policy: Some(applied), routes: Vec::new() });
        assert!(wanted.events.is_none(), "no policy Events without a policy pass");
        let computed = Computed { parts: Parts { proxy: false, policy: true }, ..computed };
        let wanted = computed.desire(&pod, &view, Some(&had));
        assert_eq!(wanted.desired.policy, None);
        assert_eq!(wanted.desired.proxy, Some(Table::new(Family::Inet, "kactus-proxy")));
        assert_eq!(wanted.events, Some(Vec::new()));
        // Unknown (after a restart): always computed.
        let fresh = Programmed::new("/nonexistent".into());
        let none = Parts { proxy: false, policy: false };
        let wanted = Computed { parts: none, ..computed }.desire(&pod, &view, Some(&fresh));
        assert_eq!(wanted.desired, Desired::nothing());
        assert!(wanted.computed);
    }

    /// The stores a pass reads, filled by hand.
    struct Fake {
        stores: Stores,
        services: reflector::store::Writer<Service>,
        slices: reflector::store::Writer<EndpointSlice>,
        pods: reflector::store::Writer<Pod>,
        policies: reflector::store::Writer<policy::MultiNetworkPolicy>,
    }

    impl Fake {
        fn new() -> Fake {
            let (services_store, services) = reflector::store();
            let (slices_store, slices) = reflector::store();
            let (pods_store, pods) = reflector::store();
            let (policies_store, policies) = reflector::store();
            let (namespaces, _) = reflector::store();
            let stores = Stores {
                services: services_store,
                endpoints: watch::EndpointsStore::Slices(slices_store),
                policies: Arc::new(std::sync::OnceLock::from(policies_store)),
                namespaces,
                pods: pods_store,
            };
            Fake { stores, services, slices, pods, policies }
        }
    }

    fn apply<K>(writer: &mut reflector::store::Writer<K>, object: serde_json::Value) -> String
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let object: K = serde_json::from_value(object).unwrap();
        let key = watch::key_of(object.meta());
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(object));
        key
    }

    fn attached_pod(name: &str, node: &str, network: Option<&str>, ip: &str) -> serde_json::Value {
        let conditions = match network {
            Some(n) => json!([{"type": policy::pod::ATTACHMENTS_CONDITION, "status": "True",
                "message": format!("[{{\"name\":\"{n}\",\"interface\":\"net1\",\"ips\":[\"{ip}\"]}}]")}]),
            None => json!([]),
        };
        json!({"metadata": {"name": name, "namespace": "mep", "uid": format!("uid-{name}")},
               "spec": {"nodeName": node, "containers": []}, "status": {"conditions": conditions}})
    }

    fn service(name: &str, network: Option<&str>, ip: &str) -> serde_json::Value {
        let annotations = match network {
            Some(n) => json!({service_proxy::SERVICE_NETWORK_ANNOTATION: n}),
            None => json!({}),
        };
        json!({"metadata": {"name": name, "namespace": "mep", "annotations": annotations,
                            "labels": {service_proxy::PROXY_NAME_LABEL: service_proxy::PROXY_NAME}},
               "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    }

    fn slice(service: &str, endpoint: &str) -> serde_json::Value {
        json!({"metadata": {"name": format!("{service}-x"), "namespace": "mep",
                            "labels": {"kubernetes.io/service-name": service,
                                       "endpointslice.kubernetes.io/managed-by": "endpoints-controller.kactus.io"}},
               "addressType": "IPv4", "endpoints": [{"addresses": [endpoint]}],
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    }

    /// A pass over 200 local pods on mp1: a change that concerns none of them (a Service on a
    /// network no local pod is on, a Service naming no network, a pod with no attachments, a
    /// peer on mp1 that no policy governs) computes none; their Service's slice, all 200.
    #[test]
    fn an_unrelated_change_computes_no_pod_and_a_related_one_the_pods_it_concerns() {
        let mut fake = Fake::new();
        for i in 0..200 {
            apply(
                &mut fake.pods,
                attached_pod(&format!("p{i}"), "n1", Some("mp1"), &format!("200.1.{}.{}", i / 200, i % 200 + 1)),
            );
        }
        apply(&mut fake.services, service("hello", Some("mp1"), "10.96.0.10"));
        let hello_slice = apply(&mut fake.slices, slice("hello", "200.1.9.1"));
        let (mut state, metrics) = (State::default(), Metrics::default());
        let first = Touched { relisted: true, ..Touched::default() };
        let planned = state.plan(&fake.stores, "n1", &metrics, first);
        assert_eq!((planned.len(), metrics.pods_computed.get()), (200, 200));
        let job = planned[0].job.as_ref().unwrap();
        assert!(job.desired.proxy.is_some() && job.desired.routes.len() == 1, "{:?}", job.desired);

        let mut touched = Touched::default();
        touched.services.insert(apply(&mut fake.services, service("far", Some("mp9"), "10.96.0.11")));
        touched.services.insert(apply(&mut fake.services, service("plain", None, "10.96.0.12")));
        touched.endpoints.insert(apply(&mut fake.slices, slice("far", "200.9.9.9")));
        touched.pods.insert(apply(&mut fake.pods, attached_pod("bare", "n2", None, "")));
        touched.pods.insert(apply(&mut fake.pods, attached_pod("peer", "n2", Some("mp1"), "200.1.8.1")));
        let planned = state.plan(&fake.stores, "n1", &metrics, touched);
        assert_eq!((planned.len(), metrics.pods_computed.get()), (0, 200), "nothing computed");

        let mut touched = Touched::default();
        apply(&mut fake.slices, slice("hello", "200.1.9.2"));
        touched.endpoints.insert(hello_slice);
        let planned = state.plan(&fake.stores, "n1", &metrics, touched);
        assert_eq!((planned.len(), metrics.pods_computed.get()), (200, 400));

        // A local pod joining mp1: itself only.
        let mut touched = Touched::default();
        touched.pods.insert(apply(&mut fake.pods, attached_pod("new", "n1", Some("mp1"), "200.1.7.1")));
        let planned = state.plan(&fake.stores, "n1", &metrics, touched);
        assert_eq!((planned.len(), metrics.pods_computed.get()), (1, 401));
    }

    /// The addresses in a planned policy table's sets.
    fn peer_addresses(planned: &Planned) -> Vec<String> {
        let table = planned.job.as_ref().and_then(|j| j.desired.policy.as_ref());
        let elements = table.into_iter().flat_map(|t| &t.sets).flat_map(|s| &s.elements);
        elements.map(|e| format!("{:?}", e.key)).collect()
    }

    /// A policy on mp1 allowing ingress from every pod of its namespace: a peer appearing on
    /// mp1 (on another node) recomputes the policy table of the local pods on mp1, with its
    /// address in their sets; the same peer on mp2 concerns nobody.
    #[test]
    fn a_peer_appearing_on_a_governed_network_reaches_the_sets_of_the_pods_there() {
        let mut fake = Fake::new();
        apply(&mut fake.pods, attached_pod("a", "n1", Some("mp1"), "200.1.1.1"));
        apply(&mut fake.pods, attached_pod("b", "n1", Some("mp2"), "200.2.1.1"));
        apply(
            &mut fake.policies,
            json!({"metadata": {"name": "p", "namespace": "mep", "annotations": {policy::model::POLICY_FOR: "mp1"}},
                   "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}}),
        );
        let (mut state, metrics) = (State::default(), Metrics::default());
        let planned = state.plan(&fake.stores, "n1", &metrics, Touched { relisted: true, ..Touched::default() });
        assert_eq!(planned.len(), 2);
        let a = planned.iter().find(|p| p.pod.metadata.name.as_deref() == Some("a")).unwrap();
        assert!(peer_addresses(a).iter().all(|e| !e.contains("200.1.8.1")), "{:?}", peer_addresses(a));
        let computed = metrics.pods_computed.get();

        let mut touched = Touched::default();
        touched.pods.insert(apply(&mut fake.pods, attached_pod("peer", "n2", Some("mp1"), "200.1.8.1")));
        let planned = state.plan(&fake.stores, "n1", &metrics, touched);
        assert_eq!(planned.len(), 1, "a only");
        assert!(
            peer_addresses(&planned[0]).iter().any(|e| e.contains("200.1.8.1")),
            "{:?}",
            peer_addresses(&planned[0])
        );
        assert_eq!(metrics.pods_computed.get(), computed + 1);

        let mut touched = Touched::default();
        touched.pods.insert(apply(&mut fake.pods, attached_pod("other", "n2", Some("mp2"), "200.2.8.1")));
        assert!(state.plan(&fake.stores, "n1", &metrics, touched).is_empty(), "no policy governs mp2");
        assert_eq!(metrics.pods_computed.get(), computed + 1);
    }

    /// Takes the planned tables as applied (no pod namespace here).
    fn take_as_applied(state: &mut State, planned: Vec<Planned>) {
        let known = |t: Option<Table>| t.map_or(Known::Absent, Known::Applied);
        for job in planned.into_iter().filter_map(|p| p.job) {
            let mut programmed = Programmed::new("/nonexistent".into());
            programmed.proxy = known(job.desired.proxy);
            programmed.policy = known(job.desired.policy);
            programmed.routes = Some(job.desired.routes);
            state.programmed.insert(job.uid, programmed);
        }
    }

    /// `cargo test --lib pass_cost -- --ignored --nocapture`: what a pass costs on a node of
    /// 1,001 pods on mp1, all selected by one policy allowing ingress from each other, with a
    /// Service on mp1: the first pass, an unrelated Service, the Service's slice, a peer.
    #[test]
    #[ignore]
    fn pass_cost() {
        let mut fake = Fake::new();
        for i in 0..1001 {
            let ip = format!("200.1.{}.{}", i / 250, i % 250 + 1);
            apply(&mut fake.pods, attached_pod(&format!("p{i}"), "n1", Some("mp1"), &ip));
        }
        apply(
            &mut fake.policies,
            json!({"metadata": {"name": "p", "namespace": "mep", "annotations": {policy::model::POLICY_FOR: "mp1"}},
                   "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}}),
        );
        apply(&mut fake.services, service("hello", Some("mp1"), "10.96.0.10"));
        let hello_slice = apply(&mut fake.slices, slice("hello", "200.1.9.1"));
        let (mut state, metrics) = (State::default(), Metrics::default());
        let time = |what: &str, state: &mut State, touched: Touched| {
            let (start, before) = (Instant::now(), metrics.pods_computed.get());
            let planned = state.plan(&fake.stores, "n1", &metrics, touched);
            let computed = metrics.pods_computed.get() - before;
            eprintln!("{what}: {computed} pod(s) computed, {} to program, {:?}", planned.len(), start.elapsed());
            take_as_applied(state, planned);
        };
        time("first pass", &mut state, Touched { relisted: true, ..Touched::default() });
        let mut touched = Touched::default();
        touched.services.insert(apply(&mut fake.services, service("far", Some("mp9"), "10.96.0.11")));
        time("a Service on another network", &mut state, touched);
        apply(&mut fake.slices, slice("hello", "200.1.9.2"));
        time("the Service's slice", &mut state, Touched { endpoints: [hello_slice].into(), ..Touched::default() });
        let peer = apply(&mut fake.pods, attached_pod("peer", "n2", Some("mp1"), "200.1.8.1"));
        time("a peer on mp1", &mut state, Touched { pods: [peer].into(), ..Touched::default() });
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
        let computed = Computed { cluster: &cluster, services: &[], slices: &[], parts: Parts::BOTH };
        let desired: Vec<Desired> = pods.iter().zip(&views).map(|(p, v)| computed.desire(p, v, None).desired).collect();
        let all = start.elapsed();
        let mut had = Programmed::new("/nonexistent".into());
        had.policy = program::Known::Applied(desired[0].policy.clone().unwrap());
        had.proxy = program::Known::Absent;
        had.routes = Some(Vec::new());
        let start = Instant::now();
        let computed = Computed { parts: Parts { proxy: true, policy: false }, ..computed };
        for (p, v) in pods.iter().zip(&views) {
            assert!(computed.desire(p, v, Some(&had)).desired.policy.is_some());
        }
        eprintln!("1,001 pods: policy and proxy recomputed {all:?}; proxy only {:?}", start.elapsed());
    }
}
