//! The address pools of host-local's `ipam` section: range sets (fixed, or sliced per node in
//! native mode), routes and DNS, validated with each error naming its field. Read from the
//! network config inline, or from a seed-mode template after its `.x` is replaced.

use super::fields::{invalid, opt_str};
use super::range::{Range, RangeSpec, SlicedRange};
use crate::cni::result::{Dns, Route};
use crate::cni::CniError;
use ipnet::IpNet;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::path::Path;

/// What host-local's `ipam` section describes: range sets, routes, DNS.
#[derive(Debug, Clone, PartialEq)]
pub struct Pools {
    pub range_sets: Vec<Vec<RangeSpec>>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl Pools {
    /// The sliced ranges, in order: what the node must hold claims for.
    pub fn sliced(&self) -> Vec<&SlicedRange> {
        self.range_sets
            .iter()
            .flatten()
            .filter_map(|r| match r {
                RangeSpec::Sliced(s) => Some(s),
                RangeSpec::Fixed(_) => None,
            })
            .collect()
    }
}

impl Pools {
    /// host-local's `ipam` keys: `ranges` (a list of range sets), a single range given at the
    /// top (`subnet`, ...) put first as host-local does, `routes` and `resolvConf`. `at` names
    /// where the section came from in messages (`ipam`, or the template's path).
    pub fn parse(ipam: &Map<String, Value>, at: &str) -> Result<Pools, CniError> {
        let mut range_sets = Vec::new();
        if ipam.contains_key("subnet") {
            range_sets.push(vec![range_spec(ipam, at)?]);
        }
        match ipam.get("ranges") {
            None | Some(Value::Null) => {}
            Some(Value::Array(sets)) => {
                for (i, set) in sets.iter().enumerate() {
                    let set = set
                        .as_array()
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| invalid(format!("{at}.ranges[{i}] must be a non-empty list of ranges")))?;
                    let mut specs = Vec::new();
                    for (j, range) in set.iter().enumerate() {
                        let here = format!("{at}.ranges[{i}][{j}]");
                        let obj = range.as_object().ok_or_else(|| invalid(format!("{here} must be an object")))?;
                        specs.push(range_spec(obj, &here)?);
                    }
                    range_sets.push(specs);
                }
            }
            Some(_) => return Err(invalid(format!("{at}.ranges must be a list of range sets"))),
        }
        if range_sets.is_empty() {
            return Err(invalid(format!("{at} has no ranges: give \"ranges\": [[{{\"subnet\": ...}}]]")));
        }
        check_families_and_overlaps(&range_sets, at)?;
        let routes = match ipam.get("routes") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value::<Vec<Route>>(v.clone())
                .map_err(|e| invalid(format!("{at}.routes must be a list of {{\"dst\", \"gw\"}}: {e}")))?,
        };
        for (i, route) in routes.iter().enumerate() {
            route
                .dst
                .parse::<IpNet>()
                .map_err(|_| invalid(format!("{at}.routes[{i}].dst {:?} is not a CIDR", route.dst)))?;
            if let Some(gw) = &route.gw {
                gw.parse::<IpAddr>().map_err(|_| invalid(format!("{at}.routes[{i}].gw {gw:?} is not an address")))?;
            }
        }
        let dns = match opt_str(ipam, "resolvConf", &format!("{at}.resolvConf"))? {
            Some(path) => resolv_conf(Path::new(path))?,
            None => Dns::default(),
        };
        Ok(Pools { range_sets, routes, dns })
    }
}

/// One range: fixed (host-local's keys) or sliced (`nodeSliceSize`).
fn range_spec(obj: &Map<String, Value>, at: &str) -> Result<RangeSpec, CniError> {
    let field = |key: &str| format!("{at}.{key}");
    let subnet: IpNet = match opt_str(obj, "subnet", &field("subnet"))? {
        Some(s) => s.parse().map_err(|_| invalid(format!("{} {s:?} is not a CIDR", field("subnet"))))?,
        None => return Err(invalid(format!("{} is required", field("subnet")))),
    };
    let addr = |key: &str| -> Result<Option<IpAddr>, CniError> {
        match opt_str(obj, key, &field(key))? {
            Some(s) => s.parse().map(Some).map_err(|_| invalid(format!("{} {s:?} is not an address", field(key)))),
            None => Ok(None),
        }
    };
    let gateway = addr("gateway")?;
    let spec = match slice_size(obj, &field("nodeSliceSize"))? {
        Some(len) => {
            for key in ["rangeStart", "rangeEnd"] {
                if obj.contains_key(key) {
                    return Err(invalid(format!(
                        "{} cannot be combined with nodeSliceSize: a node's slice is all it hands out",
                        field(key)
                    )));
                }
            }
            let shared = obj.get("sharedSubnet").and_then(Value::as_bool).unwrap_or(false);
            SlicedRange::new(subnet, len, shared, gateway).map(RangeSpec::Sliced)
        }
        None => Range::new(subnet, addr("rangeStart")?, addr("rangeEnd")?, gateway).map(RangeSpec::Fixed),
    };
    spec.map_err(|e| invalid(format!("{at}: {e}")))
}

/// `nodeSliceSize`: a prefix length, as `24` or `"/24"` (whereabouts' spelling).
fn slice_size(obj: &Map<String, Value>, at: &str) -> Result<Option<u8>, CniError> {
    let bad = || invalid(format!("{at} must be a prefix length such as 24 or \"/24\""));
    match obj.get("nodeSliceSize") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u8::try_from(n).ok()).map(Some).ok_or_else(bad),
        Some(Value::String(s)) => s.trim_start_matches('/').parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// A range set holds one family; no two ranges anywhere may hand out the same address.
fn check_families_and_overlaps(sets: &[Vec<RangeSpec>], at: &str) -> Result<(), CniError> {
    let all: Vec<(usize, usize, &RangeSpec)> =
        sets.iter().enumerate().flat_map(|(i, set)| set.iter().enumerate().map(move |(j, r)| (i, j, r))).collect();
    for (i, set) in sets.iter().enumerate() {
        if set.iter().any(|r| r.is_v4() != set[0].is_v4()) {
            return Err(invalid(format!("{at}.ranges[{i}] mixes IPv4 and IPv6 (one family per range set)")));
        }
    }
    for (n, (i, j, a)) in all.iter().enumerate() {
        for (k, l, b) in &all[n + 1..] {
            if a.overlaps(b) {
                return Err(invalid(format!(
                    "{at}.ranges[{i}][{j}] {} overlaps {at}.ranges[{k}][{l}] {}",
                    a.describe(),
                    b.describe()
                )));
            }
        }
    }
    Ok(())
}

/// DNS from a resolv.conf, as host-local reads `resolvConf`.
fn resolv_conf(path: &Path) -> Result<Dns, CniError> {
    let text = crate::bounded::read_text(path, crate::bounded::MAX_SMALL_FILE)
        .map_err(|e| CniError::io(format!("resolvConf {}", path.display()), e))?;
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.starts_with(';')) {
        let mut words = line.split_whitespace();
        match (words.next(), words.collect::<Vec<_>>()) {
            (Some("nameserver"), w) => dns.nameservers.extend(w.first().map(|s| s.to_string())),
            (Some("domain"), w) => dns.domain = w.first().map(|s| s.to_string()),
            (Some("search"), w) => dns.search = w.iter().map(|s| s.to_string()).collect(),
            (Some("options"), w) => dns.options.extend(w.iter().map(|s| s.to_string())),
            _ => {}
        }
    }
    Ok(dns)
}
