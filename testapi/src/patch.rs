//! Patch bodies: JSON merge patch (RFC 7386), strategic merge patch, and JSON patch (RFC 6902).
//!
//! Strategic merge patch differs from merge patch for lists with merge keys and `$patch`
//! directives. Modelled: `conditions` lists merge by `type` (pod and other status
//! conditions: kubelet's stay when kactus patches its own), the rest as a merge patch; other
//! merge-keyed lists (containers, ports...) are not patched by the project's clients.

use serde_json::Value;

use super::status::ApiError;

/// A parsed PATCH body, by its Content-Type.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    Merge(Value),
    Strategic(Value),
    Json(Vec<Value>),
}

impl Patch {
    pub fn parse(content_type: &str, body: &[u8]) -> Result<Patch, ApiError> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        match media {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                if !value.is_object() {
                    return Err(ApiError::bad_request("patch body must be a JSON object"));
                }
                match media {
                    "application/merge-patch+json" => Ok(Patch::Merge(value)),
                    _ => Ok(Patch::Strategic(value)),
                }
            }
            "application/json-patch+json" => match value {
                Value::Array(ops) => Ok(Patch::Json(ops)),
                _ => Err(ApiError::bad_request("json patch body must be a JSON array")),
            },
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }

    /// The patched copy of `target`.
    pub fn apply_to(&self, target: &Value) -> Result<Value, ApiError> {
        let mut out = target.clone();
        match self {
            Patch::Merge(patch) => merge_patch(&mut out, patch),
            Patch::Strategic(patch) => strategic_merge(&mut out, patch),
            Patch::Json(ops) => {
                for op in ops {
                    json_patch_op(&mut out, op)?;
                }
            }
        }
        Ok(out)
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(target_map) = target {
        for (key, value) in patch_map {
            if value.is_null() {
                target_map.remove(key);
            } else {
                merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Lists that a strategic merge patch merges item by item, and the key that matches items.
const MERGE_KEYS: &[(&str, &str)] = &[("conditions", "type")];

/// A strategic merge patch: a merge patch, except that the lists of [`MERGE_KEYS`] merge their
/// items by key (an item of the patch replaces the fields it names of the item with the same
/// key, or is appended) instead of being replaced whole.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(target_map) = target else { return };
    for (key, value) in patch_map {
        let merge_key = MERGE_KEYS.iter().find(|(list, _)| list == key).map(|(_, k)| *k);
        match (value, merge_key) {
            (Value::Null, _) => {
                target_map.remove(key);
            }
            (Value::Array(items), Some(merge_key)) => {
                let slot = target_map.entry(key.clone()).or_insert_with(|| Value::Array(Vec::new()));
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                let Value::Array(existing) = slot else { continue };
                for item in items {
                    match existing
                        .iter_mut()
                        .find(|e| e.get(merge_key).is_some() && e.get(merge_key) == item.get(merge_key))
                    {
                        Some(found) => strategic_merge(found, item),
                        None => existing.push(item.clone()),
                    }
                }
            }
            (value, _) => strategic_merge(target_map.entry(key.clone()).or_insert(Value::Null), value),
        }
    }
}

fn json_patch_op(doc: &mut Value, op: &Value) -> Result<(), ApiError> {
    let bad = |m: &str| ApiError::bad_request(format!("invalid json patch operation {op}: {m}"));
    let path = op["path"].as_str().ok_or_else(|| bad("missing path"))?;
    match op["op"].as_str().unwrap_or("") {
        "add" => insert(doc, path, op.get("value").cloned().ok_or_else(|| bad("missing value"))?),
        "replace" => {
            let value = op.get("value").cloned().ok_or_else(|| bad("missing value"))?;
            remove(doc, path)?;
            insert(doc, path, value)
        }
        "remove" => remove(doc, path).map(drop),
        "test" => {
            let expected = op.get("value").ok_or_else(|| bad("missing value"))?;
            match doc.pointer(path) {
                Some(actual) if actual == expected => Ok(()),
                _ => Err(ApiError::invalid_patch(format!("testing value {path} failed"))),
            }
        }
        "move" | "copy" => {
            let from = op["from"].as_str().ok_or_else(|| bad("missing from"))?;
            let value = doc.pointer(from).cloned().ok_or_else(|| missing(from))?;
            if op["op"] == "move" {
                remove(doc, from)?;
            }
            insert(doc, path, value)
        }
        _ => Err(bad("unknown op")),
    }
}

fn missing(path: &str) -> ApiError {
    ApiError::invalid_patch(format!("doc is missing path: {path:?}"))
}

/// Splits a JSON pointer into its parent pointer and unescaped last token.
fn split_pointer(path: &str) -> Result<(&str, String), ApiError> {
    let idx = path.rfind('/').ok_or_else(|| missing(path))?;
    let token = path[idx + 1..].replace("~1", "/").replace("~0", "~");
    Ok((&path[..idx], token))
}

fn insert(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, token) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(token, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            let index = if token == "-" { items.len() } else { token.parse::<usize>().map_err(|_| missing(path))? };
            if index > items.len() {
                return Err(missing(path));
            }
            items.insert(index, value);
            Ok(())
        }
        _ => Err(missing(path)),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, token) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&token).ok_or_else(|| missing(path)),
        Some(Value::Array(items)) => match token.parse::<usize>() {
            Ok(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(missing(path)),
        },
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn strategic_merge_patch_merges_conditions_by_type() {
        let doc = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True"}, {"type": "kactus.io/attachments", "status": "True", "message": "[1]"}]}});
        let body = json!({"metadata": {"annotations": {"a": "b"}}, "status": {"conditions": [
            {"type": "kactus.io/attachments", "message": "[2]"}, {"type": "Other", "status": "False"}]}});
        let patch = Patch::parse("application/strategic-merge-patch+json", body.to_string().as_bytes()).unwrap();
        let out = patch.apply_to(&doc).unwrap();
        assert_eq!(
            out["status"]["conditions"],
            json!([
            {"type": "Ready", "status": "True"},
            {"type": "kactus.io/attachments", "status": "True", "message": "[2]"},
            {"type": "Other", "status": "False"}])
        );
        assert_eq!(
            (out["status"]["phase"].as_str(), out["metadata"]["annotations"]["a"].as_str()),
            (Some("Running"), Some("b"))
        );
    }

    #[test]
    fn json_patch_add_replace_remove() {
        let doc = json!({"metadata": {"annotations": {"x": "1"}}, "list": [1, 2]});
        let ops = json!([
            {"op": "add", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1network-status", "value": "[]"},
            {"op": "replace", "path": "/metadata/annotations/x", "value": "2"},
            {"op": "remove", "path": "/list/0"},
            {"op": "add", "path": "/list/-", "value": 3}
        ]);
        let patch = Patch::parse("application/json-patch+json", ops.to_string().as_bytes()).unwrap();
        let out = patch.apply_to(&doc).unwrap();
        assert_eq!(out["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"], "[]");
        assert_eq!(out["metadata"]["annotations"]["x"], "2");
        assert_eq!(out["list"], json!([2, 3]));
    }
}
