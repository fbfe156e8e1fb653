//! Kubernetes Events on the pod, as `kubectl describe pod` shows them: `AddedInterface` per
//! attachment after ADD, a warning when a network is not found or an attachment fails.
//! Best effort: an event that cannot be written is logged, never a failed CNI call.

use super::cache::{CacheEntry, Role};
use crate::cni::{code, CniError, CniResult, PodRef};
use crate::kube;
use serde_json::{json, Value};

pub const ADDED_INTERFACE: &str = "AddedInterface";
pub const NETWORK_NOT_FOUND: &str = "NetworkNotFound";
pub const ATTACH_FAILED: &str = "AttachFailed";

/// `Add net9f27410725ab [192.168.42.10/24] from default/green`, one per device made.
pub fn added_interfaces(client: &kube::Client, pod: &PodRef, made: &[CacheEntry]) {
    for entry in made {
        let network = match entry.kactus.role {
            Role::Attachment => entry.kactus.network.as_str(),
            Role::Master if !entry.kactus.network.is_empty() => entry.kactus.network.as_str(),
            _ => entry.network_name.as_str(),
        };
        let ips: Vec<String> = CniResult::parse(&entry.result)
            .map(|r| r.ips.iter().map(|ip| ip.address.clone()).collect())
            .unwrap_or_default();
        let msg = format!("Add {} [{}] from {network}", entry.if_name, ips.join(","));
        record(client, pod, "Normal", ADDED_INTERFACE, &msg);
    }
}

/// The warning for a failed ADD: `NetworkNotFound` for a missing network, `AttachFailed`
/// otherwise. Apiserver trouble gets none: the apiserver is what failed.
pub fn add_failed(client: &kube::Client, pod: &PodRef, err: &CniError) {
    let reason = match err.code {
        code::NETWORK_NOT_FOUND => NETWORK_NOT_FOUND,
        code::TRY_AGAIN_LATER | code::APISERVER => return,
        _ => ATTACH_FAILED,
    };
    record(client, pod, "Warning", reason, &err.msg);
}

fn record(client: &kube::Client, pod: &PodRef, kind: &str, reason: &str, message: &str) {
    let path = format!("/api/v1/namespaces/{}/events", pod.namespace);
    let event = event_body(pod, kind, reason, message);
    if let Err(e) = client.create::<Value>(&path, &event) {
        log::warn!("pod {}/{}: event {reason} not recorded: {e}", pod.namespace, pod.name);
    }
}

fn event_body(pod: &PodRef, kind: &str, reason: &str, message: &str) -> Value {
    let mut involved = json!({"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace, "name": pod.name});
    if let Some(uid) = &pod.uid {
        involved["uid"] = uid.clone().into();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{}.", pod.name), "namespace": pod.namespace},
        "involvedObject": involved,
        "type": kind,
        "reason": reason,
        // Event messages are bounded (1 KiB in the apiserver's validation).
        "message": message.chars().take(1000).collect::<String>(),
        "source": {"component": "kactus"},
        "reportingComponent": "kactus",
        "count": 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_names_the_pod_and_is_bounded() {
        let pod =
            PodRef { namespace: "ns1".into(), name: "app1".into(), uid: Some("u1".into()), infra_container_id: None };
        let e = event_body(&pod, "Warning", ATTACH_FAILED, &"x".repeat(5000));
        assert_eq!(
            e["involvedObject"],
            json!({"apiVersion": "v1", "kind": "Pod", "namespace": "ns1", "name": "app1", "uid": "u1"})
        );
        assert_eq!(e["metadata"]["generateName"], "app1.");
        assert_eq!(e["message"].as_str().unwrap().len(), 1000);
    }
}
