//! Warning Events on a Service, so `kubectl describe service` tells the operator what to fix.

use super::clock;
use crate::kube::{Client, KubeError, Service};
use serde_json::json;

pub const COMPONENT: &str = "kactus-endpoints";

/// Writes one core/v1 Warning Event about `service`.
pub fn warn(client: &Client, service: &Service, reason: &str, message: &str) -> Result<(), KubeError> {
    let meta = &service.metadata;
    let timestamp = clock::now();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": { "name": format!("{}.{:x}", meta.name, clock::nanos()), "namespace": meta.namespace },
        "involvedObject": {
            "apiVersion": "v1", "kind": "Service", "namespace": meta.namespace, "name": meta.name,
            "uid": meta.uid, "resourceVersion": meta.resource_version,
        },
        "type": "Warning", "reason": reason, "message": message,
        "source": { "component": COMPONENT },
        "reportingComponent": super::desired::MANAGED_BY,
        "firstTimestamp": timestamp, "lastTimestamp": timestamp, "count": 1,
    });
    client.create::<serde_json::Value>(&format!("/api/v1/namespaces/{}/events", meta.namespace), &event).map(|_| ())
}
