//! Kubernetes Events on the pod, as `kubectl describe pod` shows them: one `AddedInterface`
//! naming every device an ADD made, a warning when a network is not found or an attachment fails, and
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

/// One `AddedInterface` Event for all the devices a call made, each with its own text:
/// `Add eth0 [10.244.0.5/24] from cluster; Add net9f27410725ab [192.168.42.10/24] from
/// default/green`. (One Event per device, as multus posts them, made the apiserver's writes
/// per pod start grow with its attachments.) A list longer than an Event holds ends with how
/// many devices it leaves out; network-status has them all.
pub fn added_interfaces(client: &kube::Client, pod: &PodRef, made: &[CacheEntry]) {
    if let Some(message) = added_message(made) {
        record(client, pod, EventType::Normal, ADDED_INTERFACE, &message);
    }
}

/// The `AddedInterface` Event's message for the devices `made` (none for none).
pub fn added_message(made: &[CacheEntry]) -> Option<String> {
    if made.is_empty() {
        return None;
    }
    let texts: Vec<String> = made.iter().map(added_text).collect();
    Some(bounded_list(&texts, event::MAX_MESSAGE))
}

fn added_text(entry: &CacheEntry) -> String {
    let ips: Vec<String> = CniResult::parse(&entry.result)
        .map(|r| r.ips.iter().map(|ip| ip.address.clone()).collect())
        .unwrap_or_default();
    format!("Add {} [{}] from {}", entry.if_name, ips.join(","), entry.shown_network())
}

/// `texts` joined by `; `, as many whole ones as fit in `max` characters with the count of
/// the others (`; and 3 more`) at the end.
fn bounded_list(texts: &[String], max: usize) -> String {
    let mut out = String::new();
    for (i, text) in texts.iter().enumerate() {
        let left = texts.len() - i - 1;
        let tail = if left == 0 { String::new() } else { format!("; and {left} more") };
        let sep = if out.is_empty() { "" } else { "; " };
        if out.chars().count() + sep.len() + text.chars().count() + tail.len() > max {
            let more = format!("{sep}and {} more", texts.len() - i);
            out.push_str(&more);
            return out;
        }
        out.push_str(sep);
        out.push_str(text);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_listed_whole_and_a_list_too_long_says_how_many_it_leaves_out() {
        let texts: Vec<String> = (0..5).map(|i| format!("Add net{i} [10.0.0.{i}/24] from default/n{i}")).collect();
        assert_eq!(bounded_list(&texts[..2], 1000), format!("{}; {}", texts[0], texts[1]));
        let short = bounded_list(&texts, 80);
        assert_eq!(short, format!("{}; and 4 more", texts[0]));
        assert!(short.len() <= 80);
        // Not even the first fits: only the count.
        assert_eq!(bounded_list(&texts, 10), "and 5 more");
    }
}
