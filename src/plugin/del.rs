//! DEL: undo every cached delegate call, newest first, with exactly what ADD sent. Goes on
//! past failures and reports them all; succeeds when there is nothing left to delete, with
//! the apiserver down, the NAD gone or the netns already removed.

use super::cache::{CacheEntry, ContainerCache};
use super::config::KactusConfig;
use crate::cni::env::K8S_POD_NETWORK;
use crate::cni::error::join_errors;
use crate::cni::{chain, CniEnv, CniError, Command, Invocation};

pub fn del(cfg: &KactusConfig, env: &CniEnv) -> Result<(), CniError> {
    let cache = ContainerCache::lock(&cfg.cache_dir, &env.container_id)?;
    let dynamic = env.args.get(K8S_POD_NETWORK);
    let entries = match dynamic {
        Some(name) => cache.dynamic_entry(name).into_iter().collect(),
        None => cache.entries(),
    };
    if dynamic.is_none() && entries.is_empty() {
        // Nothing cached (ADD never finished, or the cache was lost): release what the
        // master may hold (its IPAM lease) with the config we were given.
        log::info!("DEL {}: no cache, deleting the master delegate only", env.container_id);
        return del_master_uncached(cfg, env);
    }
    let mut errors = Vec::new();
    for entry in entries.iter().rev() {
        match del_entry(cfg, env, entry) {
            Ok(()) => cache.remove(&entry.if_name),
            Err(e) => errors.push(e.context(format!("delete {} ({})", entry.if_name, entry.network_name))),
        }
    }
    if dynamic.is_some() {
        if let Some(pod) = env.args.pod() {
            super::status::publish_logged_with_new_client(cfg, &pod, &cache.entries());
        }
    }
    if let Err(e) = cache.settled() {
        errors.push(e);
    }
    if errors.is_empty() {
        cache.remove_if_empty();
    }
    join_errors(errors).map_or(Ok(()), Err)
}

/// DELs one cached call with its own config, interface, args and result. The netns may be
/// gone (containerd's later DELs send none): delegates must cope, as the spec requires.
pub fn del_entry(cfg: &KactusConfig, env: &CniEnv, entry: &CacheEntry) -> Result<(), CniError> {
    let net = entry.network()?;
    let args = entry.args();
    let inv = Invocation {
        command: Command::Del,
        container_id: &env.container_id,
        netns: env.netns.as_deref().filter(|p| p.exists()),
        ifname: &entry.if_name,
        args: &args,
        cni_path: &env.path,
        timeout: cfg.delegate_timeout,
    };
    let cached = (!entry.result.is_null()).then_some(&entry.result);
    chain::del(&net, &inv, &entry.capability_args, cached)?;
    if let Some(device) = &entry.kactus.device {
        crate::devices::devinfo::remove(device)?;
    }
    // The attachment's device took the default route with it: give the pod back its own.
    if let Some(netns) = inv.netns.filter(|_| !entry.kactus.replaced_routes.is_empty()) {
        if let Err(e) = crate::netlink::restore_default_routes(netns, &entry.kactus.replaced_routes) {
            log::warn!("{}: default routes not restored after DEL of {}: {e}", env.container_id, entry.if_name);
        }
    }
    Ok(())
}

fn del_master_uncached(cfg: &KactusConfig, env: &CniEnv) -> Result<(), CniError> {
    let args = env.args.for_delegate();
    let inv = Invocation {
        command: Command::Del,
        container_id: &env.container_id,
        netns: env.netns.as_deref().filter(|p| p.exists()),
        ifname: &env.ifname,
        args: &args,
        cni_path: &env.path,
        timeout: cfg.delegate_timeout,
    };
    chain::del(&cfg.master, &inv, &cfg.runtime_config, cfg.prev_result.as_ref())
}
