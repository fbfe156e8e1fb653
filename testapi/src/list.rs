//! LIST as kube-rs's watcher and client-go's reflector drive it: `resourceVersion` with
//! `resourceVersionMatch` (`NotOlderThan`, `Exact`), and pages of `limit` items chained by
//! `continue` tokens, with `remainingItemCount`.
//!
//! Simplification a client can notice: the store keeps no old versions, so later pages show
//! objects as they are now (not as of the first page's resourceVersion, which every page
//! still reports); a watch from that resourceVersion then replays the changes in between,
//! which a reflector applies harmlessly. A token older than the watch history expires (410),
//! as one older than etcd's compaction does. `resourceVersion=0` without a match ignores
//! `limit`, as the real watch cache does.

use base64::Engine;
use serde_json::{json, Value};

use super::http::Request;
use super::resources::ResourceKind;
use super::selector::Selector;
use super::status::ApiError;
use super::store::Store;

/// Where a `continue` token resumes: after object `after` (namespace, name), in a list taken
/// at `rv`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: u64,
    after: (String, String),
}

/// The list body for a LIST request.
pub fn list(
    store: &Store,
    kind: &ResourceKind,
    namespace: Option<&str>,
    selector: &Selector,
    req: &Request,
) -> Result<Value, ApiError> {
    let limit = match req.query("limit").filter(|l| !l.is_empty()) {
        Some(l) => Some(l.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?),
        None => None,
    };
    let requested_rv = match req.query("resourceVersion").filter(|rv| !rv.is_empty()) {
        Some(rv) => {
            Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?)
        }
        None => None,
    };
    let rv_match = req.query("resourceVersionMatch").filter(|m| !m.is_empty());
    let resume = req.query("continue").filter(|c| !c.is_empty());
    if rv_match.is_some() && requested_rv.is_none() {
        return Err(ApiError::bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided"));
    }
    if resume.is_some() && (requested_rv.is_some_and(|rv| rv != 0) || rv_match.is_some()) {
        return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
    }
    let (items, current) = store.list_kind(kind, namespace, selector);
    if let Some(rv) = requested_rv.filter(|rv| *rv > current) {
        return Err(ApiError::too_large_resource_version(rv, current));
    }
    match rv_match {
        None | Some("NotOlderThan") => {}
        // The store keeps no old versions: only the current one can be served exactly.
        Some("Exact") if requested_rv == Some(current) => {}
        Some("Exact") => return Err(ApiError::expired(requested_rv.unwrap_or_default(), current)),
        Some(other) => return Err(ApiError::bad_request(format!("unknown resourceVersionMatch {other:?}"))),
    }
    // From the watch cache (resourceVersion=0, no match): the whole list, limit ignored.
    let limit = limit.filter(|l| *l > 0 && !(requested_rv == Some(0) && rv_match.is_none()));
    let (list_rv, after) = match resume {
        Some(token) => {
            let resume = decode(token)?;
            if resume.rv < store.oldest_resumable_rv() {
                return Err(ApiError::continue_expired());
            }
            (resume.rv, Some(resume.after))
        }
        None => (current, None),
    };
    let items: Vec<Value> = items.into_iter().filter(|o| after.as_ref().is_none_or(|a| key(o) > *a)).collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    let items = match limit {
        Some(limit) if items.len() > limit => {
            let remaining = items.len() - limit;
            let page: Vec<Value> = items.into_iter().take(limit).collect();
            let token = Continue { rv: list_rv, after: page.last().map(key).unwrap_or_default() };
            metadata["continue"] = json!(encode(&token));
            metadata["remainingItemCount"] = json!(remaining);
            page
        }
        _ => items,
    };
    Ok(json!({"kind": kind.list_kind(), "apiVersion": kind.api_version(), "metadata": metadata, "items": items}))
}

/// Objects are listed in (namespace, name) order, which the tokens follow.
fn key(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    let field = |f: &str| meta[f].as_str().unwrap_or_default().to_string();
    (field("namespace"), field("name"))
}

fn encode(token: &Continue) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(token).unwrap_or_default())
}

fn decode(token: &str) -> Result<Continue, ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}
