//! Warning Events on a Service, so `kubectl describe service` tells the operator what to fix.

use crate::kube::event::{record, EventType, Involved, Reporter};
use crate::kube::{Client, KubeError, Service};

pub const COMPONENT: &str = "kactus-endpoints";

/// Writes one core/v1 Warning Event about `service`.
pub fn warn(client: &Client, service: &Service, reason: &str, message: &str) -> Result<(), KubeError> {
    let meta = &service.metadata;
    let about = Involved {
        kind: "Service",
        namespace: &meta.namespace,
        name: &meta.name,
        uid: Some(&meta.uid),
        resource_version: Some(&meta.resource_version),
    };
    record(client, &about, Reporter { component: COMPONENT, host: None }, EventType::Warning, reason, message)
}
