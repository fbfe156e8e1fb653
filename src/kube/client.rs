//! The apiserver client: one keep-alive connection pool per [`Client`], per-request
//! timeouts, bounded retries of what is worth retrying, and errors that say what was asked.

use super::access::ClusterAccess;
use super::backoff;
use super::config;
use super::error::{self, error_chain, KubeError};
use super::tls;
use super::types::{List, NetworkAttachmentDefinition, Node, Pod};
use reqwest::blocking::Response;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Objects asked for per page of a LIST (client-go's reflectors ask for as many).
pub const LIST_PAGE_SIZE: usize = 500;
/// Pages a LIST reads at most: 50,000 objects, beyond any collection the plugin lists (the
/// ResourceSlices of one driver, one network's slice claims).
pub const MAX_LIST_PAGES: usize = 100;

const MERGE_PATCH: &str = "application/merge-patch+json";
const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";
const JSON: &str = "application/json";

/// Bounds on each apiserver call.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Connect and total time of one request attempt.
    pub timeout: Duration,
    /// Further attempts after a transient failure (429, 5xx, connection errors).
    pub retries: u32,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(10),
            retries: 3,
            user_agent: format!("kactus/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A client of one apiserver. Cloning is cheap and clones share the connection pool: over
/// HTTP/2 (ALPN `h2`, what apiservers speak) threads fetching concurrently multiplex their
/// requests on one connection; over HTTP/1.1 they reuse idle connections.
///
/// Until a first request has had its answer, requests wait for it: the pool learns that a
/// connection is HTTP/2 only from its ALPN, so concurrent first requests would each open a
/// connection (and pay a TLS handshake). After that first answer (or failure) they run
/// concurrently.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::blocking::Client,
    access: ClusterAccess,
    options: ClientOptions,
    requests: AtomicU64,
    /// Whether a first request has had its answer (or failed) (see [`Client`]).
    connected: AtomicBool,
    /// Held by the request that goes alone while `connected` is false.
    first: Mutex<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("server", &self.inner.access.server).finish_non_exhaustive()
    }
}

/// Why one attempt failed, and whether another attempt may succeed.
enum Failure {
    Final(KubeError),
    Retryable { cause: String, wait: Option<Duration> },
}

impl From<KubeError> for Failure {
    fn from(e: KubeError) -> Self {
        Failure::Final(e)
    }
}

impl Client {
    /// With a kubeconfig path, uses its current context; without one, the in-cluster
    /// service account; read by the crate's one loader, [`config::load`].
    pub fn new(kubeconfig: Option<&Path>, opts: ClientOptions) -> Result<Client, KubeError> {
        let (config, source) = config::load(kubeconfig)?;
        Client::from_access(ClusterAccess::from_config(&config, &source)?, opts)
    }

    /// The service account mounted at `service_account_dir` (as in a pod) talking to
    /// `server`: for a pod that knows the apiserver's address better than its environment.
    pub fn for_service_account(
        server: &str,
        service_account_dir: &Path,
        opts: ClientOptions,
    ) -> Result<Client, KubeError> {
        let (config, source) = config::service_account(server, service_account_dir)?;
        Client::from_access(ClusterAccess::from_config(&config, &source)?, opts)
    }

    fn from_access(access: ClusterAccess, options: ClientOptions) -> Result<Client, KubeError> {
        // reqwest always wants a TLS backend; a plain http:// server never handshakes.
        let tls = if access.server.starts_with("https://") {
            tls::client_config(&access)?
        } else {
            tls::plain_http_config()?
        };
        let http = reqwest::blocking::Client::builder()
            .user_agent(options.user_agent.clone())
            .connect_timeout(options.timeout)
            // Bounded per request instead (see `attempt`).
            .timeout(None::<Duration>)
            .tcp_keepalive(Duration::from_secs(30))
            // The apiserver never redirects; following one could hand our token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| KubeError::config(format!("{}: building the HTTP client: {e}", access.origin)))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                access,
                options,
                requests: AtomicU64::new(0),
                connected: AtomicBool::new(false),
                first: Mutex::new(()),
            }),
        })
    }

    /// Requests sent by this client and its clones, retries included.
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, KubeError> {
        self.request_json(Method::GET, path, None)
    }

    /// Opens the connection ahead of the requests that will need it (one `GET /version`,
    /// which every apiserver serves to anyone, without retries), so a caller can overlap the
    /// TCP and TLS handshakes with other work. Failing is fine: the real requests report.
    pub fn connect_early(&self) {
        let outcome = self.url("/version").and_then(|url| {
            let response = self.attempt(&Method::GET, &url, None).map_err(|f| match f {
                Failure::Final(e) => e,
                Failure::Retryable { cause, .. } => KubeError::Transient { message: cause },
            })?;
            response.bytes().map(|_| ()).map_err(|e| KubeError::Transient { message: error_chain(&e) })
        });
        match outcome {
            Ok(()) => log::debug!("connected to {}", self.inner.access.server),
            Err(e) => log::debug!("early connection to {}: {e}", self.inner.access.server),
        }
    }

    pub fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, KubeError> {
        self.get(&pod_path(namespace, name))
    }

    pub fn get_node(&self, name: &str) -> Result<Node, KubeError> {
        self.get(&format!("/api/v1/nodes/{}", segment(name)))
    }

    pub fn get_network_attachment_definition(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<NetworkAttachmentDefinition, KubeError> {
        self.get(&format!(
            "/apis/k8s.cni.cncf.io/v1/namespaces/{}/network-attachment-definitions/{}",
            segment(namespace),
            segment(name)
        ))
    }

    /// The first `limit` NetworkAttachmentDefinitions of `namespace` (by name, as the
    /// apiserver orders them), one page: the rest, if any, is not read. A consistent read
    /// (no `resourceVersion`): `resourceVersion=0` would be served from the watch cache, which
    /// before Kubernetes 1.31 ignores `limit` and answers the whole namespace.
    pub fn list_network_attachment_definitions(
        &self,
        namespace: &str,
        limit: usize,
    ) -> Result<Vec<NetworkAttachmentDefinition>, KubeError> {
        let path = format!("/apis/k8s.cni.cncf.io/v1/namespaces/{}/network-attachment-definitions", segment(namespace));
        self.list_page::<NetworkAttachmentDefinition>(&path, &[], limit, None).map(|page| page.list.items)
    }

    /// Sets (`Some`) or removes (`None`) pod annotations with a JSON merge patch, leaving
    /// the others alone: no read-modify-write, so no conflict with other writers.
    pub fn patch_pod_annotations(
        &self,
        namespace: &str,
        name: &str,
        annotations: &BTreeMap<String, Option<String>>,
    ) -> Result<Pod, KubeError> {
        let body = serde_json::json!({ "metadata": { "annotations": annotations } });
        self.merge_patch(&pod_path(namespace, name), &body)
    }

    /// PATCHes the pod's `status` subresource with a strategic merge patch (conditions merge
    /// by `type`, so kubelet's own stay). The status subresource takes the pod's annotations
    /// too (the apiserver keeps only its spec and owner references from such a write), so one
    /// request sets both; tenants' roles do not grant it, which is what makes what kactus
    /// writes there trustworthy.
    pub fn patch_pod_status(&self, namespace: &str, name: &str, body: &serde_json::Value) -> Result<Pod, KubeError> {
        let path = format!("{}/status", pod_path(namespace, name));
        self.request_json(Method::PATCH, &path, Some((STRATEGIC_MERGE_PATCH, body)))
    }

    /// PATCH with `application/merge-patch+json` (RFC 7386: `null` deletes a key).
    fn merge_patch<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> Result<T, KubeError> {
        self.request_json(Method::PATCH, path, Some((MERGE_PATCH, body)))
    }

    /// POST a new object to a collection path.
    pub fn create<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> Result<T, KubeError> {
        self.request_json(Method::POST, path, Some((JSON, body)))
    }

    /// PUT: replaces the object at `path`; a stale `metadata.resourceVersion` in `body` is
    /// a [`KubeError::Conflict`], so a read-modify-write loses no one else's change.
    pub fn replace<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> Result<T, KubeError> {
        self.request_json(Method::PUT, path, Some((JSON, body)))
    }

    /// DELETE the object at `path` only if it still has this uid and resourceVersion
    /// (`DeleteOptions.preconditions`): one that was replaced or changed since it was read
    /// stays, and the answer is a [`KubeError::Conflict`].
    pub fn delete_if_unchanged(&self, path: &str, uid: &str, resource_version: &str) -> Result<(), KubeError> {
        let options = serde_json::json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": { "uid": uid, "resourceVersion": resource_version },
        });
        self.request_json::<serde_json::Value>(Method::DELETE, path, Some((JSON, &options))).map(|_| ())
    }

    /// Every object of a collection that the selectors pick:
    /// `&[("fieldSelector", "spec.driver=<driver>")]`, `&[("labelSelector", "kactus.io/node=node1")]`.
    ///
    /// Read in pages of [`LIST_PAGE_SIZE`] chained by `continue` tokens, as the API
    /// conventions ask of a client (an apiserver may page an answer whether or not it was
    /// asked to: ResourceSlices of a big DRA node run to thousands), at most [`MAX_LIST_PAGES`]
    /// of them: a collection larger than that is an error, not a plugin reading without end.
    /// A token that expired between pages (410: the apiserver compacted past the list's
    /// version) restarts the list from its first page, once, as the conventions say; a second
    /// expiry is transient (code 11), the collection changing faster than it can be read.
    pub fn list<T: DeserializeOwned>(&self, path: &str, selectors: &[(&str, &str)]) -> Result<List<T>, KubeError> {
        let mut relisted = false;
        'from_the_start: loop {
            let mut items = Vec::new();
            let mut token: Option<String> = None;
            for _ in 0..MAX_LIST_PAGES {
                let page = match self.list_page::<T>(path, selectors, LIST_PAGE_SIZE, token.as_deref()) {
                    Err(KubeError::Http { status: 410, .. }) if token.is_some() && !relisted => {
                        log::debug!("LIST {path}: the continue token expired; listing again from the start");
                        relisted = true;
                        continue 'from_the_start;
                    }
                    Err(KubeError::Http { status: 410, message }) if token.is_some() => {
                        return Err(KubeError::Transient {
                            message: format!("LIST {path}: the list expired twice while being read ({message})"),
                        })
                    }
                    page => page?,
                };
                items.extend(page.list.items);
                match page.metadata.continue_token.filter(|t| !t.is_empty()) {
                    Some(next) => token = Some(next),
                    None => return Ok(List { items }),
                }
            }
            return Err(KubeError::TooLarge {
                message: format!(
                    "LIST {path}: more than {MAX_LIST_PAGES} pages of {LIST_PAGE_SIZE} objects; not read further"
                ),
            });
        }
    }

    /// One page of a LIST: at most `limit` objects, from `continue` token `after` (a
    /// consistent read: no `resourceVersion`, which a token must not be combined with).
    fn list_page<T: DeserializeOwned>(
        &self,
        path: &str,
        selectors: &[(&str, &str)],
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<T>, KubeError> {
        let mut url = self.url(path)?;
        url.query_pairs_mut().extend_pairs(selectors).append_pair("limit", &limit.to_string());
        if let Some(token) = after {
            url.query_pairs_mut().append_pair("continue", token);
        }
        self.send_json(Method::GET, url, None)
    }

    fn request_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, &serde_json::Value)>,
    ) -> Result<T, KubeError> {
        self.send_json(method, self.url(path)?, body)
    }

    fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<(&'static str, &serde_json::Value)>,
    ) -> Result<T, KubeError> {
        let body = body.map(|(content_type, value)| (content_type, value.to_string()));
        let text = self.with_retries(&method, &url, || {
            let response = self.attempt(&method, &url, body.as_ref())?;
            // A connection dropped mid-body is as transient as one dropped before it.
            response.text().map_err(|e| Failure::Retryable {
                cause: format!("reading the answer: {}", error_chain(&e)),
                wait: None,
            })
        })?;
        serde_json::from_str(&text).map_err(|e| KubeError::Decode { message: format!("{method} {}: {e}", url.path()) })
    }

    fn url(&self, path: &str) -> Result<Url, KubeError> {
        let server = &self.inner.access.server;
        Url::parse(&format!("{server}{path}"))
            .map_err(|e| KubeError::config(format!("{}: URL {server}{path}: {e}", self.inner.access.origin)))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries are used up.
    fn with_retries<R>(
        &self,
        method: &Method,
        url: &Url,
        mut attempt: impl FnMut() -> Result<R, Failure>,
    ) -> Result<R, KubeError> {
        let retries = self.inner.options.retries;
        let mut last_cause = String::new();
        for n in 0..=retries {
            match attempt() {
                Ok(result) => return Ok(result),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Retryable { cause, wait }) => {
                    if n < retries {
                        let delay = wait.unwrap_or_else(|| backoff::delay(n));
                        log::debug!("{method} {}: {cause}; retrying in {delay:?}", url.path());
                        std::thread::sleep(delay);
                    }
                    last_cause = cause;
                }
            }
        }
        Err(KubeError::Transient {
            message: format!("{method} {}: giving up after {} attempts: {last_cause}", url.path(), retries + 1),
        })
    }

    /// Sends one request; a success status returns the response with its body unread.
    fn attempt(&self, method: &Method, url: &Url, body: Option<&(&'static str, String)>) -> Result<Response, Failure> {
        let access = &self.inner.access;
        let mut request = self.inner.http.request(method.clone(), url.clone()).header(ACCEPT, JSON);
        if let Some(auth) = access.auth.header_value()? {
            let mut value = HeaderValue::from_str(&auth).map_err(|_| {
                KubeError::config(format!(
                    "{} holds characters not allowed in an HTTP header",
                    access.credential_source
                ))
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header(CONTENT_TYPE, *content_type).body(bytes.clone());
        }
        request = request.timeout(self.inner.options.timeout);
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        // Alone until the pool holds a connection (see [`Client`]); released once the answer's
        // headers are in, before its body is read.
        let connected = || self.inner.connected.load(Ordering::Acquire);
        let alone = match connected() {
            true => None,
            // Whoever waited for the first answer goes on at once, beside the others.
            false => Some(self.inner.first.lock().unwrap_or_else(|p| p.into_inner())).filter(|_| !connected()),
        };
        let response = request.send();
        // Answered or failed, the turn is over: after a failure the others try on their own
        // (one at a time, an unreachable server would cost each its own timeout in a row).
        self.inner.connected.store(true, Ordering::Release);
        drop(alone);
        let response = response.map_err(|e| self.transport_failure(&e))?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(response);
        }
        let wait = backoff::retry_after(response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()));
        let body = response.text().unwrap_or_default();
        if matches!(status, 429 | 500 | 502 | 503 | 504) {
            let message = error::body_message(&body).unwrap_or_default();
            return Err(Failure::Retryable { cause: format!("HTTP {status} {message}").trim_end().to_string(), wait });
        }
        Err(Failure::Final(KubeError::from_response(status, url.path(), &access.credential_source, &body)))
    }

    /// Connection problems are retried, except a TLS verdict, which would only repeat.
    fn transport_failure(&self, e: &reqwest::Error) -> Failure {
        if let Some(tls) = tls::definite_failure(e) {
            return Failure::Final(KubeError::config(format!(
                "{}: TLS with {}: {tls}",
                self.inner.access.origin, self.inner.access.server
            )));
        }
        if e.is_builder() {
            return Failure::Final(KubeError::config(error_chain(e)));
        }
        let kind = if e.is_timeout() { "timed out: " } else { "" };
        Failure::Retryable { cause: format!("{kind}{}", error_chain(e)), wait: None }
    }
}

/// One page of a LIST answer: its objects and where the next page starts.
#[derive(serde::Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Page<T> {
    #[serde(flatten)]
    list: List<T>,
    #[serde(default)]
    metadata: PageMeta,
}

#[derive(Default, serde::Deserialize)]
struct PageMeta {
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

fn pod_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{}/pods/{}", segment(namespace), segment(name))
}

/// Percent-encodes a name for use as one URL path segment, so a malformed name can only
/// ever address a missing object, never a different one.
pub fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_as_single_segments() {
        assert_eq!(segment("green"), "green");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(pod_path("default", "app1"), "/api/v1/namespaces/default/pods/app1");
    }

    #[test]
    fn the_client_can_move_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Client>();
    }

    #[test]
    fn defaults() {
        let opts = ClientOptions::default();
        assert_eq!(opts.timeout, Duration::from_secs(10));
        assert_eq!(opts.retries, 3);
        assert!(opts.user_agent.starts_with("kactus/"));
    }
}
