//! DEL's answer to a damaged or lost cache: DEL never claims success for a call it could not
//! tear down.
//!
//! An unreadable entry whose intent record is readable was made up for when the cache was
//! read ([`super::cache::Record`]). What is left (or a whole directory gone, see `del.rs`) is
//! rebuilt here from what else knows it: the kactus config on stdin (the master and the
//! config delegates), the network a dynamic call names, and the pod's annotation and
//! networks when the apiserver answers, under the checks an ADD makes. When the apiserver
//! says the pod is gone for good (404, or another pod by that name) or the call's network is,
//! nothing will ever rebuild it: its device is removed from the pod over netlink and the lease
//! its IPAM may still hold is reported (log and a Warning Event), and DEL goes on to succeed
//! rather than be retried forever. While the apiserver cannot answer, DEL answers code 11
//! naming what it could not rebuild and keeps the files, so the runtime retries.

use super::abandon::{self, Abandoned};
use super::apiserver;
use super::cache::{CacheEntry, Damaged, Record};
use super::config::KactusConfig;
use super::plan::{self, PlannedCall};
use crate::attachment::{self, Attachment, DynamicTarget};
use crate::cni::{code, CniEnv, CniError, PodRef};
use crate::kube::{self, KubeError};
use std::collections::BTreeSet;

/// What the damaged part of a cache comes to.
#[derive(Default)]
pub struct Repair {
    /// Calls rebuilt for what the cache lost, to be deleted with the others.
    pub rebuilt: Vec<CacheEntry>,
    /// What nothing can rebuild because its pod or network is gone for good: its device (when
    /// the file name tells it), the damaged file and why.
    pub gone: Vec<Abandoned>,
    /// What cannot be rebuilt until the apiserver answers (code 11).
    pub waiting: Vec<CniError>,
    /// The client that read the pod, for the warning about what is gone.
    client: Option<kube::Client>,
}

/// Rebuilds what `record` lost (nothing to do, and no apiserver call, when nothing is
/// damaged). `dynamic` is the network a dynamic DEL names.
pub fn rebuild(cfg: &KactusConfig, env: &CniEnv, record: &Record, dynamic: Option<&DynamicTarget>) -> Repair {
    let mut repair = Repair::default();
    if record.damaged.is_empty() {
        return repair;
    }
    let mut sources = Sources::new(cfg, env, dynamic);
    let mut known: BTreeSet<String> = record.calls.iter().map(|c| c.if_name.clone()).collect();
    let mut seq = record.next_seq();
    let mut add = |repair: &mut Repair, call: PlannedCall| {
        if known.insert(call.ifname.clone()) {
            repair.rebuilt.push(call.intent(env, seq));
            seq += 1;
        }
    };
    for damaged in &record.damaged {
        match damaged {
            Damaged::Entry { ifname, .. } => match sources.call_for(ifname) {
                Fate::Rebuilt(call) => {
                    log::warn!("{}: rebuilt {ifname} from {}", damaged.describe(), call.source);
                    add(&mut repair, call.call);
                }
                Fate::Gone(why) => repair
                    .gone
                    .push(Abandoned { ifname: Some(ifname.clone()), what: format!("{}: {why}", damaged.describe()) }),
                Fate::Waiting(e) => repair.waiting.push(waiting(damaged, Some(ifname), e)),
            },
            Damaged::Intent { .. } | Damaged::Directory { .. } => match sources.all_calls() {
                Ok((calls, gone)) => {
                    log::warn!("{}: deleting every call the config and the pod's annotation name", damaged.describe());
                    calls.into_iter().for_each(|c| add(&mut repair, c));
                    if let Some(why) = gone {
                        repair.gone.push(Abandoned { ifname: None, what: format!("{}: {why}", damaged.describe()) });
                    }
                }
                Err(e) => repair.waiting.push(waiting(damaged, None, e)),
            },
        }
    }
    repair.client = sources.client.take();
    repair
}

fn waiting(damaged: &Damaged, ifname: Option<&String>, e: CniError) -> CniError {
    let call = ifname.map(|i| format!("cannot delete {i}: ")).unwrap_or_default();
    CniError::new(
        code::TRY_AGAIN_LATER,
        format!("{call}{} and it cannot be rebuilt until the apiserver answers: {}", damaged.describe(), e.msg),
    )
}

impl Repair {
    /// Removes the devices of what is gone for good and reports the leases they may hold
    /// (see [`abandon`]).
    pub fn release_gone(&self, cfg: &KactusConfig, env: &CniEnv) {
        abandon::release(cfg, env, self.client.as_ref(), &self.gone);
    }
}

/// What a damaged call comes to.
#[derive(Clone)]
enum Fate {
    Rebuilt(Box<Rebuilt>),
    Gone(String),
    Waiting(CniError),
}

#[derive(Clone)]
struct Rebuilt {
    call: PlannedCall,
    /// Where it was rebuilt from, for the log.
    source: &'static str,
}

/// The pod as the apiserver answered, read once and only when needed.
#[derive(Clone)]
enum PodState {
    /// No `K8S_POD_*` in `CNI_ARGS`: ADD ran the config's delegates only.
    NoIdentity,
    Here(Vec<Attachment>),
    /// Deleted, or another pod now has its name.
    Gone(String),
    Unreachable(CniError),
}

/// What can rebuild a call.
struct Sources<'a> {
    cfg: &'a KactusConfig,
    env: &'a CniEnv,
    dynamic: Option<&'a DynamicTarget>,
    client: Option<kube::Client>,
    pod: Option<PodState>,
    /// The calls of the pod's attachments (`PodState::Here`), in their order: rebuilt
    /// together the first time one is needed, their networks read as an ADD reads them.
    pod_calls: Option<Vec<Fate>>,
}

impl<'a> Sources<'a> {
    fn new(cfg: &'a KactusConfig, env: &'a CniEnv, dynamic: Option<&'a DynamicTarget>) -> Sources<'a> {
        Sources { cfg, env, dynamic, client: None, pod: None, pod_calls: None }
    }

    /// The call that made `ifname`.
    fn call_for(&mut self, ifname: &str) -> Fate {
        let stdin = |call: PlannedCall| Fate::Rebuilt(Box::new(Rebuilt { call, source: "the kactus config" }));
        if let Some(call) = plan::config_delegate_calls(self.cfg, self.env).into_iter().find(|c| c.ifname == ifname) {
            return stdin(call);
        }
        if let Some(att) = self.dynamic_attachment().filter(|a| a.ifname == ifname) {
            return self.dynamic_call(&att);
        }
        let is_eth0 = ifname == self.env.ifname;
        match self.pod() {
            PodState::NoIdentity if is_eth0 => stdin(plan::master_call(self.cfg, self.env)),
            PodState::NoIdentity => {
                Fate::Gone("no pod identity in CNI_ARGS and no delegate of the config makes it".into())
            }
            PodState::Here(atts) => match atts.iter().position(|a| a.ifname == ifname) {
                Some(i) => self
                    .pod_calls(&atts)
                    .into_iter()
                    .nth(i)
                    .unwrap_or_else(|| Fate::Gone("the pod's annotation no longer names a network on it".into())),
                // eth0 without an `isPrimary` network is the master's.
                None if is_eth0 => stdin(plan::master_call(self.cfg, self.env)),
                None => Fate::Gone("the pod's annotation no longer names a network on it".into()),
            },
            // The cluster network's DEL is the best guess (it is eth0's unless the pod had an
            // `isPrimary` network, which nothing can tell any more).
            PodState::Gone(_) if is_eth0 => stdin(plan::master_call(self.cfg, self.env)),
            PodState::Gone(why) => Fate::Gone(why),
            PodState::Unreachable(e) => Fate::Waiting(e),
        }
    }

    /// Every call an ADD for this pod makes, for an intent record nothing can be read from;
    /// with the reason, when some of them are unknown because the pod is gone.
    fn all_calls(&mut self) -> Result<(Vec<PlannedCall>, Option<String>), CniError> {
        let mut calls = plan::config_delegate_calls(self.cfg, self.env);
        let mut atts: Vec<Attachment> = self.dynamic_attachment().into_iter().collect();
        let mut fates: Vec<Fate> = atts.iter().map(|att| self.dynamic_call(att)).collect();
        let mut gone = None;
        match self.pod() {
            PodState::NoIdentity => {}
            PodState::Here(listed) => {
                fates.extend(self.pod_calls(&listed));
                atts.extend(listed);
            }
            PodState::Gone(why) => gone = Some(format!("the attachments it held are unknown: {why}")),
            PodState::Unreachable(e) => return Err(e),
        }
        if !atts.iter().any(|a| a.ifname == self.env.ifname) {
            calls.push(plan::master_call(self.cfg, self.env));
        }
        for (att, fate) in atts.iter().zip(fates) {
            match fate {
                Fate::Rebuilt(r) => calls.push(r.call),
                Fate::Gone(why) => log::warn!("{}: not rebuilt: {why}", att.ifname),
                Fate::Waiting(e) => return Err(e),
            }
        }
        Ok((calls, gone))
    }

    /// The attachment a dynamic DEL names, as its ADD made it when the pod's annotation
    /// did not list it (the annotation no longer lists it when podagent deletes it).
    fn dynamic_attachment(&self) -> Option<Attachment> {
        let sel = self.dynamic?.selection()?.clone();
        let pod = self.env.args.pod()?;
        let mut att = attachment::resolve(&pod.namespace, vec![sel], "").ok()?.into_iter().next()?;
        if att.ifname.is_empty() {
            att.ifname = attachment::device_name_for(&att.key);
        }
        Some(att)
    }

    /// The call of the attachment a dynamic DEL names.
    fn dynamic_call(&mut self, att: &Attachment) -> Fate {
        let mut fates = self.network_calls(std::slice::from_ref(att), "the network K8S_POD_NETWORK names");
        fates.pop().unwrap_or_else(|| Fate::Gone(format!("network {} has no config", att.network_ref())))
    }

    /// The calls of the pod's attachments `atts` (read once, see [`Sources::pod_calls`]).
    fn pod_calls(&mut self, atts: &[Attachment]) -> Vec<Fate> {
        if self.pod_calls.is_none() {
            self.pod_calls = Some(self.network_calls(atts, "the pod's annotation"));
        }
        self.pod_calls.clone().unwrap_or_default()
    }

    /// The attachments' calls from their networks as the apiserver has them now (read
    /// together, in one request per namespace and source, as an ADD reads them), for those an
    /// ADD could have made: the pod's annotation is the tenant's to rewrite after the ADD, so
    /// each passes the checks an ADD makes (namespace isolation) before its network's
    /// delegate runs as root; one that fails them could not have been made, and nothing
    /// rebuilds it. The devices their ADD chose are not known: their DELs go without them.
    fn network_calls(&mut self, atts: &[Attachment], source: &'static str) -> Vec<Fate> {
        let Some(pod) = self.env.args.pod() else {
            return atts
                .iter()
                .map(|_| Fate::Gone("no pod identity in CNI_ARGS: no attachment was made".into()))
                .collect();
        };
        let checked: Vec<Result<(), CniError>> =
            atts.iter().map(|att| plan::check_namespace_allowed(self.cfg, &pod, att)).collect();
        let allowed: Vec<Attachment> =
            atts.iter().zip(&checked).filter(|(_, ok)| ok.is_ok()).map(|(att, _)| att.clone()).collect();
        let mut calls = match allowed.is_empty() {
            true => Vec::new(),
            false => match self.client() {
                Ok(client) => {
                    let args = self.env.args.for_delegate();
                    plan::attachment_calls_each(self.cfg, &client, &args, &allowed, &self.env.ifname)
                }
                Err(e) => allowed.iter().map(|_| Err(e.clone())).collect(),
            },
        }
        .into_iter();
        let fate = |att: &Attachment, call: Option<Result<PlannedCall, CniError>>| match call {
            Some(Ok(call)) => Fate::Rebuilt(Box::new(Rebuilt { call, source })),
            Some(Err(e)) if e.code == code::NETWORK_NOT_FOUND => Fate::Gone(e.msg),
            Some(Err(e)) => Fate::Waiting(e),
            None => Fate::Gone(format!("network {} has no config", att.network_ref())),
        };
        atts.iter()
            .zip(checked)
            .map(|(att, ok)| match ok {
                Err(e) => Fate::Gone(e.msg),
                Ok(()) => fate(att, calls.next()),
            })
            .collect()
    }

    fn client(&mut self) -> Result<kube::Client, CniError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = apiserver::kube_client(self.cfg)?;
        self.client = Some(c.clone());
        Ok(c)
    }

    fn pod(&mut self) -> PodState {
        if let Some(state) = &self.pod {
            return state.clone();
        }
        let state = match self.env.args.pod() {
            None => PodState::NoIdentity,
            Some(pod) => self.read_pod(&pod),
        };
        self.pod = Some(state.clone());
        state
    }

    fn read_pod(&mut self, pod: &PodRef) -> PodState {
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return PodState::Unreachable(e),
        };
        let name = format!("{}/{}", pod.namespace, pod.name);
        match client.get_pod(&pod.namespace, &pod.name) {
            Err(KubeError::NotFound { .. }) => PodState::Gone(format!("pod {name} is deleted")),
            Err(e) => PodState::Unreachable(apiserver::kube_error(e, &format!("get pod {name}"))),
            Ok(found) if pod.uid.as_ref().is_some_and(|uid| *uid != found.metadata.uid) => {
                PodState::Gone(format!("pod {name} is another pod now (uid {})", found.metadata.uid))
            }
            Ok(found) => match plan::pod_attachments(pod, &found.metadata.annotations, &self.env.ifname) {
                Ok(atts) => PodState::Here(atts),
                Err(e) => PodState::Unreachable(e),
            },
        }
    }
}
