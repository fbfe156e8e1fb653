//! DEL: release the attachment's leases. Needs nothing but the lease directory: no node
//! identity, no apiserver, no template index, so it works whatever else is down. A network
//! that never had a lease on this node, or an attachment with none left, is success.

use super::config::Config;
use super::leases::LeaseStore;
use crate::cni::{CniEnv, CniError};

pub fn del(cfg: &Config, env: &CniEnv) -> Result<(), CniError> {
    let Some(store) = LeaseStore::lock_existing(&cfg.data_dir, &cfg.network)? else { return Ok(()) };
    let released = store.release_attachment(&env.container_id, &env.ifname)?;
    log::debug!("released {released:?} of {} {}", env.container_id, env.ifname);
    Ok(())
}
