//! What the apiserver answers the plugin: a Pod (its annotations feed the selection), a
//! NetworkAttachmentDefinition (its `spec.config` feeds the network config), a `Status`
//! failure. (Watch streams are the daemons', read by kube-rs.) Input: one byte choosing the
//! HTTP status of a failed answer, then the body.

use super::checks;
use kactus::attachment;
use kactus::cni::{code, NetworkConfig};
use kactus::kube::{fuzzing, KubeError, NetworkAttachmentDefinition, Pod, Status};
use kactus::plugin::apiserver::kube_error;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

const POD_PATH: &str = "/api/v1/namespaces/default/pods/app1";
const STATUSES: [u16; 10] = [400, 401, 403, 404, 409, 410, 422, 429, 500, 503];

pub fn run(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else { return };
    // The client reads answers as (lossy) UTF-8 text.
    let text = String::from_utf8_lossy(body);

    if let Some(pod) = decoded::<Pod>(&text) {
        // ADD reads the pod's selection from it (its checks: the annotations target).
        let _ = attachment::selections_from_annotations(&pod.metadata.annotations);
    }
    if let Some(nad) = decoded::<NetworkAttachmentDefinition>(&text) {
        if !nad.spec.config.trim().is_empty() {
            if let Err(e) = NetworkConfig::from_bytes(nad.spec.config.as_bytes(), &nad.metadata.name, "1.0.0") {
                let codes = [code::INCOMPATIBLE_VERSION, code::DECODING_FAILURE, code::INVALID_NETWORK_CONFIG];
                checks::own_error(&e, &codes);
            }
        }
    }
    decoded::<Status>(&text);

    // A failed answer becomes an error for its status, and a CNI code the runtime can act on.
    let status = STATUSES[usize::from(which) % STATUSES.len()];
    let e = fuzzing::error_from_response(status, POD_PATH, "token file /t", &text);
    let expected = match status {
        401 => matches!(e, KubeError::Unauthorized { .. }),
        403 => matches!(e, KubeError::Forbidden { .. }),
        404 => e == KubeError::NotFound { what: "pods default/app1".into() },
        409 => matches!(e, KubeError::Conflict { .. }),
        s => matches!(&e, KubeError::Http { status, .. } if *status == s),
    };
    assert!(expected, "HTTP {status} became {e:?}");
    checks::own_error(&kube_error(e, "get pod default/app1"), &[code::APISERVER]);
}

/// Decodes a body as `T`; what decodes writes back to JSON that decodes the same.
fn decoded<T: DeserializeOwned + Serialize + PartialEq + Debug>(text: &str) -> Option<T> {
    let value: T = serde_json::from_str(text).ok()?;
    let written = serde_json::to_string(&value).expect("a decoded object serializes");
    let again: T = serde_json::from_str(&written).unwrap_or_else(|e| panic!("written back it does not decode: {e}"));
    assert_eq!(again, value, "written back it decodes differently: {written}");
    Some(value)
}
