//! From a [`Table`] to the messages of one transaction: keys become register loads (with the
//! protocol checks an `inet` table needs before reading an IP header), values become bytes,
//! interval sets become start/end elements. Every check a caller's mistake could fail is made
//! here, before anything is sent.

use super::table::{Chain, CtState, Family, Field, Key, Rule, Set, Stmt, Table, Value};
use super::wire::{self, attr, meta, nfproto, Attrs, Base, CmpOp, Expr, Message, Op};
use std::net::IpAddr;

/// What a table cannot be, in words.
pub type Invalid = String;

/// The chains and sets a table has in the kernel now, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Existing {
    pub chains: Vec<String>,
    pub sets: Vec<String>,
}

/// Replaces the table whole, in one transaction: "add table; delete table" (so deleting is no
/// error when there was none, and nothing of the old table survives), then the table built
/// anew as [`update`] builds it from nothing.
pub fn replace(table: &Table) -> Result<Vec<Message>, Invalid> {
    let mut out =
        vec![table_message(Op::NewTable, table, "add table"), table_message(Op::DelTable, table, "delete table")];
    out.extend(update(table, &Existing::default())?);
    Ok(out)
}

/// Makes the kernel's table `table` in one transaction, keeping the chains and sets it
/// already has under the same names (`existing`): their contents are flushed and written
/// again, what is no longer wanted is deleted, what is new is added. Base chains thus stay
/// hooked throughout. A table deleted and added again in one transaction was seen to let a
/// new connection pass un-NATed about once in 100,000 changes under traffic; our reading of
/// the kernel: the new base chain's hook is registered in front of the old one (equal
/// priorities go first), so a packet crossing the commit can run the new chain before it is
/// live and the old one after it is emptied.
///
/// Order: the table; every wanted chain (all before anything that jumps to them); the rules
/// of existing chains and the elements of existing sets flushed; unwanted sets deleted;
/// wanted sets added and filled; unwanted chains deleted (nothing refers to them any more);
/// the rules.
pub fn update(table: &Table, existing: &Existing) -> Result<Vec<Message>, Invalid> {
    check_name("table", &table.name)?;
    let family = nfproto_of(table.family);
    let named = |kind: Op, name_attr: u16, name: &str, what: String| {
        let mut a = Attrs::new();
        // The table attribute is 1 in every attribute space used here.
        a.string(1, &table.name).string(name_attr, name);
        Message { op: kind, flags: 0, family, attrs: a, what }
    };
    let mut out = vec![table_message(Op::NewTable, table, "add table")];
    let mut seen = std::collections::HashSet::new();
    for chain in &table.chains {
        check_name("chain", &chain.name)?;
        if !seen.insert(&chain.name) {
            return Err(format!("chain {} twice", chain.name));
        }
        out.push(chain_message(table, chain));
    }
    for name in &existing.chains {
        out.push(named(Op::DelRule, attr::rule::CHAIN, name, format!("flush chain {name}")));
    }
    for name in &existing.sets {
        out.push(named(Op::DelSetElem, attr::elems::SET, name, format!("flush set {name}")));
    }
    let wanted_set = |name: &String| table.sets.iter().any(|s| &s.name == name);
    for name in existing.sets.iter().filter(|n| !wanted_set(n)) {
        out.push(named(Op::DelSet, attr::set::NAME, name, format!("delete set {name}")));
    }
    seen.clear();
    for (id, set) in table.sets.iter().enumerate() {
        check_name("set", &set.name)?;
        if !seen.insert(&set.name) {
            return Err(format!("set {} twice", set.name));
        }
        if !existing.sets.contains(&set.name) {
            out.push(set_message(table, set, id as u32)?);
        }
        out.extend(element_messages(family, &table.name, set)?);
    }
    let wanted_chain = |name: &String| table.chains.iter().any(|c| &c.name == name);
    for name in existing.chains.iter().filter(|n| !wanted_chain(n)) {
        out.push(named(Op::DelChain, attr::chain::NAME, name, format!("delete chain {name}")));
    }
    for chain in &table.chains {
        for (i, rule) in chain.rules.iter().enumerate() {
            let exprs = rule_exprs(table.family, rule).map_err(|e| format!("chain {} rule {i}: {e}", chain.name))?;
            let exprs = wire::expressions(&exprs);
            if exprs.len() > wire::MAX_NESTED {
                return Err(format!("chain {} rule {i}: too long for one netlink attribute", chain.name));
            }
            let mut a = Attrs::new();
            a.string(attr::rule::TABLE, &table.name)
                .string(attr::rule::CHAIN, &chain.name)
                .nested(attr::rule::EXPRESSIONS, &exprs);
            out.push(Message {
                op: Op::NewRule,
                flags: wire::NLM_F_CREATE | wire::NLM_F_APPEND,
                family,
                attrs: a,
                what: format!("add rule {i} to chain {}", chain.name),
            });
        }
    }
    Ok(out)
}

/// Asks for the chains (`sets: false`) or the sets of one table.
pub fn list(family: Family, table: &str, sets: bool) -> Message {
    let mut a = Attrs::new();
    a.string(1, table); // NFTA_CHAIN_TABLE and NFTA_SET_TABLE
    let (op, what) = if sets { (Op::GetSet, "list sets") } else { (Op::GetChain, "list chains") };
    Message {
        op,
        flags: 0,
        family: nfproto_of(family),
        attrs: a,
        what: format!("{what} of {} {table}", family.as_str()),
    }
}

/// Replaces the elements of existing sets, in one transaction: each set flushed, then filled.
/// Rules are not touched.
pub fn refill(family: Family, table: &str, sets: &[Set]) -> Result<Vec<Message>, Invalid> {
    check_name("table", table)?;
    let mut out = Vec::new();
    for set in sets {
        check_name("set", &set.name)?;
        let mut a = Attrs::new();
        a.string(attr::elems::TABLE, table).string(attr::elems::SET, &set.name);
        // A delete with no element list flushes the set.
        out.push(Message {
            op: Op::DelSetElem,
            flags: 0,
            family: nfproto_of(family),
            attrs: a,
            what: format!("flush set {}", set.name),
        });
        out.extend(element_messages(nfproto_of(family), table, set)?);
    }
    Ok(out)
}

/// Deletes a table if there is one: "add table; delete table".
pub fn delete(family: Family, name: &str) -> Vec<Message> {
    let table = Table::new(family, name);
    vec![table_message(Op::NewTable, &table, "add table"), table_message(Op::DelTable, &table, "delete table")]
}

/// Asks for one table.
pub fn get_table(family: Family, name: &str) -> Message {
    table_message(Op::GetTable, &Table::new(family, name), "get table")
}

/// Asks for the ruleset's generation.
pub fn get_generation() -> Message {
    Message { op: Op::GetGen, flags: 0, family: nfproto::UNSPEC, attrs: Attrs::new(), what: "get generation".into() }
}

fn nfproto_of(family: Family) -> u8 {
    match family {
        Family::Inet => nfproto::INET,
        Family::Ip => nfproto::IPV4,
        Family::Ip6 => nfproto::IPV6,
    }
}

/// Names the kernel takes (it allows up to 255 bytes; `nft` prints them quoted otherwise).
fn check_name(what: &str, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(format!("{what} name {name:?}: 1 to 255 of [A-Za-z0-9-_./]"))
    }
}

fn table_message(op: Op, table: &Table, what: &str) -> Message {
    let mut a = Attrs::new();
    a.string(attr::table::NAME, &table.name);
    let flags = if op == Op::NewTable { wire::NLM_F_CREATE } else { 0 };
    Message {
        op,
        flags,
        family: nfproto_of(table.family),
        attrs: a,
        what: format!("{what} {} {}", table.family.as_str(), table.name),
    }
}

fn chain_message(table: &Table, chain: &Chain) -> Message {
    let mut a = Attrs::new();
    a.string(attr::chain::TABLE, &table.name).string(attr::chain::NAME, &chain.name);
    if let Some(hook) = chain.hook {
        let mut h = Attrs::new();
        h.be32(attr::hook::HOOKNUM, hook.point as u32).be32(attr::hook::PRIORITY, hook.priority as u32);
        let policy = match hook.policy {
            super::table::Policy::Accept => 1,
            super::table::Policy::Drop => 0,
        };
        a.nested(attr::chain::HOOK, &h).be32(attr::chain::POLICY, policy).string(attr::chain::TYPE, hook.kind.as_str());
    }
    Message {
        op: Op::NewChain,
        flags: wire::NLM_F_CREATE,
        family: nfproto_of(table.family),
        attrs: a,
        what: format!("add chain {}", chain.name),
    }
}

/// Bytes of one key field in a concatenation: each field takes whole 32-bit registers.
fn key_len(key: &[Field]) -> usize {
    match key {
        [one] => one.len(),
        many => many.iter().map(|f| f.len().next_multiple_of(4)).sum(),
    }
}

/// A new set; `id` numbers it within the transaction (the kernel insists on one).
fn set_message(table: &Table, set: &Set, id: u32) -> Result<Message, Invalid> {
    let what = format!("set {}", set.name);
    if set.key.is_empty() {
        return Err(format!("{what}: no key"));
    }
    if key_len(&set.key) > 64 {
        return Err(format!("{what}: a key of more than 64 bytes"));
    }
    if set.interval && (set.key.len() > 1 || set.verdicts) {
        return Err(format!("{what}: intervals only over a single field, in a set"));
    }
    if set.interval && set.key[0] == Field::IfName {
        return Err(format!("{what}: no intervals of device names"));
    }
    let mut flags = 0;
    if set.interval {
        flags |= wire::SET_INTERVAL;
    }
    if set.verdicts {
        flags |= wire::SET_MAP;
    }
    // nft's concatenated type: each field's type shifted in, 6 bits apiece.
    let key_type = set.key.iter().fold(0u32, |acc, f| (acc << 6) | f.type_id());
    let mut a = Attrs::new();
    a.string(attr::set::TABLE, &table.name)
        .string(attr::set::NAME, &set.name)
        .be32(attr::set::FLAGS, flags)
        .be32(attr::set::KEY_TYPE, key_type)
        .be32(attr::set::KEY_LEN, key_len(&set.key) as u32)
        .be32(attr::set::ID, id);
    if set.verdicts {
        a.be32(attr::set::DATA_TYPE, wire::DATA_VERDICT);
    }
    if set.key == [Field::Index] || set.key == [Field::IfName] {
        a.put(attr::set::USERDATA, &wire::host_order_keys_userdata());
    }
    Ok(Message {
        op: Op::NewSet,
        flags: wire::NLM_F_CREATE,
        family: nfproto_of(table.family),
        attrs: a,
        what: format!("add {what}"),
    })
}

/// The set's elements, in as many messages as the 16-bit attribute length needs.
fn element_messages(family: u8, table: &str, set: &Set) -> Result<Vec<Message>, Invalid> {
    let what = format!("set {}", set.name);
    let encoded = if set.interval { interval_elements(set)? } else { plain_elements(set)? };
    let mut out = Vec::new();
    let mut chunk = Attrs::new();
    let flush = |chunk: &mut Attrs, out: &mut Vec<Message>| {
        if chunk.is_empty() {
            return;
        }
        let mut a = Attrs::new();
        a.string(attr::elems::TABLE, table).string(attr::elems::SET, &set.name).nested(attr::elems::ELEMENTS, chunk);
        out.push(Message {
            op: Op::NewSetElem,
            flags: wire::NLM_F_CREATE,
            family,
            attrs: a,
            what: format!("add elements to {what}"),
        });
        *chunk = Attrs::new();
    };
    for element in encoded {
        if chunk.len() + element.len() + 4 > wire::MAX_NESTED {
            flush(&mut chunk, &mut out);
        }
        chunk.nested(attr::LIST_ELEM, &element);
    }
    flush(&mut chunk, &mut out);
    Ok(out)
}

fn plain_elements(set: &Set) -> Result<Vec<Attrs>, Invalid> {
    let mut out = Vec::new();
    for e in &set.elements {
        let what = format!("set {} element {:?}", set.name, e.key);
        if e.key.len() != set.key.len() {
            return Err(format!("{what}: {} values for a key of {} fields", e.key.len(), set.key.len()));
        }
        if e.last.is_some() {
            return Err(format!("{what}: a range in a set without intervals"));
        }
        let mut key = Vec::new();
        for (field, value) in set.key.iter().zip(&e.key) {
            let mut bytes = value_bytes(*field, value).map_err(|m| format!("{what}: {m}"))?;
            if set.key.len() > 1 {
                bytes.resize(bytes.len().next_multiple_of(4), 0);
            }
            key.extend(bytes);
        }
        let mut a = Attrs::new();
        a.data(attr::elem::KEY, &key);
        match (&e.verdict, set.verdicts) {
            (Some(v), true) => {
                a.verdict(attr::elem::DATA, v);
            }
            (None, false) => {}
            (_, true) => return Err(format!("{what}: no verdict in a verdict map")),
            (_, false) => return Err(format!("{what}: a verdict in a set")),
        }
        out.push(a);
    }
    Ok(out)
}

/// Ranges as the kernel's interval sets want them: sorted, merged where they overlap or
/// touch (it refuses overlaps), each a start element and an end element one past its last
/// value (none when the range runs to the field's end).
fn interval_elements(set: &Set) -> Result<Vec<Attrs>, Invalid> {
    let field = set.key[0];
    let mut ranges = Vec::new();
    for e in &set.elements {
        let what = format!("set {} element {:?}", set.name, e.key);
        let ([first], None) = (e.key.as_slice(), &e.verdict) else {
            return Err(format!("{what}: one value and no verdict in an interval set"));
        };
        let last = e.last.as_ref().unwrap_or(first);
        let lo = number(field, first).map_err(|m| format!("{what}: {m}"))?;
        let hi = number(field, last).map_err(|m| format!("{what}: {m}"))?;
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return Err(format!("{what}: {field:?} has no ranges"));
        };
        if lo > hi {
            return Err(format!("{what}: range ends before it starts"));
        }
        ranges.push((lo, hi));
    }
    let max = if field.len() >= 16 { u128::MAX } else { (1u128 << (8 * field.len())) - 1 };
    let mut out = Vec::new();
    for (lo, hi) in super::ranges::merge(ranges) {
        let mut start = Attrs::new();
        start.data(attr::elem::KEY, &number_bytes(field, lo));
        out.push(start);
        if hi < max {
            let mut end = Attrs::new();
            end.data(attr::elem::KEY, &number_bytes(field, hi + 1)).be32(attr::elem::FLAGS, wire::ELEM_INTERVAL_END);
            out.push(end);
        }
    }
    Ok(out)
}

/// A value as the number interval sets order by (big-endian for addresses and ports).
fn number(field: Field, value: &Value) -> Result<Option<u128>, Invalid> {
    let bytes = value_bytes(field, value)?;
    if field == Field::Index || field == Field::IfName {
        return Ok(None);
    }
    Ok(Some(bytes.iter().fold(0u128, |acc, b| (acc << 8) | *b as u128)))
}

fn number_bytes(field: Field, n: u128) -> Vec<u8> {
    n.to_be_bytes()[16 - field.len()..].to_vec()
}

/// A value's bytes in a register, checked against the field it is for.
fn value_bytes(field: Field, value: &Value) -> Result<Vec<u8>, Invalid> {
    match (field, value) {
        (Field::Ipv4Addr, Value::Addr(IpAddr::V4(a))) => Ok(a.octets().to_vec()),
        (Field::Ipv6Addr, Value::Addr(IpAddr::V6(a))) => Ok(a.octets().to_vec()),
        (Field::InetProto, Value::Proto(p)) | (Field::Icmpv6Type, Value::Icmpv6Type(p)) => Ok(vec![*p]),
        (Field::InetService, Value::Port(p)) => Ok(p.to_be_bytes().to_vec()),
        (Field::Index, Value::Index(i)) => Ok(i.to_ne_bytes().to_vec()),
        (Field::IfName, Value::IfName(name)) => {
            if name.is_empty() || name.len() > 15 || name.contains('\0') {
                return Err(format!("device name {name:?}: 1 to 15 bytes"));
            }
            let mut bytes = name.as_bytes().to_vec();
            bytes.resize(16, 0);
            Ok(bytes)
        }
        (field, value) => Err(format!("{value:?} is not a {field:?}")),
    }
}

/// Which IP version a key reads the header of, if any.
fn ip_version(key: Key) -> Option<u8> {
    match key {
        Key::Ip4Saddr | Key::Ip4Daddr => Some(nfproto::IPV4),
        Key::Ip6Saddr | Key::Ip6Daddr | Key::Icmpv6Type => Some(nfproto::IPV6),
        _ => None,
    }
}

/// The rule's statements as expressions. Before the first read of an IP header, an `inet`
/// table checks the packet's family (reading an IPv4 address out of an IPv6 header would
/// match garbage); before an ICMPv6 type, that the packet is ICMPv6.
fn rule_exprs(family: Family, rule: &Rule) -> Result<Vec<Expr>, Invalid> {
    let mut out = Vec::new();
    let mut checked = Vec::new();
    for stmt in &rule.0 {
        for key in keys_of(stmt) {
            let Some(version) = ip_version(key) else { continue };
            match (family, version) {
                (Family::Ip, nfproto::IPV6) | (Family::Ip6, nfproto::IPV4) => {
                    return Err(format!("{key:?} in an {} table", family.as_str()))
                }
                _ => {}
            }
            if family == Family::Inet && !checked.contains(&version) {
                checked.push(version);
                out.push(Expr::Meta { key: meta::NFPROTO, dreg: wire::REG32_00 });
                out.push(Expr::Cmp { sreg: wire::REG32_00, op: CmpOp::Eq, data: vec![version] });
            }
            if key == Key::Icmpv6Type && !checked.contains(&0) {
                checked.push(0);
                out.push(Expr::Meta { key: meta::L4PROTO, dreg: wire::REG32_00 });
                out.push(Expr::Cmp { sreg: wire::REG32_00, op: CmpOp::Eq, data: vec![super::table::proto::ICMPV6] });
            }
        }
        stmt_exprs(family, stmt, &mut out)?;
    }
    Ok(out)
}

fn keys_of(stmt: &Stmt) -> Vec<Key> {
    match stmt {
        Stmt::Is(k, _) | Stmt::IsNot(k, _) | Stmt::Between(k, _, _) | Stmt::Within(k, _) => vec![*k],
        Stmt::In(ks, _) | Stmt::NotIn(ks, _) | Stmt::Vmap(ks, _) => ks.clone(),
        _ => Vec::new(),
    }
}

/// Loads `keys` one after the other from the first 32-bit register; returns that register.
fn load(keys: &[Key], out: &mut Vec<Expr>) -> Result<u32, Invalid> {
    let mut reg = wire::REG32_00;
    for key in keys {
        out.push(load_one(*key, reg));
        reg += key.field().len().div_ceil(4) as u32;
    }
    if reg > wire::REG32_00 + 16 {
        return Err(format!("keys {keys:?} take more than 64 bytes"));
    }
    Ok(wire::REG32_00)
}

fn load_one(key: Key, dreg: u32) -> Expr {
    let payload = |base, offset, len| Expr::Payload { base, offset, len, dreg };
    match key {
        Key::IifName => Expr::Meta { key: meta::IIFNAME, dreg },
        Key::OifName => Expr::Meta { key: meta::OIFNAME, dreg },
        Key::L4Proto => Expr::Meta { key: meta::L4PROTO, dreg },
        Key::Ip4Saddr => payload(Base::Network, 12, 4),
        Key::Ip4Daddr => payload(Base::Network, 16, 4),
        Key::Ip6Saddr => payload(Base::Network, 8, 16),
        Key::Ip6Daddr => payload(Base::Network, 24, 16),
        Key::Sport => payload(Base::Transport, 0, 2),
        Key::Dport => payload(Base::Transport, 2, 2),
        Key::Icmpv6Type => payload(Base::Transport, 0, 1),
        Key::NumgenRandom(modulus) => Expr::NumgenRandom { dreg, modulus },
    }
}

fn stmt_exprs(family: Family, stmt: &Stmt, out: &mut Vec<Expr>) -> Result<(), Invalid> {
    match stmt {
        Stmt::Is(key, value) | Stmt::IsNot(key, value) => {
            let data = value_bytes(key.field(), value)?;
            let sreg = load(&[*key], out)?;
            let op = if matches!(stmt, Stmt::Is(..)) { CmpOp::Eq } else { CmpOp::Neq };
            out.push(Expr::Cmp { sreg, op, data });
        }
        Stmt::Between(key, first, last) => {
            let (from, to) = (value_bytes(key.field(), first)?, value_bytes(key.field(), last)?);
            if matches!(key.field(), Field::IfName | Field::Index) {
                return Err(format!("no ranges of {key:?}"));
            }
            let sreg = load(&[*key], out)?;
            out.push(Expr::Range { sreg, from, to });
        }
        Stmt::Within(key, net) => {
            let network = value_bytes(key.field(), &Value::Addr(net.network()))?;
            let sreg = load(&[*key], out)?;
            let mask = match net.netmask() {
                IpAddr::V4(m) => m.octets().to_vec(),
                IpAddr::V6(m) => m.octets().to_vec(),
            };
            if mask.iter().any(|b| *b != 0xff) {
                let xor = vec![0; mask.len()];
                out.push(Expr::Bitwise { sreg, dreg: sreg, mask, xor });
            }
            out.push(Expr::Cmp { sreg, op: CmpOp::Eq, data: network });
        }
        Stmt::In(keys, set) | Stmt::NotIn(keys, set) => {
            let sreg = load(keys, out)?;
            out.push(Expr::Lookup { set: set.clone(), sreg, dreg: None, invert: matches!(stmt, Stmt::NotIn(..)) });
        }
        Stmt::Vmap(keys, map) => {
            let sreg = load(keys, out)?;
            out.push(Expr::Lookup { set: map.clone(), sreg, dreg: Some(wire::REG_VERDICT), invert: false });
        }
        Stmt::CtState(states) => {
            let bits = states.iter().fold(0u32, |acc, s| {
                acc | match s {
                    CtState::Invalid => wire::CT_STATE_INVALID,
                    CtState::New => wire::CT_STATE_NEW,
                    CtState::Established => wire::CT_STATE_ESTABLISHED,
                    CtState::Related => wire::CT_STATE_RELATED,
                }
            });
            let reg = wire::REG32_00;
            out.push(Expr::Ct { key: wire::CT_STATE, dreg: reg });
            out.push(Expr::Bitwise { sreg: reg, dreg: reg, mask: bits.to_ne_bytes().to_vec(), xor: vec![0; 4] });
            out.push(Expr::Cmp { sreg: reg, op: CmpOp::Neq, data: vec![0; 4] });
        }
        Stmt::Dnat(addr, port) => {
            let (version, bytes) = match addr {
                IpAddr::V4(a) => (nfproto::IPV4, a.octets().to_vec()),
                IpAddr::V6(a) => (nfproto::IPV6, a.octets().to_vec()),
            };
            match (family, version) {
                (Family::Ip, nfproto::IPV6) | (Family::Ip6, nfproto::IPV4) => {
                    return Err(format!("dnat to {addr} in an {} table", family.as_str()))
                }
                _ => {}
            }
            // The address in the first four registers (an IPv6 address fills them), the
            // port in the fifth.
            let (addr_reg, port_reg) = (wire::REG32_00, wire::REG32_00 + 4);
            out.push(Expr::Immediate { dreg: addr_reg, data: bytes });
            if let Some(p) = port {
                out.push(Expr::Immediate { dreg: port_reg, data: p.to_be_bytes().to_vec() });
            }
            out.push(Expr::Dnat { family: version, addr: addr_reg, port: port.map(|_| port_reg) });
        }
        Stmt::Reject => out.push(Expr::Reject { family: nfproto_of(family) }),
        Stmt::Counter => out.push(Expr::Counter),
        Stmt::Verdict(v) => out.push(Expr::Verdict(v.clone())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::table::{priority, ChainKind, Element, Hook, HookPoint, Policy};
    use crate::nft::Verdict;

    fn exprs(family: Family, stmts: Vec<Stmt>) -> Result<Vec<Expr>, Invalid> {
        rule_exprs(family, &Rule(stmts))
    }

    #[test]
    fn an_inet_rule_checks_the_family_once_before_reading_an_ip_header() {
        let got = exprs(
            Family::Inet,
            vec![
                Stmt::Within(Key::Ip4Saddr, "10.0.0.0/8".parse().unwrap()),
                Stmt::Is(Key::Ip4Daddr, Value::Addr("10.1.2.3".parse().unwrap())),
                Stmt::Verdict(Verdict::Accept),
            ],
        )
        .unwrap();
        let r = wire::REG32_00;
        assert_eq!(
            got,
            vec![
                Expr::Meta { key: meta::NFPROTO, dreg: r },
                Expr::Cmp { sreg: r, op: CmpOp::Eq, data: vec![nfproto::IPV4] },
                Expr::Payload { base: Base::Network, offset: 12, len: 4, dreg: r },
                Expr::Bitwise { sreg: r, dreg: r, mask: vec![255, 0, 0, 0], xor: vec![0; 4] },
                Expr::Cmp { sreg: r, op: CmpOp::Eq, data: vec![10, 0, 0, 0] },
                Expr::Payload { base: Base::Network, offset: 16, len: 4, dreg: r },
                Expr::Cmp { sreg: r, op: CmpOp::Eq, data: vec![10, 1, 2, 3] },
                Expr::Verdict(Verdict::Accept),
            ]
        );
        // An ip table needs no check, and cannot read an IPv6 header.
        assert_eq!(
            exprs(Family::Ip, vec![Stmt::Is(Key::Ip4Daddr, Value::Addr("10.1.2.3".parse().unwrap()))]).unwrap().len(),
            2
        );
        assert!(exprs(Family::Ip, vec![Stmt::In(vec![Key::Ip6Saddr], "s".into())]).is_err());
    }

    #[test]
    fn a_concatenation_fills_whole_registers_one_after_the_other() {
        let got =
            exprs(Family::Ip6, vec![Stmt::Vmap(vec![Key::Ip6Daddr, Key::L4Proto, Key::Dport], "m".into())]).unwrap();
        let r = wire::REG32_00;
        assert_eq!(
            got,
            vec![
                Expr::Payload { base: Base::Network, offset: 24, len: 16, dreg: r },
                Expr::Meta { key: meta::L4PROTO, dreg: r + 4 },
                Expr::Payload { base: Base::Transport, offset: 2, len: 2, dreg: r + 5 },
                Expr::Lookup { set: "m".into(), sreg: r, dreg: Some(wire::REG_VERDICT), invert: false },
            ]
        );
    }

    #[test]
    fn values_of_the_wrong_type_and_bad_names_are_refused_before_sending() {
        assert!(exprs(Family::Inet, vec![Stmt::Is(Key::Dport, Value::Proto(6))]).is_err());
        assert!(exprs(Family::Inet, vec![Stmt::Is(Key::IifName, Value::IfName("a-name-too-long-for-linux".into()))])
            .is_err());
        assert!(exprs(Family::Ip6, vec![Stmt::Dnat("10.0.0.1".parse().unwrap(), None)]).is_err());
        let mut t = Table::new(Family::Inet, "has space");
        assert!(replace(&t).is_err());
        t.name = "ok".into();
        t.sets.push(Set::new("m", vec![Field::Ipv4Addr]).with(vec![Element::of(Value::Port(1))]));
        assert!(replace(&t).is_err());
        t.sets[0] = Set::verdict_map("m", vec![Field::Ipv4Addr])
            .with(vec![Element::of(Value::Addr("10.0.0.1".parse().unwrap()))]);
        assert!(replace(&t).unwrap_err().contains("no verdict"));
        t.sets = vec![Set::new("s", vec![Field::Ipv4Addr]), Set::new("s", vec![Field::Ipv6Addr])];
        assert!(replace(&t).unwrap_err().contains("twice"));
    }

    #[test]
    fn interval_sets_get_merged_ranges_as_start_and_end_past_the_last() {
        let set = Set::intervals("p", Field::InetService).with(vec![
            Element::range(Value::Port(100), Value::Port(200)),
            Element::range(Value::Port(150), Value::Port(300)),
            Element::of(Value::Port(65535)),
        ]);
        let got = interval_elements(&set).unwrap();
        let key = |port: u16| {
            let mut a = Attrs::new();
            a.data(attr::elem::KEY, &port.to_be_bytes());
            a
        };
        let mut end = key(301);
        end.be32(attr::elem::FLAGS, wire::ELEM_INTERVAL_END);
        // 65535 runs to the field's end: no end element.
        let want = [key(100), end, key(65535)];
        assert_eq!(got.iter().map(Attrs::bytes).collect::<Vec<_>>(), want.iter().map(Attrs::bytes).collect::<Vec<_>>());
    }

    #[test]
    fn a_replace_adds_deletes_and_adds_the_table_then_chains_sets_elements_rules() {
        let mut t = Table::new(Family::Inet, "t");
        let hook =
            Hook { kind: ChainKind::Filter, point: HookPoint::Input, priority: priority::FILTER, policy: Policy::Drop };
        t.chains.push(Chain::base("in", hook, vec![Rule(vec![Stmt::In(vec![Key::Dport], "ports".into())])]));
        t.sets.push(Set::new("ports", vec![Field::InetService]).with(vec![Element::of(Value::Port(80))]));
        let ops: Vec<Op> = replace(&t).unwrap().iter().map(|m| m.op).collect();
        assert_eq!(
            ops,
            [Op::NewTable, Op::DelTable, Op::NewTable, Op::NewChain, Op::NewSet, Op::NewSetElem, Op::NewRule]
        );
        // In place: kept objects flushed, gone ones deleted after nothing refers to them.
        let existing = Existing { chains: vec!["in".into(), "old".into()], sets: vec!["ports".into(), "gone".into()] };
        let steps: Vec<String> = update(&t, &existing).unwrap().into_iter().map(|m| m.what).collect();
        assert_eq!(
            steps,
            [
                "add table inet t",
                "add chain in",
                "flush chain in",
                "flush chain old",
                "flush set ports",
                "flush set gone",
                "delete set gone",
                "add elements to set ports",
                "delete chain old",
                "add rule 0 to chain in",
            ]
        );
    }

    #[test]
    fn many_elements_are_split_over_messages_below_the_attribute_limit() {
        let addrs = (0..20_000u32).map(|i| Element::of(Value::Addr(std::net::Ipv4Addr::from(0x0a00_0000 + i).into())));
        let set = Set::new("many", vec![Field::Ipv4Addr]).with(addrs.collect());
        let messages = element_messages(nfproto::INET, "t", &set).unwrap();
        assert!(messages.len() > 1);
        assert!(messages.iter().all(|m| m.attrs.len() < u16::MAX as usize));
    }
}
