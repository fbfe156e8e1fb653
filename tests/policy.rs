//! MultiNetworkPolicy against the real kernel, as a truth table: five "pods" (network
//! namespaces) in three Kubernetes namespaces on one secondary network (a bridge in a node
//! namespace), each also on an "eth0" network of its own; every pod probes every other with
//! TCP and UDP on two ports, over IPv4 and IPv6 on the secondary network and over eth0. Each
//! pod's table is what `kactus::policy::compile` makes of the policies, brought up to date as
//! podagent would (`update::plan`, then `Nft::apply`, `refill_sets` or `delete`). The observed
//! matrix must equal the expected one, written here from NetworkPolicy's meaning, not from
//! the compiler.
//!
//! A probe is "allowed" when a TCP connection is accepted or a UDP datagram is echoed. Every
//! scenario expects some cells allowed and some blocked, so neither a dead listener nor a
//! missing table can pass one.

mod common;
use common::*;
use k8s_openapi::api::core::v1::Pod;
use kactus::nft::{Family, Nft, Table};
use kactus::policy::{compile, plan, Cluster, MultiNetworkPolicy, PodView, Update, TABLE};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The secondary network, `namespace/name`, as policies name it and kactus records it.
const NETWORK: &str = "lab/data";
/// The device every pod has on it.
const DEVICE: &str = "net1";
/// The ports every pod listens on, TCP and UDP.
const PORTS: [u16; 2] = [7001, 7002];

/// One pod of the grid: its Kubernetes namespace and name, its `app` label and the number of
/// its container port named `http` (web pods serve it on 7001, the others on 7002).
#[derive(Clone, Copy)]
struct Spec {
    ns: &'static str,
    name: &'static str,
    app: &'static str,
    http: u16,
}

const GRID: [Spec; 5] = [
    Spec { ns: "alpha", name: "web", app: "web", http: 7001 },
    Spec { ns: "alpha", name: "cli", app: "cli", http: 7002 },
    Spec { ns: "beta", name: "web", app: "web", http: 7001 },
    Spec { ns: "beta", name: "cli", app: "cli", http: 7002 },
    Spec { ns: "gamma", name: "cli", app: "cli", http: 7002 },
];
const ALPHA_WEB: usize = 0;
const ALPHA_CLI: usize = 1;
const BETA_WEB: usize = 2;
const BETA_CLI: usize = 3;
const GAMMA_CLI: usize = 4;

/// Namespace labels, as namespaceSelectors see them.
fn namespaces() -> BTreeMap<String, BTreeMap<String, String>> {
    [("alpha", "a"), ("beta", "b"), ("gamma", "c"), ("lab", "l")]
        .iter()
        .map(|(ns, team)| (ns.to_string(), BTreeMap::from([("team".to_string(), team.to_string())])))
        .collect()
}

fn v4(i: usize) -> String {
    format!("10.88.0.{}", 10 + i)
}

fn v6(i: usize) -> String {
    format!("fd88::{}", 10 + i)
}

fn eth0(i: usize) -> String {
    format!("10.99.0.{}", 10 + i)
}

struct PodNs {
    spec: Spec,
    netns: Netns,
    /// Its addresses on the secondary network, as kactus recorded them.
    addrs: Vec<String>,
    _servers: Servers,
}

/// The node (two bridges: `br0` the secondary network, `br1` eth0's) and the pods.
struct World {
    tag: String,
    node: Netns,
    pods: Vec<PodNs>,
    /// What each pod's table was last made (`None`: it has none).
    applied: Vec<Option<Table>>,
}

impl World {
    fn new() -> World {
        let tag = unique_tag();
        let node = Netns::new(&format!("{tag}-node"));
        for br in ["br0", "br1"] {
            node.ip(&["link", "add", br, "type", "bridge"]);
            node.ip(&["link", "set", br, "up"]);
        }
        let mut w = World { tag, node, pods: Vec::new(), applied: Vec::new() };
        for spec in GRID {
            w.add_pod(spec);
        }
        w
    }

    /// A pod on both networks, listening; returns its index.
    fn add_pod(&mut self, spec: Spec) -> usize {
        let i = self.pods.len();
        let netns = Netns::new(&format!("{}-p{i}", self.tag));
        for (dev, peer, br, addr) in
            [(DEVICE, format!("d{i}"), "br0", v4(i)), ("eth0", format!("e{i}"), "br1", eth0(i))]
        {
            netns.ip(&["link", "add", dev, "type", "veth", "peer", "name", &peer, "netns", &self.node.name]);
            netns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev]);
            netns.ip(&["link", "set", dev, "up"]);
            self.node.ip(&["link", "set", &peer, "master", br, "up"]);
        }
        netns.ip(&["addr", "add", &format!("{}/64", v6(i)), "dev", DEVICE, "nodad"]);
        let servers = Servers::start(&netns);
        self.pods.push(PodNs { spec, netns, addrs: vec![v4(i), v6(i)], _servers: servers });
        self.applied.push(None);
        i
    }

    /// The pod as the apiserver would serve it: its attachments in kactus's condition, and a
    /// network-status annotation that lies (claims gamma/cli's address, which no policy
    /// here allows from beta) to show it is never read.
    fn pod_object(&self, i: usize) -> Pod {
        let p = &self.pods[i];
        let attested = json!([{"name": NETWORK, "interface": DEVICE, "ips": p.addrs.iter().map(|a| format!("{a}/24")).collect::<Vec<_>>()}]);
        let lie = json!([{"name": NETWORK, "interface": DEVICE, "ips": [v4(GAMMA_CLI), v6(GAMMA_CLI)]}]);
        serde_json::from_value(json!({
            "metadata": {"namespace": p.spec.ns, "name": p.spec.name, "labels": {"app": p.spec.app},
                         "annotations": {"k8s.v1.cni.cncf.io/network-status": lie.to_string()}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": p.spec.http}]}]},
            "status": {"phase": "Running", "conditions": [
                {"type": kactus::policy::pod::ATTACHMENTS_CONDITION, "status": "True", "reason": "Attached", "message": attested.to_string()}]}
        }))
        .expect("a pod object")
    }

    /// Every pod's table brought to what `policies` mean, as podagent would; the updates made.
    fn enforce(&mut self, policies: &[MultiNetworkPolicy]) -> Vec<Update> {
        let views: Vec<PodView> = (0..self.pods.len()).map(|i| PodView::from_pod(&self.pod_object(i))).collect();
        let namespaces = namespaces();
        let cluster = Cluster { policies, pods: &views, namespaces: &namespaces };
        let mut updates = Vec::new();
        for (i, view) in views.iter().enumerate() {
            let compiled = compile(&cluster, view);
            assert!(compiled.problems.is_empty(), "{}/{}: {:?}", view.namespace, view.name, compiled.problems);
            let update = plan(self.applied[i].as_ref(), compiled.table.as_ref());
            let mut nft = Nft::open_in(&self.pods[i].netns.path).expect("nftables in the pod");
            match &update {
                Update::Unchanged => {}
                Update::Refill(sets) => nft.refill_sets(Family::Inet, TABLE, sets).expect("refill"),
                Update::Replace(table) => nft.apply(table).expect("apply"),
                Update::Delete => nft.delete(Family::Inet, TABLE).expect("delete"),
            }
            self.applied[i] = compiled.table;
            updates.push(update);
        }
        updates
    }

    /// Probes every pair both ways and compares with `expected`; panics listing every cell
    /// that differs.
    fn check(&self, scenario: &str, expected: impl Fn(&Cell) -> bool) {
        let mut cells = Vec::new();
        for from in 0..self.pods.len() {
            for to in (0..self.pods.len()).filter(|t| *t != from) {
                for proto in [Proto::Tcp, Proto::Udp] {
                    for via in [Via::Net4, Via::Net6] {
                        for port in PORTS {
                            cells.push(Cell { from, to, proto, port, via });
                        }
                    }
                    cells.push(Cell { from, to, proto, port: PORTS[0], via: Via::Eth0 });
                }
            }
        }
        let want: Vec<bool> = cells.iter().map(|c| c.via == Via::Eth0 || expected(c)).collect();
        let mut got = self.probe_all(&cells, WAIT);
        // A connection expected to pass that did not may only have been slow (a loaded
        // machine): ask again, patiently. One expected to be dropped that passed is wrong at once.
        for (k, cell) in cells.iter().enumerate() {
            for _ in 0..2 {
                if want[k] && !got[k] {
                    got[k] = self.probe(cell, PATIENT);
                }
            }
        }
        let wrong: Vec<String> = (0..cells.len())
            .filter(|k| want[*k] != got[*k])
            .map(|k| {
                format!("{}: expected {}, observed {}", self.describe(&cells[k]), verdict(want[k]), verdict(got[k]))
            })
            .collect();
        let allowed = want.iter().filter(|w| **w).count();
        assert!(allowed > 0 && allowed < want.len(), "{scenario}: a truth table needs both outcomes");
        assert!(wrong.is_empty(), "{scenario}: {} of {} cells differ:\n{}", wrong.len(), cells.len(), wrong.join("\n"));
    }

    fn describe(&self, c: &Cell) -> String {
        let name = |i: usize| format!("{}/{}", self.pods[i].spec.ns, self.pods[i].spec.name);
        format!("{} -> {} {:?}/{} over {:?}", name(c.from), name(c.to), c.proto, c.port, c.via)
    }

    fn probe_all(&self, cells: &[Cell], wait: Duration) -> Vec<bool> {
        std::thread::scope(|s| {
            let probes: Vec<_> = cells.iter().map(|c| s.spawn(move || self.probe(c, wait))).collect();
            probes.into_iter().map(|p| p.join().expect("probe thread")).collect()
        })
    }

    fn probe(&self, c: &Cell, wait: Duration) -> bool {
        let to = match c.via {
            Via::Net4 => self.pods[c.to].addrs[0].clone(),
            Via::Net6 => self.pods[c.to].addrs[1].clone(),
            Via::Eth0 => eth0(c.to),
        };
        let to = SocketAddr::new(to.parse().unwrap(), c.port);
        let proto = c.proto;
        let outcome = kactus::netns::run_in(&self.pods[c.from].netns.path, move || match proto {
            Proto::Tcp => TcpStream::connect_timeout(&to, wait).map(|_| ()),
            Proto::Udp => udp_echo(to, wait),
        })
        .expect("enter the pod namespace");
        match outcome {
            Ok(()) => true,
            // Dropped on the way in (no answer) or on the way out (the kernel says EPERM).
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::PermissionDenied) => {
                false
            }
            Err(e) => panic!("{}: {e} (a listener missing is a broken test, not a policy)", self.describe(c)),
        }
    }

    fn table_rules(&self, i: usize) -> Option<String> {
        have_nft().then(|| {
            let chain = format!("ingress/{DEVICE}");
            nft_cli(&self.pods[i].netns, &["-a", "list", "chain", "inet", TABLE, &chain])
        })
    }
}

/// How long a first probe waits: every expected drop costs this once (probes run in parallel).
const WAIT: Duration = Duration::from_millis(1000);
/// How long a second look at an expected pass waits.
const PATIENT: Duration = Duration::from_secs(5);

fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "blocked"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Net4,
    Net6,
    Eth0,
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    from: usize,
    to: usize,
    proto: Proto,
    port: u16,
    via: Via,
}

fn udp_echo(to: SocketAddr, wait: Duration) -> std::io::Result<()> {
    let any: IpAddr = if to.is_ipv6() { "::".parse().unwrap() } else { "0.0.0.0".parse().unwrap() };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0))?;
    socket.connect(to)?;
    socket.set_read_timeout(Some(wait))?;
    socket.send(b"ping")?;
    let mut buf = [0u8; 16];
    socket.recv(&mut buf).map(|_| ())
}

/// TCP and UDP listeners on both ports (all addresses, both families) in one pod; they stop
/// when dropped.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Servers {
    fn start(pod: &Netns) -> Servers {
        let (tcp, udp) = kactus::netns::run_in(&pod.path, || {
            let at = |port| SocketAddr::new("::".parse().unwrap(), port);
            let tcp: Vec<TcpListener> = PORTS.iter().map(|p| TcpListener::bind(at(*p)).expect("bind tcp")).collect();
            let udp: Vec<UdpSocket> = PORTS.iter().map(|p| UdpSocket::bind(at(*p)).expect("bind udp")).collect();
            (tcp, udp)
        })
        .expect("enter the pod namespace");
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for listener in tcp {
            let stop = stop.clone();
            listener.set_nonblocking(true).unwrap();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if listener.accept().is_err() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }));
        }
        for socket in udp {
            let stop = stop.clone();
            socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..n], peer);
                    }
                }
            }));
        }
        Servers { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn have_nft() -> bool {
    Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// `nft` in a namespace (a test tool only, never in the image); panics with its stderr.
fn nft_cli(ns: &Netns, args: &[&str]) -> String {
    let out = Command::new("ip").args(["netns", "exec", &ns.name, "nft"]).args(args).output().expect("run nft");
    assert!(out.status.success(), "nft {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A policy in `ns` for the grid's network.
fn policy(ns: &str, name: &str, spec: Json) -> MultiNetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
        "metadata": {"namespace": ns, "name": name, "annotations": {"k8s.v1.cni.cncf.io/policy-for": NETWORK}},
        "spec": spec,
    }))
    .expect("a policy")
}

fn ns_of(i: usize) -> &'static str {
    GRID.get(i).map_or("alpha", |s| s.ns)
}

#[test]
fn without_policies_everything_passes_and_no_pod_has_a_table() {
    let mut w = World::new();
    assert!(w.enforce(&[]).iter().all(|u| *u == Update::Unchanged));
    // The "expected" closure must leave something blocked; check the plain grid by hand.
    let cells: Vec<Cell> = (0..GRID.len())
        .flat_map(|from| (0..GRID.len()).filter(move |to| *to != from).map(move |to| (from, to)))
        .flat_map(|(from, to)| {
            [Proto::Tcp, Proto::Udp].into_iter().flat_map(move |proto| {
                [Via::Net4, Via::Net6].into_iter().map(move |via| Cell { from, to, proto, port: PORTS[1], via })
            })
        })
        .collect();
    let got = w.probe_all(&cells, PATIENT);
    assert!(got.iter().all(|g| *g), "without policy every pod reaches every other: {got:?}");
}

#[test]
fn deny_all_ingress_isolates_a_namespace_for_what_comes_in_only() {
    let mut w = World::new();
    w.enforce(&[policy("alpha", "deny", json!({"podSelector": {}, "policyTypes": ["Ingress"]}))]);
    w.check("deny-all ingress", |c| ns_of(c.to) != "alpha");
}

#[test]
fn deny_all_egress_isolates_a_namespace_for_what_goes_out_only() {
    let mut w = World::new();
    w.enforce(&[policy("alpha", "deny", json!({"podSelector": {}, "policyTypes": ["Egress"]}))]);
    w.check("deny-all egress", |c| ns_of(c.from) != "alpha");
}

#[test]
fn allow_from_a_namespace() {
    let mut w = World::new();
    w.enforce(&[policy(
        "alpha",
        "from-beta",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]}),
    )]);
    // Beta's pods' annotations claim gamma/cli's address: gamma/cli stays blocked.
    w.check("allow from namespace beta", |c| c.to != ALPHA_WEB || ns_of(c.from) == "beta");
}

#[test]
fn both_selectors_in_one_peer_are_anded_and_two_peers_are_ored() {
    let mut w = World::new();
    let web = json!({"matchLabels": {"app": "web"}});
    let beta = json!({"matchLabels": {"team": "b"}});
    let cli = json!({"matchLabels": {"app": "cli"}});
    w.enforce(&[policy(
        "alpha",
        "p",
        json!({"podSelector": web, "ingress": [{"from": [{"namespaceSelector": beta, "podSelector": cli}]}]}),
    )]);
    w.check("one peer: beta's cli pods", |c| c.to != ALPHA_WEB || c.from == BETA_CLI);
    w.enforce(&[policy(
        "alpha",
        "p",
        json!({"podSelector": web, "ingress": [{"from": [{"namespaceSelector": beta}, {"podSelector": cli}]}]}),
    )]);
    // podSelector alone: cli pods of the policy's namespace (alpha), not gamma's.
    w.check("two peers: beta's pods or alpha's cli pods", |c| {
        c.to != ALPHA_WEB || matches!(c.from, BETA_WEB | BETA_CLI | ALPHA_CLI)
    });
}

#[test]
fn an_ip_block_except_removes_addresses_from_its_own_peer_only() {
    let mut w = World::new();
    // 10.88.0.12/31 is beta/web and beta/cli; the second peer allows beta/cli by selector.
    w.enforce(&[policy(
        "alpha",
        "block",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.88.0.0/24", "except": ["10.88.0.12/31"]}},
            {"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {"matchLabels": {"app": "cli"}}}
        ]}]}),
    )]);
    w.check("ipBlock with except", |c| {
        c.to != ALPHA_WEB || c.from == BETA_CLI || (c.via == Via::Net4 && matches!(c.from, ALPHA_CLI | GAMMA_CLI))
    });
}

#[test]
fn two_policies_are_ored() {
    let mut w = World::new();
    let web = json!({"matchLabels": {"app": "web"}});
    w.enforce(&[
        policy("alpha", "beta-http", json!({"podSelector": web, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}], "ports": [{"port": 7001}]}]})),
        policy("alpha", "gamma-all", json!({"podSelector": web, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "c"}}}]}]})),
    ]);
    w.check("beta on TCP 7001 or gamma on anything", |c| {
        c.to != ALPHA_WEB
            || ns_of(c.from) == "gamma"
            || (ns_of(c.from) == "beta" && c.proto == Proto::Tcp && c.port == 7001)
    });
}

#[test]
fn named_ports_resolve_per_pod_for_ingress_and_per_peer_for_egress() {
    let mut w = World::new();
    w.enforce(&[
        // alpha/web's http is 7001.
        policy(
            "alpha",
            "web-http",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "http"}]}]}),
        ),
        // alpha/cli may reach each pod's own http: 7001 on web pods, 7002 on cli pods.
        policy(
            "alpha",
            "cli-out",
            json!({"podSelector": {"matchLabels": {"app": "cli"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": "http"}]}]}),
        ),
    ]);
    w.check("named ports", |c| {
        let into_web = c.to != ALPHA_WEB || (c.proto == Proto::Tcp && c.port == 7001);
        let out_of_cli = c.from != ALPHA_CLI || (c.proto == Proto::Tcp && c.port == GRID[c.to].http);
        into_web && out_of_cli
    });
}

#[test]
fn port_ranges_with_end_port_and_protocols() {
    let mut w = World::new();
    w.enforce(&[policy(
        "alpha",
        "ranges",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [
            {"port": 7000, "endPort": 7001},
            {"protocol": "UDP", "port": 7002, "endPort": 7010}
        ]}]}),
    )]);
    w.check("TCP 7000-7001 and UDP 7002-7010", |c| {
        c.to != ALPHA_WEB || (c.proto == Proto::Tcp && c.port == 7001) || (c.proto == Proto::Udp && c.port == 7002)
    });
}

#[test]
fn policy_types_default_to_ingress_plus_egress_when_there_are_egress_rules() {
    let mut w = World::new();
    // No policyTypes, egress rules and no ingress rules: isolated both ways.
    w.enforce(&[policy(
        "alpha",
        "cli",
        json!({"podSelector": {"matchLabels": {"app": "cli"}}, "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    )]);
    w.check("alpha/cli: nothing in, out only to alpha/web", |c| {
        c.to != ALPHA_CLI && (c.from != ALPHA_CLI || c.to == ALPHA_WEB)
    });
}

#[test]
fn a_peer_created_after_the_policy_is_a_set_refill() {
    let mut w = World::new();
    let policies = [policy(
        "alpha",
        "from-new",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "new"}}}]}]}),
    )];
    w.enforce(&policies);
    w.check("no peer yet: alpha/web isolated", |c| c.to != ALPHA_WEB);
    let rules = w.table_rules(ALPHA_WEB);
    let late = w.add_pod(Spec { ns: "alpha", name: "new", app: "new", http: 7002 });
    let updates = w.enforce(&policies);
    assert!(matches!(&updates[ALPHA_WEB], Update::Refill(sets) if sets.len() == 2), "{:?}", updates[ALPHA_WEB]);
    assert!(updates.iter().enumerate().all(|(i, u)| i == ALPHA_WEB || *u == Update::Unchanged), "{updates:?}");
    assert_eq!(w.table_rules(ALPHA_WEB), rules, "the rules, handles and all, are untouched");
    w.check("the new pod reaches alpha/web", |c| c.to != ALPHA_WEB || c.from == late);
}

#[test]
fn a_peer_changing_address_is_a_refill_and_its_old_address_loses_access() {
    let mut w = World::new();
    let policies = [policy(
        "alpha",
        "from-cli",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "cli"}}}]}]}),
    )];
    w.enforce(&policies);
    w.check("alpha/cli reaches alpha/web", |c| c.to != ALPHA_WEB || c.from == ALPHA_CLI);
    let rules = w.table_rules(ALPHA_WEB);
    let generation = Nft::open_in(&w.pods[ALPHA_WEB].netns.path).unwrap().generation().unwrap();

    // alpha/cli moves to .21 and gamma/cli takes its old address, .11 (as a second one).
    let cli = &w.pods[ALPHA_CLI].netns;
    cli.ip(&["addr", "del", &format!("{}/24", v4(ALPHA_CLI)), "dev", DEVICE]);
    cli.ip(&["addr", "add", "10.88.0.21/24", "dev", DEVICE]);
    w.pods[ALPHA_CLI].addrs[0] = "10.88.0.21".into();
    w.pods[GAMMA_CLI].netns.ip(&["addr", "add", &format!("{}/24", v4(ALPHA_CLI)), "dev", DEVICE]);
    let updates = w.enforce(&policies);
    assert!(matches!(&updates[ALPHA_WEB], Update::Refill(_)), "{:?}", updates[ALPHA_WEB]);
    let after = Nft::open_in(&w.pods[ALPHA_WEB].netns.path).unwrap().generation().unwrap();
    assert_eq!(after, generation.wrapping_add(1), "one transaction");
    assert_eq!(w.table_rules(ALPHA_WEB), rules, "the rules, handles and all, are untouched");
    w.check("alpha/cli at its new address", |c| c.to != ALPHA_WEB || c.from == ALPHA_CLI);
    // gamma/cli, speaking from alpha/cli's old address, is not let in.
    let old = SocketAddr::new(v4(ALPHA_CLI).parse().unwrap(), 0);
    let to = SocketAddr::new(v4(ALPHA_WEB).parse().unwrap(), PORTS[0]);
    let from_old = kactus::netns::run_in(&w.pods[GAMMA_CLI].netns.path, move || {
        let socket = UdpSocket::bind(old)?;
        socket.connect(to)?;
        socket.set_read_timeout(Some(WAIT))?;
        socket.send(b"ping")?;
        socket.recv(&mut [0u8; 16]).map(|_| ())
    })
    .unwrap();
    assert!(from_old.is_err(), "the old address was taken out of the set");
}

#[test]
fn removing_the_last_policy_deletes_the_table() {
    let mut w = World::new();
    w.enforce(&[policy("alpha", "deny", json!({"podSelector": {}}))]);
    w.check("deny-all ingress by default policyTypes", |c| ns_of(c.to) != "alpha");
    let updates = w.enforce(&[]);
    assert_eq!(updates[ALPHA_WEB], Update::Delete);
    let exists = Nft::open_in(&w.pods[ALPHA_WEB].netns.path).unwrap().exists(Family::Inet, TABLE).unwrap();
    assert!(!exists);
}

/// The in-pod Service proxy DNATs in `nat output` (priority dstnat, -100), before this
/// table's `output` chain (filter, 0) runs: a connection to a ClusterIP is judged by the
/// backend address and port it was translated to, as NetworkPolicy judges kube-proxy's.
#[test]
fn a_service_connection_is_filtered_as_the_backend_it_reaches() {
    use kactus::nft::service_proxy::{self, Protocol, ServicePort};
    let mut w = World::new();
    let vip: IpAddr = "10.96.0.10".parse().unwrap();
    let cli = &w.pods[ALPHA_CLI].netns;
    cli.ip(&["route", "add", "10.96.0.10/32", "dev", DEVICE, "src", &v4(ALPHA_CLI)]);
    let backend = SocketAddr::new(v4(ALPHA_WEB).parse().unwrap(), 7001);
    let proxy = service_proxy::table(&[ServicePort {
        id: "alpha/web/tcp/http".into(),
        cluster_ip: vip,
        protocol: Protocol::Tcp,
        port: 80,
        endpoints: vec![backend],
    }]);
    Nft::open_in(&cli.path).unwrap().apply(&proxy).expect("the proxy table");
    let path = cli.path.clone();
    let to_vip = move |wait| {
        let path = path.clone();
        let to = SocketAddr::new(vip, 80);
        kactus::netns::run_in(&path, move || TcpStream::connect_timeout(&to, wait).is_ok()).unwrap()
    };
    assert!(to_vip(PATIENT), "through the proxy without policy");

    let cli_out = |to: Json, port: u16| {
        policy(
            "alpha",
            "cli-out",
            json!({"podSelector": {"matchLabels": {"app": "cli"}}, "policyTypes": ["Egress"], "egress": [{"to": [to], "ports": [{"port": port}]}]}),
        )
    };
    w.enforce(&[cli_out(json!({"podSelector": {"matchLabels": {"app": "web"}}}), 7001)]);
    assert!(to_vip(PATIENT), "egress allowed to the backend pod and port: the ClusterIP works");
    w.enforce(&[cli_out(json!({"ipBlock": {"cidr": "10.96.0.10/32"}}), 80)]);
    assert!(!to_vip(WAIT), "egress allowed to the ClusterIP only: the backend is not allowed");
    assert!(Nft::open_in(&w.pods[ALPHA_CLI].netns.path).unwrap().exists(Family::Inet, service_proxy::TABLE).unwrap());
}

/// The table reads back with `nft` in the shape `kactus::policy::compile` documents.
#[test]
fn the_policy_table_reads_back_as_documented() {
    if !have_nft() {
        return skip("the_policy_table_reads_back_as_documented", "no nft binary to read the table back");
    }
    let mut w = World::new();
    w.enforce(&[policy(
        "alpha",
        "web",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"ipBlock": {"cidr": "10.88.0.0/24", "except": ["10.88.0.12/31"]}}], "ports": [{"port": 7001}, {"protocol": "UDP", "port": 7002, "endPort": 7003}]}],
               "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": "http"}]}]}),
    )]);
    let text = nft_cli(&w.pods[ALPHA_WEB].netns, &["list", "table", "inet", TABLE]);
    for expected in [
        "type filter hook input priority filter; policy accept;",
        "type filter hook output priority filter; policy accept;",
        "iifname \"net1\" goto ingress/net1",
        "oifname \"net1\" goto egress/net1",
        "ct state established,related accept",
        "icmpv6 type 133-137 accept",
        "tcp dport 7001 ip saddr @ingress/net1/p0/r0/a4 accept",
        "udp dport 7002-7003 ip6 saddr @ingress/net1/p0/r0/a6 accept",
        "ip daddr . meta l4proto . th dport @egress/net1/p0/r0/n4 accept",
        "elements = { 10.88.0.0-10.88.0.11, 10.88.0.14-10.88.0.255 }",
        "drop",
    ] {
        assert!(text.lines().any(|l| l.trim() == expected), "missing {expected:?} in\n{text}");
    }
    let other = Command::new("ip")
        .args(["netns", "exec", &w.pods[ALPHA_CLI].netns.name, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&other.stdout).trim().is_empty(), "a pod no policy selects has no table");
}
