//! Address arithmetic: host-local's ranges (which addresses a pool hands out, which one is the
//! gateway) and a cluster range cut into equal node slices.
//!
//! Addresses are handled as `u128` so that IPv4 and IPv6 ranges are walked by the same code.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address as a number (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of number `n` in the family of `like`.
pub fn from_u128(n: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

fn bits(net: &IpNet) -> u8 {
    net.max_prefix_len()
}

/// A subnet given with host bits set (`11.0.4.5/24`) is a typo for its network, as host-local
/// says; a /31 or /32 (/127, /128) leaves no address to hand out beside the network's own.
fn check_subnet(subnet: &IpNet) -> Result<(), String> {
    if subnet.addr() != subnet.network() {
        return Err(format!("subnet {subnet} has host bits set (did you mean {}?)", subnet.trunc()));
    }
    if subnet.prefix_len() > bits(subnet) - 2 {
        return Err(format!("subnet {subnet} is too small to hand out addresses from"));
    }
    Ok(())
}

/// The first and last address host-local hands out in a subnet: after the network address,
/// and before the broadcast address in IPv4 (IPv6 has none).
fn usable(subnet: &IpNet) -> (IpAddr, IpAddr) {
    let first = to_u128(subnet.network()) + 1;
    let last = to_u128(subnet.broadcast()) - u128::from(subnet.addr().is_ipv4());
    (from_u128(first, subnet.addr()), from_u128(last, subnet.addr()))
}

/// One pool, as host-local's `range`: the subnet the pod is told, the first and last address
/// handed out, and the gateway, which is never handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

impl Range {
    /// host-local's rules for `{subnet, rangeStart, rangeEnd, gateway}`: start and end default
    /// to the subnet's usable addresses and must lie in it; the gateway defaults to the
    /// subnet's first address.
    pub fn new(
        subnet: IpNet,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        gateway: Option<IpAddr>,
    ) -> Result<Range, String> {
        check_subnet(&subnet)?;
        let (first, last) = usable(&subnet);
        let start = start.unwrap_or(first);
        let end = end.unwrap_or(last);
        for (name, ip) in [("rangeStart", start), ("rangeEnd", end)] {
            if !subnet.contains(&ip) {
                return Err(format!("{name} {ip} is not in subnet {subnet}"));
            }
        }
        if to_u128(start) > to_u128(end) {
            return Err(format!("rangeStart {start} is after rangeEnd {end}"));
        }
        if let Some(gw) = gateway.filter(|gw| gw.is_ipv4() != subnet.addr().is_ipv4()) {
            return Err(format!("gateway {gw} is not of the family of subnet {subnet}"));
        }
        Ok(Range { subnet, start, end, gateway: Some(gateway.unwrap_or(first)) })
    }

    pub fn is_v4(&self) -> bool {
        self.subnet.addr().is_ipv4()
    }

    /// Whether `ip` is one this range may hand out (between start and end).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_v4() && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    /// How many addresses lie between start and end, the gateway included.
    pub fn size(&self) -> u128 {
        to_u128(self.end) - to_u128(self.start) + 1
    }

    /// The `n`-th address from the start (`n < size()`).
    pub fn nth(&self, n: u128) -> IpAddr {
        from_u128(to_u128(self.start) + n, self.start)
    }

    /// The address as the pod gets it: with the subnet's prefix length.
    pub fn cidr(&self, ip: IpAddr) -> String {
        format!("{ip}/{}", self.subnet.prefix_len())
    }

    /// `start-end`, as host-local names a range in its messages.
    pub fn describe(&self) -> String {
        format!("{}-{}", self.start, self.end)
    }
}

/// A cluster range that every node gets its own slice of (`nodeSliceSize`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicedRange {
    pub subnet: IpNet,
    /// Prefix length of one node's slice.
    pub slice_len: u8,
    /// Whether pods keep the cluster range's prefix (one L2 segment across nodes, a
    /// cluster-wide gateway) rather than their slice's (a subnet per node, routed).
    pub shared_subnet: bool,
    pub gateway: Option<IpAddr>,
}

impl SlicedRange {
    pub fn new(subnet: IpNet, slice_len: u8, shared_subnet: bool, gateway: Option<IpAddr>) -> Result<Self, String> {
        if subnet.addr() != subnet.network() {
            return Err(format!("subnet {subnet} has host bits set (did you mean {}?)", subnet.trunc()));
        }
        if slice_len < subnet.prefix_len() {
            return Err(format!(
                "nodeSliceSize /{slice_len} is larger than the range {subnet} itself \
                 (a node's slice must have a prefix of at least /{})",
                subnet.prefix_len()
            ));
        }
        if slice_len > bits(&subnet) - 2 {
            return Err(format!(
                "nodeSliceSize /{slice_len} leaves a node no address to hand out (at most /{})",
                bits(&subnet) - 2
            ));
        }
        match gateway {
            Some(gw) if !shared_subnet => {
                return Err(format!(
                    "gateway {gw} would be one address for every node: with nodeSliceSize each node's \
                     gateway is the first address of its slice (set \"sharedSubnet\": true for one \
                     subnet with one gateway across nodes)"
                ))
            }
            Some(gw) if !subnet.contains(&gw) => return Err(format!("gateway {gw} is not in subnet {subnet}")),
            _ => {}
        }
        Ok(SlicedRange { subnet, slice_len, shared_subnet, gateway })
    }

    fn slice_bits(&self) -> u32 {
        u32::from(bits(&self.subnet) - self.slice_len)
    }

    /// How many slices the range holds.
    pub fn count(&self) -> u128 {
        1u128 << (self.slice_len - self.subnet.prefix_len())
    }

    /// Slice number `index` (`index < count()`).
    pub fn slice(&self, index: u128) -> IpNet {
        let base = to_u128(self.subnet.network()) + (index << self.slice_bits());
        // The prefix length was checked against the family in `new`.
        IpNet::new(from_u128(base, self.subnet.addr()), self.slice_len).unwrap_or(self.subnet)
    }

    /// The number of `slice` in this range, if it is one of its slices.
    pub fn index_of(&self, slice: &IpNet) -> Option<u128> {
        (slice.prefix_len() == self.slice_len && self.subnet.contains(slice) && slice.addr() == slice.network())
            .then(|| (to_u128(slice.network()) - to_u128(self.subnet.network())) >> self.slice_bits())
    }

    /// The slices of this range that `other` overlaps (a claim made with another layout).
    pub fn indexes_overlapping(&self, other: &IpNet) -> std::ops::RangeInclusive<u128> {
        let lo = to_u128(other.network()).max(to_u128(self.subnet.network()));
        let hi = to_u128(other.broadcast()).min(to_u128(self.subnet.broadcast()));
        if lo > hi || other.addr().is_ipv4() != self.subnet.addr().is_ipv4() {
            #[allow(clippy::reversed_empty_ranges)]
            return 1..=0;
        }
        let base = to_u128(self.subnet.network());
        ((lo - base) >> self.slice_bits())..=((hi - base) >> self.slice_bits())
    }

    /// What a node holding `slice` hands out: its slice as a subnet of its own, or, with a
    /// shared subnet, the slice's addresses with the cluster range's prefix (the range's
    /// network and broadcast address and its gateway excluded).
    pub fn node_range(&self, slice: IpNet) -> Range {
        if !self.shared_subnet {
            let (first, last) = usable(&slice);
            return Range { subnet: slice, start: first, end: last, gateway: Some(first) };
        }
        let (first, last) = usable(&self.subnet);
        let start = to_u128(slice.network()).max(to_u128(first));
        let end = to_u128(slice.broadcast()).min(to_u128(last));
        Range {
            subnet: self.subnet,
            start: from_u128(start, first),
            end: from_u128(end, first),
            gateway: Some(self.gateway.unwrap_or(first)),
        }
    }
}

/// A configured range: a fixed pool, or a cluster range every node takes a slice of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeSpec {
    Fixed(Range),
    Sliced(SlicedRange),
}

impl RangeSpec {
    pub fn is_v4(&self) -> bool {
        match self {
            RangeSpec::Fixed(r) => r.is_v4(),
            RangeSpec::Sliced(s) => s.subnet.addr().is_ipv4(),
        }
    }

    /// The addresses it may ever hand out, first and last, for overlap checks.
    fn span(&self) -> (u128, u128) {
        match self {
            RangeSpec::Fixed(r) => (to_u128(r.start), to_u128(r.end)),
            RangeSpec::Sliced(s) => (to_u128(s.subnet.network()), to_u128(s.subnet.broadcast())),
        }
    }

    pub fn overlaps(&self, other: &RangeSpec) -> bool {
        let ((a, b), (c, d)) = (self.span(), other.span());
        self.is_v4() == other.is_v4() && a <= d && c <= b
    }

    pub fn describe(&self) -> String {
        match self {
            RangeSpec::Fixed(r) => format!("{} ({})", r.subnet, r.describe()),
            RangeSpec::Sliced(s) => format!("{} (slices of /{})", s.subnet, s.slice_len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_local_defaults_for_a_subnet() {
        let r = Range::new(net("10.1.2.0/24"), None, None, None).unwrap();
        assert_eq!((r.start, r.end, r.gateway), (ip("10.1.2.1"), ip("10.1.2.254"), Some(ip("10.1.2.1"))));
        let v6 = Range::new(net("fd00::/120"), None, None, None).unwrap();
        assert_eq!((v6.start, v6.end), (ip("fd00::1"), ip("fd00::ff")), "IPv6 has no broadcast address");
        assert_eq!(r.cidr(ip("10.1.2.7")), "10.1.2.7/24");
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        let err = |s, start: Option<&str>| Range::new(net(s), start.map(ip), None, None).unwrap_err();
        assert!(err("10.1.2.5/24", None).contains("did you mean 10.1.2.0/24"));
        assert!(err("10.1.2.0/31", None).contains("too small"));
        assert!(err("10.1.2.0/24", Some("10.1.3.1")).contains("rangeStart 10.1.3.1 is not in subnet"));
    }

    #[test]
    fn slices_of_a_cluster_range() {
        let s = SlicedRange::new(net("11.0.0.0/16"), 24, false, None).unwrap();
        assert_eq!(s.count(), 256);
        assert_eq!(s.slice(4), net("11.0.4.0/24"));
        assert_eq!(s.index_of(&net("11.0.4.0/24")), Some(4));
        assert_eq!(s.index_of(&net("11.0.4.0/25")), None);
        assert_eq!(s.index_of(&net("12.0.4.0/24")), None);
        let node = s.node_range(s.slice(4));
        assert_eq!((node.subnet, node.start, node.end), (net("11.0.4.0/24"), ip("11.0.4.1"), ip("11.0.4.254")));
        assert_eq!(node.gateway, Some(ip("11.0.4.1")), "the seed's 11.0.x.1");

        let v6 = SlicedRange::new(net("fd11::/48"), 64, false, None).unwrap();
        assert_eq!(v6.count(), 65536);
        assert_eq!(v6.slice(4), net("fd11:0:0:4::/64"));
        assert_eq!(v6.node_range(v6.slice(4)).end, ip("fd11:0:0:4:ffff:ffff:ffff:ffff"));
    }

    #[test]
    fn a_shared_subnet_keeps_the_cluster_prefix_and_skips_its_edges() {
        let s = SlicedRange::new(net("11.0.0.0/16"), 24, true, Some(ip("11.0.0.1"))).unwrap();
        let first = s.node_range(s.slice(0));
        assert_eq!((first.subnet, first.start, first.end), (net("11.0.0.0/16"), ip("11.0.0.1"), ip("11.0.0.255")));
        assert_eq!(first.gateway, Some(ip("11.0.0.1")));
        let last = s.node_range(s.slice(255));
        assert_eq!((last.start, last.end), (ip("11.0.255.0"), ip("11.0.255.254")), "not the broadcast address");
    }

    #[test]
    fn slice_sizes_are_checked_against_the_range() {
        let e = SlicedRange::new(net("11.0.0.0/16"), 8, false, None).unwrap_err();
        assert!(e.contains("larger than the range 11.0.0.0/16"), "{e}");
        assert!(SlicedRange::new(net("11.0.0.0/16"), 31, false, None).unwrap_err().contains("at most /30"));
        let gw = SlicedRange::new(net("11.0.0.0/16"), 24, false, Some(ip("11.0.0.1"))).unwrap_err();
        assert!(gw.contains("sharedSubnet"), "{gw}");
        assert_eq!(SlicedRange::new(net("11.0.0.0/16"), 16, false, None).unwrap().count(), 1);
    }

    #[test]
    fn overlap_of_claims_made_with_another_layout() {
        let s = SlicedRange::new(net("11.0.0.0/16"), 24, false, None).unwrap();
        assert_eq!(s.indexes_overlapping(&net("11.0.4.128/25")), 4..=4);
        assert_eq!(s.indexes_overlapping(&net("11.0.4.0/22")), 4..=7);
        assert!(s.indexes_overlapping(&net("12.0.0.0/24")).is_empty());
        assert!(s.indexes_overlapping(&net("fd00::/64")).is_empty());
    }

    #[test]
    fn overlapping_specs() {
        let fixed = |s, a, b| RangeSpec::Fixed(Range::new(net(s), Some(ip(a)), Some(ip(b)), None).unwrap());
        let sliced = RangeSpec::Sliced(SlicedRange::new(net("11.0.0.0/16"), 24, false, None).unwrap());
        assert!(sliced.overlaps(&fixed("11.0.4.0/24", "11.0.4.10", "11.0.4.20")));
        assert!(!fixed("10.0.0.0/24", "10.0.0.10", "10.0.0.20").overlaps(&fixed(
            "10.0.0.0/24",
            "10.0.0.30",
            "10.0.0.40"
        )));
    }
}
