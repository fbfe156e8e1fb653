//! The endpoints controller, run as the real `kactus-endpoints` binary against the test
//! apiserver: Services asking for `mep/mp1` get slices with the pods' mp1 addresses, which
//! follow readiness, deletion and address changes; the seed's shape gets a Warning Event;
//! a restarted controller adopts its own slices.

use kactus_testapi::TestApiServer;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);
const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// One `kactus-endpoints` process and its metrics port; killed on drop.
struct Replica {
    child: Child,
    metrics_port: u16,
}

impl Replica {
    fn http_get(&self, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut out = String::new();
        stream.read_to_string(&mut out).ok()?;
        Some(out)
    }

    fn counter(&self, name: &str) -> u64 {
        let body = self.http_get("/metrics").unwrap_or_default();
        body.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test apiserver, a temp dir and the controller.
struct Cluster {
    server: TestApiServer,
    dir: tempfile::TempDir,
    controller: Option<Replica>,
    args: Vec<String>,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    fn start_with(args: &[&str]) -> Cluster {
        let server = TestApiServer::start(TcpListener::bind("127.0.0.1:0").unwrap(), "endpoints-test-token").unwrap();
        let dir = tempfile::tempdir().unwrap();
        server.write_kubeconfig(&dir.path().join("kubeconfig")).unwrap();
        forbid_what_rbac_does_not_grant(&server);
        let args = args.iter().map(|a| a.to_string()).collect();
        let mut cluster = Cluster { server, dir, controller: None, args };
        cluster.start_controller();
        cluster
    }

    fn start_controller(&mut self) {
        self.stop_controller();
        self.controller = Some(self.spawn_replica());
    }

    /// Starts another controller process and waits until it serves /healthz.
    fn spawn_replica(&self) -> Replica {
        for _ in 0..5 {
            // A free port: bind, read, release; the controller binds it right after. Another
            // test may take it in between, and then the controller exits: try another.
            let metrics_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_kactus-endpoints"))
                .arg("--kubeconfig")
                .arg(self.dir.path().join("kubeconfig"))
                .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}"), "--log-level", "debug"])
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start kactus-endpoints");
            let mut replica = Replica { child, metrics_port };
            let healthy = wait_until(|| {
                replica.http_get("/healthz").is_some_and(|b| b.starts_with("HTTP/1.1 200"))
                    || replica.child.try_wait().ok().flatten().is_some()
            });
            if healthy && replica.child.try_wait().ok().flatten().is_none() {
                return replica;
            }
        }
        panic!("controller never became healthy:\n{}", self.log());
    }

    fn stop_controller(&mut self) {
        self.controller = None;
    }

    fn counter(&self, name: &str) -> u64 {
        self.controller.as_ref().map_or(0, |c| c.counter(name))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("controller.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn apply(&self, obj: Value) {
        self.server.store().apply(obj).unwrap();
    }

    /// A strategic merge patch, as kubelet and kactus write pods: conditions merge by type.
    fn patch_pod(&self, name: &str, patch: Value) {
        self.server.store().strategic_patch("pods", "default", name, &patch).unwrap();
    }

    /// Our slices of a Service, by name.
    fn slices(&self, service: &str) -> Vec<Value> {
        let mut slices: Vec<Value> = self
            .server
            .store()
            .list("endpointslices", Some("default"))
            .into_iter()
            .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == service)
            .collect();
        slices.sort_by_key(|s| s["metadata"]["name"].as_str().unwrap_or_default().to_string());
        slices
    }

    /// (address, ready) of every endpoint of every slice of a Service, sorted.
    fn endpoints(&self, service: &str) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = self
            .slices(service)
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .map(|e| (e["addresses"][0].as_str().unwrap().to_string(), e["conditions"]["ready"] == true))
            .collect();
        out.sort();
        out
    }

    /// Waits (bounded) until the Service's endpoints are `want`; says what it saw if not.
    fn expect_endpoints(&self, service: &str, want: &[(&str, bool)]) {
        let want: Vec<(String, bool)> = want.iter().map(|(a, r)| (a.to_string(), *r)).collect();
        let ok = wait_until(|| self.endpoints(service) == want);
        assert!(ok, "{service}: want {want:?}, have {:?}\ncontroller log:\n{}", self.endpoints(service), self.log());
    }
}

const VERBS: [&str; 7] = ["get", "list", "watch", "create", "update", "patch", "delete"];

/// The (group, resource, verb) triples the manifest's ClusterRole and Role grant.
fn granted() -> Vec<(String, String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/endpoints-controller.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for doc in docs.iter().filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role") {
        for rule in doc["rules"].as_array().unwrap() {
            let strings =
                |v: &Value| v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect::<Vec<_>>();
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        out.push((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    out
}

/// Every test runs under the manifest's RBAC: any other call is a 403 (and a failure).
fn forbid_what_rbac_does_not_grant(server: &TestApiServer) {
    let granted = granted();
    for kind in kactus_testapi::resources::KINDS {
        for verb in VERBS {
            let allowed = granted.iter().any(|(g, r, v)| g == kind.group && r == kind.resource && v == verb);
            if !allowed {
                server.faults().forbid(verb, &kind.qualified());
            }
        }
    }
}

#[test]
fn rbac_grants_exactly_the_verbs_used() {
    let mut granted: Vec<String> = granted().iter().map(|(g, r, v)| format!("{g}/{r}:{v}")).collect();
    granted.sort();
    let want = [
        "/pods:list",
        "/pods:watch",
        "/services:list",
        "/services:watch",
        "coordination.k8s.io/leases:create",
        "coordination.k8s.io/leases:get",
        "coordination.k8s.io/leases:update",
        "discovery.k8s.io/endpointslices:create",
        "discovery.k8s.io/endpointslices:delete",
        "discovery.k8s.io/endpointslices:list",
        "discovery.k8s.io/endpointslices:update",
        "discovery.k8s.io/endpointslices:watch",
        "events.k8s.io/events:create",
        "events.k8s.io/events:patch",
    ];
    assert_eq!(granted, want);
}

fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < WAIT {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

fn network_status(mp1: &[&str]) -> String {
    json!([
        {"name": "cbr0", "interface": "eth0", "ips": ["10.244.1.7"], "mac": "0a:58:0a:f4:01:07", "default": true},
        {"name": "mep/mp1", "interface": "net1", "ips": mp1, "mac": "ae:4c:2e:00:00:01", "default": false},
    ])
    .to_string()
}

/// What kactus writes to a pod's status beside network-status: the addresses it assigned,
/// which endpoints are made from (the annotation is the pod's writers' to change).
fn attested(mp1: &[&str]) -> Value {
    let entries =
        if mp1.is_empty() { json!([]) } else { json!([{"name": "mep/mp1", "interface": "net1", "ips": mp1}]) };
    json!({"type": "kactus.io/attachments", "status": "True", "reason": "Attached", "message": entries.to_string()})
}

/// The patch kactus makes when a pod's mp1 addresses change: annotation and condition.
fn mp1_changed(mp1: &[&str]) -> Value {
    json!({"metadata": {"annotations": {NETWORK_STATUS: network_status(mp1)}}, "status": {"conditions": [attested(mp1)]}})
}

/// A pod of the seed's `hello` deployment with its address on mep/mp1.
fn hello_pod(name: &str, mp1: &[&str], ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "hello"},
                     "annotations": {"k8s.v1.cni.cncf.io/networks": "mep/mp1", NETWORK_STATUS: network_status(mp1)}},
        "spec": {"nodeName": "node1", "containers": [
            {"name": "hello", "image": "gcr.io/google-samples/hello-go-gke:1.0", "ports": [{"name": "http", "containerPort": 80}]},
            {"name": "tcpdump", "image": "corfr/tcpdump"}]},
        "status": {"phase": "Running", "podIP": "10.244.1.7",
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}, attested(mp1)]}
    })
}

/// The seed's Service in the supported shape: no spec.selector, selector in an annotation.
fn hello_service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default",
                     "annotations": {"k8s.v1.cni.cncf.io/networks": "mep/mp1", "kactus.io/selector": "{\"app\":\"hello\"}"}},
        "spec": {"ports": [{"name": "web", "port": 8080, "targetPort": "http", "protocol": "TCP"}]}
    })
}

#[test]
fn service_on_mp1_gets_secondary_addresses_that_follow_the_pods() {
    let cluster = Cluster::start();
    cluster.apply(hello_pod("hello-a", &["200.1.1.2"], true));
    cluster.apply(hello_pod("hello-b", &["200.1.1.3"], true));
    let mut stranger = hello_pod("other", &["200.1.1.9"], true);
    stranger["metadata"]["labels"]["app"] = json!("other");
    cluster.apply(stranger);
    let mut no_mp1 = hello_pod("hello-no-mp1", &[], true);
    no_mp1["metadata"]["annotations"][NETWORK_STATUS] =
        json!(json!([{"name": "cbr0", "ips": ["10.244.1.8"]}]).to_string());
    cluster.apply(no_mp1);
    cluster.apply(hello_service("hello1"));

    cluster.expect_endpoints("hello1", &[("200.1.1.2", true), ("200.1.1.3", true)]);
    let slices = cluster.slices("hello1");
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    let svc = cluster.server.store().get("services", "default", "hello1").unwrap();
    assert_eq!(slice["metadata"]["name"], "hello1-kactus-ipv4-0");
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "kactus.io/endpoints-controller");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], svc["metadata"]["uid"]);
    assert_eq!(slice["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(slice["ports"], json!([{"name": "web", "protocol": "TCP", "port": 80}]), "named targetPort resolved");
    let a = &slice["endpoints"][0];
    assert_eq!(a["nodeName"], "node1");
    assert_eq!(a["targetRef"]["kind"], "Pod");
    assert_eq!(a["targetRef"]["name"], "hello-a");
    assert_eq!(a["conditions"], json!({"ready": true, "serving": true, "terminating": false}));

    // hello-b becomes unready: still listed, not ready.
    cluster.patch_pod("hello-b", json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}));
    cluster.expect_endpoints("hello1", &[("200.1.1.2", true), ("200.1.1.3", false)]);
    // hello-a goes away.
    cluster.server.store().delete("pods", "default", "hello-a").unwrap();
    cluster.expect_endpoints("hello1", &[("200.1.1.3", false)]);
    // hello-b's mp1 address changes, and it gains an IPv6 one: a separate IPv6 slice.
    cluster.patch_pod("hello-b", mp1_changed(&["200.1.1.33", "fd00:200::33"]));
    cluster.expect_endpoints("hello1", &[("200.1.1.33", false), ("fd00:200::33", false)]);
    let names: Vec<_> = cluster.slices("hello1").iter().map(|s| s["metadata"]["name"].clone()).collect();
    assert_eq!(names, [json!("hello1-kactus-ipv4-0"), json!("hello1-kactus-ipv6-0")]);
    // The Service stops asking for mp1: our slices go.
    cluster
        .server
        .store()
        .merge_patch(
            "services",
            "default",
            "hello1",
            &json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/networks": null}}}),
        )
        .unwrap();
    assert!(wait_until(|| cluster.slices("hello1").is_empty()), "slices left:\n{}", cluster.log());

    assert!(cluster.counter("endpoints_syncs_total") > 0);
    assert!(cluster.counter("endpoints_slice_writes_total") >= 5);
    assert_eq!(cluster.counter("endpoints_failures_total"), 0, "{}", cluster.log());
}

#[test]
fn seed_shape_gets_one_warning_event_and_no_slices() {
    let cluster = Cluster::start();
    cluster.apply(hello_pod("hello-a", &["200.1.1.2"], true));
    let mut seed = hello_service("hello1");
    seed["metadata"]["annotations"].as_object_mut().unwrap().remove("kactus.io/selector");
    seed["spec"]["selector"] = json!({"app": "hello"});
    cluster.apply(seed);
    let events = || -> Vec<Value> {
        cluster
            .server
            .store()
            .list("events", Some("default"))
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == "hello1" && e["reason"] == "UnsupportedServiceShape")
            .collect()
    };
    assert!(wait_until(|| !events().is_empty()), "no event:\n{}", cluster.log());
    // Other changes to the pods re-check the Service; still one Event, still no slices.
    cluster.apply(hello_pod("hello-b", &["200.1.1.3"], true));
    std::thread::sleep(Duration::from_millis(300));
    let events = events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "Warning");
    let message = events[0]["message"].as_str().unwrap();
    assert!(message.contains(r#"remove spec.selector and put it in the kactus.io/selector annotation: kactus.io/selector: '{"app":"hello"}'"#), "{message}");
    assert!(cluster.slices("hello1").is_empty());
    assert!(cluster.server.store().list("endpointslices", None).is_empty());
}

#[test]
fn restarted_controller_adopts_its_slices_and_cleans_up_after_deleted_services() {
    let mut cluster = Cluster::start();
    for i in 0..3 {
        cluster.apply(hello_pod(&format!("hello-{i}"), &[&format!("200.1.1.{}", 10 + i)], true));
    }
    cluster.apply(hello_service("hello1"));
    cluster.apply(hello_service("hello2"));
    let want = [("200.1.1.10", true), ("200.1.1.11", true), ("200.1.1.12", true)];
    cluster.expect_endpoints("hello1", &want);
    cluster.expect_endpoints("hello2", &want);
    let identity = |s: &Value| (s["metadata"]["name"].clone(), s["metadata"]["uid"].clone());
    let before: Vec<_> = cluster.slices("hello1").iter().map(identity).collect();
    let before_rv = cluster.slices("hello1")[0]["metadata"]["resourceVersion"].clone();

    cluster.stop_controller();
    // While it is down, hello2 is deleted (no garbage collector here: the controller must notice).
    cluster.server.store().delete("services", "default", "hello2").unwrap();
    cluster.start_controller();
    assert!(wait_until(|| cluster.slices("hello2").is_empty()), "hello2's slices stayed:\n{}", cluster.log());
    assert!(wait_until(|| cluster.counter("endpoints_syncs_total") >= 2));
    let after: Vec<_> = cluster.slices("hello1").iter().map(identity).collect();
    assert_eq!(after, before, "same slices, no duplicates");
    assert_eq!(cluster.slices("hello1")[0]["metadata"]["resourceVersion"], before_rv, "adopted without a rewrite");

    // And it keeps maintaining the adopted slice in place.
    cluster.server.store().delete("pods", "default", "hello-1").unwrap();
    cluster.expect_endpoints("hello1", &[("200.1.1.10", true), ("200.1.1.12", true)]);
    let updated: Vec<_> = cluster.slices("hello1").iter().map(identity).collect();
    assert_eq!(updated, before);
}

/// Convergence: time from a pod's network-status change to the slice showing it, over 50
/// changes. Prints p50/p99 (run with --nocapture); fails only if a change never converges.
#[test]
fn convergence_time_over_50_changes() {
    let cluster = Cluster::start();
    cluster.apply(hello_pod("hello-a", &["200.1.2.0"], true));
    for i in 0..20 {
        cluster.apply(hello_pod(&format!("filler-{i}"), &[&format!("200.1.3.{i}")], true));
    }
    cluster.apply(hello_service("hello1"));
    assert!(wait_until(|| cluster.endpoints("hello1").len() == 21), "{}", cluster.log());
    let mut times = Vec::new();
    for i in 1..=50 {
        let address = format!("200.1.2.{i}");
        let start = Instant::now();
        cluster.patch_pod("hello-a", mp1_changed(&[&address]));
        let seen = || cluster.endpoints("hello1").iter().any(|(a, _)| *a == address);
        let mut converged = seen();
        while !converged && start.elapsed() < WAIT {
            std::thread::sleep(Duration::from_micros(500));
            converged = seen();
        }
        assert!(converged, "change {i} never converged:\n{}", cluster.log());
        times.push(start.elapsed());
    }
    times.sort();
    let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    println!(
        "endpoints convergence over {} changes: p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        pct(50),
        pct(99),
        times[times.len() - 1]
    );
}

#[test]
fn with_leader_election_one_replica_writes_and_a_standby_takes_over() {
    let args = ["--leader-elect", "--lease-duration", "2", "--lease-namespace", "kube-system"];
    let mut cluster = Cluster::start_with(&args);
    let standby = cluster.spawn_replica();
    cluster.apply(hello_pod("hello-a", &["200.1.1.2"], true));
    cluster.apply(hello_service("hello1"));
    cluster.expect_endpoints("hello1", &[("200.1.1.2", true)]);
    let holder = |c: &Cluster| {
        let lease = c.server.store().get("leases", "kube-system", "kactus-endpoints").unwrap_or_default();
        lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string()
    };
    let first = cluster.controller.as_ref().unwrap();
    assert!(holder(&cluster).ends_with(&format!("_{}", first.child.id())), "holder {}", holder(&cluster));
    assert_eq!((first.counter("endpoints_leader"), standby.counter("endpoints_leader")), (1, 0));
    assert_eq!(standby.counter("endpoints_syncs_total"), 0, "the standby never reconciles");

    cluster.stop_controller();
    cluster.apply(hello_pod("hello-b", &["200.1.1.3"], true));
    cluster.expect_endpoints("hello1", &[("200.1.1.2", true), ("200.1.1.3", true)]);
    assert!(holder(&cluster).ends_with(&format!("_{}", standby.child.id())), "holder {}", holder(&cluster));
    assert_eq!(standby.counter("endpoints_leader"), 1);
    assert_eq!(cluster.slices("hello1").len(), 1, "the new leader adopted the slice");
}

#[test]
fn expired_watches_and_failing_writes_are_survived() {
    let cluster = Cluster::start();
    cluster.apply(hello_pod("hello-a", &["200.1.1.2"], true));
    cluster.apply(hello_service("hello1"));
    cluster.expect_endpoints("hello1", &[("200.1.1.2", true)]);

    // Every watch gets 410 Gone: the controller relists and still sees the next change.
    let restarts = cluster.counter("endpoints_watch_restarts_total");
    cluster.server.faults().expire_watches();
    assert!(wait_until(|| cluster.counter("endpoints_watch_restarts_total") >= restarts + 3), "{}", cluster.log());
    cluster.apply(hello_pod("hello-b", &["200.1.1.3"], true));
    cluster.expect_endpoints("hello1", &[("200.1.1.2", true), ("200.1.1.3", true)]);

    // The apiserver fails the slice requests for a while: the reconcile is retried later.
    cluster.server.faults().fail_next(6, 503, Some("endpointslices"));
    cluster.server.store().delete("pods", "default", "hello-a").unwrap();
    cluster.expect_endpoints("hello1", &[("200.1.1.3", true)]);
    assert!(cluster.counter("endpoints_failures_total") >= 1, "{}", cluster.log());
    assert_eq!(cluster.slices("hello1").len(), 1);
}

/// The same measure at scale: 1,000 selected pods (10 slices per family), 100 changes.
/// `cargo test --release --test endpoints -- --ignored --nocapture`
#[test]
#[ignore]
fn convergence_time_with_1000_pods() {
    let cluster = Cluster::start();
    for i in 0..1000 {
        cluster.apply(hello_pod(&format!("hello-{i:04}"), &[&format!("200.2.{}.{}", i / 250, i % 250)], true));
    }
    cluster.apply(hello_service("hello1"));
    assert!(wait_until(|| cluster.endpoints("hello1").len() == 1000), "{}", cluster.log());
    assert_eq!(cluster.slices("hello1").len(), 10);
    let mut times = Vec::new();
    for i in 0..100 {
        let address = format!("200.3.0.{i}");
        let pod = format!("hello-{:04}", i * 7);
        let start = Instant::now();
        cluster.patch_pod(&pod, mp1_changed(&[&address]));
        assert!(wait_until(|| cluster.endpoints("hello1").iter().any(|(a, _)| *a == address)), "{}", cluster.log());
        times.push(start.elapsed());
    }
    times.sort();
    let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    println!(
        "1000 pods, {} changes: p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        pct(50),
        pct(99),
        times[times.len() - 1]
    );
}

/// On Kubernetes 1.20 (no discovery.k8s.io/v1) the controller exits at once with a message
/// an operator can act on, instead of retrying a 404 forever and never getting ready.
#[test]
fn on_kubernetes_1_20_it_exits_at_once_naming_the_api_and_the_release_that_has_it() {
    let server = TestApiServer::start(TcpListener::bind("127.0.0.1:0").unwrap(), "endpoints-test-token").unwrap();
    server.emulate_kubernetes_minor(20);
    let dir = tempfile::tempdir().unwrap();
    server.write_kubeconfig(&dir.path().join("kubeconfig")).unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kactus-endpoints"))
        .arg("--kubeconfig")
        .arg(dir.path().join("kubeconfig"))
        .args(["--metrics-addr", "127.0.0.1:0"])
        .output()
        .expect("run kactus-endpoints");
    assert!(started.elapsed() < WAIT, "took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for part in ["discovery.k8s.io/v1", "endpointslices", "1.21", "v1.20.0"] {
        assert!(stderr.contains(part), "{part} missing from: {stderr}");
    }
}

/// Issue 26: whoever may patch a pod may rewrite its network-status annotation; a claim that
/// kactus did not assign (here the apiserver's ClusterIP) never reaches the Service's
/// endpoints, and the pod gets one Warning saying why.
#[test]
fn a_forged_network_status_is_ignored_with_an_event_on_the_pod() {
    let cluster = Cluster::start();
    cluster.apply(hello_pod("hello-a", &["200.1.1.2"], true));
    cluster.apply(hello_service("hello1"));
    cluster.expect_endpoints("hello1", &[("200.1.1.2", true)]);

    cluster
        .patch_pod("hello-a", json!({"metadata": {"annotations": {NETWORK_STATUS: network_status(&["10.96.0.1"])}}}));
    let events = || -> Vec<Value> {
        cluster
            .server
            .store()
            .list("events", Some("default"))
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == "hello-a" && e["reason"] == "NetworkStatusIgnored")
            .collect()
    };
    assert!(wait_until(|| !events().is_empty()), "no event:\n{}", cluster.log());
    let message = events()[0]["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("10.96.0.1") && message.contains("mep/mp1"), "{message}");
    assert_eq!(events()[0]["type"], "Warning");
    cluster.expect_endpoints("hello1", &[("200.1.1.2", true)]);
    // A pod kactus never attached (no condition at all) gets no endpoint from its annotation.
    let mut forged = hello_pod("hello-forged", &["10.96.0.1"], true);
    forged["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    cluster.apply(forged);
    std::thread::sleep(Duration::from_millis(300));
    cluster.expect_endpoints("hello1", &[("200.1.1.2", true)]);
}
