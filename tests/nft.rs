//! nftables over netlink (`kactus::nft`) against the real kernel: tables applied in network
//! namespaces made here, read back with the `nft` CLI (a test tool only, never in the image)
//! and exercised with real TCP and UDP traffic between a "pod" and a "server" namespace.

mod common;
use common::*;
use kactus::nft::service_proxy::{self, Protocol, ServicePort};
use kactus::nft::*;
use serde_json::Value as Json;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const VIP4: &str = "10.96.0.10";
const VIP6: &str = "fd96::10";
/// The server's addresses: two endpoints per family on one device.
const EP4: [&str; 2] = ["10.77.0.2", "10.77.0.3"];
const EP6: [&str; 2] = ["fd77::2", "fd77::3"];
const PORT: u16 = 8080;

/// `nft` in a namespace; panics with its stderr on failure.
fn nft_cli(ns: &Netns, args: &[&str]) -> String {
    let out = Command::new("ip").args(["netns", "exec", &ns.name, "nft"]).args(args).output().expect("run nft");
    assert!(out.status.success(), "nft {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have_nft() -> bool {
    Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A "pod" (`c0`: 10.77.0.1, fd77::1) joined by a veth to a "server" (`s0`: both endpoints of
/// each family), with host routes for the ClusterIPs via `c0`, as podagent will make them.
struct World {
    pod: Netns,
    server: Netns,
}

impl World {
    fn new() -> World {
        let tag = unique_tag();
        let pod = Netns::new(&format!("{tag}-pod"));
        let server = Netns::new(&format!("{tag}-srv"));
        pod.ip(&["link", "add", "c0", "type", "veth", "peer", "name", "s0", "netns", &server.name]);
        pod.ip(&["addr", "add", "10.77.0.1/24", "dev", "c0"]);
        pod.ip(&["addr", "add", "fd77::1/64", "dev", "c0", "nodad"]);
        for (a4, a6) in EP4.iter().zip(EP6) {
            server.ip(&["addr", "add", &format!("{a4}/24"), "dev", "s0"]);
            server.ip(&["addr", "add", &format!("{a6}/64"), "dev", "s0", "nodad"]);
        }
        pod.ip(&["link", "set", "c0", "up"]);
        server.ip(&["link", "set", "s0", "up"]);
        pod.ip(&["route", "add", &format!("{VIP4}/32"), "dev", "c0", "src", "10.77.0.1"]);
        pod.ip(&["-6", "route", "add", &format!("{VIP6}/128"), "dev", "c0", "src", "fd77::1"]);
        World { pod, server }
    }

    fn nft(&self) -> Nft {
        Nft::open_in(&self.pod.path).expect("nftables socket in the pod")
    }
}

fn port(id: &str, vip: &str, protocol: Protocol, endpoints: &[&str]) -> ServicePort {
    ServicePort {
        id: id.into(),
        cluster_ip: vip.parse().unwrap(),
        protocol,
        port: 80,
        endpoints: endpoints.iter().map(|a| SocketAddr::new(a.parse().unwrap(), PORT)).collect(),
    }
}

/// TCP and UDP servers on every endpoint address of the server namespace; each answers with
/// the address it was reached at. Stopped on drop.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Servers {
    fn start(server: &Netns) -> Servers {
        let addrs: Vec<SocketAddr> =
            EP4.iter().chain(EP6.iter()).map(|a| SocketAddr::new(a.parse().unwrap(), PORT)).collect();
        let (tcp, udp) = kactus::netns::run_in(&server.path, move || {
            let tcp: Vec<TcpListener> = addrs.iter().map(|a| TcpListener::bind(a).expect("bind tcp")).collect();
            let udp: Vec<UdpSocket> = addrs.iter().map(|a| UdpSocket::bind(a).expect("bind udp")).collect();
            (tcp, udp)
        })
        .expect("enter the server namespace");
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for listener in tcp {
            let stop = stop.clone();
            listener.set_nonblocking(true).unwrap();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            let me = conn.local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.write_all(me.as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
        }
        for socket in udp {
            let stop = stop.clone();
            socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            threads.push(std::thread::spawn(move || {
                let me = socket.local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(me.as_bytes(), peer);
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

/// How long a client waits for an answer; an expected drop costs this much, a success far less.
const WAIT: Duration = Duration::from_secs(3);

/// A TCP connection from the pod to `vip`:80: the endpoint address that answered, or why not.
fn tcp(pod: &Path, vip: &str) -> Result<String, ErrorKind> {
    let to = SocketAddr::new(vip.parse().unwrap(), 80);
    kactus::netns::run_in(pod, move || {
        let mut conn = TcpStream::connect_timeout(&to, WAIT).map_err(|e| e.kind())?;
        conn.set_read_timeout(Some(WAIT)).map_err(|e| e.kind())?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).map_err(|e| e.kind())?;
        Ok(answer)
    })
    .expect("enter the pod namespace")
}

/// A UDP exchange from the pod with `vip`:80, as [`tcp`].
fn udp(pod: &Path, vip: &str) -> Result<String, ErrorKind> {
    let to = SocketAddr::new(vip.parse().unwrap(), 80);
    kactus::netns::run_in(pod, move || {
        let any: IpAddr = if to.is_ipv6() { "::".parse().unwrap() } else { "0.0.0.0".parse().unwrap() };
        let socket = UdpSocket::bind(SocketAddr::new(any, 0)).map_err(|e| e.kind())?;
        socket.connect(to).map_err(|e| e.kind())?;
        socket.set_read_timeout(Some(WAIT)).map_err(|e| e.kind())?;
        socket.send(b"hello").map_err(|e| e.kind())?;
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).map_err(|e| e.kind())?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .expect("enter the pod namespace")
}

/// The endpoints that answered `n` connections.
fn answers(n: usize, mut call: impl FnMut() -> Result<String, ErrorKind>) -> std::collections::BTreeSet<String> {
    (0..n).map(|_| call().expect("an answer through the ClusterIP")).collect()
}

fn set<T: std::fmt::Display>(items: &[T]) -> std::collections::BTreeSet<String> {
    items.iter().map(|i| i.to_string()).collect()
}

#[test]
fn the_proxy_table_reads_back_as_nft_sees_it() {
    if !have_nft() {
        return skip("the_proxy_table_reads_back_as_nft_sees_it", "no nft binary to read the table back");
    }
    let w = World::new();
    let table = service_proxy::table(&[
        port("a/web/tcp/http", VIP4, Protocol::Tcp, &EP4),
        port("a/web6/udp/dns", VIP6, Protocol::Udp, &EP6[..1]),
        port("a/none/sctp/x", "10.96.0.11", Protocol::Sctp, &[]),
    ]);
    w.nft().apply(&table).expect("apply");
    let text = nft_cli(&w.pod, &["list", "table", "inet", service_proxy::TABLE]);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for expected in [
        "type nat hook output priority -100; policy accept;",
        "ip daddr . meta l4proto . th dport vmap @service-ips-4",
        "ip6 daddr . meta l4proto . th dport vmap @service-ips-6",
        "type filter hook output priority -110; policy accept;",
        "ct state new ip daddr . meta l4proto . th dport @no-endpoints-4 reject",
        "ct state new ip6 daddr . meta l4proto . th dport @no-endpoints-6 reject",
        "type ipv4_addr . inet_proto . inet_service : verdict",
        "elements = { 10.96.0.10 . tcp . 80 : goto svc/a/web/tcp/http }",
        "elements = { fd96::10 . udp . 80 : goto svc/a/web6/udp/dns }",
        "elements = { 10.96.0.11 . sctp . 80 }",
        "numgen random mod 2 vmap @svc/a/web/tcp/http/endpoints",
        "elements = { 0x00000000 : goto svc/a/web/tcp/http/0, 0x00000001 : goto svc/a/web/tcp/http/1 }",
        "dnat ip to 10.77.0.2:8080",
        "dnat ip to 10.77.0.3:8080",
        "goto svc/a/web6/udp/dns/0",
        "dnat ip6 to [fd77::2]:8080",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
    }
    let json: Json =
        serde_json::from_str(&nft_cli(&w.pod, &["-j", "list", "table", "inet", service_proxy::TABLE])).unwrap();
    let mut chains: Vec<String> = json["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("chain"))
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    chains.sort();
    assert_eq!(
        chains,
        [
            "filter-output",
            "nat-output",
            "svc/a/web/tcp/http",
            "svc/a/web/tcp/http/0",
            "svc/a/web/tcp/http/1",
            "svc/a/web6/udp/dns",
            "svc/a/web6/udp/dns/0"
        ]
    );
}

#[test]
fn tcp_and_udp_reach_a_cluster_ip_through_one_or_two_endpoints() {
    let w = World::new();
    let _servers = Servers::start(&w.server);
    let mut nft = w.nft();
    let services = |eps4: &[&str], eps6: &[&str]| {
        service_proxy::table(&[
            port("a/web/tcp/http", VIP4, Protocol::Tcp, eps4),
            port("a/web/udp/http", VIP4, Protocol::Udp, eps4),
            port("a/web6/tcp/http", VIP6, Protocol::Tcp, eps6),
            port("a/web6/udp/http", VIP6, Protocol::Udp, eps6),
        ])
    };
    nft.apply(&services(&EP4[..1], &EP6[..1])).expect("apply one endpoint each");
    assert_eq!(answers(5, || tcp(&w.pod.path, VIP4)), set(&EP4[..1]));
    assert_eq!(answers(5, || udp(&w.pod.path, VIP4)), set(&EP4[..1]));
    assert_eq!(answers(5, || tcp(&w.pod.path, VIP6)), set(&EP6[..1]));
    assert_eq!(answers(5, || udp(&w.pod.path, VIP6)), set(&EP6[..1]));

    // Two endpoints: 40 connections all landing on one has a chance of 2^-39.
    nft.apply(&services(&EP4, &EP6)).expect("apply two endpoints each");
    assert_eq!(answers(40, || tcp(&w.pod.path, VIP4)), set(&EP4));
    assert_eq!(answers(40, || udp(&w.pod.path, VIP4)), set(&EP4));
    assert_eq!(answers(40, || tcp(&w.pod.path, VIP6)), set(&EP6));
    assert_eq!(answers(40, || udp(&w.pod.path, VIP6)), set(&EP6));
}

#[test]
fn a_cluster_ip_without_endpoints_is_refused_at_once() {
    let w = World::new();
    let _servers = Servers::start(&w.server);
    let table = service_proxy::table(&[
        port("a/web/tcp/http", VIP4, Protocol::Tcp, &[]),
        port("a/web/udp/http", VIP4, Protocol::Udp, &[]),
        port("a/web6/tcp/http", VIP6, Protocol::Tcp, &[]),
        port("a/web6/udp/http", VIP6, Protocol::Udp, &[]),
    ]);
    w.nft().apply(&table).expect("apply");
    for vip in [VIP4, VIP6] {
        assert_eq!(tcp(&w.pod.path, vip), Err(ErrorKind::ConnectionRefused), "tcp to {vip}");
        // The reject drops the pod's own datagram in its output path: the send fails at once
        // (EPERM), and the ICMP error would fail the next call on the socket.
        let got = udp(&w.pod.path, vip);
        assert!(
            matches!(got, Err(ErrorKind::PermissionDenied | ErrorKind::ConnectionRefused)),
            "udp to {vip}: {got:?}"
        );
    }
}

#[test]
fn a_change_is_one_transaction_and_connections_never_miss_the_table() {
    let w = World::new();
    let _servers = Servers::start(&w.server);
    let mut nft = w.nft();
    let tables = [
        service_proxy::table(&[port("a/web/tcp/http", VIP4, Protocol::Tcp, &EP4[..1])]),
        service_proxy::table(&[port("a/web/tcp/http", VIP4, Protocol::Tcp, &EP4[1..])]),
    ];
    nft.apply(&tables[0]).expect("first apply");
    // Updated in place: the base chain is the same kernel object (same handle) after a change.
    let handle = |nft_listing: String| nft_listing.lines().find(|l| l.contains("chain nat-output")).map(str::to_string);
    let before = have_nft().then(|| handle(nft_cli(&w.pod, &["-a", "list", "table", "inet", service_proxy::TABLE])));
    nft.apply(&tables[1]).expect("update");
    let after = have_nft().then(|| handle(nft_cli(&w.pod, &["-a", "list", "table", "inet", service_proxy::TABLE])));
    assert_eq!(after, before, "nat-output kept, not made anew");
    // The kernel counts one generation per committed transaction: a replace that went out
    // as a delete and an add would count two.
    for table in tables.iter().cycle().take(10) {
        let before = nft.generation().expect("generation");
        nft.apply(table).expect("replace");
        assert_eq!(nft.generation().expect("generation"), before.wrapping_add(1), "one replace, one transaction");
    }
    // Connections while the table is replaced over and over: without the table a SYN to the
    // ClusterIP would leave for a VIP nobody answers. The client runs inside the pod's
    // namespace on one thread; replaces go on until it has made 500 connections.
    const CONNECTIONS: usize = 500;
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = {
        let (made, pod) = (made.clone(), w.pod.path.clone());
        let to = SocketAddr::new(VIP4.parse().unwrap(), 80);
        std::thread::spawn(move || {
            kactus::netns::run_in(&pod, move || {
                let mut failed = Vec::new();
                for _ in 0..CONNECTIONS {
                    let outcome = TcpStream::connect_timeout(&to, WAIT).and_then(|mut c| {
                        c.set_read_timeout(Some(WAIT))?;
                        let mut answer = String::new();
                        c.read_to_string(&mut answer).map(|_| answer)
                    });
                    made.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = outcome {
                        // One is enough, and more would each wait out the timeout.
                        failed.push(e.kind());
                        made.store(CONNECTIONS, Ordering::Relaxed);
                        break;
                    }
                }
                failed
            })
            .expect("enter the pod namespace")
        })
    };
    let mut replaces = 0;
    for table in tables.iter().cycle() {
        if made.load(Ordering::Relaxed) >= CONNECTIONS {
            break;
        }
        nft.apply(table).expect("replace under traffic");
        replaces += 1;
    }
    let failed = client.join().expect("client thread");
    assert!(failed.is_empty(), "a connection failed during {replaces} replaces: {failed:?}");
}

#[test]
fn a_refused_transaction_changes_nothing_and_says_which_message_failed() {
    let w = World::new();
    let _servers = Servers::start(&w.server);
    let mut nft = w.nft();
    let good = service_proxy::table(&[port("a/web/tcp/http", VIP4, Protocol::Tcp, &EP4[..1])]);
    nft.apply(&good).expect("apply");
    let listed = || have_nft().then(|| nft_cli(&w.pod, &["-a", "list", "table", "inet", service_proxy::TABLE]));
    let (before, generation) = (listed(), nft.generation().unwrap());

    let mut bad = service_proxy::table(&[port("a/web/tcp/http", VIP4, Protocol::Tcp, &EP4)]);
    let nat = bad.chains.iter_mut().find(|c| c.name == "nat-output").unwrap();
    nat.rules.push(Rule(vec![Stmt::Verdict(Verdict::Jump("missing".into()))]));
    let e = nft.apply(&bad).expect_err("the kernel refuses a jump to a missing chain");
    assert!(
        matches!(&e, NftError::Refused { what, errno, .. } if what == "add rule 2 to chain nat-output" && *errno == libc::ENOENT),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains("ENOENT") && text.contains("nothing was changed"), "{text}");
    assert_eq!(nft.generation().unwrap(), generation, "nothing committed");
    assert_eq!(listed(), before, "the old table, handles and all");
    assert_eq!(answers(5, || tcp(&w.pod.path, VIP4)), set(&EP4[..1]), "the old rules still serve");

    // What the model can tell is wrong never reaches the kernel.
    let mut invalid = good.clone();
    invalid.chains[0].rules.push(Rule(vec![Stmt::Is(Key::IifName, Value::Port(80))]));
    assert!(matches!(nft.apply(&invalid), Err(NftError::Invalid { .. })));
    assert_eq!(nft.generation().unwrap(), generation);
}

#[test]
fn a_set_whose_definition_changed_is_applied_by_replacing_the_table_whole() {
    let w = World::new();
    let mut nft = w.nft();
    let with = |field, value: &str| {
        let mut t = Table::new(Family::Inet, POLICY_TABLE);
        t.sets = vec![Set::new("peers", vec![field]).with(vec![Element::of(Value::Addr(value.parse().unwrap()))])];
        t
    };
    nft.apply(&with(Field::Ipv4Addr, "10.0.0.1")).expect("apply");
    let generation = nft.generation().unwrap();
    nft.apply(&with(Field::Ipv6Addr, "fd00::1")).expect("apply with the set's type changed");
    assert_eq!(nft.generation().unwrap(), generation.wrapping_add(1), "the refused update committed nothing");
    if have_nft() {
        let text = nft_cli(&w.pod, &["list", "set", "inet", POLICY_TABLE, "peers"]);
        assert!(text.contains("type ipv6_addr") && text.contains("fd00::1"), "{text}");
    }
}

#[test]
fn a_table_is_found_deleted_and_deleting_none_is_no_error() {
    let w = World::new();
    let mut nft = w.nft();
    assert!(!nft.exists(Family::Inet, service_proxy::TABLE).unwrap());
    nft.apply(&service_proxy::table(&[])).expect("apply");
    assert!(nft.exists(Family::Inet, service_proxy::TABLE).unwrap());
    assert!(!nft.exists(Family::Ip, service_proxy::TABLE).unwrap(), "another family's table of that name");
    nft.delete(Family::Inet, service_proxy::TABLE).expect("delete");
    assert!(!nft.exists(Family::Inet, service_proxy::TABLE).unwrap());
    nft.delete(Family::Inet, service_proxy::TABLE).expect("delete what is not there");
    match nft.refill_sets(Family::Inet, service_proxy::TABLE, &[Set::new("peers", vec![Field::Ipv4Addr])]) {
        Err(NftError::Refused { what, errno, .. }) => {
            assert_eq!((what.as_str(), errno), ("flush set peers", libc::ENOENT));
        }
        other => panic!("expected ENOENT for a set of a missing table: {other:?}"),
    }
}

/// MultiNetworkPolicy's shape, ingress on the server's `s0`: established traffic and ICMPv6
/// neighbour discovery pass, then TCP/UDP from the peers' addresses to the allowed ports, then
/// drop. The pod's 10.77.0.1 starts as an `ipBlock` exception.
fn policy(peers4: Vec<Element>, ports: Vec<Element>) -> Table {
    let mut t = Table::new(Family::Inet, POLICY_TABLE);
    t.sets = vec![
        Set::new("devices", vec![Field::IfName]).with(vec![Element::of(Value::IfName("s0".into()))]),
        Set::intervals("peers-4", Field::Ipv4Addr).with(peers4),
        Set::intervals("peers-6", Field::Ipv6Addr).with(vec![Element::cidr("fd77::/64".parse().unwrap())]),
        Set::intervals("ports", Field::InetService).with(ports),
    ];
    let hook = |point| Hook { kind: ChainKind::Filter, point, priority: priority::FILTER, policy: Policy::Accept };
    let accept = Stmt::Verdict(Verdict::Accept);
    let from_peers = |proto, peers: &str, key| {
        Rule(vec![
            Stmt::Is(Key::L4Proto, Value::Proto(proto)),
            Stmt::In(vec![key], peers.into()),
            Stmt::In(vec![Key::Dport], "ports".into()),
            Stmt::Verdict(Verdict::Accept),
        ])
    };
    t.chains = vec![
        Chain::base(
            "input",
            hook(HookPoint::Input),
            vec![Rule(vec![
                Stmt::In(vec![Key::IifName], "devices".into()),
                Stmt::Verdict(Verdict::Jump("ingress".into())),
            ])],
        ),
        Chain::regular(
            "ingress",
            vec![
                Rule(vec![Stmt::CtState(vec![CtState::Established, CtState::Related]), accept.clone()]),
                Rule(vec![Stmt::Between(Key::Icmpv6Type, Value::Icmpv6Type(133), Value::Icmpv6Type(137)), accept]),
                from_peers(proto::TCP, "peers-4", Key::Ip4Saddr),
                from_peers(proto::UDP, "peers-4", Key::Ip4Saddr),
                from_peers(proto::TCP, "peers-6", Key::Ip6Saddr),
                Rule(vec![Stmt::Counter, Stmt::Verdict(Verdict::Drop)]),
            ],
        ),
    ];
    t
}

/// A direct connection from the pod to the server's first address of a family.
fn direct(w: &World, v6: bool, udp_too: bool) -> Vec<Result<String, ErrorKind>> {
    let to = if v6 { EP6[0] } else { EP4[0] };
    let mut out = vec![direct_tcp(&w.pod.path, to)];
    if udp_too {
        out.push(direct_udp(&w.pod.path, to));
    }
    out
}

fn direct_tcp(pod: &Path, to: &str) -> Result<String, ErrorKind> {
    let to = SocketAddr::new(to.parse().unwrap(), PORT);
    kactus::netns::run_in(pod, move || {
        let mut conn = TcpStream::connect_timeout(&to, WAIT).map_err(|e| e.kind())?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).map_err(|e| e.kind())?;
        Ok(answer)
    })
    .expect("enter the pod namespace")
}

fn direct_udp(pod: &Path, to: &str) -> Result<String, ErrorKind> {
    let to = SocketAddr::new(to.parse().unwrap(), PORT);
    kactus::netns::run_in(pod, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.kind())?;
        socket.connect(to).map_err(|e| e.kind())?;
        socket.set_read_timeout(Some(WAIT)).map_err(|e| e.kind())?;
        socket.send(b"hello").map_err(|e| e.kind())?;
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).map_err(|e| e.kind())?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .expect("enter the pod namespace")
}

fn dropped(r: &Result<String, ErrorKind>) -> bool {
    matches!(r, Err(ErrorKind::TimedOut | ErrorKind::WouldBlock))
}

#[test]
fn a_policy_table_drops_and_accepts_and_its_sets_change_without_touching_rules() {
    let w = World::new();
    let _servers = Servers::start(&w.server);
    let mut nft = Nft::open_in(&w.server.path).expect("nftables socket in the server");
    let except_pod = ranges::block("10.77.0.0/24".parse().unwrap(), &["10.77.0.1/32".parse().unwrap()]);
    let ports = vec![Element::range(Value::Port(8000), Value::Port(8100))];
    nft.apply(&policy(except_pod, ports.clone())).expect("apply");

    let v4 = direct(&w, false, true);
    assert!(v4.iter().all(dropped), "the pod is an ipBlock exception: {v4:?}");
    // IPv6 needs neighbour discovery through the policy before the first SYN can leave.
    assert_eq!(direct(&w, true, false), vec![Ok(EP6[0].to_string())]);

    let handles = || have_nft().then(|| nft_cli(&w.server, &["-a", "list", "chain", "inet", POLICY_TABLE, "ingress"]));
    let (rules_before, generation) = (handles(), nft.generation().unwrap());
    let whole = Set::intervals("peers-4", Field::Ipv4Addr).with(vec![Element::cidr("10.77.0.0/24".parse().unwrap())]);
    nft.refill_sets(Family::Inet, POLICY_TABLE, &[whole]).expect("refill peers");
    assert_eq!(nft.generation().unwrap(), generation.wrapping_add(1), "one transaction");
    assert_eq!(handles(), rules_before, "the same rules, handles and all");
    assert_eq!(direct(&w, false, true), vec![Ok(EP4[0].to_string()), Ok(EP4[0].to_string())]);

    let elsewhere =
        Set::intervals("ports", Field::InetService).with(vec![Element::range(Value::Port(9000), Value::Port(9100))]);
    nft.refill_sets(Family::Inet, POLICY_TABLE, &[elsewhere]).expect("refill ports");
    let v4 = direct(&w, false, true);
    assert!(v4.iter().all(dropped), "port 8080 is no longer allowed: {v4:?}");

    if have_nft() {
        let text = nft_cli(&w.server, &["list", "table", "inet", POLICY_TABLE]);
        for expected in [
            "iifname @devices jump ingress",
            "ct state established,related accept",
            "icmpv6 type 133-137 accept",
            "ip saddr @peers-4 tcp dport @ports accept",
            "ip saddr @peers-4 udp dport @ports accept",
            "ip6 saddr @peers-6 tcp dport @ports accept",
            "elements = { 10.77.0.0/24 }",
            "elements = { 9000-9100 }",
            "elements = { \"s0\" }",
        ] {
            assert!(text.lines().any(|l| l.trim() == expected), "missing {expected:?} in\n{text}");
        }
    }
}

#[test]
fn a_large_table_goes_in_one_transaction() {
    let w = World::new();
    let mut nft = w.nft();
    let addr = |i: u32| Value::Addr(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
    let mut t = Table::new(Family::Inet, POLICY_TABLE);
    t.sets = vec![
        Set::new("plain", vec![Field::Ipv4Addr]).with((0..20_000).map(|i| Element::of(addr(i))).collect()),
        // Every other address: 10,000 ranges, none merged, 20,000 kernel elements.
        Set::intervals("ranges", Field::Ipv4Addr).with((0..10_000).map(|i| Element::of(addr(2 * i))).collect()),
    ];
    let generation = nft.generation().unwrap();
    let started = std::time::Instant::now();
    nft.apply(&t).expect("apply 40,000 elements");
    eprintln!("apply of 2 sets, 30,000 elements: {:?}", started.elapsed());
    assert_eq!(nft.generation().unwrap(), generation.wrapping_add(1));
    if have_nft() {
        for (set, n) in [("plain", 20_000), ("ranges", 10_000)] {
            let json: Json =
                serde_json::from_str(&nft_cli(&w.pod, &["-j", "list", "set", "inet", POLICY_TABLE, set])).unwrap();
            let elems = json["nftables"][1]["set"]["elem"].as_array().map_or(0, Vec::len);
            assert_eq!(elems, n, "elements of {set}");
        }
    }
}
