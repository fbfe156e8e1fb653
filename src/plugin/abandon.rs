//! What DEL does with a call nothing can tear down: a cache entry nothing rebuilds (its pod
//! or network gone for good, see `repair.rs`), or a call whose ADD failed and whose delegate
//! fails its DEL too, for good (see `del.rs`). Its device is removed from the pod over
//! netlink and the lease its IPAM may still hold is reported, in the log and as a Warning
//! `LeaseNotReleased` Event on the pod, so the operator learns which lease to release by hand;
//! DEL then goes on rather than hold the pod's deletion forever.

use super::config::KactusConfig;
use super::events;
use crate::cni::CniEnv;
use crate::kube;

/// A call DEL gives up on.
pub struct Abandoned {
    /// Its device, when known.
    pub ifname: Option<String>,
    /// What it was and why nothing tears it down.
    pub what: String,
}

/// Removes the devices of `abandoned` from the pod and reports the leases they may hold; the
/// Event goes through `client` (the one that read the pod) or, without one, a client of its
/// own, when `CNI_ARGS` names the pod.
pub fn release(cfg: &KactusConfig, env: &CniEnv, client: Option<&kube::Client>, abandoned: &[Abandoned]) {
    if abandoned.is_empty() {
        return;
    }
    let pod = env.args.pod();
    let own;
    let client = match (client, &pod) {
        (Some(c), _) => Some(c),
        (None, Some(_)) => {
            own = super::apiserver::kube_client(cfg).ok();
            own.as_ref()
        }
        (None, None) => None,
    };
    for gone in abandoned {
        let device = match (&gone.ifname, env.netns.as_deref().filter(|p| p.exists())) {
            (Some(ifname), Some(netns)) => match crate::netlink::delete_link(netns, ifname) {
                Ok(true) => format!("device {ifname} removed from the pod"),
                Ok(false) => format!("device {ifname} was not in the pod"),
                Err(e) => format!("device {ifname} not removed: {e}"),
            },
            (Some(ifname), None) => format!("device {ifname} went with the pod's network namespace"),
            (None, _) => "its devices are unknown".to_string(),
        };
        let interface = gone.ifname.as_deref().map(|i| format!(", interface {i}")).unwrap_or_default();
        let msg = format!(
            "{}; {device}; the IPAM lease it may hold (container {}{interface}) could not be released",
            gone.what, env.container_id
        );
        log::warn!("DEL {}: {msg}", env.container_id);
        if let (Some(client), Some(pod)) = (client, &pod) {
            events::lease_not_released(client, pod, &msg);
        }
    }
}
