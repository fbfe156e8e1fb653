//! Inclusive ranges of numbers (addresses, ports): merging them for the kernel's interval sets,
//! which refuse overlaps, and cutting holes in them, which is what a NetworkPolicy `ipBlock`
//! with `except` means: the peer's CIDR minus its exceptions, per peer, so that one peer's
//! exception never takes away what another peer allows.

use super::table::{Element, Value};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Sorted, with overlapping and touching ranges joined.
pub fn merge(mut ranges: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    ranges.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// `ranges` without any number in `holes`.
pub fn subtract(ranges: Vec<(u128, u128)>, holes: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    let holes = merge(holes);
    let mut out = Vec::new();
    for (mut lo, hi) in merge(ranges) {
        let mut done = false;
        for &(hlo, hhi) in &holes {
            if hhi < lo || hlo > hi {
                continue;
            }
            if hlo > lo {
                out.push((lo, hlo - 1));
            }
            if hhi >= hi {
                done = true;
                break;
            }
            lo = hhi + 1;
        }
        if !done {
            out.push((lo, hi));
        }
    }
    out
}

/// The elements of an address interval set for `cidr` minus `except` (exceptions of the
/// other family, or outside the CIDR, change nothing).
pub fn block(cidr: IpNet, except: &[IpNet]) -> Vec<Element> {
    let v6 = cidr.addr().is_ipv6();
    let holes = except.iter().filter(|e| e.addr().is_ipv6() == v6).map(|e| span(*e)).collect();
    subtract(vec![span(cidr)], holes)
        .into_iter()
        .map(|(lo, hi)| Element::range(Value::Addr(addr(v6, lo)), Value::Addr(addr(v6, hi))))
        .collect()
}

fn span(net: IpNet) -> (u128, u128) {
    (number(net.network()), number(net.broadcast()))
}

fn number(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

fn addr(v6: bool, n: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_and_touching_ranges_are_joined() {
        assert_eq!(merge(vec![(10, 20), (1, 3), (4, 5), (15, 30), (40, 40)]), vec![(1, 5), (10, 30), (40, 40)]);
        assert_eq!(merge(vec![(0, u128::MAX), (5, 6)]), vec![(0, u128::MAX)]);
    }

    #[test]
    fn holes_are_cut_out_wherever_they_fall() {
        assert_eq!(subtract(vec![(0, 100)], vec![(10, 19), (50, 200)]), vec![(0, 9), (20, 49)]);
        assert_eq!(subtract(vec![(10, 20)], vec![(0, 10)]), vec![(11, 20)]);
        assert_eq!(subtract(vec![(10, 20)], vec![(0, 30)]), vec![]);
        assert_eq!(subtract(vec![(10, 20)], vec![(30, 40)]), vec![(10, 20)]);
    }

    #[test]
    fn an_ip_block_with_an_exception_is_two_ranges() {
        let got = block("10.0.0.0/24".parse().unwrap(), &["10.0.0.128/25".parse().unwrap(), "::/0".parse().unwrap()]);
        assert_eq!(
            got,
            vec![Element::range(Value::Addr("10.0.0.0".parse().unwrap()), Value::Addr("10.0.0.127".parse().unwrap()))]
        );
        let got = block("2001:db8::/64".parse().unwrap(), &["2001:db8::1/128".parse().unwrap()]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].key, vec![Value::Addr("2001:db8::2".parse().unwrap())]);
    }
}
