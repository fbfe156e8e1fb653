//! ADD: the master delegate on eth0, then each attachment; rollback of everything on any
//! failure; the master's result back to the runtime in its version.

use super::cache::{CacheEntry, ContainerCache, KactusMeta};
use super::config::KactusConfig;
use super::del::del_entry;
use super::plan::{plan_add, Plan, PlannedCall};
use super::status::publish_logged;
use crate::cni::env::K8S_POD_NETWORK;
use crate::cni::{chain, code, CniEnv, CniError, CniResult, Command, Invocation, PodRef};
use crate::devices::{devinfo, AllocatedDevice};
use crate::kube;
use crate::netlink::DefaultRoute;
use serde_json::Value;
use std::sync::OnceLock;

/// One ADD, as the plugin process makes it (it leaves its apiserver client to the process's
/// exit, so it is not meant to be called in a loop by a long-lived process).
pub fn add(cfg: &KactusConfig, env: &CniEnv) -> Result<Value, CniError> {
    let pod = env.args.pod();
    if let Some(answer) = repeated_dynamic_add(cfg, env, pod.as_ref())? {
        return Ok(answer);
    }
    // Planning failed before a client was kept (an invalid annotation, a device in the way):
    // a fresh one reports it on the pod.
    let mut plan = plan_add(cfg, env).inspect_err(|e| {
        let client = pod.as_ref().and_then(|_| super::plan::kube_client(cfg).ok());
        warn_pod(client.as_ref(), pod.as_ref(), e)
    })?;
    let cache = ContainerCache::lock(&cfg.cache_dir, &env.container_id)?;
    // Planning's client if it read the pod; else built beside the first delegates.
    let client = OnceLock::new();
    if let Some(c) = plan.client.take() {
        let _ = client.set(c);
    }
    let plan = &plan;
    // What an earlier call left (a dynamic ADD adds to the pod's devices): read once, and
    // with what this call makes, the network-status to publish; the allocated devices its
    // attachments hold are not given again.
    let existing = cache.entries();
    let held: Vec<AllocatedDevice> = existing.iter().filter_map(|e| e.kactus.device.clone()).collect();
    // Scoped so the apiserver work done beside the delegates, and the best-effort writes
    // started along the way (one `AddedInterface` event per device, as soon as it exists),
    // are all finished before the process answers.
    let answer = std::thread::scope(|s| {
        let apiserver = plan.pod.as_ref().map(|_| s.spawn(|| apiserver_side(cfg, plan, &client, &held)));
        let announce = |entry: &CacheEntry| {
            if let (Some(pod), Some(client)) = (plan.pod.as_ref(), client.get()) {
                let entry = entry.clone();
                s.spawn(move || super::events::added_interface(client, pod, &entry));
            }
        };
        let mut seqs = existing.iter().map(|e| e.kactus.seq + 1).max().unwrap_or(0)..;
        let mut made: Vec<CacheEntry> = Vec::new();
        let mut step = make(cfg, env, &cache, &plan.ready, &mut seqs, &mut made, &|_| ());
        let pending = apiserver
            .map(|h| h.join().unwrap_or_else(|_| Err(CniError::new(code::IO_FAILURE, "apiserver thread panicked"))));
        let pending = pending.unwrap_or_else(|| Ok(Vec::new()));
        // The first devices are announced once the client exists, the rest as they are made;
        // none when the pod's networks could not be read (eth0 is about to be rolled back,
        // and the warning says why).
        if pending.is_ok() {
            made.iter().for_each(announce);
        }
        step = step.and(pending).and_then(|calls| make(cfg, env, &cache, &calls, &mut seqs, &mut made, &announce));
        let told = plan.pod.as_ref().zip(client.get());
        // Everything that can still fail happens before success is reported, under rollback:
        // the answer converted to the runtime's version (a result an older version cannot
        // hold is code 1, and must not leave devices behind), and the cache made durable.
        let mut status_sent = false;
        let answer = step
            .and_then(|()| {
                // The runtime gets the eth0 result; a dynamic call gets its attachment's.
                let answer = made.iter().find(|e| e.kactus.is_default).or(made.first());
                CniResult::convert(&answer.map(|e| e.result.clone()).unwrap_or(Value::Null), &cfg.cni_version)
            })
            .and_then(|out| {
                // network-status goes out while the last fsyncs finish: the PATCH's round trip
                // and the disk's flush overlap instead of adding up.
                let entries: Vec<CacheEntry> = existing.iter().chain(&made).cloned().collect();
                // The client that read the NADs has its connection open: no new handshake.
                let sending = told.map(|(pod, client)| s.spawn(move || publish_logged(client, pod, &entries)));
                let synced = cache.sync();
                status_sent = sending.map(|h| h.join().is_ok()).unwrap_or(false);
                synced.map(|()| out)
            });
        let out = match answer {
            Ok(out) => out,
            Err(e) => {
                let e = rollback(cfg, env, &cache, &made, e);
                if let Some((pod, client)) = told.filter(|_| status_sent) {
                    // It was published with the devices just removed: say what is left.
                    publish_logged(client, pod, &cache.entries());
                }
                cache.remove_if_empty();
                warn_pod(client.get(), plan.pod.as_ref(), &e);
                return Err(e);
            }
        };
        log::debug!("ADD {}: {} device(s) made and recorded", env.container_id, made.len());
        Ok(out)
    });
    // The process ends once the answer is printed and the OS closes the connection then;
    // dropping the client first would join its runtime thread and close the connection
    // politely, which only delays the pod's start (~0.3 ms in the benchmark).
    std::mem::forget(client);
    answer
}

/// What an ADD needs from the apiserver after planning, done beside the first delegates
/// (the master's `eth0` takes longer than all of it): the client, unless planning built one,
/// then the pending attachments' networks. With none pending and nothing read yet (the
/// runtime passed the pod's annotations and it asks for no network), the connection is
/// opened, so the TLS handshake is not added to the pod's start when status and events go.
fn apiserver_side(
    cfg: &KactusConfig,
    plan: &Plan,
    client: &OnceLock<kube::Client>,
    held: &[AllocatedDevice],
) -> Result<Vec<PlannedCall>, CniError> {
    let client = match client.get() {
        Some(c) => c,
        None => {
            let built = super::plan::kube_client(cfg)?;
            client.get_or_init(|| built)
        }
    };
    if !plan.pending.is_empty() {
        return plan.pending_calls(cfg, client, held);
    }
    if client.request_count() == 0 {
        client.connect_early();
    }
    Ok(Vec::new())
}

/// Makes `calls` in order, each recorded in the cache (and passed to `made_one`) as soon as
/// its device exists; stops at the first failure, leaving the rollback to the caller.
fn make(
    cfg: &KactusConfig,
    env: &CniEnv,
    cache: &ContainerCache,
    calls: &[PlannedCall],
    seqs: &mut std::ops::RangeFrom<u64>,
    made: &mut Vec<CacheEntry>,
    made_one: &dyn Fn(&CacheEntry),
) -> Result<(), CniError> {
    for (call, seq) in calls.iter().zip(seqs.by_ref()) {
        let entry = add_one(cfg, env, call, seq).map_err(|e| e.context(describe(call)))?;
        let written = cache.write(&entry);
        made_one(&entry);
        made.push(entry);
        written?;
    }
    Ok(())
}

/// podagent repeats a dynamic ADD while it cannot see the device in network-status (say the
/// status write after the first ADD failed). When kactus made that attachment already and its
/// device is there, the repeat re-publishes network-status and answers with the cached result
/// instead of failing on the existing device, so the retry converges. A runtime's ADD (not
/// dynamic) onto an existing device still fails, as the spec requires.
fn repeated_dynamic_add(cfg: &KactusConfig, env: &CniEnv, pod: Option<&PodRef>) -> Result<Option<Value>, CniError> {
    let (Some(name), Some(pod), Some(netns)) = (env.args.get(K8S_POD_NETWORK), pod, env.netns.as_deref()) else {
        return Ok(None);
    };
    let cache = ContainerCache::lock(&cfg.cache_dir, &env.container_id)?;
    let Some(entry) = cache.dynamic_entry(name) else { return Ok(None) };
    if !crate::netns::link_exists(netns, &entry.if_name).unwrap_or(false) {
        return Ok(None);
    }
    log::info!(
        "ADD {}: {name} is attached already ({}); re-publishing network-status",
        env.container_id,
        entry.if_name
    );
    super::status::publish_logged_with_new_client(cfg, pod, &cache.entries());
    CniResult::convert(&entry.result, &cfg.cni_version).map(Some)
}

/// A failed ADD shows on the pod as a warning event (best effort).
fn warn_pod(client: Option<&kube::Client>, pod: Option<&PodRef>, err: &CniError) {
    if let (Some(pod), Some(client)) = (pod, client) {
        super::events::add_failed(client, pod, err);
    }
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
    if let Some(device) = &call.device {
        devinfo::prepare(&cfg.devices.device_info_dir, device)?;
    }
    // A delegate that fails on its device may fail its DEL too: the file goes now.
    let mut result = chain::add(&call.net, &inv, &call.runtime_config).inspect_err(|_| {
        if let Some(device) = &call.device {
            let _ = devinfo::remove(device);
        }
    })?;
    log::debug!("{} ({}) added on {}", call.net.name, call.net.types(), call.ifname);
    let mut meta = KactusMeta {
        seq,
        role: call.role,
        network: call.network.clone(),
        key: call.key.clone(),
        is_default: call.is_default,
        gateways: call.gateways.clone(),
        replaced_routes: Vec::new(),
        device: call.device.clone(),
    };
    let entry = |result: Value, kactus: KactusMeta| CacheEntry {
        kind: "cniCacheV1".into(),
        container_id: env.container_id.clone(),
        config: CacheEntry::encode_config(&call.net),
        if_name: call.ifname.clone(),
        network_name: call.net.name.clone(),
        netns: netns.to_string_lossy().into_owned(),
        cni_args: call.args.0.iter().map(|(k, v)| [k.clone(), v.clone()]).collect(),
        capability_args: call.runtime_config.clone(),
        result,
        kactus,
    };
    // The device exists now: a failure below undoes it before reporting.
    let undo = |e: CniError, result: &Value| {
        let _ = del_entry(cfg, env, &entry(result.clone(), meta.clone()));
        e
    };
    if let Some(mac) = &call.set_mac {
        let bytes = crate::netns::parse_mac(mac)
            .ok_or_else(|| undo(CniError::invalid_config(format!("mac {mac:?} is not a MAC address")), &result))?;
        crate::netns::set_mac(netns, &call.ifname, bytes)
            .map_err(|e| undo(CniError::io(format!("set MAC {mac} on {}", call.ifname), e), &result))?;
        set_result_mac(&mut result, &call.ifname, mac);
    }
    // What the device plugin or the delegate wrote about the device, for network-status.
    let device_info = match &call.device {
        Some(device) => devinfo::collect(device).map_err(|e| undo(e, &result))?,
        None => None,
    };
    if !call.gateways.is_empty() {
        meta.replaced_routes = move_default_route(netns, call).map_err(|e| undo(e, &result))?;
    }
    if let Some(device) = meta.device.as_mut() {
        device.device_info = device_info;
    }
    Ok(entry(result, meta))
}

/// NPWG `default-route`: the pod's default route(s) go via the given gateways on this device.
fn move_default_route(netns: &std::path::Path, call: &PlannedCall) -> Result<Vec<DefaultRoute>, CniError> {
    let gateways = call
        .gateways
        .iter()
        .map(|g| g.parse().map_err(|_| CniError::invalid_config(format!("default-route {g:?} is not an IP address"))))
        .collect::<Result<Vec<std::net::IpAddr>, _>>()?;
    crate::netlink::move_default_routes(netns, &call.ifname, &gateways)
        .map_err(|e| CniError::io(format!("default-route {} on {}", call.gateways.join(","), call.ifname), e))
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
fn rollback(cfg: &KactusConfig, env: &CniEnv, cache: &ContainerCache, made: &[CacheEntry], err: CniError) -> CniError {
    let mut err = err;
    for entry in made.iter().rev() {
        match del_entry(cfg, env, entry) {
            Ok(()) => {
                cache.remove(&entry.if_name);
            }
            Err(e) => {
                log::error!("rollback of {} failed: {e}", entry.if_name);
                err.msg = format!("{}; rollback of {} also failed: {}", err.msg, entry.if_name, e.msg);
            }
        }
    }
    log::error!("ADD {} failed: {err}", env.container_id);
    err
}
