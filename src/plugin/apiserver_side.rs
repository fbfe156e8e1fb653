//! What an ADD asks of and tells the apiserver, run beside its delegates so the round trips
//! cost the pod's start as little as they can: while the master makes `eth0`, the client is
//! built, connected, and the pending attachments' networks are read (one request per
//! namespace, see `networks.rs`) and recorded; once every device is made, network-status and
//! one `AddedInterface` Event go out together while the cache is made durable. A failed ADD
//! gets its warning instead. Per ADD that is at most a pod read (when the runtime did not
//! pass its annotations), the network reads, one Event and one PATCH, whatever the number of
//! attachments. With the fast path (`node_answers.rs`) the reads were answered by podagent
//! during planning, and the PATCH and the Event go through it: no apiserver client at all.

use super::apiserver::kube_client;
use super::cache::{CacheEntry, ContainerCache, Record};
use super::config::KactusConfig;
use super::node_answers::{self, NodeAnswers};
use super::plan::{Call, Plan};
use super::{events, status};
use crate::cni::{code, CniEnv, CniError, PodRef};
use crate::devices::AllocatedDevice;
use crate::kube;
use std::borrow::Cow;
use std::thread::{Scope, ScopedJoinHandle};

/// The pending attachments' calls as the reading thread leaves them, with its client, or
/// podagent's answers when it asked podagent and they served.
type Reading = (Option<kube::Client>, Option<NodeAnswers>, Result<Vec<Call>, CniError>);

/// The apiserver's part of one ADD (for a pod: a call without pod identity has none).
pub struct ApiserverSide<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    cfg: &'env KactusConfig,
    pod: Option<&'env PodRef>,
    /// podagent's answers: with them and no client, network-status and the Event go through
    /// podagent (the fast path, `node_answers.rs`).
    node: Option<Cow<'env, NodeAnswers>>,
    client: Option<kube::Client>,
    reading: Option<ScopedJoinHandle<'scope, Reading>>,
    telling: Vec<ScopedJoinHandle<'scope, ()>>,
    /// network-status went out with this ADD's devices (a rollback must correct it).
    status_told: bool,
}

impl<'scope, 'env> ApiserverSide<'scope, 'env> {
    /// Starts reading what the pending attachments need: the client (planning's, if it read
    /// the pod), their networks and allocated devices (none of those the container's earlier
    /// calls in `before` hold), then records their calls in an intent record numbered after
    /// the ready ones, so the write-ahead costs the pod's start nothing either. With none
    /// pending and nothing read yet (the runtime passed the pod's annotations and it asks
    /// for no network), it opens the connection, so the TLS handshake is not added to the
    /// pod's start when network-status and the Event go.
    pub fn start(
        scope: &'scope Scope<'scope, 'env>,
        cfg: &'env KactusConfig,
        env: &'env CniEnv,
        plan: &'env Plan,
        cache: &'env ContainerCache,
        before: &'env Record,
    ) -> ApiserverSide<'scope, 'env> {
        let pod = plan.pod.as_ref();
        let reading = pod.map(|_| {
            scope.spawn(move || {
                let first_seq = before.next_seq() + plan.ready.len() as u64;
                let record = |planned| {
                    let calls = Call::numbered(env, planned, first_seq);
                    cache.intend(&calls.iter().map(|c| c.intent.clone()).collect::<Vec<_>>())?;
                    Ok(calls)
                };
                // The fast path: podagent's answers (asked now, beside the master, or during
                // planning), when they cover the attachments.
                let asked =
                    plan.node_later.then(|| node_answers::ask(cfg, plan.pod.as_ref()?, &plan.pending)).flatten();
                if let Some(node) = asked.as_ref().or(plan.node.as_ref()) {
                    if plan.pending.is_empty() {
                        return (None, asked, Ok(Vec::new()));
                    }
                    if let Some(planned) = plan.pending_calls_from_node(cfg, node) {
                        return (None, asked, planned.and_then(record));
                    }
                }
                let client = match plan.client.clone().map(Ok).unwrap_or_else(|| kube_client(cfg)) {
                    Ok(client) => client,
                    Err(e) => return (None, None, Err(e)),
                };
                if plan.pending.is_empty() {
                    if client.request_count() == 0 {
                        client.connect_early();
                    }
                    return (Some(client), None, Ok(Vec::new()));
                }
                let held: Vec<AllocatedDevice> = before.calls.iter().filter_map(|e| e.kactus.device.clone()).collect();
                let calls = plan.pending_calls(cfg, &client, &held).and_then(record);
                (Some(client), None, calls)
            })
        });
        ApiserverSide {
            scope,
            cfg,
            pod,
            node: plan.node.as_ref().map(Cow::Borrowed),
            client: None,
            reading,
            telling: Vec::new(),
            status_told: false,
        }
    }

    /// The pending attachments' calls, recorded in the cache, once read.
    pub fn pending_calls(&mut self) -> Result<Vec<Call>, CniError> {
        let Some(reading) = self.reading.take() else { return Ok(Vec::new()) };
        let (client, asked, calls) = reading
            .join()
            .unwrap_or_else(|_| (None, None, Err(CniError::new(code::IO_FAILURE, "apiserver thread panicked"))));
        self.client = client;
        if let Some(asked) = asked {
            self.node = Some(Cow::Owned(asked));
        }
        calls
    }

    /// Sends network-status (`all` the container's devices) and the `AddedInterface` Event
    /// (the devices this call `made`) at once; [`ApiserverSide::told`] waits for them. The
    /// client that read the networks has its connection open: no new handshake.
    pub fn tell_made(&mut self, all: Vec<CacheEntry>, made: Vec<CacheEntry>) {
        if let (Some(pod), None) = (self.pod, &self.client) {
            let Some(node) = self.node.take() else { return };
            let cfg = self.cfg;
            self.telling.push(self.scope.spawn(move || node.report_made(cfg, pod, &all, &made)));
            self.status_told = true;
            return;
        }
        let (Some(pod), Some(client)) = (self.pod, self.client.clone()) else { return };
        let for_event = client.clone();
        self.telling.push(self.scope.spawn(move || status::publish_logged(&client, pod, &all)));
        self.telling.push(self.scope.spawn(move || events::added_interfaces(&for_event, pod, &made)));
        self.status_told = true;
    }

    /// Waits for what [`ApiserverSide::tell_made`] sent (best effort: failures are logged).
    pub fn told(&mut self) {
        for handle in self.telling.drain(..) {
            let _ = handle.join();
        }
    }

    /// After a rollback: network-status again if it went out with devices now removed (what
    /// is `left` in the cache), and the warning on the pod.
    pub fn tell_failed(&mut self, left: impl FnOnce() -> Vec<CacheEntry>, err: &CniError) {
        self.told();
        if self.client.is_none() && self.pod.is_some() {
            // The fast path read for this ADD (or the client could not be built): its
            // failure is told in-process.
            self.client = kube_client(self.cfg).ok();
        }
        let (Some(pod), Some(client)) = (self.pod, self.client.as_ref()) else { return };
        if self.status_told {
            status::publish_logged(client, pod, &left());
        }
        events::add_failed(client, pod, err);
    }
}

impl Drop for ApiserverSide<'_, '_> {
    /// The process ends once the answer is printed, and the OS closes the connection then;
    /// dropping the client first would join its runtime thread and close the connection
    /// politely, which only delays the pod's start (~0.3 ms in the benchmark).
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            std::mem::forget(client);
        }
    }
}

/// A failed ADD shows on the pod as a warning Event (best effort), with a client of its
/// own when it failed before one was built (an invalid annotation, a device in the way).
pub fn warn_pod(cfg: &KactusConfig, pod: Option<&PodRef>, err: &CniError) {
    if let Some(pod) = pod {
        if let Ok(client) = kube_client(cfg) {
            events::add_failed(&client, pod, err);
        }
    }
}
