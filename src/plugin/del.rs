//! DEL: undo every call the cache records, newest first, with exactly what ADD sent, the
//! calls whose ADD never completed included. Goes on past failures and reports them all;
//! succeeds when there is nothing left to delete, with the apiserver down, the NAD gone or
//! the netns already removed; never claims success for a call it could not tear down (a
//! damaged or lost cache is rebuilt first: see `repair.rs`).

use super::abandon::{self, Abandoned};
use super::cache::{remove_legacy_lock, CacheEntry, ContainerCache, Damaged, Record, Role};
use super::config::KactusConfig;
use super::repair;
use crate::attachment::DynamicTarget;
use crate::cni::env::K8S_POD_NETWORK;
use crate::cni::error::join_errors;
use crate::cni::{chain, code, CniEnv, CniError, Command, Invocation};

pub fn del(cfg: &KactusConfig, env: &CniEnv) -> Result<(), CniError> {
    let dynamic = env.args.get(K8S_POD_NETWORK);
    let Some(cache) = ContainerCache::open(&cfg.cache_dir, &env.container_id, cfg.lock_wait())? else {
        remove_legacy_lock(&cfg.cache_dir, &env.container_id);
        if let Some(name) = dynamic {
            log::warn!("DEL {}: K8S_POD_NETWORK={name} matches nothing: the container has no cache", env.container_id);
            return Ok(());
        }
        if cache_lost(cfg, env) {
            return del_lost(cfg, env);
        }
        // Never added, rolled back, or deleted already: release what the master may hold
        // (its IPAM lease) with the config we were given.
        log::info!("DEL {}: no cache, deleting the master delegate only", env.container_id);
        return del_master_uncached(cfg, env);
    };
    let record = cache.read()?;
    match dynamic {
        Some(name) => del_dynamic(cfg, env, &cache, &record, name),
        None => del_all(cfg, env, cache, record),
    }
}

/// The runtime's DEL: every call, then the cache, once every call is gone.
fn del_all(cfg: &KactusConfig, env: &CniEnv, cache: ContainerCache, record: Record) -> Result<(), CniError> {
    let repair = repair::rebuild(cfg, env, &record, None);
    let mut calls = record.calls;
    calls.extend(repair.rebuilt.iter().cloned());
    let (deleted, mut errors) = teardown(cfg, env, &calls, &|call| cache.remove_entry(call));
    repair.release_gone(cfg, env);
    // What could not be rebuilt comes first: its code 11 tells the runtime to retry.
    errors.splice(0..0, repair.waiting);
    if errors.is_empty() {
        // Everything is torn down; a cache that cannot be removed (a read-only or failing
        // cacheDir) is reported now, after the devices and leases are released.
        return cache.remove();
    }
    if let Err(e) = cache.forget(&deleted) {
        log::warn!("DEL {}: {e}", env.container_id);
    }
    join_errors(errors).map_or(Ok(()), Err)
}

/// Whether the container has devices kactus made although its cache directory is gone:
/// the runtime passes its ADD's result (libcni keeps it until a DEL succeeds; containerd's
/// later DELs, after ours succeeded, come without it), or `CNI_IFNAME` is still in the pod
/// (every DEL and every rollback removes it). A DEL after a rollback, of a container never
/// added, or repeated after success has neither.
fn cache_lost(cfg: &KactusConfig, env: &CniEnv) -> bool {
    let netns = env.netns.as_deref().filter(|p| p.exists());
    cfg.prev_result.is_some() || netns.is_some_and(|ns| crate::netns::link_exists(ns, &env.ifname).unwrap_or(false))
}

/// The runtime's DEL of a container whose cache directory is gone while its devices are not
/// (a node whose cacheDir did not survive, an operator's cleanup): deleting the master alone
/// would leak the attachments' leases (whereabouts' are cluster-wide), so every call is
/// rebuilt as for a cache damaged beyond its intent records (see `repair.rs`): from the
/// config, and from the pod's annotation and networks when the apiserver answers. While it
/// does not, code 11 and nothing deleted (the runtime's retry carries the same result); a pod
/// gone for good leaves its attachments unknown, which is logged and reported on the pod.
fn del_lost(cfg: &KactusConfig, env: &CniEnv) -> Result<(), CniError> {
    let path = cfg.cache_dir.join(&env.container_id);
    log::warn!(
        "DEL {}: cache directory {} is missing, but {}: rebuilding every call",
        env.container_id,
        path.display(),
        if cfg.prev_result.is_some() { "the runtime passed its ADD's result" } else { "the pod has its devices" }
    );
    let lost = Record { calls: Vec::new(), damaged: vec![Damaged::Directory { path }] };
    let repair = repair::rebuild(cfg, env, &lost, None);
    let (_, mut errors) = teardown(cfg, env, &repair.rebuilt, &|_| {});
    repair.release_gone(cfg, env);
    errors.splice(0..0, repair.waiting);
    join_errors(errors).map_or(Ok(()), Err)
}

/// podagent's DEL of one attachment (`K8S_POD_NETWORK`), in any form its ADD accepted.
fn del_dynamic(
    cfg: &KactusConfig,
    env: &CniEnv,
    cache: &ContainerCache,
    record: &Record,
    name: &str,
) -> Result<(), CniError> {
    let pod = env.args.pod();
    let target = DynamicTarget::parse(pod.as_ref().map_or("default", |p| p.namespace.as_str()), name);
    let call = match record.find_dynamic(&target) {
        Some(call) => call.clone(),
        None => {
            // Its entry may be one of the damaged files: the device name tells. Only that one
            // is looked at: the others are the runtime's DEL's business.
            let device = target.device();
            let damaged =
                record.damaged.iter().filter(|d| matches!(d, Damaged::Entry { ifname, .. } if *ifname == device));
            let damaged = Record { calls: record.calls.clone(), damaged: damaged.cloned().collect() };
            let repair = repair::rebuild(cfg, env, &damaged, Some(&target));
            repair.release_gone(cfg, env);
            let found = repair.rebuilt.into_iter().find(|c| c.kactus.role == Role::Attachment);
            match (found, repair.waiting.into_iter().next()) {
                (Some(call), _) => call,
                (None, Some(e)) => return Err(e),
                (None, None) => {
                    log::warn!(
                        "DEL {}: K8S_POD_NETWORK={name} matches no attachment in the cache; nothing deleted",
                        env.container_id
                    );
                    return Ok(());
                }
            }
        }
    };
    let given_up =
        del_call(cfg, env, &call).map_err(|e| e.context(format!("delete {} ({})", call.if_name, call.network_name)))?;
    abandon::release(cfg, env, None, given_up.as_slice());
    let forgot = cache.forget(std::slice::from_ref(&call));
    if let Some(pod) = pod {
        let left: Vec<CacheEntry> = cache.read().map(|r| r.completed().cloned().collect()).unwrap_or_default();
        super::status::publish_logged_with_new_client(cfg, &pod, &left);
    }
    forgot
}

/// DELs `calls` newest first, passing each deleted one to `deleted_one`; returns those deleted
/// (or given up on: see [`del_call`]) and the errors of the others.
pub fn teardown(
    cfg: &KactusConfig,
    env: &CniEnv,
    calls: &[CacheEntry],
    deleted_one: &dyn Fn(&CacheEntry),
) -> (Vec<CacheEntry>, Vec<CniError>) {
    let mut ordered: Vec<&CacheEntry> = calls.iter().collect();
    // eth0 last, whatever order a rebuilt cache gives it.
    ordered.sort_by_key(|c| (c.kactus.role == Role::Master, std::cmp::Reverse(c.kactus.seq)));
    let (mut deleted, mut errors, mut abandoned) = (Vec::new(), Vec::new(), Vec::new());
    for call in ordered {
        match del_call(cfg, env, call) {
            Ok(given_up) => {
                abandoned.extend(given_up);
                deleted_one(call);
                deleted.push(call.clone());
            }
            Err(e) => errors.push(e.context(format!("delete {} ({})", call.if_name, call.network_name))),
        }
    }
    abandon::release(cfg, env, None, &abandoned);
    (deleted, errors)
}

/// DELs one call, as [`del_entry`] does, except that a call whose ADD never completed (it
/// failed, or kactus was killed during it) and whose delegate fails its DEL, for good (any
/// code but 11), is given up on and returned, for [`abandon::release`] to remove its device
/// and report its lease. A failed ADD's rollback sent it DEL once already and kept it (see
/// `add.rs`); a config its delegate rejects (host-local without a subnet fails ADD and DEL
/// alike) fails every retry, and a DEL that keeps failing holds the pod's deletion forever
/// (kubelet retries StopPodSandbox without end, the pod stays Terminating). A transient
/// failure (code 11) is reported as such, the call kept, so the runtime's retry reaches it
/// again. A call whose ADD completed keeps its DEL's error, whatever it is.
pub fn del_call(cfg: &KactusConfig, env: &CniEnv, entry: &CacheEntry) -> Result<Option<Abandoned>, CniError> {
    match del_entry(cfg, env, entry) {
        Ok(()) => Ok(None),
        Err(e) if !entry.is_complete() && e.code != code::TRY_AGAIN_LATER => {
            let what = format!(
                "{} ({}): its ADD failed and its delegate's DEL fails too: {}",
                entry.if_name, entry.network_name, e.msg
            );
            Ok(Some(Abandoned { ifname: Some(entry.if_name.clone()), what }))
        }
        Err(e) => Err(e),
    }
}

/// DELs one call with its own config, interface, args and result (none if its ADD never
/// completed). The netns may be gone (containerd's later DELs send none): delegates must
/// cope, as the spec requires.
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
    let cached = entry.is_complete().then_some(&entry.result);
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
