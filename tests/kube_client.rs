//! The apiserver clients against the test apiserver: the plugin's own (HTTP/2 multiplexing,
//! one connection for a fresh client's fan-out, stream resets) and the daemons' kube-rs client
//! built by the same credential loader (watches as events happen, paginated lists, shutdown).

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

/// The daemons' client, through the same kubeconfig and the crate's one loader.
fn daemon_client(server: &TestApiServer, dir: &tempfile::TempDir) -> kube::Client {
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    kactus::daemon::client(Some(&path)).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    kactus::daemon::runtime().unwrap()
}

#[test]
fn the_daemons_client_watches_as_events_happen() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, WatchEvent, WatchParams};
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let client = daemon_client(&server, &dir);
        let pods: Api<Pod> = Api::all(client);
        let params = WatchParams::default().fields("spec.nodeName=node1").timeout(5);
        let mut events = pods.watch(&params, "0").await.unwrap().boxed();
        let first = events.next().await.unwrap().unwrap();
        assert!(matches!(first, WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("app1")));
        let started = std::time::Instant::now();
        server
            .store()
            .apply_yaml("apiVersion: v1\nkind: Pod\nmetadata: {name: app3}\nspec: {nodeName: node1}\n")
            .unwrap();
        let second = events.next().await.unwrap().unwrap();
        assert!(matches!(second, WatchEvent::Added(p) if p.metadata.name.as_deref() == Some("app3")));
        assert!(started.elapsed() < Duration::from_secs(1), "the event came as it happened");
    });
}

#[test]
fn the_daemons_watcher_lists_in_pages_and_sees_every_pod() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::{watcher, WatchStreamExt};
    let server = server();
    for i in 0..7 {
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: ns{}}}\nspec: {{nodeName: node1}}\n",
            i % 3
        );
        server.store().apply_yaml(&pod).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let pods: kube::Api<Pod> = kube::Api::all(daemon_client(&server, &dir));
        let config = watcher::Config::default().page_size(3);
        let mut names: Vec<String> = watcher(pods, config)
            .applied_objects()
            .take(8)
            .map_ok(|p| p.metadata.name.unwrap_or_default())
            .try_collect()
            .await
            .unwrap();
        names.sort();
        assert_eq!(names, ["app1", "p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    });
    assert_eq!(server.stats().per_verb.get("list"), Some(&3), "three pages of three: {:?}", server.stats());
}

#[test]
fn shutdown_ends_open_watches_at_once() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, WatchParams};
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let pods: Api<Pod> = Api::namespaced(daemon_client(&server, &dir), "default");
        let mut events = pods.watch(&WatchParams::default(), "0").await.unwrap().boxed();
        assert!(events.next().await.unwrap().is_ok());
        let started = std::time::Instant::now();
        // Stopped from a thread of its own: the server's runtime cannot be dropped in this one.
        std::thread::spawn(move || server.shutdown()).join().unwrap();
        while let Some(Ok(_)) = events.next().await {}
        assert!(started.elapsed() < Duration::from_secs(3));
    });
}

/// `n` ResourceSlices of driver `driver` (one device each), as a big DRA node publishes them.
fn resource_slices(server: &TestApiServer, driver: &str, n: usize) {
    for i in 0..n {
        server
            .store()
            .apply(serde_json::json!({
                "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
                "metadata": {"name": format!("node1-{driver}-{i:05}")},
                "spec": {"driver": driver, "nodeName": "node1", "pool": {"name": "node1", "generation": 1, "resourceSliceCount": n},
                         "devices": [{"name": format!("dev{i}")}]}
            }))
            .unwrap();
    }
}

fn names(list: &kactus::kube::List<serde_json::Value>) -> std::collections::BTreeSet<String> {
    list.items.iter().map(|o| o["metadata"]["name"].as_str().unwrap_or_default().to_string()).collect()
}

/// Issue 26: `Client::list` read the first page of an answer and dropped the rest (the
/// ResourceSlices of a big DRA node run over a page).
#[test]
fn the_plugins_list_follows_continue_across_every_page() {
    let server = server();
    resource_slices(&server, "gpu.example.com", 1234);
    resource_slices(&server, "nic.example.com", 7);
    let dir = tempfile::tempdir().unwrap();
    let client = kube_client(&server, &dir);
    let lists = || server.stats().per_verb.get("list").copied().unwrap_or_default();
    let list: kactus::kube::List<serde_json::Value> = client
        .list("/apis/resource.k8s.io/v1/resourceslices", &[("fieldSelector", "spec.driver=gpu.example.com")])
        .unwrap();
    assert_eq!(names(&list).len(), 1234, "every slice, once");
    assert!(list.items.iter().all(|o| o["spec"]["driver"] == "gpu.example.com"));
    assert_eq!(lists(), 3, "pages of {}", kactus::kube::LIST_PAGE_SIZE);
}

/// A continue token the apiserver no longer honours (410 between pages, as after a
/// compaction) restarts the LIST from its first page, as the API conventions say.
#[test]
fn the_plugins_list_starts_again_when_its_continue_token_expires() {
    let server = server();
    resource_slices(&server, "gpu.example.com", 1234);
    let dir = tempfile::tempdir().unwrap();
    let client = kube_client(&server, &dir);
    let lists = || server.stats().per_verb.get("list").copied().unwrap_or_default();
    // The first page is answered only once the second is set to expire.
    let first_page_out = dir.path().join("first-page-out");
    server.faults().hold("resourceslices", &first_page_out);
    let listing = std::thread::spawn({
        let client = client.clone();
        move || client.list::<serde_json::Value>("/apis/resource.k8s.io/v1/resourceslices", &[])
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lists() < 1 {
        assert!(std::time::Instant::now() < deadline, "the first page was never asked for");
        std::thread::sleep(Duration::from_millis(2));
    }
    server.faults().fail_next(1, 410, Some("resourceslices"));
    std::fs::write(&first_page_out, "").unwrap();
    let list = listing.join().unwrap().unwrap();
    assert_eq!(names(&list).len(), 1234, "every slice, once");
    assert_eq!(client.request_count(), 2 + 3, "a first page and an expired second, then three pages from the start");
}
