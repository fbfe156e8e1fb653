//! The mutating admission webhook that lets a Service be written as the seeds wrote it
//! (`spec.selector` plus `k8s.v1.cni.cncf.io/networks`): before the apiserver stores it, the
//! selector moves into the `kactus.io/selector` annotation, so kube-controller-manager never
//! sees a selector and never publishes primary-network endpoints for it (it would not remove
//! them when the selector went later: kubernetes#91072). Re-applying the same YAML sends the
//! selector again and it moves again to the same annotation value: nothing changes.
//!
//! Its own TLS: each replica mints a CA and a serving certificate it signs at start
//! ([`Identity`]), and keeps its CA in the `MutatingWebhookConfiguration`'s `caBundle`
//! ([`keep_ca_bundle`]: beside at most [`BUNDLE_KEEPS`] others, so two replicas behind one
//! Service both verify and a restarted one's old CA drops out).
//!
//! `failurePolicy: Ignore` (manifests/endpoints-controller.yaml): a webhook that is down
//! never blocks a Service write anywhere in the cluster; a seed-shaped Service that got past
//! it is moved by the controller afterwards (see `controller.rs`, [`super::shape::Shape::SeedShaped`]).

use super::metrics::Metrics;
use super::shape::{selector_json, selector_move, shape_of, Shape, SELECTOR_ANNOTATION};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::Api;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The path the configuration's `clientConfig` names.
pub const PATH: &str = "/mutate-services";
/// How many other replicas' CAs the bundle keeps beside ours.
pub const BUNDLE_KEEPS: usize = 3;
/// An AdmissionReview larger than this is refused (a Service is a few KiB).
const MAX_BODY: usize = 3 << 20;
/// How often the `caBundle` is checked (someone may have re-applied the manifest).
const BUNDLE_CHECK: Duration = Duration::from_secs(30);
/// How soon a failed check is tried again.
const BUNDLE_RETRY: Duration = Duration::from_secs(1);

/// The JSONPatch that moves a seed-shaped Service's selector, or `None` for any other.
pub fn mutation(service: &Service) -> Option<Vec<Value>> {
    let selector = selector_move(service)?;
    let value = selector_json(&selector);
    let annotations = service.metadata.annotations.as_ref()?;
    let mut ops = Vec::new();
    if annotations.get(SELECTOR_ANNOTATION) != Some(&value) {
        ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", pointer_escape(SELECTOR_ANNOTATION)), "value": value}));
    }
    ops.push(json!({"op": "remove", "path": "/spec/selector"}));
    Some(ops)
}

fn pointer_escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// An `admission.k8s.io/v1` AdmissionReview request in, its answer out. Anything that is not
/// a Service is allowed unchanged; the answer warns about a shape the controller will refuse.
pub fn review(body: &[u8]) -> Result<Value, String> {
    let review: Value = serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return Err(format!(
            "expected admission.k8s.io/v1 AdmissionReview, got {} {}",
            review["apiVersion"], review["kind"]
        ));
    }
    let request = &review["request"];
    let uid = request["uid"].as_str().ok_or("the AdmissionReview has no request.uid")?;
    let mut response = json!({"uid": uid, "allowed": true});
    let is_service = request["kind"]["group"] == "" && request["kind"]["kind"] == "Service";
    if is_service {
        let service: Service = serde_json::from_value(request["object"].clone())
            .map_err(|e| format!("request.object is not a Service: {e}"))?;
        if let Some(ops) = mutation(&service) {
            let moved = moved(&service);
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(Value::Array(ops).to_string()));
            if let Some(Shape::Unsupported { message }) = moved.as_ref().map(shape_of) {
                response["warnings"] =
                    json!([format!("kactus-endpoints will publish no endpoints for this Service: {message}")]);
            }
        }
    }
    Ok(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}))
}

/// The Service as [`mutation`] leaves it (for the warning only).
fn moved(service: &Service) -> Option<Service> {
    let mut moved = service.clone();
    let selector = selector_move(service)?;
    moved.metadata.annotations.get_or_insert_default().insert(SELECTOR_ANNOTATION.into(), selector_json(&selector));
    if let Some(spec) = moved.spec.as_mut() {
        spec.selector = None;
    }
    Some(moved)
}

/// A replica's CA (for the `caBundle`) and the TLS configuration with the certificate it signs.
pub struct Identity {
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

impl Identity {
    /// A fresh CA and a serving certificate for `names` (DNS names, or IP addresses).
    pub fn mint(names: &[String]) -> Result<Identity, String> {
        let failed = |what: &str, e: rcgen::Error| format!("webhook certificate: {what}: {e}");
        let ca_key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("CA", e))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name.push(DnType::CommonName, "kactus-endpoints-webhook-ca");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).map_err(|e| failed("CA", e))?;
        let issuer = Issuer::new(ca, ca_key);
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("serving", e))?;
        for name in names {
            let san = match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into().map_err(|e| failed(name, e))?),
            };
            params.subject_alt_names.push(san);
        }
        params.distinguished_name.push(DnType::CommonName, "kactus-endpoints-webhook");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(|e| failed("serving key", e))?;
        let cert = params.signed_by(&key, &issuer).map_err(|e| failed("serving", e))?;
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("webhook TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("webhook TLS: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Identity { ca_pem: ca_cert.pem(), config: Arc::new(config) })
    }
}

/// Binds `addr` now (a taken port fails the start) and answers reviews on a task.
pub async fn serve(addr: SocketAddr, identity: &Identity, metrics: Metrics) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("webhook: listen on {addr}: {e}"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.config.clone());
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::debug!("webhook: accept: {e}");
                    continue;
                }
            };
            let (acceptor, metrics) = (acceptor.clone(), metrics.clone());
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return log::debug!("webhook: TLS: {e}"),
                    Err(_) => return log::debug!("webhook: TLS handshake timed out"),
                };
                let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(answer(request, &metrics).await) }
                });
                if let Err(e) =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
                {
                    log::debug!("webhook: connection: {e}");
                }
            });
        }
    });
    Ok(())
}

async fn answer(request: Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
        response
    };
    if request.method() != hyper::Method::POST || request.uri().path() != PATH {
        return reply(StatusCode::NOT_FOUND, "{}".into());
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}).to_string()),
    };
    match review(&body) {
        Ok(answer) => {
            if answer["response"]["patch"].is_string() {
                metrics.webhook_moves.inc();
                log::info!(
                    "webhook: moved spec.selector of service {}/{} into {SELECTOR_ANNOTATION}",
                    serde_json::from_slice::<Value>(&body)
                        .ok()
                        .map(|r| r["request"]["namespace"].clone())
                        .unwrap_or_default(),
                    serde_json::from_slice::<Value>(&body)
                        .ok()
                        .map(|r| r["request"]["name"].clone())
                        .unwrap_or_default(),
                );
            }
            reply(StatusCode::OK, answer.to_string())
        }
        Err(e) => {
            log::warn!("webhook: {e}");
            reply(StatusCode::BAD_REQUEST, json!({"error": e}).to_string())
        }
    }
}

/// Keeps `ca_pem` in the `caBundle` of every webhook of configuration `name`, for as long as
/// the process runs: at once, then every [`BUNDLE_CHECK`] (a re-applied manifest empties it).
pub async fn keep_ca_bundle(client: kube::Client, name: String, ca_pem: String) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let mut retry = BUNDLE_RETRY;
    loop {
        let next = match ensure_ca_bundle(&api, &name, &ca_pem).await {
            Ok(true) => {
                log::info!("webhook: our CA is now in mutatingwebhookconfiguration {name}'s caBundle");
                BUNDLE_CHECK
            }
            Ok(false) => BUNDLE_CHECK,
            // A conflict with the other replica's write, or the configuration not applied
            // yet: until our CA is in, the apiserver cannot call us; look again soon (1 s,
            // doubling to 15 s).
            Err(e) => {
                log::warn!("webhook: keeping mutatingwebhookconfiguration {name}'s caBundle: {e}");
                retry = (retry * 2).min(BUNDLE_CHECK);
                retry / 2
            }
        };
        if next == BUNDLE_CHECK {
            retry = BUNDLE_RETRY;
        }
        tokio::time::sleep(next).await;
    }
}

/// One check; `true` if it wrote. The write carries the resourceVersion read, so two
/// replicas writing at once cannot drop each other's CA (the loser retries next round).
async fn ensure_ca_bundle(api: &Api<MutatingWebhookConfiguration>, name: &str, ca_pem: &str) -> Result<bool, String> {
    let config = api.get(name).await.map_err(|e| crate::kube::error_chain(&e))?;
    let mut webhooks = serde_json::to_value(config.webhooks.clone().unwrap_or_default()).map_err(|e| e.to_string())?;
    let mut changed = false;
    for hook in webhooks.as_array_mut().into_iter().flatten() {
        let have = hook["clientConfig"]["caBundle"].as_str().unwrap_or_default();
        let have = base64::engine::general_purpose::STANDARD.decode(have).unwrap_or_default();
        let want = bundle_with(&String::from_utf8_lossy(&have), ca_pem);
        if want.as_bytes() != have.as_slice() {
            hook["clientConfig"]["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(want));
            changed = true;
        }
    }
    if !changed {
        return Ok(false);
    }
    let patch = json!({"metadata": {"resourceVersion": config.metadata.resource_version}, "webhooks": webhooks});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| crate::kube::error_chain(&e))?;
    Ok(true)
}

/// `bundle` unchanged if it holds `ours`; else `ours` first, then up to [`BUNDLE_KEEPS`]
/// of its other certificates (so replicas never reorder each other's bundle).
pub fn bundle_with(bundle: &str, ours: &str) -> String {
    const END: &str = "-----END CERTIFICATE-----";
    let ours = ours.trim();
    if bundle.split_inclusive(END).any(|c| c.trim() == ours) {
        return bundle.to_string();
    }
    let others = bundle
        .split_inclusive(END)
        .map(str::trim)
        .filter(|c| c.starts_with("-----BEGIN CERTIFICATE-----") && c.ends_with(END) && *c != ours)
        .take(BUNDLE_KEEPS);
    let mut out = format!("{ours}\n");
    for other in others {
        out.push_str(other);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(extra_annotations: Value) -> Value {
        let mut annotations = json!({"k8s.v1.cni.cncf.io/networks": "mep/mp1"});
        annotations.as_object_mut().unwrap().extend(extra_annotations.as_object().unwrap().clone());
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "hello1", "namespace": "mep", "annotations": annotations},
               "spec": {"selector": {"app": "hello"}, "ports": [{"protocol": "TCP", "port": 80, "targetPort": "http"}]}})
    }

    fn request(object: Value) -> Vec<u8> {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Service"},
                           "operation": "CREATE", "object": object}})
        .to_string()
        .into_bytes()
    }

    fn patch_of(answer: &Value) -> Vec<Value> {
        let raw =
            base64::engine::general_purpose::STANDARD.decode(answer["response"]["patch"].as_str().unwrap()).unwrap();
        serde_json::from_slice(&raw).unwrap()
    }

    #[test]
    fn the_seed_service_has_its_selector_moved() {
        let answer = review(&request(seed(json!({})))).unwrap();
        assert_eq!(answer["response"]["uid"], "u1");
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        assert_eq!(
            patch_of(&answer),
            [
                json!({"op": "add", "path": "/metadata/annotations/kactus.io~1selector", "value": "{\"app\":\"hello\"}"}),
                json!({"op": "remove", "path": "/spec/selector"})
            ]
        );
        assert!(answer["response"].get("warnings").is_none());
        // A re-apply: the annotation is already there; only the selector goes again.
        let again = review(&request(seed(json!({"kactus.io/selector": "{\"app\":\"hello\"}"})))).unwrap();
        assert_eq!(patch_of(&again), [json!({"op": "remove", "path": "/spec/selector"})]);
    }

    #[test]
    fn other_services_and_kinds_are_left_alone_and_bad_networks_warned() {
        let mut plain = seed(json!({}));
        plain["metadata"]["annotations"] = json!({});
        let answer = review(&request(plain)).unwrap();
        assert_eq!(answer["response"], json!({"uid": "u1", "allowed": true}));
        let mut two = seed(json!({}));
        two["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] = json!("mep/mp1,mep/mp2");
        let answer = review(&request(two)).unwrap();
        assert!(answer["response"]["patch"].is_string(), "moved anyway: Kubernetes must not publish eth0");
        assert!(answer["response"]["warnings"][0].as_str().unwrap().contains("more than one network"));
        let mut pod = serde_json::from_slice::<Value>(&request(json!({}))).unwrap();
        pod["request"]["kind"]["kind"] = json!("Pod");
        let answer = review(pod.to_string().as_bytes()).unwrap();
        assert_eq!(answer["response"], json!({"uid": "u1", "allowed": true}));
        assert!(review(b"{}").is_err());
    }

    #[test]
    fn the_bundle_keeps_ours_first_and_a_few_others() {
        let cert = |n: u32| format!("-----BEGIN CERTIFICATE-----\nMII{n}\n-----END CERTIFICATE-----");
        let ours = cert(0);
        assert_eq!(bundle_with("", &ours), format!("{ours}\n"));
        let old: String = (1..=5).map(|n| format!("{}\n", cert(n))).collect();
        let bundle = bundle_with(&old, &ours);
        let expected: String = [0, 1, 2, 3].iter().map(|n| format!("{}\n", cert(*n))).collect();
        assert_eq!(bundle, expected);
        assert_eq!(bundle_with(&bundle, &ours), bundle, "stable once ours is in");
        // Another replica's bundle that has ours second is left as it is: no fight.
        let theirs = bundle_with(&bundle, &cert(9));
        assert!(theirs.starts_with(&cert(9)));
        assert_eq!(bundle_with(&theirs, &ours), theirs);
    }
}
