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
fn nft(ns: &Netns, args: &[&str]) -> String {
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

#[test]
fn the_proxy_table_reads_back_as_nft_sees_it() {
    if !have_nft() {
        return skip("the_proxy_table_reads_back_as_nft_sees_it", "no nft binary to read the table back");
    }
    let w = World::new();
    let table = service_proxy::table(&[
        port("a/web/tcp/http", VIP4, Protocol::Tcp, &EP4),
        port("a/web6/udp/dns", VIP6, Protocol::Udp, &EP6[..1]),
        port("a/none/tcp/x", "10.96.0.11", Protocol::Tcp, &[]),
    ]);
    w.nft().apply(&table).expect("apply");
    let text = nft(&w.pod, &["list", "table", "inet", service_proxy::TABLE]);
    println!("{text}");
    panic!();
}
