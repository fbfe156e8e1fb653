//! From the cluster's policies, pods and namespaces to one pod's nftables table: NetworkPolicy's
//! meaning, on the pod's secondary devices only.
//!
//! ```text
//! table inet kactus-policy
//!   chain input    filter hook input priority filter; policy accept
//!     iifname "<dev>" goto ingress/<dev>          one per device isolated for ingress
//!   chain output   filter hook output priority filter; policy accept
//!     oifname "<dev>" goto egress/<dev>           one per device isolated for egress
//!   chain ingress/<dev>
//!     ct state established,related accept         replies of allowed connections
//!     icmpv6 type 133-137 accept                  neighbour discovery: IPv6 keeps working
//!     tcp dport 80 ip saddr @ingress/<dev>/p0/r0/a4 accept
//!     ...                                         every rule of every policy, each an accept
//!     drop
//!   chain egress/<dev>                            the same with daddr, plus for named ports
//!     ip daddr . meta l4proto . th dport @egress/<dev>/p0/r0/n4 accept
//! ```
//!
//! - **OR**: every rule of every policy is an `accept`; the only `drop` ends the device's chain.
//!   A flow is allowed iff some rule of some policy allows it.
//! - **Peers are named sets** (`p<i>/r<j>/a4|a6`: interval sets of the peers' addresses on
//!   the device's network, each `ipBlock` its CIDR minus its own `except`s): a peer appearing,
//!   leaving or changing address changes set elements only (`update::plan` then refills),
//!   never rules. A set exists whenever the rule has peers, even when they select nothing: a
//!   rule whose peers select nothing allows nothing.
//! - **Named ports** resolve as NetworkPolicy resolves them: for ingress against this pod's
//!   container ports (a number in the rule), for egress against each peer pod's ports (a set of
//!   `address . protocol . port`, `n4|n6`). An `ipBlock` has no pods, so no named port.
//! - **eth0 and every other device are untouched**: the base chains only dispatch the governed
//!   devices and accept the rest.
//! - **Order against the in-pod Service proxy** (`nft::service_proxy`): its `nat-output`
//!   (DNAT, priority dstnat = -100) and its no-endpoint reject (-110) run before this table's
//!   `output` (filter = 0), so a connection to a ClusterIP is filtered as the backend address
//!   and port it was translated to, as NetworkPolicy filters kube-proxy's. `oifname` is the
//!   device the route to the ClusterIP chose (the proxy routes each ClusterIP via the
//!   Service's network), which is the device the backend is reached on.
//!
//! The devices (and so the chains), the policies selecting the pod and their rules make the
//! table's shape; peers only fill its sets. Names of sets and chains use policy and rule
//! indices (policies sorted by `namespace/name`); [`Governed`] says which policy is which.

use super::model::{MultiNetworkPolicy, Peer, PolicyPort};
use super::pod::PodView;
use super::policy_for::{self, NetworkRef};
use super::selection::{self, Labels};
use crate::nft::ranges;
use crate::nft::{priority, proto, Chain, ChainKind, CtState, Element, Family, Field, Hook, HookPoint};
use crate::nft::{Key, Policy, Rule, Set, Stmt, Table, Value, Verdict};
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The table kactus owns in each pod for MultiNetworkPolicy.
pub const TABLE: &str = crate::nft::POLICY_TABLE;

/// What the cluster holds, as the compiler reads it.
pub struct Cluster<'a> {
    pub policies: &'a [MultiNetworkPolicy],
    /// Every pod that may be a peer (all namespaces).
    pub pods: &'a [PodView],
    /// Each namespace's labels, by name.
    pub namespaces: &'a BTreeMap<String, Labels>,
}

/// One pod's policy table and what an operator should know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// `None` when no policy governs any of the pod's devices: the pod should have no table.
    pub table: Option<Table>,
    /// The devices the table governs and the policies on each.
    pub devices: Vec<Governed>,
    /// The policies (`namespace/name`) selecting the pod, sorted: `p<i>` in the table's names
    /// is `policies[i]`.
    pub policies: Vec<String>,
    /// Parts of selecting policies that were ignored, and why (they allow nothing).
    pub problems: Vec<Problem>,
}

/// A device under policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Governed {
    pub device: String,
    pub network: NetworkRef,
    /// The policies (`namespace/name`) isolating it for ingress, in chain order.
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
}

/// Something in a policy that could not be enforced as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// `namespace/name`.
    pub policy: String,
    pub what: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// The address key of the peer: the source of what comes in, the destination of what
    /// goes out.
    fn peer_key(self, v6: bool) -> Key {
        match (self, v6) {
            (Direction::Ingress, false) => Key::Ip4Saddr,
            (Direction::Ingress, true) => Key::Ip6Saddr,
            (Direction::Egress, false) => Key::Ip4Daddr,
            (Direction::Egress, true) => Key::Ip6Daddr,
        }
    }
}

/// A policy that selects the pod.
struct Selecting<'a> {
    policy: &'a MultiNetworkPolicy,
    networks: Vec<NetworkRef>,
    ingress: bool,
    egress: bool,
}

impl Selecting<'_> {
    fn isolates(&self, dir: Direction) -> bool {
        match dir {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
        }
    }

    /// The rules of one direction as (ports, peers).
    fn rules(&self, dir: Direction) -> Vec<(&[PolicyPort], &[Peer])> {
        let spec = &self.policy.spec;
        match dir {
            Direction::Ingress => spec.ingress.iter().map(|r| (r.ports.as_slice(), r.from.as_slice())).collect(),
            Direction::Egress => spec.egress.iter().map(|r| (r.ports.as_slice(), r.to.as_slice())).collect(),
        }
    }
}

/// The table `pod` should have.
pub fn compile(cluster: &Cluster, pod: &PodView) -> Compiled {
    let mut problems = Vec::new();
    let selecting = selecting(cluster, pod, &mut problems);
    let mut table = Table::new(Family::Inet, TABLE);
    let (mut input, mut output) = (Vec::new(), Vec::new());
    let mut devices = Vec::new();
    let mut attachments: Vec<_> = pod.attachments.iter().collect();
    attachments.sort_by(|a, b| a.interface.cmp(&b.interface));
    attachments.dedup_by(|a, b| a.interface == b.interface);
    for attachment in attachments {
        let on_network: Vec<(usize, &Selecting)> =
            selecting.iter().enumerate().filter(|(_, s)| s.networks.contains(&attachment.network)).collect();
        if on_network.is_empty() {
            continue;
        }
        let device = &attachment.interface;
        let mut governed =
            Governed { device: device.clone(), network: attachment.network.clone(), ingress: vec![], egress: vec![] };
        for dir in [Direction::Ingress, Direction::Egress] {
            let isolating: Vec<&(usize, &Selecting)> = on_network.iter().filter(|(_, s)| s.isolates(dir)).collect();
            if isolating.is_empty() {
                continue;
            }
            let chain = format!("{}/{}", dir.name(), chain_suffix(device));
            let (dispatch, key) = match dir {
                Direction::Ingress => (&mut input, Key::IifName),
                Direction::Egress => (&mut output, Key::OifName),
            };
            dispatch.push(Rule(vec![
                Stmt::Is(key, Value::IfName(device.clone())),
                Stmt::Verdict(Verdict::Goto(chain.clone())),
            ]));
            let mut rules = vec![
                Rule(vec![Stmt::CtState(vec![CtState::Established, CtState::Related]), Stmt::Verdict(Verdict::Accept)]),
                Rule(vec![
                    Stmt::Between(Key::Icmpv6Type, Value::Icmpv6Type(133), Value::Icmpv6Type(137)),
                    Stmt::Verdict(Verdict::Accept),
                ]),
            ];
            for (i, s) in isolating {
                let names = match dir {
                    Direction::Ingress => &mut governed.ingress,
                    Direction::Egress => &mut governed.egress,
                };
                names.push(s.policy.key());
                for (j, (ports, peers)) in s.rules(dir).into_iter().enumerate() {
                    let mut cx = RuleContext {
                        cluster,
                        pod,
                        network: &attachment.network,
                        dir,
                        policy: s.policy,
                        prefix: format!("{chain}/p{i}/r{j}"),
                        problems: &mut problems,
                    };
                    cx.emit(ports, peers, &mut table.sets, &mut rules);
                }
            }
            rules.push(Rule(vec![Stmt::Verdict(Verdict::Drop)]));
            table.chains.push(Chain::regular(&chain, rules));
        }
        devices.push(governed);
    }
    problems.sort();
    problems.dedup();
    let policies = selecting.iter().map(|s| s.policy.key()).collect();
    if devices.is_empty() {
        return Compiled { table: None, devices, policies, problems };
    }
    let hook = |point| Hook { kind: ChainKind::Filter, point, priority: priority::FILTER, policy: Policy::Accept };
    table.chains.insert(0, Chain::base("input", hook(HookPoint::Input), input));
    table.chains.insert(1, Chain::base("output", hook(HookPoint::Output), output));
    Compiled { table: Some(table), devices, policies, problems }
}

/// The policies of the pod's namespace that select it, sorted by name, with the networks they
/// govern and the directions they isolate.
fn selecting<'a>(cluster: &'a Cluster, pod: &PodView, problems: &mut Vec<Problem>) -> Vec<Selecting<'a>> {
    let mut policies: Vec<&MultiNetworkPolicy> =
        cluster.policies.iter().filter(|p| p.namespace() == pod.namespace).collect();
    policies.sort_by_key(|p| p.key());
    let mut out = Vec::new();
    for policy in policies {
        let problem = |what: String| Problem { policy: policy.key(), what };
        match selection::matches(&policy.spec.pod_selector, &pod.labels) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                problems.push(problem(format!("podSelector: {e}; the policy selects no pod")));
                continue;
            }
        }
        let Some(annotation) = policy.policy_for() else {
            problems
                .push(problem(format!("no {} annotation: the policy governs no network", super::model::POLICY_FOR)));
            continue;
        };
        let (networks, invalid) = policy_for::parse(annotation, policy.namespace());
        for entry in invalid {
            problems.push(problem(format!(
                "{}: {entry:?} is not a network (name or namespace/name)",
                super::model::POLICY_FOR
            )));
        }
        let spec = &policy.spec;
        let (ingress, egress) = if spec.policy_types.is_empty() {
            (true, !spec.egress.is_empty())
        } else {
            for t in spec.policy_types.iter().filter(|t| !matches!(t.as_str(), "Ingress" | "Egress")) {
                problems.push(problem(format!("policyTypes: {t:?} is neither Ingress nor Egress")));
            }
            (spec.policy_types.iter().any(|t| t == "Ingress"), spec.policy_types.iter().any(|t| t == "Egress"))
        };
        out.push(Selecting { policy, networks, ingress, egress });
    }
    out
}

/// A port entry as the rule matches it.
enum PortMatch {
    /// A protocol and, unless every port, a range.
    Numbers(u8, Option<(u16, u16)>),
    /// A protocol (number and Kubernetes name) and a container port name.
    Named(u8, String, String),
}

fn port_match(p: &PolicyPort) -> Result<PortMatch, String> {
    let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
    let number = match protocol.as_str() {
        "TCP" => proto::TCP,
        "UDP" => proto::UDP,
        "SCTP" => proto::SCTP,
        other => return Err(format!("protocol {other:?} is not TCP, UDP or SCTP")),
    };
    let port = |n: i64| u16::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| format!("port {n} is not 1-65535"));
    match (&p.port, p.end_port) {
        (None, None) => Ok(PortMatch::Numbers(number, None)),
        (None, Some(_)) => Err("endPort without port".into()),
        (Some(IntOrString::Int(n)), end) => {
            let first = port(*n as i64)?;
            let last = match end {
                Some(e) => port(e as i64)?,
                None => first,
            };
            if last < first {
                return Err(format!("endPort {last} is below port {first}"));
            }
            Ok(PortMatch::Numbers(number, Some((first, last))))
        }
        (Some(IntOrString::String(name)), None) => Ok(PortMatch::Named(number, protocol, name.clone())),
        (Some(IntOrString::String(name)), Some(_)) => Err(format!("endPort with the named port {name:?}")),
    }
}

/// Compiles one rule of one policy into one device's chain.
struct RuleContext<'a, 'b> {
    cluster: &'a Cluster<'a>,
    pod: &'a PodView,
    network: &'a NetworkRef,
    dir: Direction,
    policy: &'a MultiNetworkPolicy,
    /// The rule's sets are named `<prefix>/a4` and so on.
    prefix: String,
    problems: &'b mut Vec<Problem>,
}

impl<'a> RuleContext<'a, '_> {
    fn problem(&mut self, what: String) {
        self.problems.push(Problem { policy: self.policy.key(), what });
    }

    fn emit(&mut self, ports: &[PolicyPort], peers: &[Peer], sets: &mut Vec<Set>, rules: &mut Vec<Rule>) {
        let every_peer = peers.is_empty();
        // The peers' addresses, for the rule's numeric ports (or all ports).
        let mut peer_pods: Vec<&'a PodView> = Vec::new();
        let address_matches: Vec<Option<Stmt>> = if every_peer {
            peer_pods = self.cluster.pods.iter().filter(|p| !p.finished).collect();
            vec![None]
        } else {
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            for peer in peers {
                match self.peer(peer) {
                    Ok(Selected::Block(elements)) => {
                        for e in elements {
                            let is_v6 = matches!(e.key.first(), Some(Value::Addr(a)) if a.is_ipv6());
                            if is_v6 {
                                v6.push(e)
                            } else {
                                v4.push(e)
                            }
                        }
                    }
                    Ok(Selected::Pods(pods)) => {
                        for addr in pods.iter().flat_map(|p| p.addresses_on(self.network)) {
                            let e = Element::of(Value::Addr(addr));
                            if addr.is_ipv6() {
                                v6.push(e)
                            } else {
                                v4.push(e)
                            }
                        }
                        peer_pods.extend(pods);
                    }
                    Err(e) => self.problem(format!("{} peer: {e}; it matches nothing", self.dir.name())),
                }
            }
            let mut matches = Vec::new();
            for (v6, elements) in [(false, v4), (true, v6)] {
                let (name, field) = if v6 {
                    (format!("{}/a6", self.prefix), Field::Ipv6Addr)
                } else {
                    (format!("{}/a4", self.prefix), Field::Ipv4Addr)
                };
                sets.push(Set::intervals(&name, field).with(elements));
                matches.push(Some(Stmt::In(vec![self.dir.peer_key(v6)], name)));
            }
            matches
        };
        let accept = |mut stmts: Vec<Stmt>, address: &Option<Stmt>| {
            stmts.extend(address.clone());
            stmts.push(Stmt::Verdict(Verdict::Accept));
            Rule(stmts)
        };
        if ports.is_empty() {
            rules.extend(address_matches.iter().map(|a| accept(vec![], a)));
            return;
        }
        let mut named = Vec::new();
        for port in ports {
            let (number, range) = match port_match(port) {
                Ok(PortMatch::Numbers(number, range)) => (number, range),
                Ok(PortMatch::Named(number, protocol, name)) if self.dir == Direction::Egress => {
                    named.push((number, protocol, name));
                    continue;
                }
                Ok(PortMatch::Named(number, protocol, name)) => {
                    // Ingress: this pod's own port of that name, if it has one.
                    let own = self.pod.ports.iter().filter(|p| p.name == name && p.protocol == protocol);
                    for p in own {
                        rules.extend(
                            address_matches.iter().map(|a| accept(port_stmts(number, Some((p.number, p.number))), a)),
                        );
                    }
                    continue;
                }
                Err(e) => {
                    self.problem(format!("{} port: {e}; it matches nothing", self.dir.name()));
                    continue;
                }
            };
            rules.extend(address_matches.iter().map(|a| accept(port_stmts(number, range), a)));
        }
        if named.is_empty() {
            return;
        }
        // Egress to named ports: each peer pod's own port of that name.
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for pod in &peer_pods {
            for (number, protocol, name) in &named {
                for port in pod.ports.iter().filter(|p| &p.name == name && &p.protocol == protocol) {
                    for addr in pod.addresses_on(self.network) {
                        let e =
                            Element::concat(vec![Value::Addr(addr), Value::Proto(*number), Value::Port(port.number)]);
                        if addr.is_ipv6() {
                            v6.push(e)
                        } else {
                            v4.push(e)
                        }
                    }
                }
            }
        }
        for (v6, elements) in [(false, v4), (true, v6)] {
            let (name, field) = if v6 {
                (format!("{}/n6", self.prefix), Field::Ipv6Addr)
            } else {
                (format!("{}/n4", self.prefix), Field::Ipv4Addr)
            };
            let mut elements = elements;
            elements.sort_by(|a, b| a.key.cmp(&b.key));
            elements.dedup();
            sets.push(Set::new(&name, vec![field, Field::InetProto, Field::InetService]).with(elements));
            let keys = vec![self.dir.peer_key(v6), Key::L4Proto, Key::Dport];
            rules.push(Rule(vec![Stmt::In(keys, name), Stmt::Verdict(Verdict::Accept)]));
        }
    }

    /// What one peer stands for.
    fn peer(&self, peer: &Peer) -> Result<Selected<'a>, String> {
        match (peer, &peer.ip_block) {
            (Peer { pod_selector: None, namespace_selector: None, .. }, Some(block)) => {
                let parse = |s: &str| {
                    s.trim().parse::<IpNet>().map(|n| n.trunc()).map_err(|_| format!("ipBlock {s:?} is not a CIDR"))
                };
                let cidr = parse(&block.cidr)?;
                let except = block.except.iter().map(|e| parse(e)).collect::<Result<Vec<_>, _>>()?;
                Ok(Selected::Block(ranges::block(cidr, &except)))
            }
            (_, Some(_)) => Err("ipBlock together with a selector".into()),
            (Peer { pod_selector: None, namespace_selector: None, .. }, None) => {
                Err("no podSelector, namespaceSelector or ipBlock".into())
            }
            (Peer { pod_selector, namespace_selector, .. }, None) => {
                // A selector's mistakes do not depend on the labels it is matched against.
                let none = Labels::new();
                if let Some(sel) = namespace_selector {
                    selection::matches(sel, &none).map_err(|e| format!("namespaceSelector: {e}"))?;
                }
                if let Some(sel) = pod_selector {
                    selection::matches(sel, &none).map_err(|e| format!("podSelector: {e}"))?;
                }
                // A namespace not (yet) known has no labels: `namespaceSelector: {}` still
                // selects its pods, as it selects every namespace.
                let holds = |sel: &Option<_>, labels: Option<&Labels>| match sel {
                    None => true,
                    Some(sel) => selection::matches(sel, labels.unwrap_or(&none)).unwrap_or(false),
                };
                let pods = self
                    .cluster
                    .pods
                    .iter()
                    .filter(|p| !p.finished)
                    .filter(|p| namespace_selector.is_some() || p.namespace == self.policy.namespace())
                    .filter(|p| holds(namespace_selector, self.cluster.namespaces.get(&p.namespace)))
                    .filter(|p| holds(pod_selector, Some(&p.labels)))
                    .collect();
                Ok(Selected::Pods(pods))
            }
        }
    }
}

enum Selected<'a> {
    Block(Vec<Element>),
    Pods(Vec<&'a PodView>),
}

/// A device's name as chain and set names may hold it (`[A-Za-z0-9-_.]`; Linux allows more in
/// a device name): itself, or `x` and its bytes in hex.
fn chain_suffix(device: &str) -> String {
    if device.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        device.to_string()
    } else {
        format!("x{}", hex::encode(device))
    }
}

/// `meta l4proto P [th dport first-last]`.
fn port_stmts(number: u8, range: Option<(u16, u16)>) -> Vec<Stmt> {
    let mut stmts = vec![Stmt::Is(Key::L4Proto, Value::Proto(number))];
    match range {
        None => {}
        Some((a, b)) if a == b => stmts.push(Stmt::Is(Key::Dport, Value::Port(a))),
        Some((a, b)) => stmts.push(Stmt::Between(Key::Dport, Value::Port(a), Value::Port(b))),
    }
    stmts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::pod::{Attachment, ContainerPort};
    use crate::policy::update::{plan, Update};
    use serde_json::json;

    const NET: &str = "mep/mp1";

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)], ip: &str) -> PodView {
        PodView {
            namespace: ns.into(),
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            finished: false,
            ports: vec![ContainerPort { name: "http".into(), protocol: "TCP".into(), number: 8080 }],
            attachments: vec![Attachment {
                network: NetworkRef::relative(NET, "").unwrap(),
                interface: "net1".into(),
                ips: vec![ip.parse().unwrap()],
            }],
        }
    }

    fn policy(ns: &str, name: &str, spec: serde_json::Value) -> MultiNetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns,
            "annotations": {crate::policy::model::POLICY_FOR: NET}}, "spec": spec}))
        .unwrap()
    }

    fn namespaces() -> BTreeMap<String, Labels> {
        [("mep", "a"), ("other", "b")]
            .iter()
            .map(|(n, team)| (n.to_string(), Labels::from([("team".to_string(), team.to_string())])))
            .collect()
    }

    fn run(policies: &[MultiNetworkPolicy], pods: &[PodView], me: usize) -> Compiled {
        compile(&Cluster { policies, pods, namespaces: &namespaces() }, &pods[me])
    }

    fn chain<'a>(t: &'a Table, name: &str) -> &'a Chain {
        t.chains.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no chain {name}"))
    }

    fn set<'a>(t: &'a Table, name: &str) -> &'a Set {
        t.sets.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no set {name}"))
    }

    fn accepts(c: &Chain) -> usize {
        c.rules.iter().filter(|r| r.0.last() == Some(&Stmt::Verdict(Verdict::Accept))).count()
    }

    fn drops(c: &Chain) -> usize {
        c.rules.iter().filter(|r| r.0.contains(&Stmt::Verdict(Verdict::Drop))).count()
    }

    fn pods() -> Vec<PodView> {
        vec![
            pod("mep", "db", &[("app", "db")], "10.1.0.1"),
            pod("mep", "web", &[("app", "web")], "10.1.0.2"),
            pod("other", "web", &[("app", "web")], "10.1.0.3"),
        ]
    }

    #[test]
    fn a_pod_no_policy_selects_gets_no_table() {
        let p = policy("mep", "db", json!({"podSelector": {"matchLabels": {"app": "db"}}}));
        let c = run(&[p], &pods(), 1);
        assert_eq!((c.table, c.devices.len()), (None, 0));
        let unannotated: MultiNetworkPolicy =
            serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "mep"}, "spec": {}})).unwrap();
        let c = run(&[unannotated], &pods(), 0);
        assert!(c.table.is_none());
        assert_eq!(c.problems[0].what, "no k8s.v1.cni.cncf.io/policy-for annotation: the policy governs no network");
    }

    #[test]
    fn two_policies_are_ored_and_only_the_device_chain_drops() {
        let a = policy(
            "mep",
            "a",
            json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
        );
        let b =
            policy("mep", "b", json!({"podSelector": {}, "ingress": [{"ports": [{"port": 5000, "endPort": 5010}]}]}));
        let c = run(&[b, a], &pods(), 0);
        let t = c.table.unwrap();
        assert_eq!(c.policies, vec!["mep/a", "mep/b"], "sorted by name whatever the input order");
        let ingress = chain(&t, "ingress/net1");
        // established, ND, a's two family rules, b's one port-range rule; one drop, last.
        assert_eq!((accepts(ingress), drops(ingress)), (5, 1));
        assert_eq!(ingress.rules.last().unwrap().0, vec![Stmt::Verdict(Verdict::Drop)]);
        assert!(ingress.rules.iter().any(|r| r.0.contains(&Stmt::Between(
            Key::Dport,
            Value::Port(5000),
            Value::Port(5010)
        ))));
        // podSelector alone: pods of the policy's namespace only.
        assert_eq!(
            set(&t, "ingress/net1/p0/r0/a4").elements,
            vec![Element::of(Value::Addr("10.1.0.2".parse().unwrap()))]
        );
        assert!(t.chains.iter().all(|c| c.name != "egress/net1"), "no egress rules: not isolated for egress");
        assert_eq!(chain(&t, "input").rules.len(), 1);
        assert!(chain(&t, "output").rules.is_empty());
    }

    #[test]
    fn peers_that_select_nothing_allow_nothing_and_a_new_peer_is_a_refill() {
        let p = policy(
            "mep",
            "db",
            json!({"podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {"matchLabels": {"app": "api"}}}]}]}),
        );
        let mut all = pods();
        let before = run(std::slice::from_ref(&p), &all, 0).table.unwrap();
        assert!(set(&before, "ingress/net1/p0/r0/a4").elements.is_empty());
        assert_eq!(accepts(chain(&before, "ingress/net1")), 4, "the rules stay, over empty sets");
        all.push(pod("other", "api", &[("app", "api")], "10.1.0.9"));
        all.push(pod("mep", "api", &[("app", "api")], "10.1.0.10"));
        let after = run(&[p], &all, 0).table.unwrap();
        let Update::Refill(sets) = plan(Some(&before), Some(&after)) else { panic!("a new peer must be a refill") };
        assert_eq!(sets.len(), 1);
        assert_eq!(
            sets[0].elements,
            vec![Element::of(Value::Addr("10.1.0.9".parse().unwrap()))],
            "both selectors: AND"
        );
        assert_eq!(plan(Some(&after), Some(&after)), Update::Unchanged);
    }

    #[test]
    fn an_except_is_cut_out_of_its_own_peer_only() {
        let p = policy(
            "mep",
            "db",
            json!({"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.1.0.0/24", "except": ["10.1.0.0/30"]}},
            {"ipBlock": {"cidr": "10.1.0.2/32"}},
            {"ipBlock": {"cidr": "nonsense"}}]}]}),
        );
        let c = run(&[p], &pods(), 0);
        let t = c.table.unwrap();
        let got: Vec<_> = set(&t, "ingress/net1/p0/r0/a4").elements.clone();
        let addr = |s: &str| Value::Addr(s.parse().unwrap());
        assert_eq!(
            got,
            vec![
                Element::range(addr("10.1.0.4"), addr("10.1.0.255")),
                Element::range(addr("10.1.0.2"), addr("10.1.0.2"))
            ]
        );
        assert_eq!(drops(chain(&t, "ingress/net1")), 1, "no drop for the except");
        assert_eq!(c.problems.len(), 1);
        assert!(c.problems[0].what.contains("\"nonsense\" is not a CIDR"), "{:?}", c.problems);
    }

    #[test]
    fn policy_types_default_as_networkpolicy_does() {
        let egress = json!([{"to": [{"podSelector": {}}]}]);
        let cases = [
            (json!({"podSelector": {}}), true, false),
            (json!({"podSelector": {}, "egress": egress}), true, true),
            (json!({"podSelector": {}, "policyTypes": ["Egress"]}), false, true),
            (json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}), false, true),
        ];
        for (spec, ingress, egress) in cases {
            let c = run(&[policy("mep", "p", spec.clone())], &pods(), 0);
            let d = &c.devices[0];
            assert_eq!((!d.ingress.is_empty(), !d.egress.is_empty()), (ingress, egress), "{spec}");
        }
    }

    #[test]
    fn named_ports_resolve_on_this_pod_for_ingress_and_per_peer_for_egress() {
        let mut all = pods();
        all[2].ports[0].number = 9090;
        let p = policy(
            "mep",
            "db",
            json!({"podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"ports": [{"port": "http"}, {"port": "http", "protocol": "UDP"}]}],
            "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]}]}),
        );
        let t = run(&[p], &all, 0).table.unwrap();
        let ingress = chain(&t, "ingress/net1");
        assert!(ingress.rules.iter().any(|r| r.0
            == vec![
                Stmt::Is(Key::L4Proto, Value::Proto(proto::TCP)),
                Stmt::Is(Key::Dport, Value::Port(8080)),
                Stmt::Verdict(Verdict::Accept)
            ]));
        assert_eq!(accepts(ingress), 3, "the UDP one names no port of this pod: nothing");
        let n4 = set(&t, "egress/net1/p0/r0/n4");
        // `namespaceSelector: {}` selects every namespace, known to the cache or not.
        all.push(pod("new-ns", "web", &[("app", "web")], "10.1.0.4"));
        let p = policy("mep", "db", json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}));
        let t2 = run(&[p], &all, 0).table.unwrap();
        assert_eq!(set(&t2, "ingress/net1/p0/r0/a4").elements.len(), 4);
        let el = |ip: &str, port| {
            Element::concat(vec![Value::Addr(ip.parse().unwrap()), Value::Proto(proto::TCP), Value::Port(port)])
        };
        assert_eq!(n4.elements, vec![el("10.1.0.2", 8080), el("10.1.0.3", 9090)]);
    }

    #[test]
    fn a_device_name_chain_names_cannot_hold_is_still_governed() {
        let mut all = pods();
        all[0].attachments[0].interface = "net:1".into();
        let t = run(&[policy("mep", "db", json!({"podSelector": {}}))], &all, 0).table.unwrap();
        assert_eq!(chain(&t, "input").rules[0].0[0], Stmt::Is(Key::IifName, Value::IfName("net:1".into())));
        assert_eq!(drops(chain(&t, "ingress/x6e65743a31")), 1);
    }

    #[test]
    fn only_devices_on_the_policys_networks_are_governed() {
        let mut all = pods();
        all[0].attachments.push(Attachment {
            network: NetworkRef::relative("mep/other", "").unwrap(),
            interface: "net2".into(),
            ips: vec!["10.2.0.1".parse().unwrap()],
        });
        let c = run(&[policy("mep", "db", json!({"podSelector": {}}))], &all, 0);
        assert_eq!(c.devices.iter().map(|d| d.device.as_str()).collect::<Vec<_>>(), vec!["net1"]);
        let input = &chain(c.table.as_ref().unwrap(), "input").rules;
        assert_eq!(input[0].0[0], Stmt::Is(Key::IifName, Value::IfName("net1".into())));
        assert_eq!(input.len(), 1);
    }
}
