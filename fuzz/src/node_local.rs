//! The node-local IPAM plugin's outside input: its network config on stdin (host-local's keys,
//! `nodeSliceSize`, the seed mode's `cfg`), and a lease file's content, which anything on
//! the node may have written.

use super::checks;
use kactus::cni::{code, CniArgs};
use kactus::ipam::config::{Addressing, Config};
use kactus::ipam::leases::parse_owner;
use kactus::ipam::range::{to_u128, RangeSpec};

pub fn run(data: &[u8]) {
    config(data);
    if let Ok(text) = std::str::from_utf8(data) {
        lease(text);
    }
}

fn config(data: &[u8]) {
    let cfg = match Config::parse(data, &CniArgs::default()) {
        Err(e) => {
            // 5: a `resolvConf` or template that cannot be read.
            let codes =
                [code::INCOMPATIBLE_VERSION, code::IO_FAILURE, code::DECODING_FAILURE, code::INVALID_NETWORK_CONFIG];
            return checks::own_error(&e, &codes);
        }
        Ok(cfg) => cfg,
    };
    // The network names a directory: one path component.
    assert!(!cfg.network.is_empty() && !cfg.network.contains('/') && !cfg.network.starts_with('.'), "{}", cfg.network);
    let Addressing::Inline(pools) = &cfg.addressing else { return };
    let specs: Vec<&RangeSpec> = pools.range_sets.iter().flatten().collect();
    for set in &pools.range_sets {
        assert!(!set.is_empty() && set.iter().all(|r| r.is_v4() == set[0].is_v4()), "one family per set");
    }
    for (i, a) in specs.iter().enumerate() {
        assert!(specs[i + 1..].iter().all(|b| !a.overlaps(b)), "overlapping ranges were accepted");
        match a {
            RangeSpec::Fixed(r) => {
                assert!(r.subnet.contains(&r.start) && r.subnet.contains(&r.end), "{r:?}");
                assert!(to_u128(r.start) <= to_u128(r.end) && r.size() >= 1, "{r:?}");
            }
            RangeSpec::Sliced(s) => {
                // The first and last slices hand out at least one address, inside the range.
                for index in [0, s.count() - 1] {
                    let slice = s.slice(index);
                    assert_eq!(s.index_of(&slice), Some(index), "{s:?}");
                    let node = s.node_range(slice);
                    assert!(to_u128(node.start) <= to_u128(node.end), "{s:?} slice {slice}: {node:?}");
                    assert!(s.subnet.contains(&node.start) && s.subnet.contains(&node.end), "{node:?}");
                }
            }
        }
    }
}

/// A lease file's owner is a container ID the runtime could have sent and a device name the
/// kernel takes, or the file is reported corrupt.
fn lease(text: &str) {
    if let Ok(owner) = parse_owner(text) {
        let id_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        assert!(!owner.container_id.is_empty() && owner.container_id.chars().all(id_ok), "{owner:?}");
        assert!(owner.ifname.as_deref().is_none_or(checks::kernel_device_name), "{owner:?}");
    }
}
