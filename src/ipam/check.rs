//! CHECK: the attachment still holds its leases, and they are the addresses its result
//! (`prevResult`) says it has.

use super::config::Config;
use super::leases::LeaseStore;
use crate::cni::result::CniResult;
use crate::cni::{code, CniEnv, CniError};
use std::net::IpAddr;

pub fn check(cfg: &Config, env: &CniEnv) -> Result<(), CniError> {
    let unknown = |what: String| CniError::new(code::UNKNOWN_CONTAINER, what);
    let store = LeaseStore::lock_existing(&cfg.data_dir, &cfg.network)?
        .ok_or_else(|| unknown(format!("no leases at all in {}", cfg.data_dir.join(&cfg.network).display())))?;
    let leases = store.leases()?;
    let mine: Vec<IpAddr> = leases
        .iter()
        .filter(|l| l.owner.as_ref().is_ok_and(|o| o.is(&env.container_id, &env.ifname)))
        .map(|l| l.ip)
        .collect();
    if mine.is_empty() {
        return Err(unknown(format!(
            "container {} has no lease on {} in {}",
            env.container_id,
            env.ifname,
            store.dir().display()
        )));
    }
    let Some(prev) = &cfg.prev_result else { return Ok(()) };
    let result = CniResult::parse(prev)?;
    let told: Vec<IpAddr> = result.ips.iter().filter_map(|ip| ip.ip()).collect();
    for ip in &mine {
        if !told.contains(ip) {
            return Err(unknown(format!(
                "{ip} is leased to {} {} but not in its result",
                env.container_id, env.ifname
            )));
        }
    }
    match told.iter().find(|ip| leases.iter().any(|l| l.ip == **ip) && !mine.contains(ip)) {
        Some(ip) => Err(unknown(format!("{ip} of the result is leased to another attachment"))),
        None => Ok(()),
    }
}
