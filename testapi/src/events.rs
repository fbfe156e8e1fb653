//! `events.k8s.io/v1` Events as a view of the core/v1 Events, as the real apiserver serves
//! them: one store, two shapes. An Event written in either shape is read in both (so a test
//! that lists core Events sees what kube-rs's Recorder wrote), with the fields renamed as
//! Kubernetes' conversion does.

use serde_json::{Map, Value};

use super::resources::ResourceKind;

/// (events.k8s.io/v1 field, core/v1 field) pairs that differ in name.
const RENAMED: [(&str, &str); 6] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];
/// And the one that is named differently the other way round.
const REPORTING: (&str, &str) = ("reportingController", "reportingComponent");

/// Whether requests for `kind` are served from the core Events in this shape.
pub fn is_events_v1(kind: &ResourceKind) -> bool {
    kind.group == "events.k8s.io" && kind.resource == "events"
}

/// An events.k8s.io/v1 Event (or merge patch of one) in the core/v1 shape.
pub fn to_core(v1: &Value) -> Value {
    let mut core =
        rename(v1, |field| RENAMED.iter().chain([&REPORTING]).find(|(v1, _)| *v1 == field).map(|(_, core)| *core));
    set_type(&mut core, "v1");
    core
}

/// A core/v1 Event in the events.k8s.io/v1 shape.
pub fn from_core(core: &Value) -> Value {
    let mut v1 = rename(core, |field| RENAMED.iter().chain([&REPORTING]).find(|(_, c)| *c == field).map(|(v1, _)| *v1));
    set_type(&mut v1, "events.k8s.io/v1");
    v1
}

/// A JSON patch path (`/note`, `/series/count`) in the core/v1 shape.
pub fn path_to_core(path: &str) -> String {
    let rest = path.trim_start_matches('/');
    let (first, tail) = rest.split_once('/').map_or((rest, None), |(f, t)| (f, Some(t)));
    let first = RENAMED.iter().chain([&REPORTING]).find(|(v1, _)| *v1 == first).map_or(first, |(_, core)| core);
    match tail {
        Some(tail) => format!("/{first}/{tail}"),
        None => format!("/{first}"),
    }
}

fn rename(object: &Value, to: impl Fn(&str) -> Option<&'static str>) -> Value {
    let Some(fields) = object.as_object() else { return object.clone() };
    let renamed: Map<String, Value> =
        fields.iter().map(|(k, v)| (to(k).map_or_else(|| k.clone(), str::to_string), v.clone())).collect();
    Value::Object(renamed)
}

/// Objects carry their shape's apiVersion; patches (no apiVersion) are left without one.
fn set_type(object: &mut Value, api_version: &str) {
    if let Some(fields) = object.as_object_mut() {
        if fields.contains_key("apiVersion") {
            fields.insert("apiVersion".into(), api_version.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_recorder_event_reads_as_a_core_event_and_back() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "app1.1", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "app1"}, "note": "nope missing",
            "reason": "NetworkAttachFailed", "type": "Warning", "action": "HotPlug",
            "reportingController": "podagent", "reportingInstance": "node1",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:00.000000Z"}});
        let core = to_core(&v1);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "app1");
        assert_eq!(core["message"], "nope missing");
        assert_eq!(core["reportingComponent"], "podagent");
        assert_eq!(core["series"]["count"], 2);
        assert_eq!(from_core(&core), v1);
        assert_eq!(path_to_core("/note"), "/message");
        assert_eq!(path_to_core("/series/count"), "/series/count");
    }
}
