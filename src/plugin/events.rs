//! Kubernetes Events on the pod, as `kubectl describe pod` shows them: `AddedInterface` per
//! attachment after ADD, a warning when a network is not found or an attachment fails, and
//! when a DEL could not release a lease.
//! Best effort: an event that cannot be written is logged, never a failed CNI call.

use super::cache::CacheEntry;
use crate::cni::{code, CniError, CniResult, PodRef};
use crate::kube;
use crate::kube::event::{self, EventType, Involved, Reporter};

pub const ADDED_INTERFACE: &str = "AddedInterface";
pub const NETWORK_NOT_FOUND: &str = "NetworkNotFound";
pub const ATTACH_FAILED: &str = "AttachFailed";
pub const LEASE_NOT_RELEASED: &str = "LeaseNotReleased";

/// `Add net9f27410725ab [192.168.42.10/24] from default/green`, one per device made.
pub fn added_interface(client: &kube::Client, pod: &PodRef, entry: &CacheEntry) {
    let ips: Vec<String> = CniResult::parse(&entry.result)
        .map(|r| r.ips.iter().map(|ip| ip.address.clone()).collect())
        .unwrap_or_default();
    let msg = format!("Add {} [{}] from {}", entry.if_name, ips.join(","), entry.shown_network());
    record(client, pod, EventType::Normal, ADDED_INTERFACE, &msg);
}

/// The warning for a failed ADD: `NetworkNotFound` for a missing network, `AttachFailed`
/// otherwise. Apiserver trouble gets none: the apiserver is what failed.
pub fn add_failed(client: &kube::Client, pod: &PodRef, err: &CniError) {
    let reason = match err.code {
        code::NETWORK_NOT_FOUND => NETWORK_NOT_FOUND,
        code::TRY_AGAIN_LATER | code::APISERVER => return,
        _ => ATTACH_FAILED,
    };
    record(client, pod, EventType::Warning, reason, &err.msg);
}

/// A DEL that had to give up on releasing an attachment's lease (its cache entry unreadable
/// and its pod or network gone for good): the operator learns which lease to release by hand.
pub fn lease_not_released(client: &kube::Client, pod: &PodRef, msg: &str) {
    record(client, pod, EventType::Warning, LEASE_NOT_RELEASED, msg);
}

fn record(client: &kube::Client, pod: &PodRef, kind: EventType, reason: &str, message: &str) {
    let about = Involved {
        kind: "Pod",
        namespace: &pod.namespace,
        name: &pod.name,
        uid: pod.uid.as_deref(),
        resource_version: None,
    };
    if let Err(e) = event::record(client, &about, Reporter { component: "kactus", host: None }, kind, reason, message) {
        log::warn!("pod {}/{}: event {reason} not recorded: {e}", pod.namespace, pod.name);
    }
}
