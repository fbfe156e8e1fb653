//! Service-account tokens: the TokenRequest API (`POST
//! /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`, `authentication.k8s.io/v1`) issues
//! them, and the server then accepts them as that service account, as the real apiserver
//! does: until they expire, or until what they are bound to goes (the service account, or
//! the pod named in `boundObjectRef`: kubelet's projected tokens are bound to their pod).
//!
//! Tokens look like the real ones (a JWT whose claims carry `exp`, `iat`, `sub` and the
//! `kubernetes.io` block), so clients that read `exp` out of a token work here unchanged; the
//! signature is random, and a token is valid only if this server issued it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};

use super::ids::random_bytes;
use super::resources;
use super::status::ApiError;
use super::store::Store;

/// The shortest lifetime a client may ask for (the real apiserver's validation).
const MIN_EXPIRATION_SECONDS: u64 = 600;
/// The lifetime of a TokenRequest that names none.
const DEFAULT_EXPIRATION_SECONDS: u64 = 3600;
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Who a token authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccountRef {
    /// `system:serviceaccount:<namespace>:<name>`, as RBAC messages name the user.
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// What a token was issued for; it is valid while all of it still holds.
#[derive(Debug, Clone)]
struct Issued {
    account: ServiceAccountRef,
    account_uid: String,
    /// (name, uid) of the pod the token is bound to, in the account's namespace.
    pod: Option<(String, String)>,
    expires: SystemTime,
}

#[derive(Default)]
struct State {
    issued: HashMap<String, Issued>,
    max_lifetime: Option<Duration>,
}

/// The tokens this server issued.
#[derive(Default)]
pub struct Tokens {
    state: Mutex<State>,
}

impl Tokens {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Caps the lifetime of tokens issued from now on, as the apiserver's
    /// `--service-account-max-token-expiration` does (and below the 10 minutes a client may
    /// ask for, so tests can watch tokens expire). `None` removes the cap.
    pub fn set_max_lifetime(&self, max: Option<Duration>) {
        self.lock().max_lifetime = max;
    }

    /// Tokens issued so far (TokenRequests answered, kubelet's included).
    pub fn issued(&self) -> usize {
        self.lock().issued.len()
    }

    /// A token for `service_account`, bound to `pod` (both in `namespace`), as kubelet
    /// requests for a pod's projected service-account volume: it dies with the pod.
    pub fn issue_for_pod(
        &self,
        store: &Store,
        namespace: &str,
        service_account: &str,
        pod: &str,
        lifetime: Duration,
    ) -> Result<String, ApiError> {
        let body = json!({"spec": {
            "expirationSeconds": lifetime.as_secs().max(MIN_EXPIRATION_SECONDS),
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod},
        }});
        let answer = self.request(store, namespace, service_account, &body)?;
        Ok(answer["status"]["token"].as_str().unwrap_or_default().to_string())
    }

    /// A token for `service_account` in `namespace`, bound to nothing (as `kubectl create
    /// token` gives): tests act as that account, with exactly what RBAC grants it.
    pub fn issue(&self, store: &Store, namespace: &str, service_account: &str) -> Result<String, ApiError> {
        let answer = self.request(store, namespace, service_account, &json!({"spec": {}}))?;
        Ok(answer["status"]["token"].as_str().unwrap_or_default().to_string())
    }

    /// Answers a TokenRequest for `namespace/name` (the body's `spec`; 201 with
    /// `status.token` and `status.expirationTimestamp`).
    pub(crate) fn request(&self, store: &Store, namespace: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
        let sa_kind = resources::by_resource("serviceaccounts").ok_or_else(ApiError::no_route)?;
        let pod_kind = resources::by_resource("pods").ok_or_else(ApiError::no_route)?;
        let spec = &body["spec"];
        let asked = match &spec["expirationSeconds"] {
            Value::Null => DEFAULT_EXPIRATION_SECONDS,
            v => v.as_u64().ok_or_else(|| {
                ApiError::invalid(
                    sa_kind,
                    name,
                    format!("spec.expirationSeconds: Invalid value: {v}: must be a number"),
                )
            })?,
        };
        if asked < MIN_EXPIRATION_SECONDS {
            return Err(ApiError::invalid(
                sa_kind,
                name,
                format!(
                    "spec.expirationSeconds: Invalid value: {asked}: may not specify a duration less than 10 minutes"
                ),
            ));
        }
        let account =
            store.get("serviceaccounts", namespace, name).ok_or_else(|| ApiError::not_found(sa_kind, name))?;
        let pod = match spec["boundObjectRef"]["kind"].as_str() {
            None => None,
            Some("Pod") => {
                let pod_name = spec["boundObjectRef"]["name"].as_str().unwrap_or_default();
                let found =
                    store.get("pods", namespace, pod_name).ok_or_else(|| ApiError::not_found(pod_kind, pod_name))?;
                Some((pod_name.to_string(), uid(&found)))
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    sa_kind,
                    name,
                    format!("spec.boundObjectRef.kind: Unsupported value: {other:?}: supported values: \"Pod\""),
                ))
            }
        };

        let mut state = self.lock();
        let lifetime = Duration::from_secs(asked).min(state.max_lifetime.unwrap_or(Duration::MAX));
        let now = SystemTime::now();
        let issued = Issued {
            account: ServiceAccountRef { namespace: namespace.to_string(), name: name.to_string() },
            account_uid: uid(&account),
            pod,
            expires: now + lifetime,
        };
        let audiences = match spec["audiences"].as_array() {
            Some(list) if !list.is_empty() => Value::Array(list.clone()),
            _ => json!([ISSUER]),
        };
        let token = jwt(&issued, now, &audiences);
        let expires = unix_seconds(issued.expires);
        state.issued.insert(token.clone(), issued);
        let expiration = jiff::Timestamp::from_second(expires as i64).map(|t| t.to_string()).unwrap_or_default();
        let mut answered_spec = spec.clone();
        answered_spec["audiences"] = audiences;
        answered_spec["expirationSeconds"] = json!(asked);
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
            "spec": answered_spec,
            "status": {"token": token, "expirationTimestamp": expiration},
        }))
    }

    /// The service account `token` authenticates as, if it is one this server issued and
    /// it has neither expired nor lost its account or pod.
    pub(crate) fn authenticate(&self, store: &Store, token: &str) -> Option<ServiceAccountRef> {
        let issued = self.lock().issued.get(token).cloned()?;
        if SystemTime::now() >= issued.expires {
            return None;
        }
        let account = store.get("serviceaccounts", &issued.account.namespace, &issued.account.name)?;
        if uid(&account) != issued.account_uid {
            return None;
        }
        if let Some((pod, pod_uid)) = &issued.pod {
            let found = store.get("pods", &issued.account.namespace, pod)?;
            if &uid(&found) != pod_uid {
                return None;
            }
        }
        Some(issued.account)
    }
}

fn uid(object: &Value) -> String {
    object["metadata"]["uid"].as_str().unwrap_or_default().to_string()
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// `header.claims.signature`, base64url without padding, with the claims the real apiserver
/// puts in a service-account token.
fn jwt(issued: &Issued, now: SystemTime, audiences: &Value) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let account = &issued.account;
    let mut kubernetes = json!({
        "namespace": account.namespace,
        "serviceaccount": {"name": account.name, "uid": issued.account_uid},
    });
    if let Some((pod, pod_uid)) = &issued.pod {
        kubernetes["pod"] = json!({"name": pod, "uid": pod_uid});
    }
    let iat = unix_seconds(now);
    let claims = json!({
        "aud": audiences,
        "exp": unix_seconds(issued.expires),
        "iat": iat,
        "nbf": iat,
        "iss": ISSUER,
        "kubernetes.io": kubernetes,
        "sub": account.user(),
    });
    let header = json!({"alg": "RS256", "kid": "kactus-testapi"});
    format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()), b64(&random_bytes(32)))
}
