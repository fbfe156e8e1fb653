//! Parse, then act: from config, environment and apiserver objects to the exact list of
//! delegate calls an ADD will make. What needs no network config (the selection, device
//! names, namespace isolation, devices in the way) is checked before the first delegate
//! runs; the attachments' configs are read and checked while the master makes `eth0`.

use super::apiserver::{kube_client, kube_error};
use super::cache::{CacheEntry, KactusMeta, Role};
use super::config::KactusConfig;
use super::networks::{self, Network};
use super::node_answers::{self, NodeAnswers};
use crate::attachment::{self, Attachment};
use crate::cni::env::{K8S_POD_IFMAC, K8S_POD_NETWORK};
use crate::cni::{code, CniArgs, CniEnv, CniError, NetworkConfig, PodRef};
use crate::devices::{AllocatedDevice, DeviceError, DeviceLookup, DeviceRequest};
use crate::kube;
use serde_json::{Map, Value};

/// One delegate call of an ADD.
#[derive(Debug, Clone)]
pub struct PlannedCall {
    pub role: Role,
    pub net: NetworkConfig,
    pub ifname: String,
    pub runtime_config: Map<String, Value>,
    /// `CNI_ARGS` for the delegate (pod keys, `IgnoreUnknown=1`, `MAC=` when asked).
    pub args: crate::cni::CniArgs,
    /// `namespace/name` of the NAD (empty for config delegates).
    pub network: String,
    pub key: String,
    pub is_default: bool,
    pub gateways: Vec<String>,
    /// A MAC no delegate of the network can set: kactus sets it in the pod netns.
    pub set_mac: Option<String>,
    /// The allocated device backing the attachment, if its network names a resource.
    pub device: Option<AllocatedDevice>,
    /// The resourceVersion of the network's object (empty for config delegates).
    pub network_version: String,
}

/// One delegate call of an ADD and its intent record entry (its place in the container's
/// order, and everything its DEL needs).
pub struct Call {
    pub(super) planned: PlannedCall,
    pub(super) intent: CacheEntry,
}

impl Call {
    /// `calls` numbered from `first`, in order.
    pub fn numbered(env: &CniEnv, calls: Vec<PlannedCall>, first: u64) -> Vec<Call> {
        (first..).zip(calls).map(|(seq, planned)| Call { intent: planned.intent(env, seq), planned }).collect()
    }
}

/// What an ADD will do, and for which pod: the calls it can make at once, and the
/// attachments whose network configs are still to be read from the apiserver.
///
/// The runtime's ADD makes the master's `eth0` (and the config delegates) while the
/// attachments' NADs are read: the cluster's own plugin does not depend on them, and the
/// apiserver's client, TLS handshake and NAD round trips then cost the pod's start nothing
/// (they take 2-3 ms, the master's ADD takes longer). A NAD that turns out missing or invalid
/// fails the ADD after `eth0` was made, and the usual rollback removes it.
pub struct Plan {
    pub pod: Option<PodRef>,
    /// Calls to make now, in order: the master (or the primary network replacing it) first.
    pub ready: Vec<PlannedCall>,
    /// Attachments to make after `ready`, once [`Plan::pending_calls`] has read their networks.
    pub pending: Vec<Attachment>,
    /// The client that read the pod (when the runtime did not pass its annotations) or a
    /// primary network, kept so the NAD reads and the network-status PATCH reuse its connection.
    pub client: Option<kube::Client>,
    /// podagent's answers (the fast path), when planning needed them (the pod's annotations,
    /// a primary network) and podagent answered.
    pub node: Option<NodeAnswers>,
    /// podagent is to be asked beside the master (see [`ApiserverSide`]): the runtime passed
    /// the annotations and no network replaces eth0, so its answer is not needed before.
    ///
    /// [`ApiserverSide`]: super::apiserver_side::ApiserverSide
    pub node_later: bool,
    /// The pod as read from the apiserver, when planning read it.
    known_pod: Option<kube::Pod>,
    container_id: String,
    delegate_args: CniArgs,
}

impl Plan {
    /// The pending attachments' calls: their networks read concurrently, their options
    /// checked against what each network's plugins declare, their devices chosen among those
    /// `held` by the container's earlier attachments and the calls ready now.
    pub fn pending_calls(
        &self,
        cfg: &KactusConfig,
        client: &kube::Client,
        held: &[AllocatedDevice],
    ) -> Result<Vec<PlannedCall>, CniError> {
        let held: Vec<AllocatedDevice> =
            held.iter().cloned().chain(self.ready.iter().filter_map(|c| c.device.clone())).collect();
        let target = Target {
            pod: self.pod.as_ref(),
            known_pod: self.known_pod.as_ref(),
            container_id: &self.container_id,
            delegate_args: &self.delegate_args,
            held: &held,
        };
        attachment_calls(cfg, client, &target, &self.pending, false)
    }

    /// The pending attachments' calls from podagent's answers; `None` when there are none or
    /// they do not cover the attachments (then [`Plan::pending_calls`] reads the apiserver).
    pub fn pending_calls_from_node(
        &self,
        cfg: &KactusConfig,
        node: &NodeAnswers,
    ) -> Option<Result<Vec<PlannedCall>, CniError>> {
        calls_from_node(cfg, node, &self.delegate_args, &self.pending, false)
    }
}

/// The attachments' calls from podagent's answers, checked as [`attachment_calls`] checks
/// them; `None` (logged) when the answers do not cover them.
fn calls_from_node(
    cfg: &KactusConfig,
    node: &NodeAnswers,
    delegate_args: &CniArgs,
    atts: &[Attachment],
    is_primary: bool,
) -> Option<Result<Vec<PlannedCall>, CniError>> {
    let nets = node.networks(cfg, atts)?;
    Some(nets.into_iter().collect::<Result<Vec<_>, _>>().and_then(|nets| {
        atts.iter().zip(nets).map(|(att, net)| attachment_call(cfg, att, net, delegate_args, is_primary)).collect()
    }))
}

/// Whom the attachments' calls are for: the pod and its delegate args, and what choosing
/// allocated devices needs (the container, the devices its attachments hold already).
pub struct Target<'a> {
    pub pod: Option<&'a PodRef>,
    pub known_pod: Option<&'a kube::Pod>,
    pub container_id: &'a str,
    pub delegate_args: &'a CniArgs,
    /// Devices the container's other attachments hold, none of which is chosen again.
    pub held: &'a [AllocatedDevice],
}

/// Everything an ADD can know and check before its first delegate without reading networks:
/// the pod's selection (from the runtime's annotations, else the apiserver), device names,
/// namespace isolation, and that no device is in the way.
pub fn plan_add(cfg: &KactusConfig, env: &CniEnv) -> Result<Plan, CniError> {
    let pod = env.args.pod();
    let dynamic = env.args.get(K8S_POD_NETWORK).map(str::to_string);
    let delegate_args = env.args.for_delegate();
    let Some(pod) = pod else {
        if dynamic.is_some() {
            return Err(CniError::invalid_env("K8S_POD_NETWORK needs K8S_POD_NAMESPACE and K8S_POD_NAME in CNI_ARGS"));
        }
        let mut ready = vec![master_call(cfg, env)];
        ready.extend(config_delegate_calls(cfg, env));
        check_devices_absent(env, ready.iter().map(|c| (c.ifname.clone(), String::new())).collect())?;
        let container_id = env.container_id.clone();
        return Ok(Plan {
            pod: None,
            ready,
            pending: Vec::new(),
            client: None,
            node: None,
            node_later: false,
            known_pod: None,
            container_id,
            delegate_args,
        });
    };

    let mut client = None;
    let mut known_pod = None;
    // podagent (the fast path) is asked now for what planning needs from the apiserver: the
    // pod's annotations when the runtime did not pass them, else a primary network's config;
    // without either, beside the master (`node_later`).
    let runtime_annotations = runtime_pod_annotations(cfg);
    let from_runtime = runtime_annotations.is_some();
    let mut node = if from_runtime { None } else { node_answers::ask(cfg, &pod, &[]) };
    let annotations = match runtime_annotations.or_else(|| node.as_ref().map(|n| n.annotations.clone())) {
        Some(annotations) => annotations,
        None => {
            let c = client.insert(kube_client(cfg)?);
            let kpod = c
                .get_pod(&pod.namespace, &pod.name)
                .map_err(|e| kube_error(e, &format!("get pod {}/{}", pod.namespace, pod.name)))?;
            log::debug!("pod {}/{} read", pod.namespace, pod.name);
            known_pod.insert(kpod).metadata.annotations.clone()
        }
    };
    let mut atts = pod_attachments(&pod, &annotations, &env.ifname)?;

    if let Some(name) = &dynamic {
        atts = vec![dynamic_attachment(&pod, atts, name, env.args.get(K8S_POD_IFMAC))?];
    }
    for att in &atts {
        check_namespace_allowed(cfg, &pod, att)?;
    }

    let has_primary = dynamic.is_none() && atts.iter().any(|a| a.selection.is_primary);
    if from_runtime && has_primary {
        node = node_answers::ask(cfg, &pod, &atts);
    }
    let node_later = from_runtime && !has_primary && cfg.podagent_socket.is_some();
    let mut ready = Vec::new();
    if dynamic.is_none() {
        // The primary network replaces the master on eth0, so it goes first like the master:
        // its network is read now, the others' while it is made.
        match atts.iter().position(|a| a.selection.is_primary) {
            Some(i) => {
                let primary = vec![atts.remove(i)];
                let from_node = node.as_ref().and_then(|n| calls_from_node(cfg, n, &delegate_args, &primary, true));
                let calls = match from_node {
                    Some(calls) => calls?,
                    None => {
                        let c = match client {
                            Some(ref c) => c,
                            None => client.insert(kube_client(cfg)?),
                        };
                        let target = Target {
                            pod: Some(&pod),
                            known_pod: known_pod.as_ref(),
                            container_id: &env.container_id,
                            delegate_args: &delegate_args,
                            held: &[],
                        };
                        attachment_calls(cfg, c, &target, &primary, true)?
                    }
                };
                ready.extend(calls);
            }
            None => ready.push(master_call(cfg, env)),
        }
        ready.extend(config_delegate_calls(cfg, env));
    }
    let plan = finish(env, pod, ready, atts, client, node, known_pod, delegate_args)?;
    Ok(Plan { node_later, ..plan })
}

/// The plan, once no device of it is in the way.
#[allow(clippy::too_many_arguments)]
fn finish(
    env: &CniEnv,
    pod: PodRef,
    ready: Vec<PlannedCall>,
    pending: Vec<Attachment>,
    client: Option<kube::Client>,
    node: Option<NodeAnswers>,
    known_pod: Option<kube::Pod>,
    delegate_args: CniArgs,
) -> Result<Plan, CniError> {
    let devices = ready.iter().map(|c| (c.ifname.clone(), c.network.clone()));
    check_devices_absent(env, devices.chain(pending.iter().map(|a| (a.ifname.clone(), a.network_ref()))).collect())?;
    log::debug!("plan: {} call(s) ready, {} attachment(s) pending, no device in the way", ready.len(), pending.len());
    let container_id = env.container_id.clone();
    Ok(Plan { pod: Some(pod), ready, pending, client, node, node_later: false, known_pod, container_id, delegate_args })
}

/// The master delegate's call: the cluster network on `CNI_IFNAME`, with kubelet's
/// runtime config.
pub fn master_call(cfg: &KactusConfig, env: &CniEnv) -> PlannedCall {
    PlannedCall {
        role: Role::Master,
        net: cfg.master.clone(),
        ifname: env.ifname.clone(),
        runtime_config: cfg.runtime_config.clone(),
        args: env.args.for_delegate(),
        network: String::new(),
        key: String::new(),
        is_default: true,
        gateways: Vec::new(),
        set_mac: None,
        device: None,
        network_version: String::new(),
    }
}

/// The config's other delegates, attached to every pod, each on the device its name hashes to.
pub fn config_delegate_calls(cfg: &KactusConfig, env: &CniEnv) -> Vec<PlannedCall> {
    cfg.delegates
        .iter()
        .map(|net| PlannedCall {
            role: Role::Delegate,
            net: net.clone(),
            ifname: attachment::device_name_for(&net.name),
            runtime_config: Map::new(),
            key: net.name.clone(),
            is_default: false,
            ..master_call(cfg, env)
        })
        .collect()
}

/// The pod's attachments from its annotations (`isPrimary` ones get `primary_ifname`).
pub fn pod_attachments(
    pod: &PodRef,
    annotations: &std::collections::BTreeMap<String, String>,
    primary_ifname: &str,
) -> Result<Vec<Attachment>, CniError> {
    let invalid =
        |e: String| CniError::new(code::INVALID_ANNOTATION, format!("pod {}/{}: {e}", pod.namespace, pod.name));
    let selections = attachment::selections_from_annotations(annotations).map_err(|e| invalid(e.to_string()))?;
    attachment::resolve(&pod.namespace, selections, primary_ifname).map_err(invalid)
}

impl PlannedCall {
    /// The call as its intent record holds it (no result yet), `seq` its place in the
    /// container's order.
    pub fn intent(&self, env: &CniEnv, seq: u64) -> CacheEntry {
        CacheEntry {
            kind: CacheEntry::KIND.into(),
            container_id: env.container_id.clone(),
            config: CacheEntry::encode_config(&self.net),
            if_name: self.ifname.clone(),
            network_name: self.net.name.clone(),
            netns: env.netns.as_deref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
            cni_args: self.args.0.iter().map(|(k, v)| [k.clone(), v.clone()]).collect(),
            capability_args: self.runtime_config.clone(),
            result: Value::Null,
            kactus: KactusMeta {
                seq,
                role: self.role,
                network: self.network.clone(),
                key: self.key.clone(),
                is_default: self.is_default,
                gateways: self.gateways.clone(),
                replaced_routes: Vec::new(),
                device: self.device.clone(),
                network_version: self.network_version.clone(),
            },
        }
    }
}

/// The capability under which containerd and CRI-O hand a plugin the pod's annotations (from
/// the pod sandbox config kubelet sent) in `runtimeConfig`, when its config declares it.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// The pod's annotations as the runtime passed them, if it did. They are what kubelet
/// started the sandbox with, so the runtime's ADD needs no GET of the pod: one apiserver
/// round trip less on every pod start, and one request less for the apiserver. podagent
/// passes them the same way for its dynamic calls: the pod as its watch just delivered it,
/// the version its change was planned on.
fn runtime_pod_annotations(cfg: &KactusConfig) -> Option<std::collections::BTreeMap<String, String>> {
    let passed = cfg.runtime_config.get(POD_ANNOTATIONS_CAPABILITY)?.as_object()?;
    Some(passed.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
}

/// A dynamic call names one network: find it among the pod's selections by its key or
/// network (see [`attachment::DynamicTarget::exact_position`]); absent from the annotation,
/// it is taken as a bare reference so the plugin can be driven by hand.
fn dynamic_attachment(
    pod: &PodRef,
    atts: Vec<Attachment>,
    name: &str,
    mac: Option<&str>,
) -> Result<Attachment, CniError> {
    let target = attachment::DynamicTarget::parse(&pod.namespace, name);
    let refs: Vec<String> = atts.iter().map(Attachment::network_ref).collect();
    let found =
        target.exact_position(atts.iter().zip(&refs).map(|(a, r)| (a.key.as_str(), r.as_str(), a.ifname.as_str())));
    let mut att = match found {
        Some(i) => atts.into_iter().nth(i).ok_or_else(|| CniError::invalid_env("attachment vanished"))?,
        None => {
            let sels = attachment::parse_npwg_networks(name)
                .map_err(|e| CniError::invalid_env(format!("K8S_POD_NETWORK {name:?}: {e}")))?;
            attachment::resolve(&pod.namespace, sels, "")
                .map_err(CniError::invalid_env)?
                .into_iter()
                .next()
                .ok_or_else(|| CniError::invalid_env(format!("K8S_POD_NETWORK {name:?} names no network")))?
        }
    };
    if let Some(mac) = mac {
        att.selection.mac = Some(mac.to_string());
    }
    att.selection.is_primary = false;
    if att.ifname.is_empty() {
        att.ifname = attachment::device_name_for(&att.key);
    }
    Ok(att)
}

/// `namespaceIsolation`: a pod may use only networks of its own namespace and of the global
/// ones. Checked for every attachment an ADD makes and every call DEL rebuilds.
pub fn check_namespace_allowed(cfg: &KactusConfig, pod: &PodRef, att: &Attachment) -> Result<(), CniError> {
    if !cfg.namespace_isolation || att.namespace == pod.namespace || cfg.global_namespaces.contains(&att.namespace) {
        return Ok(());
    }
    Err(CniError::new(
        code::INVALID_ANNOTATION,
        format!(
            "pod {}/{} may not use network {}: namespaceIsolation allows only its own namespace and {:?}",
            pod.namespace,
            pod.name,
            att.network_ref(),
            cfg.global_namespaces
        ),
    ))
}

/// The attachments' calls. Their network configs are read in one request per namespace (see
/// [`networks`]), the namespaces concurrently: one round trip of wall time whatever the
/// number of attachments.
pub fn attachment_calls(
    cfg: &KactusConfig,
    client: &kube::Client,
    target: &Target,
    atts: &[Attachment],
    is_primary: bool,
) -> Result<Vec<PlannedCall>, CniError> {
    let mut nets = networks::read(cfg, client, atts).into_iter().collect::<Result<Vec<_>, _>>()?;
    log::debug!("{} network config(s) read", nets.len());
    assign_devices(cfg, client, target, atts, &mut nets)?;
    atts.iter().zip(nets).map(|(att, net)| attachment_call(cfg, att, net, target.delegate_args, is_primary)).collect()
}

/// Each attachment's call on its own, for DEL's repair: the networks read as an ADD reads
/// them (one request per namespace and source), a network that fails failing only its own
/// attachment. No allocated device is looked up: a DEL rebuilding a lost entry does not know
/// the device its ADD chose, and a lookup now could choose another (or fail with the pod
/// going). The attachment on `primary_ifname` is the pod's `isPrimary` network.
pub fn attachment_calls_each(
    cfg: &KactusConfig,
    client: &kube::Client,
    delegate_args: &CniArgs,
    atts: &[Attachment],
    primary_ifname: &str,
) -> Vec<Result<PlannedCall, CniError>> {
    let nets = networks::read(cfg, client, atts);
    atts.iter()
        .zip(nets)
        .map(|(att, net)| {
            net.and_then(|net| attachment_call(cfg, att, net, delegate_args, att.ifname == primary_ifname))
        })
        .collect()
}

/// Gives each network that names a resource a device of the pod's allocation (see
/// [`devices`]), none held by another attachment of the container.
fn assign_devices(
    cfg: &KactusConfig,
    client: &kube::Client,
    target: &Target,
    atts: &[Attachment],
    nets: &mut [Network],
) -> Result<(), CniError> {
    let requests: Vec<Option<DeviceRequest>> = atts
        .iter()
        .zip(nets.iter())
        .map(|(att, net)| {
            let resource = net.resource_name.clone()?;
            Some(DeviceRequest { network: att.network_ref(), ifname: att.ifname.clone(), resource })
        })
        .collect();
    if !requests.iter().any(Option::is_some) {
        return Ok(());
    }
    let held = target.held;
    let pod =
        target.pod.ok_or_else(|| CniError::invalid_env("allocated devices need the pod's identity in CNI_ARGS"))?;
    let lookup = DeviceLookup {
        paths: &cfg.devices,
        timeout: cfg.api_timeout,
        pod,
        known_pod: target.known_pod,
        client,
        container_id: target.container_id,
        held,
    };
    let devices = lookup.assign(&requests).map_err(|e| match &*e.cause {
        DeviceError::Apiserver { what, error } => kube_error(
            error.clone(),
            &format!("attachment {} on {}: resource {}: {what}", e.network, e.ifname, e.resource),
        ),
        cause => CniError::new(cause.code(), e.to_string()),
    })?;
    for (net, device) in nets.iter_mut().zip(devices) {
        net.device = device;
    }
    Ok(())
}

/// Options become runtime config for the capabilities the network declares; one no plugin
/// can take fails the attachment (NPWG), except `mac`, which kactus then sets itself.
fn attachment_call(
    cfg: &KactusConfig,
    att: &Attachment,
    network: Network,
    delegate_args: &CniArgs,
    is_primary: bool,
) -> Result<PlannedCall, CniError> {
    let Network { config: mut net, device, resource_version: network_version, .. } = network;
    let caps = net.capabilities();
    let sel = &att.selection;
    let mut rc = if is_primary { cfg.runtime_config.clone() } else { Map::new() };
    let mut wanted: Vec<(&str, Value)> = Vec::new();
    if !sel.ips.is_empty() {
        wanted.push(("ips", sel.ips.clone().into()));
    }
    for (k, v) in &sel.runtime_options {
        wanted.push((k.as_str(), v.clone()));
    }
    for (cap, value) in wanted {
        if !caps.contains(cap) {
            return Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!(
                    "network {} ({}): option {cap:?} was asked for but no plugin of it declares the {cap:?} capability",
                    att.network_ref(),
                    net.types()
                ),
            ));
        }
        rc.insert(cap.to_string(), value);
    }
    let mut set_mac = None;
    let mut args = delegate_args.clone();
    if let Some(mac) = &sel.mac {
        args.set("MAC", mac);
        if caps.contains("mac") {
            rc.insert("mac".into(), mac.clone().into());
        } else {
            set_mac = Some(mac.clone());
        }
    }
    if !sel.cni_args.is_empty() {
        for plugin in &mut net.plugins {
            let args_obj = plugin.entry("args").or_insert_with(|| Value::Object(Map::new()));
            if let Some(obj) = args_obj.as_object_mut() {
                let cni = obj.entry("cni").or_insert_with(|| Value::Object(Map::new()));
                if let Some(cni) = cni.as_object_mut() {
                    cni.extend(sel.cni_args.clone());
                }
            }
        }
    }
    if let Some(device) = &device {
        device.hand_to_delegates(&mut net, &mut rc);
    }
    Ok(PlannedCall {
        role: if is_primary { Role::Master } else { Role::Attachment },
        network: att.network_ref(),
        key: att.key.clone(),
        is_default: is_primary,
        gateways: sel.default_route.clone(),
        ifname: att.ifname.clone(),
        net,
        runtime_config: rc,
        args,
        set_mac,
        device,
        network_version,
    })
}

/// "ADD must fail if the interface exists": checked for every device (its name, and the
/// network it is for, empty for a config delegate) before any is made.
fn check_devices_absent(env: &CniEnv, devices: Vec<(String, String)>) -> Result<(), CniError> {
    let Some(netns) = &env.netns else { return Ok(()) };
    let names: Vec<String> = devices.iter().map(|(name, _)| name.clone()).collect();
    let existing = crate::netns::first_existing(netns, &names).map_err(|e| {
        CniError::new(code::INVALID_ENVIRONMENT, format!("cannot enter CNI_NETNS {}: {e}", netns.display()))
    })?;
    match existing.and_then(|i| devices.get(i)) {
        None => Ok(()),
        Some((name, network)) => Err(CniError::invalid_config(format!(
            "device {name:?} already exists in the pod's network namespace{}",
            if network.is_empty() { String::new() } else { format!(" (network {network})") }
        ))),
    }
}
