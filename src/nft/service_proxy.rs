//! The shape of the in-pod Service proxy's table (kube-proxy's nftables mode, in a pod):
//!
//! ```text
//! table inet kactus-proxy
//!   chain nat-output     nat hook output priority dstnat
//!     ip daddr . meta l4proto . th dport vmap @service-ips-4      (ip6: @service-ips-6)
//!   chain filter-output  filter hook output priority dstnat-10
//!     ct state new ip daddr . meta l4proto . th dport @no-endpoints-4 reject   (ip6 alike)
//!   chain svc/<id>       numgen random mod N vmap @svc/<id>/endpoints   (one endpoint: goto it)
//!   chain svc/<id>/<k>   dnat to <endpoint address>:<port>
//! ```
//!
//! A ClusterIP with ready endpoints is in `service-ips-*`, one without in `no-endpoints-*`:
//! a client gets "connection refused" at once rather than packets leaving for a VIP nobody
//! answers. The reject runs before NAT (`dstnat-10`), so it sees the ClusterIP.

use super::table::{priority, proto, Chain, ChainKind, CtState, Element, Family, Field, Hook, HookPoint, Key, Policy};
use super::table::{Rule, Set, Stmt, Table, Value};
use super::Verdict;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

/// The table kactus owns in each pod for Services.
pub const TABLE: &str = "kactus-proxy";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn number(self) -> u8 {
        match self {
            Protocol::Tcp => proto::TCP,
            Protocol::Udp => proto::UDP,
            Protocol::Sctp => proto::SCTP,
        }
    }
}

/// One port of one Service, as the proxy serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Unique in the table, made of `[A-Za-z0-9-_./]` (e.g. `ns/svc/tcp/http`): names its chains.
    pub id: String,
    pub cluster_ip: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
    /// The ready endpoints; the proxy picks one at random per connection.
    pub endpoints: Vec<SocketAddr>,
}

/// The proxy table for these Service ports.
pub fn table(ports: &[ServicePort]) -> Table {
    let mut table = Table::new(Family::Inet, TABLE);
    let dispatch =
        |ip6| -> Vec<Key> { vec![if ip6 { Key::Ip6Daddr } else { Key::Ip4Daddr }, Key::L4Proto, Key::Dport] };
    let key_fields =
        |ip6| vec![if ip6 { Field::Ipv6Addr } else { Field::Ipv4Addr }, Field::InetProto, Field::InetService];
    let mut nat = Vec::new();
    let mut filter = Vec::new();
    for ip6 in [false, true] {
        let suffix = if ip6 { 6 } else { 4 };
        let (services, empty) = (format!("service-ips-{suffix}"), format!("no-endpoints-{suffix}"));
        nat.push(Rule(vec![Stmt::Vmap(dispatch(ip6), services.clone())]));
        filter.push(Rule(vec![
            Stmt::CtState(vec![CtState::New]),
            Stmt::In(dispatch(ip6), empty.clone()),
            Stmt::Reject,
        ]));
        let mine = ports.iter().filter(|p| p.cluster_ip.is_ipv6() == ip6);
        let key =
            |p: &ServicePort| vec![Value::Addr(p.cluster_ip), Value::Proto(p.protocol.number()), Value::Port(p.port)];
        let (served, unserved): (Vec<_>, Vec<_>) = mine.partition(|p| !p.endpoints.is_empty());
        table.sets.push(
            Set::verdict_map(&services, key_fields(ip6))
                .with(served.iter().map(|p| Element::concat(key(p)).to(Verdict::Goto(service_chain(p)))).collect()),
        );
        table
            .sets
            .push(Set::new(&empty, key_fields(ip6)).with(unserved.iter().map(|p| Element::concat(key(p))).collect()));
    }
    let hook = |kind, priority| Hook { kind, point: HookPoint::Output, priority, policy: Policy::Accept };
    table.chains.push(Chain::base("nat-output", hook(ChainKind::Nat, priority::DSTNAT), nat));
    table.chains.push(Chain::base("filter-output", hook(ChainKind::Filter, priority::DSTNAT - 10), filter));
    for p in ports.iter().filter(|p| !p.endpoints.is_empty()) {
        let chain = service_chain(p);
        let endpoint_chain = |k: usize| format!("{chain}/{k}");
        let pick = if p.endpoints.len() == 1 {
            Stmt::Verdict(Verdict::Goto(endpoint_chain(0)))
        } else {
            let map = format!("{chain}/endpoints");
            let elements = (0..p.endpoints.len())
                .map(|k| Element::of(Value::Index(k as u32)).to(Verdict::Goto(endpoint_chain(k))))
                .collect();
            table.sets.push(Set::verdict_map(&map, vec![Field::Index]).with(elements));
            Stmt::Vmap(vec![Key::NumgenRandom(p.endpoints.len() as u32)], map)
        };
        table.chains.push(Chain::regular(&chain, vec![Rule(vec![pick])]));
        for (k, ep) in p.endpoints.iter().enumerate() {
            let dnat = Rule(vec![Stmt::Dnat(ep.ip(), Some(ep.port()))]);
            table.chains.push(Chain::regular(&endpoint_chain(k), vec![dnat]));
        }
    }
    table
}

/// The endpoint addresses `table` DNATs UDP to. Only a UDP flow outlives its endpoint in
/// conntrack (a TCP or SCTP connection to a gone endpoint fails and ends), so only these are
/// flushed when they leave: a change to TCP Services then costs no conntrack dump, which walks
/// the whole host's table (about 10 ms of kernel time per pod and family here).
pub fn udp_endpoints(table: &Table) -> BTreeSet<IpAddr> {
    let udp_chains: Vec<String> = table
        .sets
        .iter()
        .filter(|s| s.verdicts && s.name.starts_with("service-ips-"))
        .flat_map(|s| &s.elements)
        .filter(|e| e.key.contains(&Value::Proto(proto::UDP)))
        .filter_map(|e| match &e.verdict {
            Some(Verdict::Goto(chain)) => Some(format!("{chain}/")),
            _ => None,
        })
        .collect();
    // A Service's endpoint chains are `<its chain>/<k>`.
    let endpoint_chain_of_udp = |name: &str| {
        udp_chains.iter().any(|prefix| name.strip_prefix(prefix.as_str()).is_some_and(|k| k.parse::<usize>().is_ok()))
    };
    table
        .chains
        .iter()
        .filter(|c| endpoint_chain_of_udp(&c.name))
        .flat_map(|c| &c.rules)
        .flat_map(|r| &r.0)
        .filter_map(|s| match s {
            Stmt::Dnat(ip, _) => Some(*ip),
            _ => None,
        })
        .collect()
}

fn service_chain(p: &ServicePort) -> String {
    format!("svc/{}", p.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(id: &str, vip: &str, endpoints: &[&str]) -> ServicePort {
        ServicePort {
            id: id.into(),
            cluster_ip: vip.parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    fn set<'a>(t: &'a Table, name: &str) -> &'a Set {
        t.sets.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no set {name}"))
    }

    #[test]
    fn a_service_with_endpoints_is_dispatched_and_one_without_is_rejected() {
        let t = table(&[
            port("a/web/tcp/http", "10.96.0.10", &["192.168.1.2:8080", "192.168.1.3:8080"]),
            port("a/db/tcp/sql", "fd00::10", &[]),
        ]);
        let served = set(&t, "service-ips-4");
        assert!(served.verdicts);
        assert_eq!(served.elements.len(), 1);
        assert_eq!(served.elements[0].verdict, Some(Verdict::Goto("svc/a/web/tcp/http".into())));
        assert!(set(&t, "service-ips-6").elements.is_empty());
        assert_eq!(set(&t, "no-endpoints-6").elements.len(), 1);
        let eps = set(&t, "svc/a/web/tcp/http/endpoints");
        assert_eq!(eps.elements.len(), 2);
        let svc = t.chains.iter().find(|c| c.name == "svc/a/web/tcp/http").unwrap();
        assert_eq!(svc.rules[0].0[0], Stmt::Vmap(vec![Key::NumgenRandom(2)], eps.name.clone()));
        let ep1 = t.chains.iter().find(|c| c.name == "svc/a/web/tcp/http/1").unwrap();
        assert_eq!(ep1.rules[0].0, vec![Stmt::Dnat("192.168.1.3".parse().unwrap(), Some(8080))]);
        assert!(!t.chains.iter().any(|c| c.name.starts_with("svc/a/db")), "no chains for a service without endpoints");
    }

    #[test]
    fn the_udp_endpoints_are_those_of_udp_ports_only() {
        let udp = |id: &str, vip: &str, endpoints: &[&str]| ServicePort {
            protocol: Protocol::Udp,
            ..port(id, vip, endpoints)
        };
        let t = table(&[
            port("a/web/tcp/http", "10.96.0.10", &["192.168.1.2:8080", "192.168.1.3:8080"]),
            udp("a/dns/udp/dns", "10.96.0.11", &["192.168.1.4:53", "192.168.1.5:53"]),
            udp("a/dns6/udp/dns", "fd00::11", &["[fd00::5]:53"]),
            port("a/web/tcp/http2", "10.96.0.12", &["192.168.1.9:8080"]),
        ]);
        let want: BTreeSet<IpAddr> =
            ["192.168.1.4", "192.168.1.5", "fd00::5"].into_iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(udp_endpoints(&t), want);
        assert!(udp_endpoints(&table(&[port("a/web/tcp/http", "10.96.0.10", &["192.168.1.2:8080"])])).is_empty());
    }

    #[test]
    fn one_endpoint_is_a_goto_without_numgen() {
        let t = table(&[port("a/web/tcp/http", "10.96.0.10", &["192.168.1.2:8080"])]);
        let svc = t.chains.iter().find(|c| c.name == "svc/a/web/tcp/http").unwrap();
        assert_eq!(svc.rules[0].0, vec![Stmt::Verdict(Verdict::Goto("svc/a/web/tcp/http/0".into()))]);
        assert!(!t.sets.iter().any(|s| s.name.ends_with("/endpoints")));
    }
}
