//! ADD: lease this attachment one address per range set from the node's pools, and answer
//! host-local's result (addresses with the range's prefix and gateway, routes, DNS).

use super::allocator::allocate;
use super::assignment::node_pools;
use super::config::Config;
use super::leases::LeaseStore;
use crate::cni::result::{CniResult, IpConfig};
use crate::cni::{CniEnv, CniError};
use serde_json::Value;

pub fn add(cfg: &Config, env: &CniEnv) -> Result<Value, CniError> {
    let store = LeaseStore::lock(&cfg.data_dir, &cfg.network)?;
    let pools = node_pools(cfg, &store)?;
    let allocations = allocate(&store, &pools.range_sets, &env.container_id, &env.ifname, &cfg.requested)?;
    let result = CniResult {
        interfaces: Vec::new(),
        ips: allocations
            .iter()
            .map(|a| IpConfig {
                address: a.range.cidr(a.ip),
                gateway: a.range.gateway.map(|g| g.to_string()),
                interface: None,
            })
            .collect(),
        routes: pools.routes,
        dns: pools.dns,
    };
    let answer = result.to_version(&cfg.cni_version);
    if answer.is_err() {
        // The runtime cannot read this result: the addresses are not its.
        for a in &allocations {
            let _ = store.release(a.ip);
        }
    }
    answer
}
