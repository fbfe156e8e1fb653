//! The plugin's core/v1 Events, as `kubectl describe` shows them, written with its lean
//! client. (The daemons record theirs through kube-rs's events Recorder.)

use super::{time, Client, KubeError};
use serde_json::{json, Value};

/// The object an Event is about.
#[derive(Debug, Clone)]
pub struct Involved<'a> {
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: Option<&'a str>,
    pub resource_version: Option<&'a str>,
}

/// Who reports it: `source.component` (and `source.host` for node agents).
#[derive(Debug, Clone, Copy)]
pub struct Reporter<'a> {
    pub component: &'a str,
    pub host: Option<&'a str>,
}

/// `Normal` or `Warning`, as the API spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// The apiserver refuses longer messages (1 KiB).
pub const MAX_MESSAGE: usize = 1000;

/// The Event object (`generateName`, so many events about one object never collide).
pub fn event_body(about: &Involved, by: Reporter, kind: EventType, reason: &str, message: &str) -> Value {
    let now = time::now();
    let mut involved =
        json!({"apiVersion": "v1", "kind": about.kind, "namespace": about.namespace, "name": about.name});
    if let Some(uid) = about.uid.filter(|u| !u.is_empty()) {
        involved["uid"] = uid.into();
    }
    if let Some(rv) = about.resource_version.filter(|r| !r.is_empty()) {
        involved["resourceVersion"] = rv.into();
    }
    let mut source = json!({"component": by.component});
    if let Some(host) = by.host {
        source["host"] = host.into();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{}.", about.name), "namespace": about.namespace},
        "involvedObject": involved,
        "type": match kind { EventType::Normal => "Normal", EventType::Warning => "Warning" },
        "reason": reason,
        "message": message.chars().take(MAX_MESSAGE).collect::<String>(),
        "source": source,
        "reportingComponent": by.component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

/// Writes one Event about `about`.
pub fn record(
    client: &Client,
    about: &Involved,
    by: Reporter,
    kind: EventType,
    reason: &str,
    message: &str,
) -> Result<(), KubeError> {
    let path = format!("/api/v1/namespaces/{}/events", about.namespace);
    client.create::<Value>(&path, &event_body(about, by, kind, reason, message)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_object_and_is_bounded_and_stamped() {
        let about = Involved { kind: "Pod", namespace: "ns1", name: "app1", uid: Some("u1"), resource_version: None };
        let e = event_body(
            &about,
            Reporter { component: "kactus", host: None },
            EventType::Warning,
            "AttachFailed",
            &"x".repeat(5000),
        );
        assert_eq!(
            e["involvedObject"],
            json!({"apiVersion": "v1", "kind": "Pod", "namespace": "ns1", "name": "app1", "uid": "u1"})
        );
        assert_eq!(e["message"].as_str().map(str::len), Some(MAX_MESSAGE));
        assert_eq!((e["type"].as_str(), e["metadata"]["generateName"].as_str()), (Some("Warning"), Some("app1.")));
        assert_eq!(e["firstTimestamp"].as_str().map(str::len), Some(20));
    }
}
