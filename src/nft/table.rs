//! A table as its owner wants it: plain values (chains, rules, named sets and verdict maps with
//! their elements), built by the caller and applied whole by [`super::Nft::apply`]. Nothing
//! here knows the wire format; `compile.rs` turns these into messages.

use super::wire::Verdict;
use ipnet::IpNet;
use std::net::IpAddr;

/// A table's address family. `inet` holds IPv4 and IPv6 rules in one table (NAT included
/// since Linux 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Inet,
    Ip,
    Ip6,
}

impl Family {
    /// The name `nft` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn new(family: Family, name: &str) -> Table {
        Table { family, name: name.to_string(), sets: Vec::new(), chains: Vec::new() }
    }
}

/// A chain; with a hook it is a base chain the kernel calls, without one only a jump or goto
/// reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

impl Chain {
    pub fn regular(name: &str, rules: Vec<Rule>) -> Chain {
        Chain { name: name.to_string(), hook: None, rules }
    }

    pub fn base(name: &str, hook: Hook, rules: Vec<Rule>) -> Chain {
        Chain { name: name.to_string(), hook: Some(hook), rules }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    pub kind: ChainKind,
    pub point: HookPoint,
    /// Lower runs first; see [`priority`].
    pub priority: i32,
    /// What happens to a packet no rule gave a verdict.
    pub policy: Policy,
}

/// The priorities `nft` names.
pub mod priority {
    pub const DSTNAT: i32 = -100;
    pub const FILTER: i32 = 0;
    pub const SRCNAT: i32 = 100;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    Filter,
    Nat,
}

impl ChainKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainKind::Filter => "filter",
            ChainKind::Nat => "nat",
        }
    }
}

/// Netfilter hooks (`NF_INET_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    Prerouting = 0,
    Input = 1,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// A named set, or a verdict map when `verdicts` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    /// One field, or several for a concatenation (`ip daddr . meta l4proto . th dport`).
    pub key: Vec<Field>,
    /// Elements are ranges (CIDRs, port ranges); only for a single-field key.
    pub interval: bool,
    /// A verdict map: each element carries a verdict.
    pub verdicts: bool,
    pub elements: Vec<Element>,
}

impl Set {
    pub fn new(name: &str, key: Vec<Field>) -> Set {
        Set { name: name.to_string(), key, interval: false, verdicts: false, elements: Vec::new() }
    }

    /// A set of ranges over one field.
    pub fn intervals(name: &str, field: Field) -> Set {
        Set { interval: true, ..Set::new(name, vec![field]) }
    }

    /// A verdict map.
    pub fn verdict_map(name: &str, key: Vec<Field>) -> Set {
        Set { verdicts: true, ..Set::new(name, key) }
    }

    pub fn with(mut self, elements: Vec<Element>) -> Set {
        self.elements = elements;
        self
    }
}

/// The types a key may be made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Ipv4Addr,
    Ipv6Addr,
    /// An IP protocol number (`meta l4proto`).
    InetProto,
    /// A port.
    InetService,
    /// A device name.
    IfName,
    Icmpv6Type,
    /// A host-order number, as `numgen` produces.
    Index,
}

impl Field {
    /// Bytes in a register.
    pub(crate) fn len(self) -> usize {
        match self {
            Field::Ipv4Addr | Field::Index => 4,
            Field::Ipv6Addr | Field::IfName => 16,
            Field::InetProto | Field::Icmpv6Type => 1,
            Field::InetService => 2,
        }
    }

    /// `nft`'s datatype numbers (its `enum datatypes`), so `nft list` prints elements in
    /// their own terms; the kernel does not read them.
    pub(crate) fn type_id(self) -> u32 {
        match self {
            Field::Ipv4Addr => 7,
            Field::Ipv6Addr => 8,
            Field::InetProto => 12,
            Field::InetService => 13,
            // "mark": nft's host-order 32-bit type, so it prints numgen's values as numbers.
            Field::Index => 19,
            Field::Icmpv6Type => 29,
            Field::IfName => 41,
        }
    }
}

/// One value of a field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Addr(IpAddr),
    Proto(u8),
    Port(u16),
    IfName(String),
    Icmpv6Type(u8),
    Index(u32),
}

/// IP protocol numbers.
pub mod proto {
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

/// A set or map element: a key (one value per key field), or for an interval set a range
/// `key ..= last`; and for a map its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<Value>,
    pub last: Option<Value>,
    pub verdict: Option<Verdict>,
}

impl Element {
    pub fn of(value: Value) -> Element {
        Element { key: vec![value], last: None, verdict: None }
    }

    pub fn concat(values: Vec<Value>) -> Element {
        Element { key: values, last: None, verdict: None }
    }

    /// The range `first ..= last`, for an interval set.
    pub fn range(first: Value, last: Value) -> Element {
        Element { key: vec![first], last: Some(last), verdict: None }
    }

    /// Every address of `net`, for an interval set.
    pub fn cidr(net: IpNet) -> Element {
        Element::range(Value::Addr(net.network()), Value::Addr(net.broadcast()))
    }

    /// This element mapped to `verdict`, for a verdict map.
    pub fn to(mut self, verdict: Verdict) -> Element {
        self.verdict = Some(verdict);
        self
    }
}

/// A rule: its statements run in order, the matches first, then what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule(pub Vec<Stmt>);

/// What a rule is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    /// `key == value`.
    Is(Key, Value),
    /// `key != value`.
    IsNot(Key, Value),
    /// `first <= key <= last`.
    Between(Key, Value, Value),
    /// An address key within a prefix.
    Within(Key, IpNet),
    /// The (concatenated) key is in the named set.
    In(Vec<Key>, String),
    /// The (concatenated) key is not in the named set.
    NotIn(Vec<Key>, String),
    /// The connection is in one of these conntrack states.
    CtState(Vec<CtState>),
    /// The verdict the named map gives the (concatenated) key; no verdict when absent.
    Vmap(Vec<Key>, String),
    /// Destination NAT to an address and, if given, a port.
    Dnat(IpAddr, Option<u16>),
    /// ICMP(v6) port unreachable to the sender.
    Reject,
    Counter,
    Verdict(Verdict),
}

/// What a match or a lookup reads from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    IifName,
    OifName,
    L4Proto,
    Ip4Saddr,
    Ip4Daddr,
    Ip6Saddr,
    Ip6Daddr,
    /// `th sport`: the transport header's source port (TCP, UDP, SCTP alike).
    Sport,
    /// `th dport`.
    Dport,
    Icmpv6Type,
    /// `numgen random mod N`: 0 to N-1.
    NumgenRandom(u32),
}

impl Key {
    pub fn field(self) -> Field {
        match self {
            Key::IifName | Key::OifName => Field::IfName,
            Key::L4Proto => Field::InetProto,
            Key::Ip4Saddr | Key::Ip4Daddr => Field::Ipv4Addr,
            Key::Ip6Saddr | Key::Ip6Daddr => Field::Ipv6Addr,
            Key::Sport | Key::Dport => Field::InetService,
            Key::Icmpv6Type => Field::Icmpv6Type,
            Key::NumgenRandom(_) => Field::Index,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtState {
    Invalid,
    New,
    Established,
    Related,
}
