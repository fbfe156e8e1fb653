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
        let mut cluster = Cluster::without_controller(args);
        cluster.start_controller();
        cluster
    }

    /// The test apiserver under the manifest's RBAC, the controller not started yet.
    fn without_controller(args: &[&str]) -> Cluster {
        let server = TestApiServer::start(TcpListener::bind("127.0.0.1:0").unwrap(), "endpoints-test-token").unwrap();
        let dir = tempfile::tempdir().unwrap();
        server.write_kubeconfig(&dir.path().join("kubeconfig")).unwrap();
        forbid_what_rbac_does_not_grant(&server);
        let args = args.iter().map(|a| a.to_string()).collect();
        Cluster { server, dir, controller: None, args }
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
        self.slices_in("default", service)
    }

    /// Every slice of a Service in `namespace`, whoever wrote it, by name.
    fn slices_in(&self, namespace: &str, service: &str) -> Vec<Value> {
        let mut slices: Vec<Value> = self
            .server
            .store()
            .list("endpointslices", Some(namespace))
            .into_iter()
            .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == service)
            .collect();
        slices.sort_by_key(|s| s["metadata"]["name"].as_str().unwrap_or_default().to_string());
        slices
    }

    /// (address, ready) of every endpoint of every slice of a Service, sorted.
    fn endpoints(&self, service: &str) -> Vec<(String, bool)> {
        self.endpoints_in("default", service)
    }

    fn endpoints_in(&self, namespace: &str, service: &str) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = self
            .slices_in(namespace, service)
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .map(|e| (e["addresses"][0].as_str().unwrap().to_string(), e["conditions"]["ready"] == true))
            .collect();
        out.sort();
        out
    }

    /// Waits (bounded) until the Service's endpoints are `want`; says what it saw if not.
    fn expect_endpoints(&self, service: &str, want: &[(&str, bool)]) {
        self.expect_endpoints_in("default", service, want)
    }

    fn expect_endpoints_in(&self, namespace: &str, service: &str, want: &[(&str, bool)]) {
        let want: Vec<(String, bool)> = want.iter().map(|(a, r)| (a.to_string(), *r)).collect();
        let ok = wait_until(|| self.endpoints_in(namespace, service) == want);
        assert!(
            ok,
            "{service}: want {want:?}, have {:?}\ncontroller log:\n{}",
            self.endpoints_in(namespace, service),
            self.log()
        );
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
        "/endpoints:create",
        "/endpoints:delete",
        "/endpoints:get",
        "/endpoints:list",
        "/endpoints:update",
        "/endpoints:watch",
        "/pods:list",
        "/pods:watch",
        "/services:list",
        "/services:patch",
        "/services:watch",
        "admissionregistration.k8s.io/mutatingwebhookconfigurations:get",
        "admissionregistration.k8s.io/mutatingwebhookconfigurations:patch",
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
    hello_pod_in("default", name, mp1, ready)
}

fn hello_pod_in(namespace: &str, name: &str, mp1: &[&str], ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "hello"},
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
    assert_eq!(slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "endpoints-controller.kactus.io");
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
    // Two looks at hello1 after the restart. Its first reconcile may take in every event of
    // the start-up (the controller merges requests for one object), so the second is asked
    // for: hello1 touched where its slices hold nothing of it.
    assert!(wait_until(|| cluster.counter("endpoints_syncs_total") >= 1));
    let mut touched = hello_service("hello1");
    touched["metadata"]["annotations"]["example.com/touched"] = json!("after the restart");
    cluster.apply(touched);
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

// ---- Services as the seeds wrote them (issue 23): the admission webhook, the controller's
// after-the-fact move, Endpoints on Kubernetes 1.20, headless, bad inputs.

/// Seed 000's Service, byte for byte (applied there with `-n mep`).
const SEED_SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: hello1
  annotations:
    k8s.v1.cni.cncf.io/networks: mep/mp1
spec:
  selector:
    app: hello
  ports:
  - protocol: TCP
    port: 80
    targetPort: http
";

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What kube-controller-manager labels its own slices with.
const KCM: &str = "endpointslice-controller.k8s.io";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// kubectl, as far as these tests need it, over HTTPS through the test apiserver's router
/// (so writes go through its admission webhooks, unlike `Store::apply`).
struct Kubectl {
    client: reqwest::blocking::Client,
    url: String,
    token: String,
}

impl Kubectl {
    fn new(server: &TestApiServer) -> Kubectl {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(server.ca_pem().as_bytes()).unwrap()).unwrap();
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let client = reqwest::blocking::Client::builder().tls_backend_preconfigured(tls).build().unwrap();
        Kubectl { client, url: server.url(), token: server.token().to_string() }
    }

    fn services(&self, namespace: &str) -> String {
        format!("{}/api/v1/namespaces/{namespace}/services", self.url)
    }

    /// `kubectl apply -n <namespace> -f` of one Service: create with the last-applied
    /// annotation, or a strategic merge patch of what differs from the live object (the
    /// additions half of kubectl's three-way patch; these tests never remove a field).
    fn apply(&self, namespace: &str, yaml: &str) -> (u16, Value) {
        let mut object: Value = serde_saphyr::from_str(yaml).unwrap();
        object["metadata"]["namespace"] = json!(namespace);
        let last_applied = object.to_string();
        object["metadata"]["annotations"][LAST_APPLIED] = json!(last_applied);
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let url = format!("{}/{name}", self.services(namespace));
        let live = self.client.get(&url).bearer_auth(&self.token).send().unwrap();
        let request = if live.status() == 404 {
            self.client.post(self.services(namespace)).json(&object)
        } else {
            let live: Value = live.json().unwrap();
            let patch = additions(&live, &object);
            self.client
                .patch(&url)
                .header("Content-Type", "application/strategic-merge-patch+json")
                .body(patch.to_string())
        };
        let response = request.bearer_auth(&self.token).send().unwrap();
        let code = response.status().as_u16();
        (code, response.json().unwrap_or(Value::Null))
    }
}

/// The fields of `want` that `live` lacks or has otherwise, as a merge patch.
fn additions(live: &Value, want: &Value) -> Value {
    let mut patch = serde_json::Map::new();
    for (key, value) in want.as_object().unwrap() {
        match (&live[key], value) {
            (have, want) if have == want => {}
            (have @ Value::Object(_), want @ Value::Object(_)) => {
                drop(patch.insert(key.clone(), additions(have, want)))
            }
            (_, want) => drop(patch.insert(key.clone(), want.clone())),
        }
    }
    Value::Object(patch)
}

/// The manifest's MutatingWebhookConfiguration, pointed at `url` (the real one names the
/// Service kactus-endpoints-webhook), with its failurePolicy unless `policy` says otherwise.
fn webhook_configuration(url: &str, policy: Option<&str>) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/endpoints-controller.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut config = docs.into_iter().find(|d| d["kind"] == "MutatingWebhookConfiguration").unwrap();
    let hook = &mut config["webhooks"][0];
    hook["clientConfig"] = json!({"url": url});
    if let Some(policy) = policy {
        hook["failurePolicy"] = json!(policy);
    }
    config
}

impl Cluster {
    /// The test apiserver with the manifest's ServiceAccount and RBAC objects in it, the
    /// controller (not started yet) running as that account: it gets exactly what they grant
    /// (resourceNames included), while tests, as kubectl, use the admin token.
    fn as_the_manifests_account(args: &[&str]) -> Cluster {
        let server = TestApiServer::start(TcpListener::bind("127.0.0.1:0").unwrap(), "endpoints-test-token").unwrap();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/endpoints-controller.yaml");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
        for doc in docs.into_iter().filter(|d| {
            ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
                .contains(&d["kind"].as_str().unwrap())
        }) {
            server.store().apply(doc).unwrap();
        }
        let token = server.tokens().issue(server.store(), "kube-system", "kactus-endpoints").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = server.kubeconfig_yaml().replace(server.token(), &token);
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
        let args = args.iter().map(|a| a.to_string()).collect();
        Cluster { server, dir, controller: None, args }
    }

    /// The cluster with the controller serving the webhook on a free port, and the manifest's
    /// webhook configuration pointing at it; waits until the controller put its CA in.
    fn with_webhook(minor: Option<u32>) -> Cluster {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cluster =
            Cluster::as_the_manifests_account(&["--webhook-addr", &addr, "--webhook-cert-names", "127.0.0.1"]);
        if let Some(minor) = minor {
            cluster.server.emulate_kubernetes_minor(minor);
        }
        cluster.apply(webhook_configuration(&format!("https://{addr}/mutate-services"), None));
        cluster.start_controller();
        cluster.wait_for_ca_bundle();
        cluster
    }

    /// As in a cluster: the manifest's webhook configuration and Service as they are
    /// (clientConfig.service, certificate for kactus-endpoints-webhook.kube-system.svc, the
    /// flags of the manifest's Deployment), the apiserver calling the Service's endpoint
    /// address (`--enable-aggregator-routing=true`), here 127.0.0.1.
    fn with_the_manifests_webhook(minor: u32) -> Cluster {
        let port = free_port();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/endpoints-controller.yaml");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
        let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let mut args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .filter(|a| a.starts_with("--webhook-"))
            .collect();
        assert!(args.iter().any(|a| a == "--webhook-addr=0.0.0.0:9443"), "{args:?}");
        args.retain(|a| !a.starts_with("--webhook-addr"));
        args.push(format!("--webhook-addr=127.0.0.1:{port}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cluster = Cluster::as_the_manifests_account(&args);
        cluster.server.emulate_kubernetes_minor(minor);
        for doc in docs.iter().filter(|d| d["kind"] == "MutatingWebhookConfiguration" || d["kind"] == "Service") {
            cluster.apply(doc.clone());
        }
        cluster.apply(json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kactus-endpoints-webhook", "namespace": "kube-system"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "webhook", "port": port, "protocol": "TCP"}]}]}));
        cluster.start_controller();
        cluster.wait_for_ca_bundle();
        cluster
    }

    fn wait_for_ca_bundle(&self) {
        let has_ca = || {
            self.server
                .store()
                .get("mutatingwebhookconfigurations", "", "kactus-endpoints")
                .is_some_and(|c| c["webhooks"][0]["clientConfig"]["caBundle"].as_str().is_some_and(|b| !b.is_empty()))
        };
        assert!(wait_until(has_ca), "no caBundle:\n{}", self.log());
    }

    fn service(&self, namespace: &str, name: &str) -> Value {
        self.server.store().get("services", namespace, name).unwrap()
    }

    fn events_for(&self, namespace: &str, name: &str, reason: &str) -> Vec<Value> {
        self.server
            .store()
            .list("events", Some(namespace))
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
            .collect()
    }

    /// (ip, ready) of the core/v1 Endpoints object of a Service, sorted.
    fn core_endpoints(&self, namespace: &str, name: &str) -> Vec<(String, u64, bool)> {
        let Some(endpoints) = self.server.store().get("endpoints", namespace, name) else { return Vec::new() };
        let mut out = Vec::new();
        for subset in endpoints["subsets"].as_array().cloned().unwrap_or_default() {
            let port = subset["ports"][0]["port"].as_u64().unwrap_or(0);
            for (list, ready) in [("addresses", true), ("notReadyAddresses", false)] {
                for a in subset[list].as_array().cloned().unwrap_or_default() {
                    out.push((a["ip"].as_str().unwrap().to_string(), port, ready));
                }
            }
        }
        out.sort();
        out
    }
}

/// A slice as kube-controller-manager writes it for a Service with a selector: the pods'
/// primary-network (eth0) addresses.
fn kcm_slice(api_version: &str, namespace: &str, service: &str, suffix: &str) -> Value {
    json!({"apiVersion": api_version, "kind": "EndpointSlice",
           "metadata": {"name": format!("{service}-{suffix}"), "namespace": namespace,
                        "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": KCM}},
           "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.7"], "conditions": {"ready": true}}],
           "ports": [{"name": "", "port": 80, "protocol": "TCP"}]})
}

/// The Endpoints kube-controller-manager writes for a Service with a selector.
fn kcm_endpoints(namespace: &str, service: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Endpoints",
           "metadata": {"name": service, "namespace": namespace,
                        "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-12-07T09:00:00Z"}},
           "subsets": [{"addresses": [{"ip": "10.244.1.7"}], "ports": [{"port": 80, "protocol": "TCP"}]}]})
}

/// Seed 000's YAML applied unchanged: the webhook moves its selector before it is stored
/// (so kube-controller-manager, which acts only on spec.selector, publishes nothing), the
/// slices hold only the mp1 addresses, and applying the same file again changes nothing.
#[test]
fn the_seed_service_applied_unchanged_gets_only_mp1_addresses_and_a_reapply_changes_nothing() {
    let cluster = Cluster::with_webhook(None);
    cluster.apply(hello_pod_in("mep", "hello-9c56bdbb9-xbcp9", &["200.1.1.6"], true));
    let kubectl = Kubectl::new(&cluster.server);
    let (code, created) = kubectl.apply("mep", SEED_SERVICE);
    assert_eq!(code, 201, "{created}\n{}", cluster.log());

    let stored = cluster.service("mep", "hello1");
    assert_eq!(stored["spec"].get("selector"), None, "kube-controller-manager must see no selector: {stored}");
    assert_eq!(stored["metadata"]["annotations"]["kactus.io/selector"], r#"{"app":"hello"}"#);
    assert_eq!(stored["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"], "mep/mp1");
    cluster.expect_endpoints_in("mep", "hello1", &[("200.1.1.6", true)]);
    let slices = cluster.slices_in("mep", "hello1");
    assert_eq!(slices.len(), 1, "{slices:?}");
    assert_eq!(
        slices[0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpoints-controller.kactus.io"
    );
    assert_eq!(slices[0]["ports"], json!([{"name": "", "protocol": "TCP", "port": 80}]), "targetPort http resolved");
    assert!(cluster.server.store().get("endpoints", "mep", "hello1").is_none(), "no Endpoints on 1.21+ unless asked");

    // kubectl apply of the same file again: it sends the selector again, the webhook moves
    // it again to the same annotation value, and the stored object does not change.
    let rv = stored["metadata"]["resourceVersion"].clone();
    for _ in 0..2 {
        let (code, answer) = kubectl.apply("mep", SEED_SERVICE);
        assert_eq!(code, 200, "{answer}");
        assert_eq!(answer["metadata"]["resourceVersion"], rv, "re-apply changed the Service: {answer}");
    }
    assert_eq!(cluster.service("mep", "hello1"), stored);
    assert_eq!(cluster.counter("endpoints_webhook_moves_total"), 3);
    assert_eq!(cluster.counter("endpoints_conversions_total"), 0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cluster.slices_in("mep", "hello1"), slices, "nothing alternates");
    assert!(cluster.events_for("mep", "hello1", "SelectorMoved").is_empty());
    assert_eq!(cluster.counter("endpoints_failures_total"), 0, "{}", cluster.log());
}

/// Seed 000's Service on a headless Service: only the mp1 addresses, the only slices there
/// are (CoreDNS answers from every slice labelled with the Service's name).
#[test]
fn a_headless_seed_service_answers_with_the_secondary_addresses_only() {
    let cluster = Cluster::with_webhook(None);
    cluster.apply(hello_pod_in("mep", "hello-a", &["200.1.1.6"], true));
    cluster.apply(hello_pod_in("mep", "hello-b", &["200.1.1.7"], false));
    let headless = SEED_SERVICE.replace("spec:\n", "spec:\n  clusterIP: None\n");
    let (code, created) = Kubectl::new(&cluster.server).apply("mep", &headless);
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["clusterIP"], "None");
    assert_eq!(created["spec"].get("selector"), None);
    cluster.expect_endpoints_in("mep", "hello1", &[("200.1.1.6", true), ("200.1.1.7", false)]);
    let all = cluster.slices_in("mep", "hello1");
    assert!(
        all.iter()
            .all(|s| s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                == "endpoints-controller.kactus.io")
    );
}

/// The webhook down when the seed's Service is created: with failurePolicy Fail the write
/// would be refused (why the manifest says Ignore); with Ignore it is stored with its
/// selector, kube-controller-manager publishes eth0 endpoints, and once the controller runs it
/// moves the selector itself, removes those leftovers (and only those), and says so.
#[test]
fn a_seed_service_that_got_past_a_down_webhook_is_moved_afterwards_and_the_eth0_leftovers_go() {
    let mut cluster = Cluster::as_the_manifests_account(&[]);
    let dead = format!("https://127.0.0.1:{}/mutate-services", free_port());
    let kubectl = Kubectl::new(&cluster.server);
    cluster.apply(webhook_configuration(&dead, Some("Fail")));
    let (code, refused) = kubectl.apply("mep", SEED_SERVICE);
    assert_eq!((code, refused["reason"].as_str()), (500, Some("InternalError")), "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("failed calling webhook"), "{refused}");
    assert!(cluster.server.store().get("services", "mep", "hello1").is_none());

    cluster.apply(webhook_configuration(&dead, None));
    let (code, created) = kubectl.apply("mep", SEED_SERVICE);
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["selector"], json!({"app": "hello"}), "stored as written: the webhook was down");
    // What kube-controller-manager published meanwhile, and a slice of another Service.
    cluster.apply(kcm_slice("discovery.k8s.io/v1", "mep", "hello1", "x7k2p"));
    cluster.apply(kcm_endpoints("mep", "hello1"));
    cluster.apply(kcm_slice("discovery.k8s.io/v1", "mep", "other", "abcde"));
    cluster.apply(hello_pod_in("mep", "hello-a", &["200.1.1.6"], true));

    cluster.start_controller();
    cluster.expect_endpoints_in("mep", "hello1", &[("200.1.1.6", true)]);
    let gone = || {
        cluster
            .slices_in("mep", "hello1")
            .iter()
            .all(|s| s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] != KCM)
            && cluster.server.store().get("endpoints", "mep", "hello1").is_none()
    };
    assert!(wait_until(gone), "leftovers: {:?}\n{}", cluster.slices_in("mep", "hello1"), cluster.log());
    let stored = cluster.service("mep", "hello1");
    assert_eq!(stored["spec"].get("selector"), None);
    assert_eq!(stored["metadata"]["annotations"]["kactus.io/selector"], r#"{"app":"hello"}"#);
    assert!(
        cluster.server.store().get("endpointslices", "mep", "other-abcde").is_some(),
        "another Service's slice stays"
    );

    let moved = cluster.events_for("mep", "hello1", "SelectorMoved");
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0]["type"], "Warning");
    assert!(wait_until(|| !cluster.events_for("mep", "hello1", "PrimaryNetworkEndpointsRemoved").is_empty()));
    let removed = cluster.events_for("mep", "hello1", "PrimaryNetworkEndpointsRemoved");
    let message = removed[0]["message"].as_str().unwrap();
    assert!(message.contains("EndpointSlice hello1-x7k2p") && message.contains("Endpoints hello1"), "{message}");
    assert_eq!(cluster.counter("endpoints_conversions_total"), 1);
}

/// Kubernetes 1.20 (what seed 000's users ran, near enough: no discovery.k8s.io/v1): the
/// seed's Service gets the core/v1 Endpoints `kubectl get ep` shows (mirrored into the
/// v1beta1 slices kube-proxy reads by kube-controller-manager, so not labelled skip-mirror),
/// and kube-controller-manager's leftovers from a down webhook are replaced and removed.
#[test]
fn on_kubernetes_1_20_the_seed_service_gets_the_endpoints_kubectl_get_ep_shows() {
    let cluster = Cluster::with_the_manifests_webhook(20);
    cluster.apply(hello_pod_in("mep", "hello-9c56bdbb9-xbcp9", &["200.1.1.6"], true));
    let kubectl = Kubectl::new(&cluster.server);
    let (code, created) = kubectl.apply("mep", SEED_SERVICE);
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"].get("selector"), None);
    // hello1   200.1.1.6:80
    let want = vec![("200.1.1.6".to_string(), 80, true)];
    assert!(
        wait_until(|| cluster.core_endpoints("mep", "hello1") == want),
        "{:?}\n{}",
        cluster.core_endpoints("mep", "hello1"),
        cluster.log()
    );
    let endpoints = cluster.server.store().get("endpoints", "mep", "hello1").unwrap();
    assert_eq!(endpoints["metadata"]["labels"]["app.kubernetes.io/managed-by"], "kactus-endpoints");
    assert_eq!(endpoints["metadata"]["labels"].get("endpointslice.kubernetes.io/skip-mirror"), None);
    assert_eq!(endpoints["metadata"]["ownerReferences"][0]["name"], "hello1");
    assert_eq!(endpoints["subsets"][0]["addresses"][0]["targetRef"]["name"], "hello-9c56bdbb9-xbcp9");
    assert!(cluster.server.store().list("endpointslices", None).is_empty(), "no v1 slices on 1.20");
    // Follows the pods: another pod, not ready yet.
    cluster.apply(hello_pod_in("mep", "hello-b", &["200.1.1.7"], false));
    let want = vec![("200.1.1.6".to_string(), 80, true), ("200.1.1.7".to_string(), 80, false)];
    assert!(
        wait_until(|| cluster.core_endpoints("mep", "hello1") == want),
        "{:?}",
        cluster.core_endpoints("mep", "hello1")
    );
    let rv = cluster.service("mep", "hello1")["metadata"]["resourceVersion"].clone();
    assert_eq!(kubectl.apply("mep", SEED_SERVICE).1["metadata"]["resourceVersion"], rv);

    // A second seed-shaped Service that got past the webhook (written straight to the store),
    // with kube-controller-manager's 1.20 leftovers: v1beta1 slices and eth0 Endpoints.
    let mut past: Value = serde_saphyr::from_str(&SEED_SERVICE.replace("hello1", "hello2")).unwrap();
    past["metadata"]["namespace"] = json!("mep");
    cluster.apply(kcm_slice("discovery.k8s.io/v1beta1", "mep", "hello2", "q8w9z"));
    cluster.apply(kcm_endpoints("mep", "hello2"));
    cluster.apply(past);
    let want = vec![("200.1.1.6".to_string(), 80, true), ("200.1.1.7".to_string(), 80, false)];
    assert!(
        wait_until(|| cluster.core_endpoints("mep", "hello2") == want),
        "{:?}\n{}",
        cluster.core_endpoints("mep", "hello2"),
        cluster.log()
    );
    assert!(
        wait_until(|| cluster.server.store().get("endpointslices", "mep", "hello2-q8w9z").is_none()),
        "{}",
        cluster.log()
    );
    assert_eq!(cluster.service("mep", "hello2")["spec"].get("selector"), None);
    assert!(wait_until(|| !cluster.events_for("mep", "hello2", "PrimaryNetworkEndpointsRemoved").is_empty()));
    let message = cluster.events_for("mep", "hello2", "PrimaryNetworkEndpointsRemoved")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("EndpointSlice hello2-q8w9z") && message.contains("Endpoints hello2 (replaced)"),
        "{message}"
    );
    // The Service goes: so do its Endpoints.
    cluster.server.store().delete("services", "mep", "hello1").unwrap();
    assert!(wait_until(|| cluster.server.store().get("endpoints", "mep", "hello1").is_none()), "{}", cluster.log());
    assert_eq!(cluster.counter("endpoints_failures_total"), 0, "{}", cluster.log());
}

/// On 1.21+ Endpoints are written only on request, labelled skip-mirror (our slices exist).
#[test]
fn with_write_endpoints_newer_clusters_get_both_and_endpoints_skip_the_mirror() {
    let cluster = Cluster::start_with(&["--write-endpoints"]);
    cluster.apply(hello_pod("hello-a", &["200.1.1.2"], true));
    cluster.apply(hello_service("hello1"));
    cluster.expect_endpoints("hello1", &[("200.1.1.2", true)]);
    let want = vec![("200.1.1.2".to_string(), 80, true)];
    assert!(wait_until(|| cluster.core_endpoints("default", "hello1") == want), "{}", cluster.log());
    let endpoints = cluster.server.store().get("endpoints", "default", "hello1").unwrap();
    assert_eq!(endpoints["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"], "true");
    // Someone edits it: it is put back.
    cluster.server.store().merge_patch("endpoints", "default", "hello1", &json!({"subsets": null})).unwrap();
    assert!(wait_until(|| cluster.core_endpoints("default", "hello1") == want), "{}", cluster.log());
}

/// Bad inputs get one Warning Event each and nothing half-made: several networks, an
/// unreadable selector, a network no selected pod is on, ports no pod declares.
#[test]
fn bad_inputs_get_an_event_and_nothing_half_made() {
    let cluster = Cluster::with_webhook(None);
    cluster.apply(hello_pod_in("mep", "hello-a", &["200.1.1.6"], true));
    let kubectl = Kubectl::new(&cluster.server);
    let two = SEED_SERVICE.replace("mep/mp1", "mep/mp1,mep/mp2").replace("hello1", "two");
    assert_eq!(kubectl.apply("mep", &two).0, 201);
    assert!(
        wait_until(|| !cluster.events_for("mep", "two", "UnsupportedServiceShape").is_empty()),
        "{}",
        cluster.log()
    );
    let message =
        cluster.events_for("mep", "two", "UnsupportedServiceShape")[0]["message"].as_str().unwrap().to_string();
    assert!(message.contains("more than one network"), "{message}");
    assert_eq!(cluster.service("mep", "two")["spec"].get("selector"), None, "still moved: no eth0 endpoints either");

    let unknown = SEED_SERVICE.replace("mep/mp1", "mep/nope").replace("hello1", "unknown");
    assert_eq!(kubectl.apply("mep", &unknown).0, 201);
    assert!(
        wait_until(|| !cluster.events_for("mep", "unknown", "NoAddressesOnNetwork").is_empty()),
        "{}",
        cluster.log()
    );
    let message =
        cluster.events_for("mep", "unknown", "NoAddressesOnNetwork")[0]["message"].as_str().unwrap().to_string();
    assert!(message.contains("mep/nope") && message.contains("none of the pods"), "{message}");

    let ports = SEED_SERVICE.replace("targetPort: http", "targetPort: grpc").replace("hello1", "ports");
    assert_eq!(kubectl.apply("mep", &ports).0, 201);
    assert!(wait_until(|| !cluster.events_for("mep", "ports", "PortsUnresolved").is_empty()), "{}", cluster.log());
    let message = cluster.events_for("mep", "ports", "PortsUnresolved")[0]["message"].as_str().unwrap().to_string();
    assert!(message.contains("grpc") && message.contains("hello-a"), "{message}");

    // A Service in another namespace than its network selects the pods of its own namespace
    // only: hello-a (in mep, on mep/mp1, labelled app=hello) is not its endpoint, and its own
    // hello-o, not on mp1, has no address there: an Event says so.
    cluster.apply(hello_pod_in("other", "hello-o", &[], true));
    let elsewhere = SEED_SERVICE.replace("hello1", "elsewhere");
    assert_eq!(kubectl.apply("other", &elsewhere).0, 201);
    assert!(
        wait_until(|| !cluster.events_for("other", "elsewhere", "NoAddressesOnNetwork").is_empty()),
        "{}",
        cluster.log()
    );

    std::thread::sleep(Duration::from_millis(300));
    for name in ["two", "unknown", "ports"] {
        assert!(cluster.slices_in("mep", name).is_empty(), "{name}: {:?}", cluster.slices_in("mep", name));
    }
    assert!(cluster.slices_in("other", "elsewhere").is_empty(), "{:?}", cluster.slices_in("other", "elsewhere"));
    // One Event per problem, however often the Services are looked at again.
    cluster.apply(hello_pod_in("mep", "hello-b", &["200.1.1.7"], true));
    std::thread::sleep(Duration::from_millis(300));
    for (name, reason) in [("two", "UnsupportedServiceShape"), ("unknown", "NoAddressesOnNetwork")] {
        assert_eq!(cluster.events_for("mep", name, reason).len(), 1, "{name}");
    }
}

/// The apiserver believes the webhook only with a certificate its caBundle vouches for: with
/// another CA there, the call fails, failurePolicy Ignore stores the Service as written, and
/// the running controller moves the selector itself.
#[test]
fn a_webhook_the_ca_bundle_does_not_vouch_for_is_not_called_and_the_controller_moves_the_selector() {
    let cluster = Cluster::with_webhook(None);
    use base64::Engine;
    let other_ca = base64::engine::general_purpose::STANDARD.encode(cluster.server.ca_pem());
    let mut config = cluster.server.store().get("mutatingwebhookconfigurations", "", "kactus-endpoints").unwrap();
    config["webhooks"][0]["clientConfig"]["caBundle"] = json!(other_ca);
    cluster.apply(config);
    cluster.apply(hello_pod_in("mep", "hello-a", &["200.1.1.6"], true));
    let (code, created) = Kubectl::new(&cluster.server).apply("mep", SEED_SERVICE);
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["selector"], json!({"app": "hello"}), "not mutated: the webhook was not believed");
    assert_eq!(cluster.counter("endpoints_webhook_moves_total"), 0);
    assert!(wait_until(|| cluster.service("mep", "hello1")["spec"].get("selector").is_none()), "{}", cluster.log());
    cluster.expect_endpoints_in("mep", "hello1", &[("200.1.1.6", true)]);
    assert_eq!(cluster.events_for("mep", "hello1", "SelectorMoved").len(), 1);
}
