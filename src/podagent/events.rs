//! Failures as Kubernetes Events on the pod, so `kubectl describe pod` shows why a network
//! did not appear. Best effort: an Event that cannot be written is logged, never retried.

use crate::kube::{Client, Pod};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

pub const REASON_ATTACH_FAILED: &str = "NetworkAttachFailed";

pub fn warn(client: &Client, node: &str, pod: &Pod, reason: &str, message: &str) {
    let meta = &pod.metadata;
    let now = rfc3339_now();
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", meta.name), "namespace": meta.namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": meta.namespace,
                           "name": meta.name, "uid": meta.uid, "resourceVersion": meta.resource_version},
        "type": "Warning", "reason": reason, "message": message,
        "source": {"component": "podagent", "host": node},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    });
    let path = format!("/api/v1/namespaces/{}/events", meta.namespace);
    if let Err(e) = client.create::<Value>(&path, &event) {
        log::warn!("pod {}/{}: event {reason} not recorded: {e}", meta.namespace, meta.name);
    }
}

/// UTC now as `2024-01-01T00:00:00Z` (H. Hinnant's civil-from-days).
fn rfc3339_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_look_like_the_apiservers() {
        let now = super::rfc3339_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }
}
