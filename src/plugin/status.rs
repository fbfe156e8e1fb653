//! The NPWG `k8s.v1.cni.cncf.io/network-status` annotation, computed from the cache so it
//! always says what the pod really has, after ADD and after each dynamic add or delete.

use super::cache::CacheEntry;
use super::config::KactusConfig;
use crate::attachment::attested;
use crate::cni::{CniResult, PodRef};
use crate::kube;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// One entry per attachment from its sandbox interface; the default network first with
/// `default: true`.
pub fn network_status(entries: &[CacheEntry]) -> Value {
    let mut ordered: Vec<&CacheEntry> = entries.iter().collect();
    ordered.sort_by_key(|e| (!e.kactus.is_default, e.kactus.seq));
    let list: Vec<Value> = ordered.into_iter().map(entry_status).collect();
    Value::Array(list)
}

/// The addresses (without prefix) the result gives the sandbox interface at `index` (all of
/// them when it names none): what network-status and the attested condition list.
fn sandbox_ips(result: &CniResult, index: Option<usize>) -> Vec<String> {
    result
        .ips
        .iter()
        .filter(|ip| index.is_none() || ip.interface == index || ip.interface.is_none())
        .filter_map(|ip| ip.ip().map(|a| a.to_string()))
        .collect()
}

/// [`sandbox_ips`] of an entry's cached result; none when it does not parse.
fn entry_ips(e: &CacheEntry) -> Vec<String> {
    CniResult::parse(&e.result).map(|r| sandbox_ips(&r, r.sandbox_interface(&e.if_name))).unwrap_or_default()
}

fn entry_status(e: &CacheEntry) -> Value {
    let mut out = json!({ "name": e.shown_network(), "interface": e.if_name });
    let Ok(result) = CniResult::parse(&e.result) else { return out };
    let index = result.sandbox_interface(&e.if_name);
    let ips = sandbox_ips(&result, index);
    if !ips.is_empty() {
        out["ips"] = ips.into();
    }
    if let Some(mac) = index.and_then(|i| result.interfaces[i].mac.clone()) {
        out["mac"] = mac.into();
    }
    if e.kactus.is_default {
        out["default"] = true.into();
    }
    if !e.kactus.gateways.is_empty() {
        out["default-route"] = e.kactus.gateways.clone().into();
    }
    out["dns"] = serde_json::to_value(&result.dns).unwrap_or_else(|_| json!({}));
    if let Some(info) = e.kactus.device.as_ref().and_then(|d| d.device_info.clone()) {
        out["device-info"] = info;
    }
    out
}

/// Writes the annotation and, in the same `pods/status` PATCH, the [`attested`] condition that
/// readers of the pod's secondary addresses trust (the annotation is the tenant's to edit).
/// Never fails the CNI call: a failure is returned for the caller to log, the devices stay.
/// A plugin whose role predates the condition (no `pods/status`) still writes the annotation,
/// and says what is missing.
pub fn publish(client: &kube::Client, pod: &PodRef, entries: &[CacheEntry]) -> Result<(), kube::KubeError> {
    let status = network_status(entries).to_string();
    let body = patch_body(entries);
    match client.patch_pod_status(&pod.namespace, &pod.name, &body) {
        Err(kube::KubeError::Forbidden { message }) => {
            log::warn!(
                "pod {}/{}: pods/status may not be patched ({message}): network-status written without the {} \
                 condition, so kactus-endpoints will not publish this pod's secondary addresses; give the \
                 plugin's ClusterRole \"patch\" on pods/status (manifests/)",
                pod.namespace,
                pod.name,
                attested::CONDITION
            );
            let mut patch = BTreeMap::new();
            patch.insert(NETWORK_STATUS.to_string(), Some(status));
            client.patch_pod_annotations(&pod.namespace, &pod.name, &patch).map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

/// The `pods/status` merge patch [`publish`] sends: network-status and the [`attested`]
/// condition (podagent sends the same one for the fast path).
pub fn patch_body(entries: &[CacheEntry]) -> Value {
    json!({
        "metadata": {"annotations": {NETWORK_STATUS: network_status(entries).to_string()}},
        "status": {"conditions": [attested_condition(entries)]},
    })
}

/// The pod condition listing each attachment's network, device and addresses as kactus made
/// them (the default network is the pod's own `podIPs`).
pub fn attested_condition(entries: &[CacheEntry]) -> Value {
    let mut ordered: Vec<&CacheEntry> = entries.iter().filter(|e| !e.kactus.is_default).collect();
    ordered.sort_by_key(|e| e.kactus.seq);
    let list: Vec<attested::Attested> = ordered
        .into_iter()
        .map(|e| attested::Attested {
            name: e.shown_network().to_string(),
            interface: e.if_name.clone(),
            ips: entry_ips(e),
        })
        .collect();
    let (status, reason) = if list.is_empty() { ("False", "NoAttachments") } else { ("True", attested::REASON) };
    json!({"type": attested::CONDITION, "status": status, "reason": reason, "message": attested::encode(&list)})
}

/// [`publish`] as the plugin calls it: best effort, a failure is logged and the devices stay.
pub fn publish_logged(client: &kube::Client, pod: &PodRef, entries: &[CacheEntry]) {
    match publish(client, pod, entries) {
        Ok(()) => log::debug!("network-status written: {} device(s)", entries.len()),
        Err(e) => log::warn!("pod {}/{}: network-status not written: {e}", pod.namespace, pod.name),
    }
}

/// [`publish_logged`] for a call that has no apiserver client yet (a dynamic add or delete).
pub fn publish_logged_with_new_client(cfg: &KactusConfig, pod: &PodRef, entries: &[CacheEntry]) {
    match super::apiserver::kube_client(cfg) {
        Ok(client) => publish_logged(&client, pod, entries),
        Err(e) => log::warn!("pod {}/{}: network-status not written: {e}", pod.namespace, pod.name),
    }
}
