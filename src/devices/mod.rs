//! Allocated devices (SR-IOV VFs, vDPA, vhost-user and DPDK ports): which device of the
//! pod's allocation backs an attachment, and the NPWG device-info that goes with it.
//!
//! A network whose NetworkAttachmentDefinition (or Kaloom `Network`) is annotated
//! `k8s.v1.cni.cncf.io/resourceName: <vendor>/<resource>` is backed by a device kubelet
//! allocated to the pod. Where the allocation is read, as multus reads it:
//! - kubelet's pod-resources API (`podresources.rs`), the current way;
//! - the device-plugin checkpoint file (`checkpoint.rs`) when that socket does not exist, as
//!   on nodes too old to serve it;
//! - the pod's DRA ResourceClaims (`dra.rs`) for a resource no device plugin allocated.
//!
//! Several attachments of one resource get distinct devices, deterministically: each takes
//! the lowest device ID (in sorted order) that no attachment of the container holds yet, so
//! on a pod's first ADD the k-th attachment of a resource gets the k-th sorted device. The
//! choice is recorded in the attachment's cache entry: CHECK and DEL use it, never a new
//! lookup. `devinfo.rs` writes and removes the CNI device-info file of each attachment.

pub mod checkpoint;
pub mod devinfo;
pub mod dra;
pub mod podresources;

use crate::cni::{code, NetworkConfig, PodRef};
use crate::kube::{self, KubeError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// The NAD annotation naming the resource whose device backs the network (NPWG).
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

pub const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
pub const DEFAULT_CHECKPOINT_FILE: &str = "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint";
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo";

/// Where the node's device allocations and device-info files are (kactus config keys
/// `podResourcesSocket`, `devicePluginCheckpoint`, `deviceInfoDir`).
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePaths {
    pub pod_resources_socket: PathBuf,
    pub checkpoint_file: PathBuf,
    /// Holds `dp/` (device plugins' files) and `cni/` (one file per attachment).
    pub device_info_dir: PathBuf,
}

impl Default for DevicePaths {
    fn default() -> Self {
        DevicePaths {
            pod_resources_socket: DEFAULT_POD_RESOURCES_SOCKET.into(),
            checkpoint_file: DEFAULT_CHECKPOINT_FILE.into(),
            device_info_dir: DEFAULT_DEVICE_INFO_DIR.into(),
        }
    }
}

/// Where an allocation was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    PodResources,
    Checkpoint,
    Dra,
}

impl Source {
    fn describe(self) -> &'static str {
        match self {
            Source::PodResources => "kubelet's pod-resources API",
            Source::Checkpoint => "the device-plugin checkpoint",
            Source::Dra => "the pod's DRA claims",
        }
    }
}

/// The device an attachment got, as its cache entry records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocatedDevice {
    pub resource_name: String,
    #[serde(rename = "deviceID")]
    pub device_id: String,
    pub source: Source,
    /// The attachment's CNI device-info file (`CNIDeviceInfoFile`), removed at its DEL.
    pub device_info_file: PathBuf,
    /// The device-info the file held after the delegates ran: network-status's `device-info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_info: Option<Value>,
}

impl AllocatedDevice {
    /// How the device reaches the attachment's delegates, as SR-IOV CNI, host-device and the
    /// userspace CNIs read it (and as multus hands it over): `deviceID` in every plugin's
    /// config, and `pciBusID` too when it is a PCI address; `runtimeConfig.deviceID` and
    /// `runtimeConfig.CNIDeviceInfoFile` for the plugins declaring those capabilities.
    pub fn hand_to_delegates(&self, net: &mut NetworkConfig, runtime_config: &mut Map<String, Value>) {
        for plugin in &mut net.plugins {
            plugin.insert("deviceID".into(), self.device_id.clone().into());
            if is_pci_address(&self.device_id) {
                plugin.insert("pciBusID".into(), self.device_id.clone().into());
            }
        }
        runtime_config.insert("deviceID".into(), self.device_id.clone().into());
        runtime_config.insert("CNIDeviceInfoFile".into(), self.device_info_file.display().to_string().into());
    }
}

/// Why an attachment has no device.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    /// The pod-resources socket is there but kubelet does not answer on it (restarting?).
    #[error("kubelet's pod-resources API at {}: {cause}", socket.display())]
    KubeletUnreachable { socket: PathBuf, cause: String },
    /// kubelet answered with an error.
    #[error("kubelet's pod-resources API at {}: {cause}", socket.display())]
    KubeletRefused { socket: PathBuf, cause: String },
    #[error("device-plugin checkpoint {}: {cause}", path.display())]
    Checkpoint { path: PathBuf, cause: String },
    /// Reading the pod or its claims from the apiserver failed.
    #[error("{what}: {error}")]
    Apiserver { what: String, error: KubeError },
    /// A claim of the pod that kubelet should have had allocated is not (yet).
    #[error("{0}")]
    ClaimNotReady(String),
    #[error("pod {pod} was allocated no {resource} device (asked: {consulted})")]
    NotAllocated { pod: String, resource: String, consulted: String },
    #[error("pod {pod} was allocated {} {resource} device(s) ({}), all taken by its other attachments", devices.len(), devices.join(", "))]
    Exhausted { pod: String, resource: String, devices: Vec<String> },
}

impl DeviceError {
    /// The CNI code: try again where kubelet or the apiserver may answer later; a pod that
    /// simply lacks the device is the allocated-device code.
    pub fn code(&self) -> u32 {
        match self {
            DeviceError::KubeletUnreachable { .. } | DeviceError::KubeletRefused { .. } => code::TRY_AGAIN_LATER,
            DeviceError::ClaimNotReady(_) => code::TRY_AGAIN_LATER,
            DeviceError::Checkpoint { .. } => code::IO_FAILURE,
            DeviceError::Apiserver { error, .. } if error.is_transient() => code::TRY_AGAIN_LATER,
            DeviceError::Apiserver { .. } => code::APISERVER,
            DeviceError::NotAllocated { .. } | DeviceError::Exhausted { .. } => code::DEVICE_NOT_ALLOCATED,
        }
    }
}

/// Device IDs by resource name, sorted.
pub type DevicesByResource = BTreeMap<String, BTreeSet<String>>;

/// What a pod was allocated of the resources its networks name, and the devices still free.
#[derive(Debug, Default)]
pub struct Allocation {
    pod: String,
    /// Every device allocated, by resource, with where it was read.
    allocated: BTreeMap<String, (Source, BTreeSet<String>)>,
    /// Devices held by attachments (of this call or earlier ones), by resource.
    taken: BTreeSet<(String, String)>,
    /// The sources asked, for the message when a resource was not found.
    consulted: Vec<String>,
}

impl Allocation {
    /// Marks a device as held by an existing attachment of the container.
    pub fn hold(&mut self, device: &AllocatedDevice) {
        self.taken.insert((device.resource_name.clone(), device.device_id.clone()));
    }

    /// The lowest free device of `resource`, now held.
    pub fn take(&mut self, resource: &str) -> Result<(String, Source), DeviceError> {
        let Some((source, devices)) = self.allocated.get(resource) else {
            return Err(DeviceError::NotAllocated {
                pod: self.pod.clone(),
                resource: resource.to_string(),
                consulted: self.consulted.join("; "),
            });
        };
        let free = devices.iter().find(|id| !self.taken.contains(&(resource.to_string(), id.to_string())));
        let Some(id) = free.cloned() else {
            return Err(DeviceError::Exhausted {
                pod: self.pod.clone(),
                resource: resource.to_string(),
                devices: devices.iter().cloned().collect(),
            });
        };
        self.taken.insert((resource.to_string(), id.clone()));
        Ok((id, *source))
    }

    fn add(&mut self, source: Source, found: DevicesByResource) {
        for (resource, ids) in found.into_iter().filter(|(_, ids)| !ids.is_empty()) {
            self.allocated.entry(resource).or_insert((source, ids));
        }
    }
}

/// An attachment whose network names a resource.
#[derive(Debug, Clone)]
pub struct DeviceRequest {
    /// `namespace/name` of the network.
    pub network: String,
    pub ifname: String,
    pub resource: String,
}

/// Why an attachment got no device, naming the attachment and the resource.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("attachment {network} on {ifname}: resource {resource}: {cause}")]
pub struct AttachmentDeviceError {
    pub network: String,
    pub ifname: String,
    pub resource: String,
    pub cause: Box<DeviceError>,
}

/// One ADD's view of the node's allocations for its pod.
pub struct DeviceLookup<'a> {
    pub paths: &'a DevicePaths,
    /// Bound on kubelet's answer.
    pub timeout: Duration,
    pub pod: &'a PodRef,
    /// The pod as planning read it from the apiserver, if it did (saves a GET for DRA).
    pub known_pod: Option<&'a kube::Pod>,
    pub client: &'a kube::Client,
    /// The container whose attachments get devices (it names their device-info files).
    pub container_id: &'a str,
    /// Devices the container's other attachments hold.
    pub held: &'a [AllocatedDevice],
}

impl DeviceLookup<'_> {
    /// A device for each request, in order: the lowest device ID of its resource no other
    /// attachment holds. The pod's allocation is read once, and only if something is asked.
    pub fn assign(
        &self,
        requests: &[Option<DeviceRequest>],
    ) -> Result<Vec<Option<AllocatedDevice>>, AttachmentDeviceError> {
        let Some(first) = requests.iter().flatten().next() else {
            return Ok(requests.iter().map(|_| None).collect());
        };
        let failed = |request: &DeviceRequest, cause| AttachmentDeviceError {
            network: request.network.clone(),
            ifname: request.ifname.clone(),
            resource: request.resource.clone(),
            cause: Box::new(cause),
        };
        let wanted: BTreeSet<String> = requests.iter().flatten().map(|r| r.resource.clone()).collect();
        let mut allocation = self.allocation(&wanted).map_err(|e| failed(first, e))?;
        for held in self.held {
            allocation.hold(held);
        }
        let mut devices = Vec::new();
        for request in requests {
            let Some(request) = request else {
                devices.push(None);
                continue;
            };
            let (device_id, source) = allocation.take(&request.resource).map_err(|e| failed(request, e))?;
            log::info!(
                "attachment {} on {}: device {device_id} of {} ({})",
                request.network,
                request.ifname,
                request.resource,
                source.describe()
            );
            let device_info_file = devinfo::attachment_file(
                &self.paths.device_info_dir,
                &request.network,
                self.container_id,
                &request.ifname,
            );
            devices.push(Some(AllocatedDevice {
                resource_name: request.resource.clone(),
                device_id,
                source,
                device_info_file,
                device_info: None,
            }));
        }
        Ok(devices)
    }

    /// The pod's allocation of `resources`: what device plugins allocated (pod-resources API,
    /// else the checkpoint), and for any resource still missing, the pod's DRA claims.
    pub fn allocation(&self, resources: &BTreeSet<String>) -> Result<Allocation, DeviceError> {
        let pod = format!("{}/{}", self.pod.namespace, self.pod.name);
        let mut allocation = Allocation { pod, ..Default::default() };
        let plugins = self.device_plugin_devices(&mut allocation.consulted)?;
        if let Some((source, found)) = plugins {
            allocation.add(source, found);
        }
        if resources.iter().all(|r| allocation.allocated.contains_key(r)) {
            return Ok(allocation);
        }
        let fetched;
        let kpod = match self.known_pod {
            Some(p) => p,
            None => {
                fetched = self.get_pod()?;
                &fetched
            }
        };
        let (asked, found) = dra::pod_devices(self.client, kpod)?;
        allocation.consulted.push(asked);
        allocation.add(Source::Dra, found);
        Ok(allocation)
    }

    /// Device-plugin allocations: from the pod-resources API when its socket exists, else
    /// from the checkpoint when that exists, else none (a node without device plugins).
    fn device_plugin_devices(
        &self,
        consulted: &mut Vec<String>,
    ) -> Result<Option<(Source, DevicesByResource)>, DeviceError> {
        let socket = &self.paths.pod_resources_socket;
        if socket.exists() {
            let found = podresources::pod_devices(socket, self.timeout, &self.pod.namespace, &self.pod.name)?;
            consulted.push(format!("{} at {}", Source::PodResources.describe(), socket.display()));
            return Ok(Some((Source::PodResources, found)));
        }
        let checkpoint = &self.paths.checkpoint_file;
        if checkpoint.exists() {
            let uid = match &self.pod.uid {
                Some(uid) => uid.clone(),
                None => self.known_pod.map(|p| p.metadata.uid.clone()).unwrap_or_default(),
            };
            let uid = match uid.is_empty() {
                false => uid,
                true => self.get_pod()?.metadata.uid,
            };
            let found = checkpoint::pod_devices(checkpoint, &uid)?;
            consulted.push(format!(
                "{} {} (no pod-resources socket at {})",
                Source::Checkpoint.describe(),
                checkpoint.display(),
                socket.display()
            ));
            return Ok(Some((Source::Checkpoint, found)));
        }
        consulted.push(format!(
            "no device plugin allocations: neither kubelet's pod-resources socket {} nor the checkpoint {} exists",
            socket.display(),
            checkpoint.display()
        ));
        Ok(None)
    }

    fn get_pod(&self) -> Result<kube::Pod, DeviceError> {
        let (ns, name) = (&self.pod.namespace, &self.pod.name);
        self.client
            .get_pod(ns, name)
            .map_err(|error| DeviceError::Apiserver { what: format!("get pod {ns}/{name}"), error })
    }
}

/// Whether a device ID is a PCI address (`dddd:bb:dd.f`), which delegates also take as
/// `pciBusID` and device-info describes as `pci`.
pub fn is_pci_address(id: &str) -> bool {
    let hex = |s: &str, len: std::ops::RangeInclusive<usize>| {
        len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
    };
    let mut parts = id.split(':');
    let (Some(domain), Some(bus), Some(slot_fn), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((slot, function)) = slot_fn.split_once('.') else { return false };
    hex(domain, 4..=8)
        && hex(bus, 2..=2)
        && hex(slot, 2..=2)
        && matches!(function, "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocation(devices: &[(&str, &[&str])]) -> Allocation {
        let mut a = Allocation { pod: "default/app1".into(), consulted: vec!["the test".into()], ..Default::default() };
        let found =
            devices.iter().map(|(r, ids)| (r.to_string(), ids.iter().map(|s| s.to_string()).collect())).collect();
        a.add(Source::PodResources, found);
        a
    }

    #[test]
    fn the_kth_attachment_of_a_resource_gets_the_kth_sorted_device() {
        let mut a = allocation(&[("intel.com/sriov", &["0000:03:02.2", "0000:03:02.0", "0000:03:02.1"])]);
        let taken: Vec<String> = (0..3).map(|_| a.take("intel.com/sriov").unwrap().0).collect();
        assert_eq!(taken, ["0000:03:02.0", "0000:03:02.1", "0000:03:02.2"]);
        let Err(DeviceError::Exhausted { devices, .. }) = a.take("intel.com/sriov") else { panic!("a fourth device") };
        assert_eq!(devices.len(), 3);
    }

    #[test]
    fn a_device_held_by_an_earlier_attachment_is_skipped() {
        let mut a = allocation(&[("intel.com/sriov", &["0000:03:02.0", "0000:03:02.1"])]);
        let held = AllocatedDevice {
            resource_name: "intel.com/sriov".into(),
            device_id: "0000:03:02.0".into(),
            source: Source::PodResources,
            device_info_file: PathBuf::new(),
            device_info: None,
        };
        a.hold(&held);
        assert_eq!(a.take("intel.com/sriov").unwrap(), ("0000:03:02.1".to_string(), Source::PodResources));
    }

    #[test]
    fn a_resource_not_allocated_names_the_pod_the_resource_and_what_was_asked() {
        let mut a = allocation(&[("intel.com/sriov", &["0000:03:02.0"])]);
        let e = a.take("mellanox.com/cx5").unwrap_err();
        assert_eq!(e.code(), code::DEVICE_NOT_ALLOCATED);
        let msg = e.to_string();
        assert!(msg.contains("default/app1") && msg.contains("mellanox.com/cx5") && msg.contains("the test"), "{msg}");
    }

    #[test]
    fn pci_addresses() {
        for id in ["0000:03:02.1", "0000:af:00.7", "10000:01:00.0"] {
            assert!(is_pci_address(id), "{id}");
        }
        for id in ["03:02.1", "0000:03:02.8", "0000:03:02", "vdpa0", "/var/run/vhost.sock", "0000:3:02.1", ""] {
            assert!(!is_pci_address(id), "{id}");
        }
    }
}
