//! GC (CNI 1.1): release every lease whose attachment is not among the runtime's live ones
//! (`cni.dev/valid-attachments`), as host-local does; clear what killed calls left behind.
//! Corrupt lease files cannot be matched to an attachment: they are kept and reported.

use super::config::Config;
use super::leases::{corrupt_error, Lease, LeaseStore};
use crate::cni::chain::VALID_ATTACHMENTS;
use crate::cni::CniError;

pub fn gc(cfg: &Config) -> Result<(), CniError> {
    // Without the list every lease would look stale: refuse rather than free them all.
    let valid = cfg
        .valid_attachments
        .as_ref()
        .ok_or_else(|| CniError::invalid_config(format!("GC needs \"{VALID_ATTACHMENTS}\" in the config")))?;
    let Some(store) = LeaseStore::lock_existing(&cfg.data_dir, &cfg.network)? else { return Ok(()) };
    store.remove_leftovers();
    let leases = store.leases()?;
    for lease in &leases {
        let Ok(owner) = &lease.owner else { continue };
        if !valid.iter().any(|a| owner.is(&a.container_id, &a.ifname)) {
            log::info!("GC: releasing {} of {} (no longer a valid attachment)", lease.ip, owner.container_id);
            store.release(lease.ip)?;
        }
    }
    let corrupt: Vec<&Lease> = leases.iter().filter(|l| l.owner.is_err()).collect();
    if corrupt.is_empty() {
        Ok(())
    } else {
        Err(corrupt_error(store.dir(), &corrupt))
    }
}
