//! podagent as the pods' data plane, end to end: the real podagent binary against the test
//! apiserver, three pods set up by the real kactus on a bridge network with no node address
//! on it (`mp1`), a Service labelled for kactus and its endpoints in kactus's EndpointSlice.
//! Asserted from inside the pods: what a connection to the ClusterIP reaches, and the tables
//! and routes in the client's namespace.

mod common;
use common::podagent::*;
use common::*;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const VIP: &str = "10.96.0.10";

/// A TCP server on :8080 in a pod that answers each connection with `<name> <peer address>`.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(pod: &Path, name: &str) -> Server {
        let listener = kactus::netns::run_in(pod, || TcpListener::bind("0.0.0.0:8080")).unwrap().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, name) = (stop.clone(), name.to_string());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        let _ = conn.write_all(format!("{name} {}", peer.ip()).as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Server { stop, thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One TCP connection from the pod to the ClusterIP: what answered, or why nothing did.
fn call(pod: &Path) -> Result<String, ErrorKind> {
    let to = SocketAddr::new(VIP.parse().unwrap(), 80);
    kactus::netns::run_in(pod, move || {
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(1)).map_err(|e| e.kind())?;
        conn.set_read_timeout(Some(Duration::from_secs(1))).map_err(|e| e.kind())?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).map_err(|e| e.kind())?;
        Ok(answer)
    })
    .expect("enter the pod namespace")
}

/// A pod on mp1 with labels, set up by kactus; its index and its attested mp1 address.
fn mp1_pod(sb: &mut Sandbox, name: &str, app: &str) -> (usize, String) {
    let mut pod: Value =
        serde_json::from_str(&Sandbox::pod_yaml("default", name, &json!({"networks": r#"[{"name":"mp1"}]"#}))).unwrap();
    pod["metadata"]["labels"] = json!({"app": app});
    sb.apply(&pod.to_string());
    let p = start_pod(sb, name);
    let stored = sb.api().store().get("pods", "default", name).unwrap();
    let condition = stored["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "kactus.io/attachments").cloned())
        .unwrap_or_else(|| panic!("kactus attested no attachment of {name}: {stored}"));
    let entries: Value = serde_json::from_str(condition["message"].as_str().unwrap()).unwrap();
    let ip = entries[0]["ips"][0].as_str().unwrap().split('/').next().unwrap().to_string();
    (p, ip)
}

fn service_yaml() -> String {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "hello", "namespace": "default",
                        "labels": {"service.kubernetes.io/service-proxy-name": "kactus"},
                        "annotations": {"k8s.v1.cni.cncf.io/service-network": "mp1"}},
           "spec": {"clusterIP": VIP, "clusterIPs": [VIP],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                              {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 8053}]}})
    .to_string()
}

fn slice_yaml(endpoints: &[&str]) -> String {
    let endpoints: Vec<Value> =
        endpoints.iter().map(|a| json!({"addresses": [a], "conditions": {"ready": true}})).collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "hello-kactus", "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "hello",
                                   "endpointslice.kubernetes.io/managed-by": "endpoints-controller.kactus.io"}},
           "addressType": "IPv4", "endpoints": endpoints,
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 8053, "protocol": "UDP"}]})
    .to_string()
}

/// One UDP datagram from the pod to the ClusterIP's port 53 (nobody answers: the conntrack
/// entry is what counts).
fn send_udp(pod: &Path) {
    kactus::netns::run_in(pod, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"x", (VIP, 53)).unwrap();
    })
    .unwrap();
}

/// Denies every ingress to the servers on mp1.
fn deny_servers_yaml() -> String {
    json!({"apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
           "metadata": {"name": "deny-servers", "namespace": "default",
                        "annotations": {"k8s.v1.cni.cncf.io/policy-for": "mp1"}},
           "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"]}})
    .to_string()
}

fn has_table(pod: &Path, name: &str) -> bool {
    kactus::nft::Nft::open_in(pod).unwrap().exists(kactus::nft::Family::Inet, name).unwrap()
}

fn routes(ns: &Netns) -> String {
    ns.ip(&["-4", "route", "show", "proto", "107"]).trim().to_string()
}

struct World {
    sb: Sandbox,
    node: Node,
    client: PathBuf,
    client_ip: String,
    servers: Vec<String>,
    _running: Vec<Server>,
}

fn world() -> World {
    let mut sb = Sandbox::new();
    // No isGateway: the node has no address on mp1, so nothing but the pods' own routes
    // and the proxy reach the servers.
    let mp1 = json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "mp1-br",
        "ipam": {"type": "host-local", "subnet": "200.1.1.0/24", "dataDir": sb.ipam_dir()}});
    sb.apply(&Sandbox::nad_yaml("default", "mp1", &mp1));
    let (c, client_ip) = mp1_pod(&mut sb, "client", "client");
    let (s1, ip1) = mp1_pod(&mut sb, "server1", "server");
    let (s2, ip2) = mp1_pod(&mut sb, "server2", "server");
    let running = vec![Server::start(&sb.pods[s1].path, "server1"), Server::start(&sb.pods[s2].path, "server2")];
    sb.apply(&service_yaml());
    sb.apply(&slice_yaml(&[&ip1, &ip2]));
    let node = node_cni(&sb);
    let client = sb.pods[c].path.clone();
    World { sb, node, client, client_ip, servers: vec![ip1, ip2], _running: running }
}

/// Who answered `n` calls (each must succeed).
fn answered(client: &Path, n: usize) -> std::collections::BTreeSet<String> {
    (0..n).map(|_| call(client).expect("an answer through the ClusterIP")).collect()
}

#[test]
fn the_cluster_ip_reaches_ready_endpoints_from_the_clients_secondary_address_and_policies_apply() {
    let w = world();
    let agent = PodAgent::start(&w.sb, &w.node);
    let c = w.sb.pods.iter().position(|p| p.path == w.client).unwrap();

    // Both servers answer, and each sees the client's mp1 address (not eth0's).
    assert!(wait_until(|| call(&w.client).is_ok()), "the ClusterIP never answered: {:?}", call(&w.client));
    assert_eq!(
        answered(&w.client, 40),
        [format!("server1 {}", w.client_ip), format!("server2 {}", w.client_ip)].into_iter().collect()
    );
    let route = routes(&w.sb.pods[c]);
    assert!(route.starts_with(VIP) && route.ends_with(&format!("src {}", w.client_ip)), "{route}");

    // 2 -> 0 endpoints: refused at once, and the UDP flow's conntrack entry to its endpoint
    // is gone; -> 1: only that one answers.
    send_udp(&w.client);
    w.sb.apply(&slice_yaml(&[]));
    assert!(wait_until(|| call(&w.client) == Err(ErrorKind::ConnectionRefused)), "{:?}", call(&w.client));
    assert!(
        wait_until(|| agent.metric("podagent_dataplane_conntrack_flushed_total") == 1),
        "{}",
        agent.metric("podagent_dataplane_conntrack_flushed_total")
    );
    w.sb.apply(&slice_yaml(&[&w.servers[1]]));
    assert!(wait_until(|| call(&w.client).is_ok()));
    assert_eq!(answered(&w.client, 10), [format!("server2 {}", w.client_ip)].into_iter().collect());

    // A MultiNetworkPolicy isolating the servers (its one rule's peer is no CIDR: ignored,
    // and said so on each selected pod): the connection fails; deleted: it works.
    assert!(!has_table(&w.sb.pods[2].path, "kactus-policy"));
    let mut deny: Value = serde_json::from_str(&deny_servers_yaml()).unwrap();
    deny["spec"]["ingress"] = json!([{"from": [{"ipBlock": {"cidr": "not-a-cidr"}}]}]);
    w.sb.apply(&deny.to_string());
    assert!(wait_until(|| call(&w.client).is_err()), "the policy never applied");
    assert!(has_table(&w.sb.pods[2].path, "kactus-policy"));
    let ignored = || {
        w.sb.api()
            .store()
            .list("events", Some("default"))
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == "server2" && e["reason"] == "PolicyIgnored")
            .count()
    };
    assert!(wait_until(|| ignored() == 1), "no PolicyIgnored Event on server2");
    w.sb.api().store().delete("multi-networkpolicies", "default", "deny-servers").unwrap();
    assert!(wait_until(|| call(&w.client).is_ok()), "the policy never went");
    assert!(wait_until(|| !has_table(&w.sb.pods[2].path, "kactus-policy")));

    // podagent killed: the rules stay and keep working; restarted, it reconciles them (the
    // proxy table replaced in one transaction) and they work throughout.
    let applied = agent.metric("podagent_dataplane_tables_applied_total");
    assert!(applied >= 3, "{applied}");
    drop(agent);
    assert!(has_table(&w.client, "kactus-proxy"));
    assert_eq!(answered(&w.client, 5).len(), 1, "working with podagent down");
    let agent = PodAgent::start(&w.sb, &w.node);
    // Every pod on mp1 has the Service: the servers too.
    assert!(wait_until(|| agent.metric("podagent_dataplane_pods_programmed") == 3));
    assert_eq!(answered(&w.client, 5).len(), 1, "working after the restart");
    assert_eq!(agent.metric("podagent_dataplane_failures_total"), 0);

    // The Service deleted: the client's table and route go.
    w.sb.api().store().delete("services", "default", "hello").unwrap();
    assert!(wait_until(|| !has_table(&w.client, "kactus-proxy")), "the proxy table stayed");
    assert_eq!(routes(&w.sb.pods[c]), "");

    // A clean stop leaves the rules; `kactus uninstall` takes them out of every pod.
    w.sb.apply(&service_yaml());
    w.sb.apply(&deny_servers_yaml());
    assert!(wait_until(|| has_table(&w.client, "kactus-proxy") && has_table(&w.sb.pods[2].path, "kactus-policy")));
    assert_eq!(agent.terminate(), Some(0));
    assert!(has_table(&w.client, "kactus-proxy") && !routes(&w.sb.pods[c]).is_empty(), "left on SIGTERM");
    uninstall(&w.sb);
    for pod in &w.sb.pods {
        assert!(!has_table(&pod.path, "kactus-proxy") && !has_table(&pod.path, "kactus-policy"), "{}", pod.name);
        assert_eq!(routes(pod), "", "{}", pod.name);
    }
}

/// `kactus uninstall --once --force` on this node (its pods still have attachments).
fn uninstall(sb: &Sandbox) {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        uninstall: kactus::install::UninstallArgs,
    }
    let (bin, conf) = (sb.path("uninstall-bin"), sb.path("uninstall-net.d"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&conf).unwrap();
    let argv = [
        "kactus-uninstall".to_string(),
        format!("--cni-bin-dir={}", bin.display()),
        format!("--cni-conf-dir={}", conf.display()),
        format!("--cache-dir={}", sb.cache_dir().display()),
        "--once".into(),
        "--force".into(),
    ];
    let args = <Cli as clap::Parser>::try_parse_from(argv).unwrap().uninstall;
    kactus::install::uninstall(&args).unwrap();
}

#[test]
fn a_cluster_without_the_policy_crd_still_proxies() {
    let w = world();
    w.sb.api().uninstall_crd("multi-networkpolicies.k8s.cni.cncf.io");
    let agent = PodAgent::start(&w.sb, &w.node);
    assert!(wait_until(|| call(&w.client).is_ok()), "the ClusterIP never answered: {:?}", call(&w.client));
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert_eq!(log.matches("MultiNetworkPolicy CRD").count(), 1, "{log}");
}

/// A Service on a network none of the node's pods is on costs a pass that computes no pod;
/// a change of the Service they are on, the three pods on mp1.
#[test]
fn an_unrelated_service_change_computes_no_pod() {
    let w = world();
    let agent = PodAgent::start(&w.sb, &w.node);
    assert!(wait_until(|| call(&w.client).is_ok()), "the ClusterIP never answered: {:?}", call(&w.client));
    let (passes, computed) =
        (agent.metric("podagent_dataplane_passes_total"), agent.metric("podagent_dataplane_pods_computed_total"));
    let mut far: Value = serde_json::from_str(&service_yaml()).unwrap();
    far["metadata"]["name"] = json!("far");
    far["metadata"]["annotations"]["k8s.v1.cni.cncf.io/service-network"] = json!("mp9");
    far["spec"]["clusterIP"] = json!("10.96.0.99");
    far["spec"]["clusterIPs"] = json!(["10.96.0.99"]);
    w.sb.apply(&far.to_string());
    assert!(wait_until(|| agent.metric("podagent_dataplane_passes_total") > passes), "no pass");
    assert_eq!(agent.metric("podagent_dataplane_pods_computed_total"), computed);
    w.sb.apply(&slice_yaml(&[&w.servers[0]]));
    assert!(wait_until(|| agent.metric("podagent_dataplane_pods_computed_total") == computed + 3));
    assert_eq!(answered(&w.client, 5).len(), 1);
}

/// The MultiNetworkPolicy CRD installed after podagent started: podagent finds it (here
/// looking every second) and enforces a policy made then, without a restart.
#[test]
fn a_policy_crd_installed_after_podagent_started_is_enforced_without_a_restart() {
    let w = world();
    let crd = "multi-networkpolicies.k8s.cni.cncf.io";
    w.sb.api().uninstall_crd(crd);
    let mut flags = cache_lookup(&w.sb).to_vec();
    flags.push("--policy-crd-recheck-seconds=1".into());
    let agent = PodAgent::start_with(&w.sb, &w.node, &flags);
    assert!(wait_until(|| call(&w.client).is_ok()), "the ClusterIP never answered: {:?}", call(&w.client));
    w.sb.api().install_crd(crd);
    w.sb.apply(&deny_servers_yaml());
    assert!(wait_until(|| call(&w.client).is_err()), "the policy was never enforced");
    assert!(has_table(&w.sb.pods[2].path, "kactus-policy"));
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("MultiNetworkPolicies are served now"), "{log}");
    assert_eq!(agent.metric("podagent_dataplane_failures_total"), 0);
}

/// A device a policy governs that is no network device in the pod (as a DPDK or vhost-user
/// attachment's, here one added to kactus's record of server2) is told on the pod as a
/// Warning `PolicyNotEnforced`, once: it is looked for when the table is first programmed, not
/// again when the policy changes.
#[test]
fn a_governed_device_that_is_no_network_device_in_the_pod_is_told_once() {
    let w = world();
    let stored = w.sb.api().store().get("pods", "default", "server2").unwrap();
    let mut conditions = stored["status"]["conditions"].as_array().unwrap().clone();
    let attested = conditions.iter_mut().find(|c| c["type"] == "kactus.io/attachments").unwrap();
    let mut entries: Value = serde_json::from_str(attested["message"].as_str().unwrap()).unwrap();
    entries.as_array_mut().unwrap().push(json!({"name": "default/mp1", "interface": "vhu0", "ips": ["200.1.1.250"]}));
    attested["message"] = Value::String(entries.to_string());
    let patch = json!({"status": {"conditions": conditions}});
    w.sb.api().store().merge_patch("pods", "default", "server2", &patch).unwrap();
    let agent = PodAgent::start(&w.sb, &w.node);
    assert!(wait_until(|| call(&w.client).is_ok()), "the ClusterIP never answered: {:?}", call(&w.client));

    w.sb.apply(&deny_servers_yaml());
    let not_enforced = || {
        let events = w.sb.api().store().list("events", Some("default"));
        let on = |e: &&Value| e["reason"] == "PolicyNotEnforced";
        events
            .iter()
            .filter(on)
            .map(|e| e["involvedObject"]["name"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert!(wait_until(|| !not_enforced().is_empty()), "no PolicyNotEnforced Event");
    assert_eq!(not_enforced(), ["server2"]);
    let log = || std::fs::read_to_string(&agent.log).unwrap();
    assert_eq!(log().matches("device vhu0 on network default/mp1 is not a kernel network device").count(), 1);

    // The policy changed: both servers' tables replaced, vhu0 not looked for again.
    let applied = agent.metric("podagent_dataplane_tables_applied_total");
    let mut deny: Value = serde_json::from_str(&deny_servers_yaml()).unwrap();
    deny["spec"]["ingress"] = json!([{"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]);
    w.sb.apply(&deny.to_string());
    assert!(wait_until(|| agent.metric("podagent_dataplane_tables_applied_total") >= applied + 2));
    assert_eq!(log().matches("device vhu0 on network default/mp1 is not a kernel network device").count(), 1);
    assert_eq!(agent.metric("podagent_dataplane_failures_total"), 0);
}

/// `cargo test --test podagent_dataplane -- --ignored --nocapture endpoint_change_latency`:
/// an EndpointSlice change -> the client's proxy table changed (its nftables generation
/// moved), p50/p99 over 50 changes. Polled every millisecond in-process.
#[test]
#[ignore]
fn endpoint_change_latency() {
    let w = world();
    let agent = PodAgent::start(&w.sb, &w.node);
    assert!(wait_until(|| call(&w.client).is_ok()));
    let generation = || kactus::nft::Nft::open_in(&w.client).unwrap().generation().unwrap();
    let mut latencies = Vec::new();
    for i in 0..50 {
        std::thread::sleep(Duration::from_millis(150)); // the previous change is in
        let before = generation();
        let start = std::time::Instant::now();
        let endpoints: Vec<&str> = if i % 2 == 0 { vec![&w.servers[0]] } else { vec![&w.servers[0], &w.servers[1]] };
        w.sb.apply(&slice_yaml(&endpoints));
        while generation() == before {
            assert!(start.elapsed() < CONVERGE, "the change never reached the client");
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    eprintln!("EndpointSlice change -> client rule over {}: p50 {:?}, p99 {:?}", latencies.len(), pct(0.5), pct(0.99));
    assert_eq!(agent.metric("podagent_dataplane_failures_total"), 0);
}

/// Kubernetes 1.20 (the lead's cluster) serves no `discovery.k8s.io/v1`: the endpoints are
/// read from the Service's core/v1 Endpoints that kactus-endpoints writes there.
#[test]
fn on_kubernetes_1_20_the_endpoints_come_from_core_v1_endpoints() {
    let w = world();
    w.sb.api().emulate_kubernetes_minor(20);
    let endpoints = |ips: &[&str]| {
        let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        json!({"apiVersion": "v1", "kind": "Endpoints",
               "metadata": {"name": "hello", "namespace": "default",
                            // What kactus-endpoints labels the Endpoints it writes with.
                            "labels": {"app.kubernetes.io/managed-by": "kactus-endpoints"}},
               "subsets": [{"addresses": addresses, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]})
        .to_string()
    };
    w.sb.apply(&endpoints(&[&w.servers[0]]));
    let agent = PodAgent::start(&w.sb, &w.node);
    assert!(wait_until(|| call(&w.client).is_ok()), "the ClusterIP never answered: {:?}", call(&w.client));
    assert_eq!(answered(&w.client, 10), [format!("server1 {}", w.client_ip)].into_iter().collect());
    w.sb.apply(&endpoints(&[&w.servers[1]]));
    assert!(wait_until(|| call(&w.client).is_ok_and(|a| a.starts_with("server2"))));
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("read from core/v1 Endpoints"), "{log}");
}

/// A pod that loses its attachment on mp1 (kactus's record of it) loses the Service there:
/// its table and route go; the other pods keep theirs.
#[test]
fn a_pod_that_leaves_the_network_loses_its_table_and_route() {
    let w = world();
    let agent = PodAgent::start(&w.sb, &w.node);
    assert!(wait_until(|| call(&w.client).is_ok()), "the ClusterIP never answered: {:?}", call(&w.client));
    let c = w.sb.pods.iter().position(|p| p.path == w.client).unwrap();
    let patch = json!({"status": {"conditions": []}});
    w.sb.api().store().merge_patch("pods", "default", "client", &patch).unwrap();
    assert!(wait_until(|| !has_table(&w.client, "kactus-proxy")), "the proxy table stayed");
    assert_eq!(routes(&w.sb.pods[c]), "");
    assert!(has_table(&w.sb.pods[1].path, "kactus-proxy"), "server1 is still on mp1");
    assert!(wait_until(|| agent.metric("podagent_dataplane_pods_programmed") == 2));
}
