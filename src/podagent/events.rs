//! Failures as Kubernetes Events on the pod, so `kubectl describe pod` shows why a network
//! did not appear. Best effort: an Event that cannot be written is logged, never retried.

use crate::kube::event::{record, EventType, Involved, Reporter};
use crate::kube::{Client, Pod};

pub const REASON_ATTACH_FAILED: &str = "NetworkAttachFailed";

pub fn warn(client: &Client, node: &str, pod: &Pod, reason: &str, message: &str) {
    let meta = &pod.metadata;
    let about = Involved {
        kind: "Pod",
        namespace: &meta.namespace,
        name: &meta.name,
        uid: Some(&meta.uid),
        resource_version: Some(&meta.resource_version),
    };
    let by = Reporter { component: "podagent", host: Some(node) };
    if let Err(e) = record(client, &about, by, EventType::Warning, reason, message) {
        log::warn!("pod {}/{}: event {reason} not recorded: {e}", meta.namespace, meta.name);
    }
}
