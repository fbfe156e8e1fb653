//! The fast path as an ADD uses it: when the config names podagent's socket, the pod's
//! annotations and UID and the networks' objects come from podagent's caches, and
//! network-status and the Event go out through podagent; kactus still execs every delegate
//! and checks everything it is answered exactly as what it reads itself (the networks'
//! configs are parsed by `networks.rs`, namespace isolation and delegability by `plan.rs`).
//!
//! Any doubt means the in-process path at once, logged with its reason (see
//! [`Fallback`]): no socket, a refused connection, another protocol version, podagent busy
//! or not synced, no answer within [`client::RESOLVE_BOUND`], an answer that does not cover
//! the call (a network it lacks, a network backed by an allocated device: their lookup
//! needs the apiserver). DEL never asks podagent.

use super::cache::CacheEntry;
use super::config::KactusConfig;
use super::networks::{self, Network};
use super::{events, status};
use crate::attachment::Attachment;
use crate::cni::{CniError, PodRef};
use crate::fastpath::client::{self, Fallback};
use crate::fastpath::{Answer, Ask, EventNote, NetworkKey, NetworkObject, PodKey};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What podagent answered for one ADD.
#[derive(Debug, Clone)]
pub struct NodeAnswers {
    socket: PathBuf,
    pod: PodKey,
    /// The pod's annotations as podagent's cache (or its live read) holds them.
    pub annotations: BTreeMap<String, String>,
    networks: BTreeMap<(String, String), NetworkObject>,
}

/// Asks podagent for the pod (matched by namespace, name and `K8S_POD_UID`) and the networks
/// of `atts` (those kactus knows already, from the runtime's annotations) and of the pod's own
/// annotation; `None` (logged) when the in-process path is to be taken.
pub fn ask(cfg: &KactusConfig, pod: &PodRef, atts: &[Attachment]) -> Option<NodeAnswers> {
    let socket = cfg.podagent_socket.clone()?;
    let Some(uid) = pod.uid.clone().filter(|u| !u.is_empty()) else {
        return fallback(pod, &Fallback::Unusable("no K8S_POD_UID to match the pod on".into()));
    };
    let key = PodKey { namespace: pod.namespace.clone(), name: pod.name.clone(), uid };
    let wanted =
        atts.iter().map(|a| NetworkKey { namespace: a.namespace.clone(), name: a.selection.name.clone() }).collect();
    let ask = Ask::Resolve { pod: key.clone(), networks: wanted };
    match client::ask(&socket, ask, client::RESOLVE_BOUND) {
        Ok(Answer::Resolved { uid, annotations, networks }) if uid == key.uid => {
            log::debug!(
                "fast path: podagent answered for pod {}/{} ({} network(s))",
                pod.namespace,
                pod.name,
                networks.len()
            );
            let networks = networks.into_iter().map(|n| ((n.namespace.clone(), n.name.clone()), n)).collect();
            Some(NodeAnswers { socket, pod: key, annotations, networks })
        }
        Ok(other) => fallback(pod, &Fallback::Unusable(format!("unexpected answer {other:?}"))),
        Err(why) => fallback(pod, &why),
    }
}

fn fallback<T>(pod: &PodRef, why: &Fallback) -> Option<T> {
    log::info!("fast path: pod {}/{}: reading the apiserver in-process: {why}", pod.namespace, pod.name);
    None
}

impl NodeAnswers {
    /// The networks of `atts`, in their order, parsed and checked as `networks::read`'s
    /// are; `None` (logged) when the answer does not cover them.
    pub fn networks(&self, cfg: &KactusConfig, atts: &[Attachment]) -> Option<Vec<Result<Network, CniError>>> {
        let mut out = Vec::with_capacity(atts.len());
        for att in atts {
            let key = (att.namespace.clone(), att.selection.name.clone());
            let Some(answered) = self.networks.get(&key) else {
                return self.fallback(&Fallback::Unusable(format!("network {} was not answered", att.network_ref())));
            };
            let net = networks::from_answer(cfg, answered);
            if net.as_ref().is_ok_and(|n| n.resource_name.is_some()) {
                return self.fallback(&Fallback::Unusable(format!(
                    "network {} is backed by an allocated device (looked up in-process)",
                    att.network_ref()
                )));
            }
            out.push(net);
        }
        Some(out)
    }

    /// network-status (`all` the container's devices) and the `AddedInterface` Event (the
    /// devices `made`) through podagent; in-process when podagent does not take them.
    pub fn report_made(&self, cfg: &KactusConfig, pod: &PodRef, all: &[CacheEntry], made: &[CacheEntry]) {
        let event = events::added_message(made).map(|message| EventNote {
            kind: "Normal".into(),
            reason: events::ADDED_INTERFACE.into(),
            message,
        });
        let ask = Ask::Report { pod: self.pod.clone(), status: status::patch_body(all), event };
        match client::ask(&self.socket, ask, client::REPORT_BOUND) {
            Ok(Answer::Reported) => {
                log::debug!("fast path: network-status written by podagent: {} device(s)", all.len())
            }
            other => {
                let why = match other {
                    Err(why) => why,
                    Ok(answer) => Fallback::Unusable(format!("unexpected answer {answer:?}")),
                };
                log::info!("fast path: pod {}/{}: writing network-status in-process: {why}", pod.namespace, pod.name);
                match super::apiserver::kube_client(cfg) {
                    Ok(client) => {
                        status::publish_logged(&client, pod, all);
                        events::added_interfaces(&client, pod, made);
                    }
                    Err(e) => log::warn!("pod {}/{}: network-status not written: {e}", pod.namespace, pod.name),
                }
            }
        }
    }

    fn fallback<T>(&self, why: &Fallback) -> Option<T> {
        log::info!("fast path: pod {}/{}: reading the apiserver in-process: {why}", self.pod.namespace, self.pod.name);
        None
    }
}
