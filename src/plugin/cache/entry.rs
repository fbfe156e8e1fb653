//! What the cache holds: one entry per delegate call (libcni's `cniCacheV1` shape plus a
//! `kactus` block) and the intent records written before the calls run.

use crate::cni::{CniArgs, CniError, NetworkConfig};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a cached delegate call was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// The cluster network on the pod's eth0 (or the `isPrimary` network that replaced it).
    Master,
    /// A non-master delegate from the kactus config.
    Delegate,
    /// A network the pod asked for in its annotation.
    Attachment,
}

/// kactus's own fields beside libcni's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KactusMeta {
    /// Order of creation, unique in a container: DEL runs newest first, and an intent
    /// record's call and its completed entry share it.
    pub seq: u64,
    pub role: Role,
    /// `namespace/name` of the NetworkAttachmentDefinition, empty for config delegates.
    #[serde(default)]
    pub network: String,
    /// The attachment key (`green`, `mep/mp1`, `green#1`): what `K8S_POD_NETWORK` names.
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub is_default: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Default routes this attachment's `default-route` took over, put back at its DEL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced_routes: Vec<crate::netlink::DefaultRoute>,
    /// The allocated device backing the attachment: CHECK and DEL use this one, never a
    /// new lookup, and its DEL removes its device-info file. In an intent record too, so a
    /// call that never completed still has its file removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<crate::devices::AllocatedDevice>,
    /// The resourceVersion of the network's object (NAD or Kaloom `Network`) this call's
    /// config came from: which version of a changed network the pod got.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network_version: String,
}

/// One delegate call, in libcni's `cniCacheV1` shape. In an intent record it has no
/// `result` yet; so has a call whose ADD never completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub kind: String,
    pub container_id: String,
    /// The network config exactly as sent (conf or conflist), base64 as libcni stores bytes.
    pub config: String,
    pub if_name: String,
    pub network_name: String,
    #[serde(default)]
    pub netns: String,
    pub cni_args: Vec<[String; 2]>,
    #[serde(default)]
    pub capability_args: Map<String, Value>,
    #[serde(default)]
    pub result: Value,
    pub kactus: KactusMeta,
}

impl CacheEntry {
    pub const KIND: &'static str = "cniCacheV1";

    /// libcni stores the config bytes base64-encoded; so does kactus.
    pub fn encode_config(net: &NetworkConfig) -> String {
        base64::engine::general_purpose::STANDARD.encode(net.to_json().to_string())
    }

    /// The network config as it was sent at ADD.
    pub fn network(&self) -> Result<NetworkConfig, CniError> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(&self.config).map_err(|e| {
            CniError::new(crate::cni::code::DECODING_FAILURE, format!("cache entry for {}: {e}", self.if_name))
        })?;
        NetworkConfig::from_bytes(&bytes, &self.network_name, "")
    }

    /// Whether the delegate's ADD completed and its result was recorded.
    pub fn is_complete(&self) -> bool {
        !self.result.is_null()
    }

    /// The network as network-status and events name it: `namespace/name` of the NAD (also
    /// for an `isPrimary` network on eth0), else the CNI network name (cluster network,
    /// config delegates).
    pub fn shown_network(&self) -> &str {
        match self.kactus.role {
            Role::Attachment => &self.kactus.network,
            Role::Master if !self.kactus.network.is_empty() => &self.kactus.network,
            _ => &self.network_name,
        }
    }

    pub fn args(&self) -> CniArgs {
        CniArgs(self.cni_args.iter().map(|[k, v]| (k.clone(), v.clone())).collect())
    }
}

/// Calls an ADD is about to exec, recorded before the first of them runs (write-ahead), so a
/// delegate that fails or crashes halfway, or a kactus killed mid-ADD, is still sent DEL.
/// It is also the second copy of each call's identity: a damaged entry file is rebuilt from
/// it. One record per batch (the master and config delegates; the attachments once their
/// networks are read; a dynamic call), not one per delegate, so the write-ahead costs an ADD
/// one or two file writes whatever the number of attachments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub kind: String,
    pub calls: Vec<CacheEntry>,
}

impl Intent {
    pub const KIND: &'static str = "kactusIntentV1";

    pub fn new(calls: &[CacheEntry]) -> Intent {
        Intent { kind: Intent::KIND.into(), calls: calls.to_vec() }
    }
}

#[cfg(test)]
impl CacheEntry {
    /// An attachment's call on device `ifname` for tests (no config), with `result`.
    pub(crate) fn sample(ifname: &str, seq: u64, result: Value) -> CacheEntry {
        CacheEntry {
            kind: CacheEntry::KIND.into(),
            container_id: "c1".into(),
            config: String::new(),
            if_name: ifname.into(),
            network_name: "n".into(),
            netns: String::new(),
            cni_args: Vec::new(),
            capability_args: Map::new(),
            result,
            kactus: KactusMeta {
                seq,
                role: Role::Attachment,
                network: format!("default/{ifname}"),
                key: ifname.into(),
                is_default: false,
                gateways: Vec::new(),
                replaced_routes: Vec::new(),
                device: None,
                network_version: String::new(),
            },
        }
    }
}
