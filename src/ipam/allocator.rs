//! Choosing addresses for one attachment, host-local's way: one per range set, round-robin
//! from the address after the one last handed out, skipping the gateway and every leased
//! address; or the address asked for, if it is free. All or nothing: a failure releases what
//! this call had leased.

use super::leases::{corrupt_error, Lease, LeaseStore};
use super::range::Range;
use crate::cni::{code, CniError};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// One address handed out and the range it came from (for its prefix and gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpAddr,
    pub range: Range,
}

/// Leases one address per range set to the attachment.
pub fn allocate(
    store: &LeaseStore,
    range_sets: &[Vec<Range>],
    container_id: &str,
    ifname: &str,
    requested: &[IpAddr],
) -> Result<Vec<Allocation>, CniError> {
    let leases = store.leases()?;
    if let Some(lease) = leases.iter().find(|l| l.owner.as_ref().is_ok_and(|o| o.is(container_id, ifname))) {
        return Err(CniError::invalid_config(format!(
            "container {container_id} already has {} on {ifname} ({}): an ADD for an attachment that exists",
            lease.ip,
            store.dir().display()
        )));
    }
    let taken: BTreeSet<IpAddr> = leases.iter().map(|l| l.ip).collect();
    let mut made: Vec<Allocation> = Vec::new();
    let outcome = (|| {
        for (set, ranges) in range_sets.iter().enumerate() {
            let wanted = requested.iter().copied().find(|ip| ranges.iter().any(|r| r.contains(*ip)));
            let allocation = match wanted {
                Some(ip) => reserve_requested(store, ranges, ip, &leases, container_id, ifname)?,
                None => next_free(store, set, ranges, &taken, &leases, container_id, ifname)?,
            };
            store.set_last_reserved(set, allocation.ip)?;
            made.push(allocation);
        }
        let unmet: Vec<String> =
            requested.iter().filter(|ip| !made.iter().any(|a| a.ip == **ip)).map(IpAddr::to_string).collect();
        if !unmet.is_empty() {
            return Err(CniError::invalid_config(format!(
                "requested address(es) {} are in none of this node's ranges ({})",
                unmet.join(", "),
                describe_sets(range_sets)
            )));
        }
        Ok(())
    })();
    match outcome {
        Ok(()) => Ok(made),
        Err(e) => {
            for a in &made {
                let _ = store.release(a.ip);
            }
            Err(e)
        }
    }
}

fn reserve_requested(
    store: &LeaseStore,
    ranges: &[Range],
    ip: IpAddr,
    leases: &[Lease],
    container_id: &str,
    ifname: &str,
) -> Result<Allocation, CniError> {
    let range = ranges.iter().find(|r| r.contains(ip)).cloned().unwrap_or_else(|| ranges[0].clone());
    if range.gateway == Some(ip) {
        return Err(CniError::invalid_config(format!("requested address {ip} is the gateway of {}", range.subnet)));
    }
    if let Some(lease) = leases.iter().find(|l| l.ip == ip) {
        let holder = match &lease.owner {
            Ok(o) => format!("container {} ({})", o.container_id, o.ifname.as_deref().unwrap_or("?")),
            Err(_) => return Err(corrupt_error(store.dir(), &[lease])),
        };
        return Err(CniError::invalid_config(format!("requested address {ip} is already leased to {holder}")));
    }
    if !store.reserve(ip, container_id, ifname)? {
        return Err(CniError::invalid_config(format!("requested address {ip} is already leased")));
    }
    Ok(Allocation { ip, range })
}

/// The next free address of the set after the last one handed out (host-local's order:
/// ranges in turn, wrapping around), leased at once.
fn next_free(
    store: &LeaseStore,
    set: usize,
    ranges: &[Range],
    taken: &BTreeSet<IpAddr>,
    leases: &[Lease],
    container_id: &str,
    ifname: &str,
) -> Result<Allocation, CniError> {
    let total: u128 = ranges.iter().map(Range::size).fold(0, u128::saturating_add);
    let (mut r, mut n) = match store.last_reserved(set).and_then(|last| position(ranges, last)) {
        Some((r, n)) => step(ranges, r, n),
        None => (0, 0),
    };
    // Every candidate is either free or one of the leases, so this ends after at most
    // leases + gateways + 1 steps in a large range, and after `total` in a small one.
    let mut visited: u128 = 0;
    while visited < total {
        let range = &ranges[r];
        let ip = range.nth(n);
        if range.gateway != Some(ip) && !taken.contains(&ip) && store.reserve(ip, container_id, ifname)? {
            return Ok(Allocation { ip, range: range.clone() });
        }
        (r, n) = step(ranges, r, n);
        visited += 1;
    }
    let corrupt: Vec<&Lease> =
        leases.iter().filter(|l| l.owner.is_err() && ranges.iter().any(|r| r.contains(l.ip))).collect();
    let mut msg = format!(
        "no free address in range set {set} ({}): {} leased in {}",
        describe(ranges),
        leases.iter().filter(|l| ranges.iter().any(|r| r.contains(l.ip))).count(),
        store.dir().display()
    );
    if !corrupt.is_empty() {
        msg = format!("{msg}; {}", corrupt_error(store.dir(), &corrupt).msg);
    }
    Err(CniError::new(code::ADDRESSES_EXHAUSTED, msg))
}

/// Range and offset of `ip` in the set.
fn position(ranges: &[Range], ip: IpAddr) -> Option<(usize, u128)> {
    let r = ranges.iter().position(|r| r.contains(ip))?;
    Some((r, super::range::to_u128(ip) - super::range::to_u128(ranges[r].start)))
}

/// The position after (r, n), wrapping to the next range and from the last to the first.
fn step(ranges: &[Range], r: usize, n: u128) -> (usize, u128) {
    if n + 1 < ranges[r].size() {
        (r, n + 1)
    } else {
        ((r + 1) % ranges.len(), 0)
    }
}

fn describe(ranges: &[Range]) -> String {
    ranges.iter().map(Range::describe).collect::<Vec<_>>().join(", ")
}

fn describe_sets(sets: &[Vec<Range>]) -> String {
    sets.iter().map(|s| describe(s)).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(subnet: &str, start: &str, end: &str) -> Range {
        Range::new(subnet.parse().unwrap(), Some(start.parse().unwrap()), Some(end.parse().unwrap()), None).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn round_robin_skips_gateway_and_leases_and_wraps() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::lock(dir.path(), "n").unwrap();
        let sets = vec![vec![range("10.0.0.0/24", "10.0.0.1", "10.0.0.4")]];
        let got = |c: &str| allocate(&store, &sets, c, "eth0", &[]).map(|a| a[0].ip);
        assert_eq!(got("c1").unwrap(), ip("10.0.0.2"), "10.0.0.1 is the gateway");
        assert_eq!(got("c2").unwrap(), ip("10.0.0.3"));
        store.release(ip("10.0.0.2")).unwrap();
        assert_eq!(got("c3").unwrap(), ip("10.0.0.4"), "round-robin, not first free");
        assert_eq!(got("c4").unwrap(), ip("10.0.0.2"), "wraps around");
        let full = got("c5").unwrap_err();
        assert_eq!(full.code, code::ADDRESSES_EXHAUSTED);
        assert!(full.msg.contains("no free address in range set 0 (10.0.0.1-10.0.0.4): 3 leased"), "{}", full.msg);
        let dup = got("c4").unwrap_err();
        assert!(dup.code == 7 && dup.msg.contains("already has 10.0.0.2"), "{}", dup.msg);
    }

    #[test]
    fn dual_stack_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::lock(dir.path(), "n").unwrap();
        let sets =
            vec![vec![range("10.0.0.0/24", "10.0.0.2", "10.0.0.9")], vec![range("fd00::/64", "fd00::2", "fd00::2")]];
        let a = allocate(&store, &sets, "c1", "net1", &[]).unwrap();
        assert_eq!(a.iter().map(|a| a.ip).collect::<Vec<_>>(), vec![ip("10.0.0.2"), ip("fd00::2")]);
        let e = allocate(&store, &sets, "c2", "net1", &[]).unwrap_err();
        assert_eq!(e.code, code::ADDRESSES_EXHAUSTED);
        let left: Vec<IpAddr> = store.leases().unwrap().iter().map(|l| l.ip).collect();
        assert_eq!(left, vec![ip("10.0.0.2"), ip("fd00::2")], "c2's IPv4 lease was released");
    }

    #[test]
    fn requested_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::lock(dir.path(), "n").unwrap();
        let sets = vec![vec![range("10.0.0.0/24", "10.0.0.2", "10.0.0.9")]];
        let a = allocate(&store, &sets, "c1", "eth0", &[ip("10.0.0.7")]).unwrap();
        assert_eq!(a[0].ip, ip("10.0.0.7"));
        let taken = allocate(&store, &sets, "c2", "eth0", &[ip("10.0.0.7")]).unwrap_err();
        assert!(taken.msg.contains("already leased to container c1 (eth0)"), "{}", taken.msg);
        let outside = allocate(&store, &sets, "c2", "eth0", &[ip("10.0.1.7")]).unwrap_err();
        assert!(outside.msg.contains("in none of this node's ranges"), "{}", outside.msg);
        assert_eq!(store.leases().unwrap().len(), 1, "nothing left behind by the failures");
    }

    #[test]
    fn exhaustion_names_corrupt_files_holding_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::lock(dir.path(), "n").unwrap();
        std::fs::write(dir.path().join("n/10.0.0.2"), "garbage\0").unwrap();
        let sets = vec![vec![range("10.0.0.0/24", "10.0.0.2", "10.0.0.2")]];
        let e = allocate(&store, &sets, "c1", "eth0", &[]).unwrap_err();
        assert!(e.msg.contains("1 lease file(s) are corrupt") && e.msg.contains("10.0.0.2"), "{}", e.msg);
    }
}
