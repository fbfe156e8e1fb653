//! The server seen from a client: a minimal HTTPS client over rustls that trusts only the
//! server's generated CA, as a kubeconfig-driven client would.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

use super::TestApiServer;

const TOKEN: &str = "test-token";

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: app1
  labels: {app: web}
spec:
  nodeName: node1
---
apiVersion: v1
kind: Pod
metadata:
  name: app2
  namespace: other
  labels: {app: db}
spec:
  nodeName: node2
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: green
spec:
  config: '{"cniVersion":"1.0.0","type":"bridge","bridge":"green-br"}'
"#;

fn server() -> TestApiServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = TestApiServer::start(listener, TOKEN).unwrap();
    assert_eq!(server.store().apply_yaml(MANIFESTS).unwrap(), 3);
    server
}

struct Response {
    code: u16,
    head: String,
    body: Value,
}

/// One keep-alive HTTPS connection.
struct Client {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

/// A client TLS configuration that trusts only the server's CA.
fn client_tls(server: &TestApiServer) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(server.ca_pem().as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

impl Client {
    fn connect(server: &TestApiServer) -> Client {
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(client_tls(server)), name).unwrap();
        let tcp = TcpStream::connect(server.addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { stream: rustls::StreamOwned::new(conn, tcp), buf: Vec::new() }
    }

    fn send(&mut self, method: &str, path: &str, token: Option<&str>, content_type: &str, body: &str) {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(request.as_bytes()).unwrap();
        self.stream.flush().unwrap();
    }

    fn call(&mut self, method: &str, path: &str, body: &str) -> Response {
        let content_type = if method == "PATCH" { "application/merge-patch+json" } else { "application/json" };
        self.send(method, path, Some(TOKEN), content_type, body);
        self.read_response()
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    fn take_until(&mut self, delimiter: &[u8]) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(delimiter.len()).position(|w| w == delimiter) {
                let text = String::from_utf8(self.buf[..i].to_vec()).unwrap();
                self.buf.drain(..i + delimiter.len());
                return Some(text);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill(), "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    fn read_head(&mut self) -> Option<(u16, String)> {
        let head = self.take_until(b"\r\n\r\n")?;
        let code = head.split(' ').nth(1).unwrap().parse().unwrap();
        Some((code, head))
    }

    fn read_response(&mut self) -> Response {
        let (code, head) = self.read_head().expect("a response");
        let length =
            head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).expect("Content-Length").parse().unwrap();
        let body = self.take(length);
        let body = serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
        Response { code, head, body }
    }

    /// Opens a watch and returns the HTTP code; then read events with [`Client::next_event`].
    fn watch(&mut self, path: &str) -> u16 {
        self.send("GET", path, Some(TOKEN), "application/json", "");
        let (code, head) = self.read_head().unwrap();
        assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
        code
    }

    /// The next watch event; None when the stream ended.
    fn next_event(&mut self) -> Option<Value> {
        let size = usize::from_str_radix(&self.take_until(b"\r\n")?, 16).unwrap();
        if size == 0 {
            self.take(2);
            return None;
        }
        let data = self.take(size + 2);
        Some(serde_json::from_slice(&data[..size]).unwrap())
    }
}

#[test]
fn requests_without_the_token_get_401_status() {
    let server = server();
    let mut client = Client::connect(&server);
    client.send("GET", "/api/v1/namespaces/default/pods/app1", None, "application/json", "");
    let resp = client.read_response();
    assert_eq!(resp.code, 401);
    assert_eq!(resp.body["reason"], "Unauthorized");
    client.send("GET", "/api/v1/pods", Some("wrong"), "application/json", "");
    assert_eq!(client.read_response().code, 401);
}

#[test]
fn missing_pod_is_a_404_status_with_details() {
    let server = server();
    let resp = Client::connect(&server).call("GET", "/api/v1/namespaces/default/pods/x", "");
    assert_eq!(resp.code, 404);
    assert!(resp.head.contains("Content-Type: application/json"));
    assert_eq!(
        resp.body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "pods \"x\" not found", "reason": "NotFound",
               "details": {"name": "x", "kind": "pods"}, "code": 404})
    );
    let unknown = Client::connect(&server).call("GET", "/api/v1/namespaces/default/widgets", "");
    assert_eq!((unknown.code, unknown.body["reason"].as_str()), (404, Some("NotFound")));
}

#[test]
fn applied_yaml_is_served_with_kind_and_resource_version() {
    let server = server();
    let mut client = Client::connect(&server);
    let nad =
        client.call("GET", "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/green", "");
    assert_eq!(nad.code, 200);
    assert_eq!(nad.body["kind"], "NetworkAttachmentDefinition");
    assert_eq!(nad.body["apiVersion"], "k8s.cni.cncf.io/v1");
    assert!(nad.body["spec"]["config"].as_str().unwrap().contains("green-br"));
    assert!(nad.body["metadata"]["resourceVersion"].as_str().unwrap().parse::<u64>().is_ok());
}

#[test]
fn list_filters_by_node_name_across_namespaces() {
    let server = server();
    let mut client = Client::connect(&server);
    let list = client.call("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode2", "");
    assert_eq!(list.code, 200);
    assert_eq!(list.body["kind"], "PodList");
    let names: Vec<&str> =
        list.body["items"].as_array().unwrap().iter().map(|p| p["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["app2"]);
    let by_label = client.call("GET", "/api/v1/namespaces/default/pods?labelSelector=app%20in%20(web)", "");
    assert_eq!(by_label.body["items"].as_array().unwrap().len(), 1);
    let bad = client.call("GET", "/api/v1/pods?fieldSelector=spec.bogus%3Dx", "");
    assert_eq!(bad.code, 400);
}

#[test]
fn dra_claims_are_namespaced_and_slices_cluster_scoped_listed_by_driver() {
    let server = server();
    let dra = r#"
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: app1-vf, namespace: default}
status:
  allocation:
    devices:
      results: [{request: vf, driver: sriov.example.com, pool: node1, device: vf-1}]
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: node1-sriov}
spec: {driver: sriov.example.com, nodeName: node1, pool: {name: node1, generation: 1, resourceSliceCount: 1}}
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata: {name: node1-gpu}
spec: {driver: gpu.example.com, nodeName: node1, pool: {name: node1, generation: 1, resourceSliceCount: 1}}
"#;
    assert_eq!(server.store().apply_yaml(dra).unwrap(), 3);
    let mut client = Client::connect(&server);
    let claim = client.call("GET", "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/app1-vf", "");
    assert_eq!((claim.code, claim.body["kind"].as_str()), (200, Some("ResourceClaim")));
    assert_eq!(claim.body["status"]["allocation"]["devices"]["results"][0]["device"], "vf-1");

    let slice = client.call("GET", "/apis/resource.k8s.io/v1/resourceslices/node1-sriov", "");
    assert_eq!(slice.code, 200);
    assert!(slice.body["metadata"].get("namespace").is_none(), "{}", slice.body);
    let by_driver =
        client.call("GET", "/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.driver%3Dsriov.example.com", "");
    let names: Vec<&str> =
        by_driver.body["items"].as_array().unwrap().iter().map(|s| s["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["node1-sriov"]);
    // As the real server: no namespaced path for a cluster-scoped kind, no unsupported field.
    let namespaced = client.call("GET", "/apis/resource.k8s.io/v1/namespaces/default/resourceslices/node1-sriov", "");
    assert_eq!(namespaced.code, 404);
    let bad = client.call("GET", "/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.pool.name%3Dnode1", "");
    assert_eq!(bad.code, 400);
    let top_level_claim = client.call("GET", "/apis/resource.k8s.io/v1/resourceclaims/app1-vf", "");
    assert_eq!(top_level_claim.code, 404);
}

#[test]
fn merge_patch_of_annotations_bumps_resource_version_and_stale_rv_conflicts() {
    let server = server();
    let mut client = Client::connect(&server);
    let before = server.store().get("pods", "default", "app1").unwrap();
    let rv_before: u64 = before["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    let patch = r#"{"metadata":{"annotations":{"k8s.v1.cni.cncf.io/network-status":"[]"}}}"#;
    let resp = client.call("PATCH", "/api/v1/namespaces/default/pods/app1", patch);
    assert_eq!(resp.code, 200);
    let rv_after: u64 = resp.body["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(rv_after > rv_before);
    assert_eq!(resp.body["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"], "[]");
    let stale = format!(r#"{{"metadata":{{"resourceVersion":"{rv_before}","annotations":{{"a":"b"}}}}}}"#);
    let conflict = client.call("PATCH", "/api/v1/namespaces/default/pods/app1", &stale);
    assert_eq!((conflict.code, conflict.body["reason"].as_str()), (409, Some("Conflict")));
}

#[test]
fn watch_from_a_resource_version_sees_the_modification() {
    let server = server();
    let rv = server.store().get("pods", "default", "app1").unwrap()["metadata"]["resourceVersion"].clone();
    let mut watcher = Client::connect(&server);
    let code = watcher.watch(&format!(
        "/api/v1/namespaces/default/pods?watch=1&resourceVersion={}&timeoutSeconds=5",
        rv.as_str().unwrap()
    ));
    assert_eq!(code, 200);
    server.store().merge_patch("pods", "default", "app1", &json!({"metadata": {"annotations": {"x": "1"}}})).unwrap();
    let event = watcher.next_event().unwrap();
    assert_eq!(event["type"], "MODIFIED");
    assert_eq!(event["object"]["metadata"]["annotations"]["x"], "1");
}

#[test]
fn watch_from_zero_lists_then_follows_and_selector_exit_is_deleted() {
    let server = server();
    let mut watcher = Client::connect(&server);
    watcher.watch("/api/v1/pods?watch=true&resourceVersion=0&labelSelector=app%3Dweb&timeoutSeconds=5");
    let added = watcher.next_event().unwrap();
    assert_eq!((added["type"].as_str(), added["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("app1")));
    server.store().merge_patch("pods", "default", "app1", &json!({"metadata": {"labels": {"app": "db"}}})).unwrap();
    let gone = watcher.next_event().unwrap();
    assert_eq!(gone["type"], "DELETED");
    assert_eq!(gone["object"]["metadata"]["labels"]["app"], "web");
}

#[test]
fn expired_watches_get_error_410_and_end() {
    let server = server();
    let mut open = Client::connect(&server);
    open.watch("/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=5");
    assert_eq!(open.next_event().unwrap()["type"], "ADDED", "current state first");
    server.faults().expire_watches();
    let error = open.next_event().unwrap();
    assert_eq!(error["type"], "ERROR");
    assert_eq!((error["object"]["code"].as_u64(), error["object"]["reason"].as_str()), (Some(410), Some("Expired")));
    assert!(open.next_event().is_none(), "the stream ends after the error");

    let mut late = Client::connect(&server);
    assert_eq!(late.watch("/api/v1/namespaces/default/pods?watch=1&resourceVersion=2"), 200);
    assert_eq!(late.next_event().unwrap()["object"]["code"], 410);
    assert!(late.next_event().is_none());
}

#[test]
fn bookmarks_and_timeout_end_an_idle_watch() {
    let server = server();
    let mut watcher = Client::connect(&server);
    watcher
        .watch("/api/v1/namespaces/default/pods?watch=1&resourceVersion=1&allowWatchBookmarks=true&timeoutSeconds=3");
    let mut types = Vec::new();
    while let Some(event) = watcher.next_event() {
        types.push(event["type"].as_str().unwrap().to_string());
    }
    assert!(types.contains(&"BOOKMARK".to_string()), "{types:?}");
    // The connection stays usable after the watch ends.
    assert_eq!(watcher.call("GET", "/api/v1/namespaces/default/pods/app1", "").code, 200);
}

#[test]
fn fail_next_503_then_success() {
    let server = server();
    server.faults().fail_next(1, 503, Some("/pods/app1"));
    let mut client = Client::connect(&server);
    let failed = client.call("GET", "/api/v1/namespaces/default/pods/app1", "");
    assert_eq!((failed.code, failed.body["reason"].as_str()), (503, Some("ServiceUnavailable")));
    assert_eq!(client.call("GET", "/api/v1/namespaces/default/pods/app1", "").code, 200);
    server.faults().fail_next(1, 429, None);
    let throttled = client.call("GET", "/api/v1/pods", "");
    assert_eq!(throttled.code, 429);
    assert!(throttled.head.contains("Retry-After: 1"));
}

#[test]
fn reset_next_closes_without_answer() {
    let server = server();
    server.faults().reset_next(1);
    let mut client = Client::connect(&server);
    client.send("GET", "/api/v1/pods", Some(TOKEN), "application/json", "");
    assert!(client.read_head().is_none());
    assert_eq!(Client::connect(&server).call("GET", "/api/v1/pods", "").code, 200);
}

#[test]
fn forbidden_verbs_get_the_rbac_message() {
    let server = server();
    server.faults().forbid("get", "pods");
    let resp = Client::connect(&server).call("GET", "/api/v1/namespaces/default/pods/x", "");
    assert_eq!(resp.code, 403);
    assert_eq!(
        resp.body["message"],
        "pods \"x\" is forbidden: User \"system:serviceaccount:kube-system:kactus\" cannot get resource \"pods\" in API group \"\" in the namespace \"default\""
    );
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let server = server();
    let mut client = Client::connect(&server);
    assert_eq!(client.call("GET", "/api/v1/namespaces/default/pods/app1", "").code, 200);
    assert_eq!(client.call("GET", "/api/v1/namespaces/other/pods/app2", "").code, 200);
    let stats = server.stats();
    assert_eq!((stats.connections, stats.requests), (1, 2));
    assert_eq!(stats.per_verb["get"], 2);
    assert!(stats.response_bytes > 0);
}

#[test]
fn create_conflicts_and_generate_name_and_status_subresource() {
    let server = server();
    let mut client = Client::connect(&server);
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"app1"}}"#;
    let exists = client.call("POST", "/api/v1/namespaces/default/pods", pod);
    assert_eq!((exists.code, exists.body["reason"].as_str()), (409, Some("AlreadyExists")));
    let generated = client.call(
        "POST",
        "/api/v1/namespaces/default/events",
        r#"{"metadata":{"generateName":"app1."},"reason":"Added"}"#,
    );
    assert_eq!(generated.code, 201);
    assert!(generated.body["metadata"]["name"].as_str().unwrap().starts_with("app1."));
    let status = client.call(
        "PATCH",
        "/api/v1/namespaces/default/pods/app1/status",
        r#"{"status":{"podIP":"10.0.0.5"},"metadata":{"labels":{"ignored":"yes"}}}"#,
    );
    assert_eq!(status.code, 200);
    assert_eq!(status.body["status"]["podIP"], "10.0.0.5");
    // As the real podStatusStrategy: a pod's status subresource takes its labels and
    // annotations too (multus and kactus write network-status through it), never its spec.
    assert_eq!(status.body["metadata"]["labels"]["ignored"], "yes");
    let main = client.call("PATCH", "/api/v1/namespaces/default/pods/app1", r#"{"status":{"podIP":"1.1.1.1"}}"#);
    assert_eq!(main.body["status"]["podIP"], "10.0.0.5", "the main resource keeps the status");
    let deleted = client.call("DELETE", "/api/v1/namespaces/default/pods/app1", "");
    assert_eq!((deleted.code, deleted.body["metadata"]["name"].as_str()), (200, Some("app1")));
    assert!(server.store().get("pods", "default", "app1").is_none());
}

#[test]
fn control_endpoint_sets_faults_and_reports_stats() {
    let server = server();
    let mut client = Client::connect(&server);
    let set =
        client.call("POST", "/_testapi/faults", r#"{"failNext":{"count":1,"status":500,"pathContains":"/pods"}}"#);
    assert_eq!(set.code, 200);
    assert_eq!(client.call("GET", "/api/v1/pods", "").code, 500);
    let stats = client.call("GET", "/_testapi/stats", "");
    assert_eq!(stats.body["connections"], 1);
}

#[test]
fn kubeconfig_names_the_server_ca_and_token() {
    let server = server();
    let config = serde_saphyr::from_str::<Value>(&server.kubeconfig_yaml()).unwrap();
    assert_eq!(config["clusters"][0]["cluster"]["server"], server.url());
    assert_eq!(config["users"][0]["user"]["token"], TOKEN);
    assert_eq!(config["current-context"], "kactus-test");
}

#[test]
fn reqwest_reads_objects_and_watch_streams() {
    let server = server();
    let client = reqwest::blocking::Client::builder().tls_backend_preconfigured(client_tls(&server)).build().unwrap();
    let url = format!("{}/api/v1/namespaces/default/pods/app1", server.url());
    let pod: Value = client.get(&url).bearer_auth(TOKEN).send().unwrap().json().unwrap();
    assert_eq!(pod["metadata"]["name"], "app1");
    let watch = format!("{}/api/v1/namespaces/default/pods?watch=1&resourceVersion=0&timeoutSeconds=1", server.url());
    let text = client.get(&watch).bearer_auth(TOKEN).send().unwrap().text().unwrap();
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(server.stats().connections, 1, "reqwest reused its connection");
}

#[test]
fn shutdown_ends_open_watches_at_once() {
    let server = server();
    let mut watcher = Client::connect(&server);
    watcher.watch("/api/v1/namespaces/default/pods?watch=1&resourceVersion=1");
    let started = std::time::Instant::now();
    server.shutdown();
    while watcher.next_event().is_some() {}
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn cluster_scoped_kinds_live_outside_namespaces() {
    let server = server();
    let mut client = Client::connect(&server);
    let node = client.call("POST", "/api/v1/nodes", r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node1"}}"#);
    assert_eq!(node.code, 201, "{}", node.body);
    assert!(node.body["metadata"].get("namespace").is_none(), "{}", node.body);
    assert_eq!(client.call("GET", "/api/v1/nodes/node1", "").body["metadata"]["uid"], node.body["metadata"]["uid"]);
    assert_eq!(client.call("GET", "/api/v1/namespaces/default/nodes/node1", "").code, 404);
    let claim = r#"{"apiVersion":"kactus.io/v1alpha1","kind":"SliceClaim","metadata":{"name":"green.11.0.4.0-24","labels":{"kactus.io/node":"node1"}},"spec":{"slice":"11.0.4.0/24"}}"#;
    assert_eq!(client.call("POST", "/apis/kactus.io/v1alpha1/sliceclaims", claim).code, 201);
    let again = client.call("POST", "/apis/kactus.io/v1alpha1/sliceclaims", claim);
    assert_eq!((again.code, again.body["reason"].as_str()), (409, Some("AlreadyExists")));
    let listed = client.call("GET", "/apis/kactus.io/v1alpha1/sliceclaims?labelSelector=kactus.io%2Fnode%3Dnode1", "");
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    let namespaced = client.call("POST", "/api/v1/pods", r#"{"metadata":{"name":"x"}}"#);
    assert_eq!(namespaced.code, 405, "a namespaced kind is created in a namespace");
    // Discovery says which is which, as kubectl and kube-rs read it.
    let mut scope = |group_version: &str, resource: &str| {
        let path = if group_version == "v1" { "/api/v1".to_string() } else { format!("/apis/{group_version}") };
        let list = client.call("GET", &path, "").body;
        list["resources"].as_array().unwrap().iter().find(|r| r["name"] == resource).unwrap()["namespaced"].clone()
    };
    assert_eq!(scope("v1", "nodes"), json!(false));
    assert_eq!(scope("v1", "pods"), json!(true));
    assert_eq!(scope("kactus.io/v1alpha1", "sliceclaims"), json!(false));
}

#[test]
fn delete_preconditions_guard_against_deleting_a_replacement() {
    let server = server();
    let mut client = Client::connect(&server);
    let pod = client.call("GET", "/api/v1/namespaces/default/pods/app1", "").body;
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let stale = client.call(
        "DELETE",
        "/api/v1/namespaces/default/pods/app1",
        r#"{"kind":"DeleteOptions","apiVersion":"v1","preconditions":{"uid":"someone-else"}}"#,
    );
    assert_eq!((stale.code, stale.body["reason"].as_str()), (409, Some("Conflict")));
    assert!(stale.body["message"].as_str().unwrap().starts_with("Precondition failed: UID"), "{}", stale.body);
    let rv =
        client.call("DELETE", "/api/v1/namespaces/default/pods/app1", r#"{"preconditions":{"resourceVersion":"1"}}"#);
    assert_eq!(rv.code, 409, "{}", rv.body);
    let body = format!(r#"{{"preconditions":{{"uid":"{uid}"}}}}"#);
    assert_eq!(client.call("DELETE", "/api/v1/namespaces/default/pods/app1", &body).code, 200);
    assert!(server.store().get("pods", "default", "app1").is_none());
}

#[test]
fn the_garbage_collector_deletes_dependents_only_when_turned_on() {
    let server = server();
    let store = server.store();
    let claim = |name: &str, owners: Value| {
        json!({"apiVersion": "kactus.io/v1alpha1", "kind": "SliceClaim",
               "metadata": {"name": name, "ownerReferences": owners}})
    };
    let node =
        |name: &str| store.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})).unwrap();
    let (n1, n2, n3) = (node("node1"), node("node2"), node("node3"));
    let owner = |n: &Value| json!({"apiVersion": "v1", "kind": "Node", "name": n["metadata"]["name"], "uid": n["metadata"]["uid"]});
    store.apply(claim("only-node1", json!([owner(&n1)]))).unwrap();
    store.apply(claim("both", json!([owner(&n1), owner(&n3)]))).unwrap();
    store.apply(claim("only-node2", json!([owner(&n2)]))).unwrap();

    store.delete("nodes", "", "node2").unwrap();
    assert_eq!(store.list("sliceclaims", None).len(), 3, "no collector unless a test turns it on");

    store.enable_garbage_collector();
    let mut client = Client::connect(&server);
    assert_eq!(client.call("DELETE", "/api/v1/nodes/node1", "").code, 200);
    let left: Vec<String> =
        store.list("sliceclaims", None).iter().map(|c| c["metadata"]["name"].as_str().unwrap().to_string()).collect();
    // only-node2's owner was deleted before: dangling too, so it goes as well.
    assert_eq!(left, vec!["both".to_string()]);
    let both = store.get("sliceclaims", "", "both").unwrap();
    assert_eq!(both["metadata"]["ownerReferences"], json!([owner(&n3)]), "the dangling reference is dropped");
}

#[test]
fn lists_come_in_pages_chained_by_continue_at_one_resource_version() {
    let server = server();
    for i in 0..4 {
        let pod =
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: a-x}}\nspec: {{nodeName: node1}}\n");
        server.store().apply_yaml(&pod).unwrap();
    }
    let mut client = Client::connect(&server);
    let (mut names, mut path, mut pages, mut rvs) = (Vec::new(), "/api/v1/pods?limit=2".to_string(), 0, Vec::new());
    loop {
        let page = client.call("GET", &path, "");
        assert_eq!(page.code, 200, "{}", page.body);
        pages += 1;
        rvs.push(page.body["metadata"]["resourceVersion"].clone());
        names.extend(
            page.body["items"].as_array().unwrap().iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page.body["metadata"]["continue"].as_str() {
            Some(token) => {
                assert!(page.body["metadata"]["remainingItemCount"].as_u64().unwrap() > 0);
                path = format!("/api/v1/pods?limit=2&continue={token}");
            }
            None => break,
        }
    }
    // Namespaces a-x, default, other in order ("a-x" < "default" as a namespace, whatever "/" sorts as).
    assert_eq!(names, ["p0", "p1", "p2", "p3", "app1", "app2"]);
    assert_eq!(pages, 3);
    assert!(rvs.windows(2).all(|w| w[0] == w[1]), "every page reports the first page's version: {rvs:?}");
    // From the watch cache (resourceVersion=0) the limit is ignored, as the real server does.
    let cached = client.call("GET", "/api/v1/pods?limit=2&resourceVersion=0", "");
    assert_eq!(cached.body["items"].as_array().unwrap().len(), 6);
    assert!(cached.body["metadata"]["continue"].is_null());
}

#[test]
fn resource_version_match_is_checked_as_the_real_server_does() {
    let server = server();
    let mut client = Client::connect(&server);
    let current =
        client.call("GET", "/api/v1/pods", "").body["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let not_older =
        client.call("GET", &format!("/api/v1/pods?resourceVersion={current}&resourceVersionMatch=NotOlderThan"), "");
    assert_eq!(not_older.code, 200);
    let exact = client.call("GET", &format!("/api/v1/pods?resourceVersion={current}&resourceVersionMatch=Exact"), "");
    assert_eq!(exact.code, 200);
    let without_rv = client.call("GET", "/api/v1/pods?resourceVersionMatch=NotOlderThan", "");
    assert_eq!(without_rv.code, 400);
    let future = client.call("GET", "/api/v1/pods?resourceVersion=999999&resourceVersionMatch=NotOlderThan", "");
    assert_eq!((future.code, future.body["reason"].as_str()), (504, Some("Timeout")));
    server.faults().expire_watches();
    let expired = client.call("GET", "/api/v1/pods?limit=1", "");
    let token = expired.body["metadata"]["continue"].as_str().unwrap().to_string();
    server.store().apply_yaml("apiVersion: v1\nkind: Pod\nmetadata: {name: app9}\n").unwrap();
    server.faults().expire_watches();
    let gone = client.call("GET", &format!("/api/v1/pods?limit=1&continue={token}"), "");
    assert_eq!((gone.code, gone.body["reason"].as_str()), (410, Some("Expired")));
}

#[test]
fn events_written_as_events_k8s_io_v1_are_core_events_too_and_patches_count_them() {
    let server = server();
    let mut client = Client::connect(&server);
    let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "app1.x", "namespace": "default"},
        "regarding": {"apiVersion": "v1", "kind": "Pod", "name": "app1", "namespace": "default"},
        "note": "network nope not found", "reason": "NetworkAttachFailed", "type": "Warning",
        "action": "HotPlug", "reportingController": "podagent", "reportingInstance": "node1",
        "eventTime": "2026-01-01T00:00:00.000000Z"});
    let created = client.call("POST", "/apis/events.k8s.io/v1/namespaces/default/events", &event.to_string());
    assert_eq!(created.code, 201, "{}", created.body);
    assert_eq!(created.body["note"], "network nope not found");
    let series = json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:01.000000Z"}});
    let patched = client.call("PATCH", "/apis/events.k8s.io/v1/namespaces/default/events/app1.x", &series.to_string());
    assert_eq!((patched.code, &patched.body["series"]["count"]), (200, &json!(2)));
    let core = server.store().list("events", Some("default"));
    assert_eq!(core.len(), 1);
    assert_eq!(core[0]["involvedObject"]["name"], "app1");
    assert_eq!(core[0]["message"], "network nope not found");
    assert_eq!(core[0]["reportingComponent"], "podagent");
    let v1 = client.call("GET", "/apis/events.k8s.io/v1/namespaces/default/events", "");
    assert_eq!(v1.body["items"][0]["regarding"]["name"], "app1");
    assert_eq!(v1.body["apiVersion"], "events.k8s.io/v1");
}

#[test]
fn a_plain_resource_name_in_a_rule_means_the_core_group_and_a_qualified_one_its_group() {
    let server = server();
    let mut client = Client::connect(&server);
    server.faults().forbid("create", "events");
    let v1 = json!({"metadata": {"name": "e1"}, "regarding": {"name": "app1"}, "note": "n"});
    let allowed = client.call("POST", "/apis/events.k8s.io/v1/namespaces/default/events", &v1.to_string());
    assert_eq!(allowed.code, 201, "{}", allowed.body);
    let core =
        client.call("POST", "/api/v1/namespaces/default/events", &json!({"metadata": {"name": "e2"}}).to_string());
    assert_eq!(core.code, 403);
    server.faults().forbid("create", "events.events.k8s.io");
    let denied = client.call(
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        &json!({"metadata": {"name": "e3"}}).to_string(),
    );
    assert_eq!(denied.code, 403);
    assert!(denied.body["message"].as_str().unwrap().contains("in API group \"events.k8s.io\""), "{}", denied.body);
}

#[test]
fn played_as_kubernetes_1_20_there_is_no_discovery_v1() {
    let server = server();
    let mut client = Client::connect(&server);
    assert_eq!(client.call("GET", "/apis/discovery.k8s.io/v1/endpointslices", "").code, 200);
    server.emulate_kubernetes_minor(20);
    assert_eq!(client.call("GET", "/apis/discovery.k8s.io/v1/endpointslices", "").code, 404);
    assert_eq!(client.call("GET", "/apis/discovery.k8s.io/v1", "").code, 404);
    assert_eq!(client.call("GET", "/apis/events.k8s.io/v1", "").code, 200);
    assert_eq!(client.call("GET", "/version", "").body["minor"], "20");
}

/// Seed 001's own install: Kaloom's `Network` CRD and no NAD CRD. Every NAD path answers 404
/// with the Status a real apiserver gives for a resource it does not serve.
#[test]
fn without_the_nad_crd_every_nad_path_is_404_and_kaloom_networks_are_served() {
    let server = server();
    server.uninstall_crd("network-attachment-definitions.k8s.cni.cncf.io");
    let mut client = Client::connect(&server);
    for path in [
        "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions",
        "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/green",
        "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions?watch=1",
        "/apis/k8s.cni.cncf.io/v1",
    ] {
        let answer = client.call("GET", path, "");
        assert_eq!(answer.code, 404, "{path}");
        if !path.ends_with("/v1") {
            assert_eq!(answer.body["kind"], "Status", "{path}");
            assert_eq!(answer.body["reason"], "NotFound", "{path}");
            assert_eq!(answer.body["message"], "the server could not find the requested resource", "{path}");
        }
    }
    assert_eq!(client.call("GET", "/apis/kaloom.com/v1/namespaces/default/networks", "").code, 200);
}

const RBAC: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: plugin, namespace: kube-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: installer, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: installer, namespace: kube-system}
rules:
  - {apiGroups: [""], resources: ["serviceaccounts/token"], resourceNames: ["plugin"], verbs: ["create"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: installer, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: installer}
subjects: [{kind: ServiceAccount, name: installer, namespace: kube-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: plugin}
rules:
  - {apiGroups: [""], resources: ["pods"], verbs: ["get"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: plugin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: plugin}
subjects: [{kind: ServiceAccount, name: plugin, namespace: kube-system}]
---
apiVersion: v1
kind: Pod
metadata: {name: installer-pod, namespace: kube-system}
spec: {serviceAccountName: installer}
"#;

#[test]
fn token_requests_issue_tokens_that_rbac_governs_and_that_die_with_their_pod() {
    let server = server();
    server.store().apply_yaml(RBAC).unwrap();
    let pod_token = server.tokens().issue_for_pod(
        server.store(),
        "kube-system",
        "installer",
        "installer-pod",
        Duration::from_secs(3600),
    );
    let pod_token = pod_token.unwrap();
    let mut c = Client::connect(&server);
    let mut as_ = |token: &str, method: &str, path: &str, body: &str| {
        c.send(method, path, Some(token), "application/json", body);
        c.read_response()
    };
    let token_path = "/api/v1/namespaces/kube-system/serviceaccounts/plugin/token";

    let short = as_(&pod_token, "POST", token_path, r#"{"spec":{"expirationSeconds":599}}"#);
    assert_eq!(short.code, 422, "{}", short.body);
    let granted = as_(&pod_token, "POST", token_path, r#"{"spec":{"expirationSeconds":86400}}"#);
    assert_eq!(granted.code, 201, "{}", granted.body);
    assert_eq!(granted.body["kind"], "TokenRequest");
    assert!(granted.body["status"]["expirationTimestamp"].as_str().unwrap().ends_with('Z'));
    let plugin_token = granted.body["status"]["token"].as_str().unwrap().to_string();
    assert_eq!(plugin_token.split('.').count(), 3, "JWT-shaped");

    // RBAC: only what the roles grant; the message names the caller.
    let other = as_(&pod_token, "POST", "/api/v1/namespaces/kube-system/serviceaccounts/installer/token", "{}");
    assert_eq!(other.code, 403);
    assert!(other.body["message"].as_str().unwrap().contains("system:serviceaccount:kube-system:installer"));
    assert_eq!(as_(&plugin_token, "GET", "/api/v1/namespaces/default/pods/app1", "").code, 200);
    assert_eq!(as_(&plugin_token, "GET", "/api/v1/namespaces/default/pods", "").code, 403);
    assert_eq!(as_(&plugin_token, "GET", "/version", "").code, 200);

    // The pod goes: its token dies, the unbound one lives; its account goes: it dies too.
    server.store().delete("pods", "kube-system", "installer-pod").unwrap();
    assert_eq!(as_(&pod_token, "GET", "/version", "").code, 401);
    assert_eq!(as_(&plugin_token, "GET", "/version", "").code, 200);
    server.store().delete("serviceaccounts", "kube-system", "plugin").unwrap();
    assert_eq!(as_(&plugin_token, "GET", "/version", "").code, 401);
    assert_eq!(as_("forged.eyJ9.token", "GET", "/version", "").code, 401);
}
