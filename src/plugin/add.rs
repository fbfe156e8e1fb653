//! ADD: the master delegate on eth0, then each attachment; rollback of everything on any
//! failure; the master's result back to the runtime in its version. Every call is recorded in
//! the cache before it runs (an intent record per batch: see `cache::Intent`), so whatever
//! fails halfway, kactus itself included, the rollback and every later DEL reach it.

use super::abandon;
use super::apiserver_side::{self, ApiserverSide};
use super::cache::{CacheEntry, ContainerCache, Record};
use super::config::KactusConfig;
use super::del::{del_call, del_entry};
use super::plan::{plan_add, Call, PlannedCall};
use crate::attachment::DynamicTarget;
use crate::cni::env::K8S_POD_NETWORK;
use crate::cni::{chain, CniEnv, CniError, CniResult, Command, Invocation};
use crate::devices::devinfo;
use crate::netlink::DefaultRoute;
use serde_json::Value;
use std::collections::BTreeSet;

/// One ADD, as the plugin process makes it (it leaves its apiserver client to the process's
/// exit, so it is not meant to be called in a loop by a long-lived process).
pub fn add(cfg: &KactusConfig, env: &CniEnv) -> Result<Value, CniError> {
    // Everything from here runs under the container's lock, the check that no device is in
    // the way included: of two ADDs of one container, the second fails with code 7 before
    // anything runs (checked before the lock, both could pass it and the second delegate
    // would fail on the first's devices, and its rollback delete them).
    let cache = ContainerCache::create(&cfg.cache_dir, &env.container_id, cfg.lock_wait())?;
    let before = cache.read()?;
    if let Some(answer) = repeated_dynamic_add(cfg, env, &cache, &before)? {
        return Ok(answer);
    }
    let plan = match plan_add(cfg, env) {
        Ok(plan) => plan,
        Err(e) => {
            apiserver_side::warn_pod(cfg, env.args.pod().as_ref(), &e);
            cache.remove_if_unused();
            return Err(e);
        }
    };
    // Scoped: what runs beside the delegates has finished before the process answers.
    let answer = std::thread::scope(|scope| {
        let mut run = Run::new(cfg, env, &cache);
        let mut apiserver = ApiserverSide::start(scope, cfg, env, &plan, &cache, &before);
        // eth0 (or the primary network) and the config's delegates, while the apiserver
        // side reads the attachments' networks.
        let ready = Call::numbered(env, plan.ready.clone(), before.next_seq());
        let made_ready = run.intend(&ready).and_then(|()| run.make(&ready));
        // The attachments, once their networks are read and their calls recorded.
        let pending = apiserver.pending_calls().inspect(|calls| run.intended(calls));
        let made = made_ready.and(pending).and_then(|calls| run.make(&calls));
        // Everything that can still fail happens before success is reported, under rollback:
        // the answer converted to the runtime's version (a result an older version cannot
        // hold is code 1, and must not leave devices behind), and the cache made durable,
        // while network-status and the Event go out (the round trip and the disk's flush
        // overlap instead of adding up).
        let answered = made.and_then(|()| run.answer()).and_then(|out| {
            apiserver.tell_made(before.completed().chain(&run.made).cloned().collect(), run.made.clone());
            let synced = cache.sync();
            apiserver.told();
            synced.map(|()| out)
        });
        match answered {
            Ok(out) => {
                log::debug!("ADD {}: {} device(s) made and recorded", env.container_id, run.made.len());
                Ok(out)
            }
            Err(e) => {
                let e = run.rollback(e);
                let left = || cache.read().map(|r| r.completed().cloned().collect()).unwrap_or_default();
                apiserver.tell_failed(left, &e);
                Err(e)
            }
        }
    });
    if answer.is_err() {
        cache.remove_if_unused();
    }
    answer
}

/// What this ADD recorded and made, so a failure undoes exactly that.
struct Run<'a> {
    cfg: &'a KactusConfig,
    env: &'a CniEnv,
    cache: &'a ContainerCache,
    /// Every call in this ADD's intent records.
    intended: Vec<CacheEntry>,
    /// Calls that completed, oldest first.
    made: Vec<CacheEntry>,
    /// The call that failed, with its result when its delegate made one.
    failed: Option<CacheEntry>,
}

impl<'a> Run<'a> {
    fn new(cfg: &'a KactusConfig, env: &'a CniEnv, cache: &'a ContainerCache) -> Run<'a> {
        Run { cfg, env, cache, intended: Vec::new(), made: Vec::new(), failed: None }
    }

    /// Records `calls` before any of them runs.
    fn intend(&mut self, calls: &[Call]) -> Result<(), CniError> {
        let entries: Vec<CacheEntry> = calls.iter().map(|c| c.intent.clone()).collect();
        self.cache.intend(&entries)?;
        self.intended.extend(entries);
        Ok(())
    }

    /// Notes `calls` recorded by another thread (see [`ApiserverSide::start`]).
    fn intended(&mut self, calls: &[Call]) {
        self.intended.extend(calls.iter().map(|c| c.intent.clone()));
    }

    /// Makes `calls` in order, each completed in the cache as soon as its device exists;
    /// stops at the first failure, leaving the rollback to the caller.
    fn make(&mut self, calls: &[Call]) -> Result<(), CniError> {
        for call in calls {
            let mut entry = call.intent.clone();
            if let Err(e) = add_one(self.cfg, self.env, &call.planned, &mut entry) {
                self.failed = Some(entry);
                return Err(e.context(describe(&call.planned)));
            }
            let written = self.cache.write(&entry);
            self.made.push(entry);
            written?;
        }
        Ok(())
    }

    /// The answer in the runtime's version: eth0's result; a dynamic call's, its attachment's.
    fn answer(&self) -> Result<Value, CniError> {
        let answer = self.made.iter().find(|e| e.kactus.is_default).or(self.made.first());
        CniResult::convert(&answer.map(|e| e.result.clone()).unwrap_or(Value::Null), &self.cfg.cni_version)
    }

    /// Deletes what this ADD made and what it attempted (the failing call included: its
    /// delegate may have made a device and a lease before failing), newest first, and returns
    /// the original error with any teardown failure appended so nothing is hidden. What was
    /// undone, or never ran, goes from the cache; a call whose DEL failed, the failing one
    /// included, stays there: the runtime's DEL (or a repeat of a dynamic ADD) sends it DEL
    /// again, and gives it up only if its delegate still cannot tear it down (see
    /// `del::del_call`).
    fn rollback(self, err: CniError) -> CniError {
        let mut err = err;
        let mut kept = BTreeSet::new();
        for entry in self.failed.iter().chain(self.made.iter().rev()) {
            if let Err(e) = del_entry(self.cfg, self.env, entry) {
                log::error!("rollback of {} failed: {e}", entry.if_name);
                err.msg = format!("{}; rollback of {} also failed: {}", err.msg, entry.if_name, e.msg);
                kept.insert(entry.kactus.seq);
            }
        }
        let undone: Vec<CacheEntry> = self.intended.into_iter().filter(|c| !kept.contains(&c.kactus.seq)).collect();
        if let Err(e) = self.cache.forget(&undone) {
            // The records stay whole: the runtime's DEL repeats the DELs, which is harmless.
            log::warn!("ADD {}: {e}", self.env.container_id);
        }
        log::error!("ADD {} failed: {err}", self.env.container_id);
        err
    }
}

/// podagent repeats a dynamic ADD while it cannot see the device in network-status (say the
/// status write after the first ADD failed). When kactus made that attachment already and its
/// device is there, the repeat re-publishes network-status and answers with the cached result
/// instead of failing on the existing device, so the retry converges. One that never
/// completed (kactus was killed during it, or it failed and its rollback's DEL failed too) is
/// deleted first (or given up: see `del::del_call`) and made again. A runtime's ADD (not
/// dynamic) onto an existing device still fails, as the spec requires.
fn repeated_dynamic_add(
    cfg: &KactusConfig,
    env: &CniEnv,
    cache: &ContainerCache,
    before: &Record,
) -> Result<Option<Value>, CniError> {
    let pod = env.args.pod();
    let (Some(name), Some(pod), Some(netns)) = (env.args.get(K8S_POD_NETWORK), pod, env.netns.as_deref()) else {
        return Ok(None);
    };
    let Some(entry) = before.find_repeat(&DynamicTarget::parse(&pod.namespace, name)) else { return Ok(None) };
    if !entry.is_complete() {
        log::info!("ADD {}: {name} was left half-made ({}); deleting it first", env.container_id, entry.if_name);
        let given_up = del_call(cfg, env, entry)
            .map_err(|e| e.context(format!("delete {} ({}) left half-made", entry.if_name, entry.network_name)))?;
        abandon::release(cfg, env, None, given_up.as_slice());
        cache.forget(std::slice::from_ref(entry))?;
        return Ok(None);
    }
    if !crate::netns::link_exists(netns, &entry.if_name).unwrap_or(false) {
        return Ok(None);
    }
    log::info!(
        "ADD {}: {name} is attached already ({}); re-publishing network-status",
        env.container_id,
        entry.if_name
    );
    let all: Vec<CacheEntry> = before.completed().cloned().collect();
    super::status::publish_logged_with_new_client(cfg, &pod, &all);
    CniResult::convert(&entry.result, &cfg.cni_version).map(Some)
}

fn describe(call: &PlannedCall) -> String {
    if call.network.is_empty() {
        format!("add {} ({}) on {}", call.net.name, call.net.types(), call.ifname)
    } else {
        format!("add attachment {} ({}) on {}", call.network, call.net.types(), call.ifname)
    }
}

/// Runs one call's delegate(s) and completes `entry` with what they made; on a failure after
/// the delegate made its device, `entry` keeps the result so the rollback's DEL gets it.
fn add_one(cfg: &KactusConfig, env: &CniEnv, call: &PlannedCall, entry: &mut CacheEntry) -> Result<(), CniError> {
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
    entry.result = chain::add(&call.net, &inv, &call.runtime_config).inspect_err(|_| {
        if let Some(device) = &call.device {
            let _ = devinfo::remove(device);
        }
    })?;
    log::debug!("{} ({}) added on {}", call.net.name, call.net.types(), call.ifname);
    if let Some(mac) = &call.set_mac {
        let bytes = crate::netns::parse_mac(mac)
            .ok_or_else(|| CniError::invalid_config(format!("mac {mac:?} is not a MAC address")))?;
        crate::netns::set_mac(netns, &call.ifname, bytes)
            .map_err(|e| CniError::io(format!("set MAC {mac} on {}", call.ifname), e))?;
        set_result_mac(&mut entry.result, &call.ifname, mac);
    }
    if !call.gateways.is_empty() {
        entry.kactus.replaced_routes = move_default_route(netns, call)?;
    }
    if let Some(device) = entry.kactus.device.as_mut() {
        // What the device plugin or the delegate wrote about the device, for network-status.
        device.device_info = devinfo::collect(device)?;
    }
    Ok(())
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
