//! Mutating admission webhooks, called as the real apiserver calls them, so a webhook under
//! test meets the same contract it meets in a cluster: the `MutatingWebhookConfiguration`s
//! (`admissionregistration.k8s.io/v1`) in the store decide which writes go to which webhook
//! (`rules`: operations, groups, versions, resources; `namespaceSelector`; `objectSelector`),
//! each is called over HTTPS at `clientConfig.url` or at an endpoint of
//! `clientConfig.service` (as `--enable-aggregator-routing=true` does: the Service's
//! Endpoints address, the certificate checked for `<service>.<namespace>.svc`), the
//! certificate verified against `caBundle`, with an `admission.k8s.io/v1` `AdmissionReview`
//! and `timeoutSeconds`; the answer's base64 JSONPatch is applied, a refusal becomes the
//! writer's error, and a webhook that cannot be called fails the write (`failurePolicy:
//! Fail`, v1's default) or is skipped (`Ignore`).
//!
//! Not modelled: `matchConditions` (CEL), `matchPolicy: Equivalent` conversions,
//! `reinvocationPolicy`, `sideEffects`/dry run, and a webhook's `warnings` (logged only).
//! Namespaces are not objects here: a `namespaceSelector` sees the one label every namespace
//! has from Kubernetes 1.21 on, `kubernetes.io/metadata.name`, and none on older releases.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

use super::ids;
use super::patch::Patch;
use super::resources::ResourceKind;
use super::status::ApiError;
use super::store::Store;

/// `timeoutSeconds`' default in admissionregistration/v1.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The label every namespace carries from Kubernetes 1.21 on.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// One write on its way to the store.
pub struct Incoming<'a> {
    pub kind: &'static ResourceKind,
    /// `CREATE` or `UPDATE`.
    pub operation: &'static str,
    pub namespace: &'a str,
    pub old: Option<&'a Value>,
    /// Which Kubernetes 1.x the server plays (for the namespace labels).
    pub minor: u32,
}

/// Whether any webhook in the store could want this write, so a write no webhook asks for
/// keeps its direct path through the store.
pub fn wanted(store: &Store, kind: &ResourceKind, operation: &str) -> bool {
    webhooks(store).iter().any(|(_, hook)| rules_match(hook, kind, operation))
}

/// Runs `object` through every matching webhook, in configuration then webhook order; the
/// object to store, or the error the writer gets.
pub fn admit(store: &Store, write: &Incoming, mut object: Value) -> Result<Value, ApiError> {
    for (config, hook) in webhooks(store) {
        if !rules_match(&hook, write.kind, write.operation) || !selectors_match(&hook, write, &object) {
            continue;
        }
        let name = hook["name"].as_str().unwrap_or_default().to_string();
        match call(store, &hook, write, &object) {
            Ok(Answer::Allowed(None)) => {}
            Ok(Answer::Allowed(Some(ops))) => {
                object = Patch::Json(ops).apply_to(&object).map_err(|e| {
                    ApiError::internal(format!(
                        "webhook {name:?} ({config}) sent a patch that does not apply: {}",
                        e.message()
                    ))
                })?;
            }
            Ok(Answer::Denied(code, message)) => {
                return Err(ApiError::denied(code, format!("admission webhook {name:?} denied the request: {message}")))
            }
            Err(why) if hook["failurePolicy"] == "Ignore" => {
                log::warn!("admission webhook {name:?} ({config}) ignored (failurePolicy Ignore): {why}");
            }
            Err(why) => return Err(ApiError::internal(format!("failed calling webhook {name:?}: {why}"))),
        }
    }
    Ok(object)
}

/// Every webhook of every configuration, by configuration name.
fn webhooks(store: &Store) -> Vec<(String, Value)> {
    let mut configs = store.list("mutatingwebhookconfigurations", None);
    configs.sort_by_key(|c| c["metadata"]["name"].as_str().unwrap_or_default().to_string());
    configs
        .into_iter()
        .flat_map(|c| {
            let name = c["metadata"]["name"].as_str().unwrap_or_default().to_string();
            c["webhooks"].as_array().cloned().unwrap_or_default().into_iter().map(move |h| (name.clone(), h))
        })
        .collect()
}

fn rules_match(hook: &Value, kind: &ResourceKind, operation: &str) -> bool {
    let has = |list: &Value, want: &str| list.as_array().is_some_and(|l| l.iter().any(|v| v == want || v == "*"));
    hook["rules"].as_array().is_some_and(|rules| {
        rules.iter().any(|rule| {
            has(&rule["operations"], operation)
                && has(&rule["apiGroups"], kind.group)
                && has(&rule["apiVersions"], kind.version)
                && has(&rule["resources"], kind.resource)
        })
    })
}

fn selectors_match(hook: &Value, write: &Incoming, object: &Value) -> bool {
    let mut namespace_labels = serde_json::Map::new();
    if write.minor >= 21 && write.kind.namespaced() {
        namespace_labels.insert(NAMESPACE_NAME_LABEL.into(), json!(write.namespace));
    }
    let in_namespace =
        !write.kind.namespaced() || label_selector_matches(&hook["namespaceSelector"], &namespace_labels);
    let labels_of = |o: &Value| o["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    // As the real server: the object matches if the new or the old object does.
    let object_matches = label_selector_matches(&hook["objectSelector"], &labels_of(object))
        || write.old.is_some_and(|old| label_selector_matches(&hook["objectSelector"], &labels_of(old)));
    in_namespace && object_matches
}

/// A `metav1.LabelSelector` (absent or empty: everything).
fn label_selector_matches(selector: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let match_labels = selector["matchLabels"].as_object().cloned().unwrap_or_default();
    if !match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    selector["matchExpressions"].as_array().cloned().unwrap_or_default().iter().all(|e| {
        let key = e["key"].as_str().unwrap_or_default();
        let values = e["values"].as_array().cloned().unwrap_or_default();
        let value = labels.get(key);
        match e["operator"].as_str().unwrap_or_default() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    })
}

enum Answer {
    /// With the JSONPatch operations to apply, if any.
    Allowed(Option<Vec<Value>>),
    Denied(u16, String),
}

fn call(store: &Store, hook: &Value, write: &Incoming, object: &Value) -> Result<Answer, String> {
    let timeout = hook["timeoutSeconds"].as_u64().map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let (addr, server_name, path) = endpoint(store, &hook["clientConfig"])?;
    let uid = ids::new_uid();
    let kind = write.kind;
    let mut request = json!({
        "uid": uid,
        "kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
        "resource": {"group": kind.group, "version": kind.version, "resource": kind.resource},
        "requestKind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
        "requestResource": {"group": kind.group, "version": kind.version, "resource": kind.resource},
        "name": object["metadata"]["name"],
        "operation": write.operation,
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
        "object": object,
        "oldObject": write.old.cloned().unwrap_or(Value::Null),
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": if write.operation == "CREATE" { "CreateOptions" } else { "UpdateOptions" }},
    });
    if kind.namespaced() {
        request["namespace"] = json!(write.namespace);
    }
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
    let ca = base64::engine::general_purpose::STANDARD
        .decode(hook["clientConfig"]["caBundle"].as_str().unwrap_or_default())
        .map_err(|e| format!("caBundle is not base64: {e}"))?;
    let body = post(addr, &server_name, &path, &ca, &serde_json::to_vec(&review).unwrap_or_default(), timeout)?;
    let answer: Value = serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if answer["apiVersion"] != "admission.k8s.io/v1" || answer["kind"] != "AdmissionReview" {
        return Err(format!(
            "expected an admission.k8s.io/v1 AdmissionReview, got {} {}",
            answer["apiVersion"], answer["kind"]
        ));
    }
    let response = &answer["response"];
    if response["uid"] != uid.as_str() {
        return Err(format!("expected response.uid={uid:?}, got {}", response["uid"]));
    }
    for warning in response["warnings"].as_array().into_iter().flatten() {
        log::info!("admission webhook warning: {warning}");
    }
    if response["allowed"] != true {
        let code = response["status"]["code"].as_u64().unwrap_or(400) as u16;
        return Ok(Answer::Denied(code, response["status"]["message"].as_str().unwrap_or_default().to_string()));
    }
    let Some(patch) = response["patch"].as_str() else { return Ok(Answer::Allowed(None)) };
    if response["patchType"] != "JSONPatch" {
        return Err(format!("patchType {} is not JSONPatch", response["patchType"]));
    }
    let patch =
        base64::engine::general_purpose::STANDARD.decode(patch).map_err(|e| format!("patch is not base64: {e}"))?;
    match serde_json::from_slice(&patch) {
        Ok(Value::Array(ops)) => Ok(Answer::Allowed(Some(ops))),
        _ => Err("patch is not a JSON array of operations".into()),
    }
}

/// Where to call: the address, the name the certificate must carry, the path.
fn endpoint(store: &Store, client: &Value) -> Result<(SocketAddr, String, String), String> {
    if let Some(url) = client["url"].as_str() {
        let rest = url.strip_prefix("https://").ok_or_else(|| format!("url {url:?} is not https"))?;
        let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
        let addr = authority
            .to_socket_addrs()
            .or_else(|_| format!("{authority}:443").to_socket_addrs())
            .map_err(|e| format!("url {url:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("url {url:?} resolves to nothing"))?;
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h).trim_matches(['[', ']']);
        return Ok((addr, host.to_string(), path));
    }
    let service = &client["service"];
    let (namespace, name) =
        (service["namespace"].as_str().unwrap_or_default(), service["name"].as_str().unwrap_or_default());
    let port = service["port"].as_i64().unwrap_or(443);
    let path = service["path"].as_str().unwrap_or("/").to_string();
    let svc =
        store.get("services", namespace, name).ok_or_else(|| format!("service \"{namespace}/{name}\" not found"))?;
    let svc_port = svc["spec"]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["port"].as_i64() == Some(port)).cloned())
        .ok_or_else(|| format!("service {namespace}/{name} has no port {port}"))?;
    let endpoints = store
        .get("endpoints", namespace, name)
        .ok_or_else(|| format!("service \"{namespace}/{name}\" has no endpoints"))?;
    let subset = endpoints["subsets"].as_array().and_then(|s| s.first()).cloned().unwrap_or_default();
    let ip = subset["addresses"][0]["ip"]
        .as_str()
        .ok_or_else(|| format!("service {namespace}/{name} has no ready endpoints"))?;
    let target = subset["ports"]
        .as_array()
        .and_then(|ports| {
            ports
                .iter()
                .find(|p| p["name"] == svc_port["name"] || svc_port["name"].is_null())
                .and_then(|p| p["port"].as_u64())
        })
        .ok_or_else(|| format!("service {namespace}/{name}: no endpoint port for port {port}"))?;
    let addr: SocketAddr = format!("{ip}:{target}")
        .parse()
        .or_else(|_| format!("[{ip}]:{target}").parse())
        .map_err(|e| format!("endpoint {ip}: {e}"))?;
    Ok((addr, format!("{name}.{namespace}.svc"), path))
}

/// One HTTPS POST, the server verified against `ca_pem`; the answer's body if it is a 200.
fn post(
    addr: SocketAddr,
    server_name: &str,
    path: &str,
    ca_pem: &[u8],
    body: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
        roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
    }
    if roots.is_empty() {
        return Err("caBundle holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name =
        ServerName::try_from(server_name.to_string()).map_err(|e| format!("server name {server_name:?}: {e}"))?;
    let connection = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| format!("TLS: {e}"))?;
    let socket =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("Post \"https://{addr}{path}\": {e}"))?;
    socket.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    socket.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(connection, socket);
    let head = format!(
        "POST {path}?timeout={}s HTTP/1.1\r\nHost: {server_name}\r\nContent-Type: application/json\r\n\
         Accept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        timeout.as_secs(),
        body.len()
    );
    let failed = |e: std::io::Error| format!("Post \"https://{addr}{path}\": {e}");
    tls.write_all(head.as_bytes()).map_err(failed)?;
    tls.write_all(body).map_err(failed)?;
    tls.flush().map_err(failed)?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        // A server that closes without close_notify after a complete answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(failed(e)),
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let start = match response.parse(&answer) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err("the answer is not HTTP".into()),
    };
    let chunked = response
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding") && h.value.eq_ignore_ascii_case(b"chunked"));
    if chunked {
        return Err("chunked answers are not supported by the test apiserver".into());
    }
    if response.code != Some(200) {
        return Err(format!("the webhook answered HTTP {}", response.code.unwrap_or(0)));
    }
    Ok(answer[start..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_path;

    fn hook(rules: Value, namespace_selector: Value, object_selector: Value) -> Value {
        json!({"name": "h", "rules": rules, "namespaceSelector": namespace_selector, "objectSelector": object_selector})
    }

    #[test]
    fn rules_name_operations_groups_versions_and_resources() {
        let services = by_path("", "v1", "services").unwrap();
        let pods = by_path("", "v1", "pods").unwrap();
        let rules = json!([{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["services"]}]);
        let h = hook(rules, json!({}), json!({}));
        assert!(rules_match(&h, services, "CREATE") && rules_match(&h, services, "UPDATE"));
        assert!(!rules_match(&h, services, "DELETE") && !rules_match(&h, pods, "CREATE"));
        let any = hook(
            json!([{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}]),
            json!({}),
            json!({}),
        );
        assert!(rules_match(&any, pods, "UPDATE"));
    }

    #[test]
    fn the_namespace_name_label_exists_from_1_21_and_object_selectors_see_old_or_new() {
        let services = by_path("", "v1", "services").unwrap();
        let not_kube_system = json!({"matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": ["kube-system"]}]});
        let h = hook(json!([]), not_kube_system, json!({}));
        let object = json!({"metadata": {"name": "s"}});
        let incoming = |namespace, minor| Incoming { kind: services, operation: "CREATE", namespace, old: None, minor };
        assert!(!selectors_match(&h, &incoming("kube-system", 33), &object));
        assert!(selectors_match(&h, &incoming("mep", 33), &object));
        assert!(selectors_match(&h, &incoming("kube-system", 20), &object), "no such label on 1.20: NotIn matches");
        let labelled = hook(json!([]), json!({}), json!({"matchLabels": {"a": "b"}}));
        assert!(!selectors_match(&labelled, &incoming("mep", 33), &object));
        let old = json!({"metadata": {"labels": {"a": "b"}}});
        let update = Incoming { kind: services, operation: "UPDATE", namespace: "mep", old: Some(&old), minor: 33 };
        assert!(selectors_match(&labelled, &update, &object), "the old object matched");
        let exists =
            json!({"matchExpressions": [{"key": "a", "operator": "Exists"}, {"key": "c", "operator": "DoesNotExist"}]});
        assert!(label_selector_matches(&exists, old["metadata"]["labels"].as_object().unwrap()));
    }

    #[test]
    fn a_webhook_that_cannot_be_called_fails_the_write_unless_ignored() {
        let store = Store::new();
        let services = by_path("", "v1", "services").unwrap();
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let rules =
            json!([{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["services"]}]);
        let config = |policy: &str| {
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                   "metadata": {"name": "c"},
                   "webhooks": [{"name": "h", "rules": rules, "failurePolicy": policy, "timeoutSeconds": 1,
                                 "clientConfig": {"url": format!("https://{dead}/x"), "caBundle": ""}}]})
        };
        store.apply(config("Fail")).unwrap();
        let write = Incoming { kind: services, operation: "CREATE", namespace: "mep", old: None, minor: 33 };
        assert!(wanted(&store, services, "CREATE") && !wanted(&store, services, "UPDATE"));
        let object = json!({"metadata": {"name": "s"}});
        let refused = admit(&store, &write, object.clone()).unwrap_err();
        assert_eq!((refused.code, refused.reason()), (500, "InternalError"));
        assert!(refused.message().contains("failed calling webhook \"h\""), "{}", refused.message());
        store.apply(config("Ignore")).unwrap();
        assert_eq!(admit(&store, &write, object.clone()).unwrap(), object);
    }
}
