//! ADD: the master delegate on eth0, then each attachment; rollback of everything on any
//! failure; the master's result back to the runtime in its version.

use super::cache::{CacheEntry, ContainerCache, KactusMeta};
use super::config::KactusConfig;
use super::del::del_entry;
use super::plan::{plan_add, PlannedCall};
use crate::cni::{chain, CniEnv, CniError, CniResult, Command, Invocation};
use serde_json::Value;

pub fn add(cfg: &KactusConfig, env: &CniEnv) -> Result<Value, CniError> {
    let plan = plan_add(cfg, env)?;
    let cache = ContainerCache::lock(&cfg.cache_dir, &env.container_id)?;
    let mut made: Vec<CacheEntry> = Vec::new();
    for (seq, call) in (cache.next_seq()..).zip(&plan.calls) {
        match add_one(cfg, env, call, seq) {
            Ok(entry) => {
                let written = cache.write(&entry);
                made.push(entry);
                if let Err(e) = written {
                    return Err(rollback(cfg, env, cache, made, e));
                }
            }
            Err(e) => return Err(rollback(cfg, env, cache, made, e.context(describe(call)))),
        }
    }
    if let (Some(pod), Some(client)) = (&plan.pod, &plan.client) {
        if let Err(e) = super::status::publish(client, pod, &cache.entries()) {
            let e = super::plan::kube_error(e, "patch network-status");
            log::warn!("pod {}/{}: network-status not written: {e}", pod.namespace, pod.name);
        }
    }
    // The runtime gets the eth0 result; a dynamic call gets its attachment's.
    let answer = made.iter().find(|e| e.kactus.is_default).or(made.first());
    let result = answer.map(|e| e.result.clone()).unwrap_or(Value::Null);
    let out = CniResult::convert(&result, &cfg.cni_version)?;
    log::info!("ADD {} done: {} delegate call(s)", env.container_id, made.len());
    Ok(out)
}

fn describe(call: &PlannedCall) -> String {
    if call.network.is_empty() {
        format!("add {} ({}) on {}", call.net.name, call.net.types(), call.ifname)
    } else {
        format!("add attachment {} ({}) on {}", call.network, call.net.types(), call.ifname)
    }
}

fn add_one(cfg: &KactusConfig, env: &CniEnv, call: &PlannedCall, seq: u64) -> Result<CacheEntry, CniError> {
    let netns = env.netns.as_deref().ok_or_else(|| CniError::invalid_env("CNI_NETNS is not set"))?;
    let inv = Invocation {
        command: Command::Add,
        container_id: &env.container_id,
        netns: Some(netns),
        ifname: &call.ifname,
        args: &call.args,
        cni_path: &env.path,
        timeout: cfg.delegate_timeout,
    };
    let mut result = chain::add(&call.net, &inv, &call.runtime_config)?;
    let meta = KactusMeta {
        seq,
        role: call.role,
        network: call.network.clone(),
        key: call.key.clone(),
        is_default: call.is_default,
        gateways: call.gateways.clone(),
    };
    let entry = |result: Value| CacheEntry {
        kind: "cniCacheV1".into(),
        container_id: env.container_id.clone(),
        config: CacheEntry::encode_config(&call.net),
        if_name: call.ifname.clone(),
        network_name: call.net.name.clone(),
        netns: netns.to_string_lossy().into_owned(),
        cni_args: call.args.0.iter().map(|(k, v)| [k.clone(), v.clone()]).collect(),
        capability_args: call.runtime_config.clone(),
        result,
        kactus: meta.clone(),
    };
    if let Some(mac) = &call.set_mac {
        let made = entry(result.clone());
        let bytes = crate::netns::parse_mac(mac)
            .ok_or_else(|| CniError::invalid_config(format!("mac {mac:?} is not a MAC address")))?;
        if let Err(e) = crate::netns::set_mac(netns, &call.ifname, bytes) {
            // The device exists now: undo it before reporting.
            let _ = del_entry(cfg, env, &made);
            return Err(CniError::io(format!("set MAC {mac} on {}", call.ifname), e));
        }
        set_result_mac(&mut result, &call.ifname, mac);
    }
    Ok(entry(result))
}

/// Keeps the cached result truthful after kactus changed the MAC itself.
fn set_result_mac(result: &mut Value, ifname: &str, mac: &str) {
    if let Some(list) = result.get_mut("interfaces").and_then(Value::as_array_mut) {
        for iface in list.iter_mut().filter(|i| i.get("name").and_then(Value::as_str) == Some(ifname)) {
            iface["mac"] = mac.into();
        }
    }
}

/// Deletes what this ADD made, newest first, and returns the original error (with any
/// teardown failure appended so nothing is hidden).
fn rollback(cfg: &KactusConfig, env: &CniEnv, cache: ContainerCache, made: Vec<CacheEntry>, err: CniError) -> CniError {
    let mut err = err;
    for entry in made.iter().rev() {
        match del_entry(cfg, env, entry) {
            Ok(()) => {
                let _ = cache.remove(&entry.if_name);
            }
            Err(e) => {
                log::error!("rollback of {} failed: {e}", entry.if_name);
                err.msg = format!("{}; rollback of {} also failed: {}", err.msg, entry.if_name, e.msg);
            }
        }
    }
    cache.remove_if_empty();
    log::error!("ADD {} failed: {err}", env.container_id);
    err
}
