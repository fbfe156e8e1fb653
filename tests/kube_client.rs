//! kactus's own apiserver client against the test apiserver: HTTP/2 multiplexing, one
//! connection for a fresh client's fan-out, watches, stream resets and shutdown.

use std::net::TcpListener;
use std::time::Duration;

use kactus_testapi::TestApiServer;

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
    server.store().apply_yaml(MANIFESTS).unwrap();
    server
}

/// The production client, through a kubeconfig for `server`, as kactus builds it.
fn kube_client(server: &TestApiServer, dir: &tempfile::TempDir) -> kactus::kube::Client {
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    kactus::kube::Client::new(Some(&path), kactus::kube::ClientOptions::default()).unwrap()
}

/// Eight threads GET one NAD at once, each answer 50 ms late so they overlap.
fn eight_slow_nad_gets(server: &TestApiServer, client: &kactus::kube::Client) {
    server.faults().set_latency(Duration::from_millis(50));
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let client = client.clone();
            scope.spawn(move || client.get_network_attachment_definition("default", "green").unwrap());
        }
    });
}

#[test]
fn kube_client_multiplexes_concurrent_requests_on_one_http2_connection() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let client = kube_client(&server, &dir);
    client.get_pod("default", "app1").unwrap();
    // Slow answers keep all eight in flight at once: HTTP/1.1 would need eight connections.
    eight_slow_nad_gets(&server, &client);
    let stats = server.stats();
    assert_eq!((stats.connections, stats.requests), (1, 9));
    assert!(stats.response_bytes > 0);
}

#[test]
fn a_fresh_kube_client_fanning_out_opens_one_connection() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let client = kube_client(&server, &dir);
    // No request before the fan-out (kactus when the runtime passed the pod's annotations):
    // the first goes alone, the other seven follow on its connection, all in flight at once.
    eight_slow_nad_gets(&server, &client);
    let stats = server.stats();
    assert_eq!((stats.connections, stats.requests), (1, 8));
    assert_eq!(stats.peak_in_flight, 7, "after the first, the others were answered at once");
}

#[test]
fn kube_client_watches_over_http2_as_events_happen() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let client = kube_client(&server, &dir);
    let query = [("fieldSelector", "spec.nodeName=node1"), ("timeoutSeconds", "5")];
    let mut events = client.watch::<kactus::kube::Pod>("/api/v1/pods", &query, "").unwrap();
    let first = events.next().unwrap().unwrap();
    assert!(matches!(first, kactus::kube::WatchEvent::Added(p) if p.metadata.name == "app1"));
    let started = std::time::Instant::now();
    server.store().apply_yaml("apiVersion: v1\nkind: Pod\nmetadata: {name: app3}\nspec: {nodeName: node1}\n").unwrap();
    let second = events.next().unwrap().unwrap();
    assert!(matches!(second, kactus::kube::WatchEvent::Added(p) if p.metadata.name == "app3"));
    assert!(started.elapsed() < Duration::from_secs(1), "the event came as it happened");
    // The pod GET goes on the watch's connection, beside the open stream.
    client.get_pod("default", "app3").unwrap();
    assert_eq!(server.stats().connections, 1);
}

#[test]
fn an_injected_reset_on_http2_resets_the_stream_and_the_client_retries() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let client = kube_client(&server, &dir);
    server.faults().reset_next(1);
    assert_eq!(client.get_pod("default", "app1").unwrap().metadata.name, "app1");
    assert_eq!(client.request_count(), 2);
    let stats = server.stats();
    assert_eq!((stats.connections, stats.requests), (1, 1), "one stream reset, the connection kept");
}

#[test]
fn shutdown_ends_open_http2_watches_at_once() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let client = kube_client(&server, &dir);
    let mut events = client.watch::<kactus::kube::Pod>("/api/v1/namespaces/default/pods", &[], "").unwrap();
    assert!(events.next().unwrap().is_ok());
    let started = std::time::Instant::now();
    server.shutdown();
    for _ in events.by_ref() {}
    assert!(started.elapsed() < Duration::from_secs(3));
}
