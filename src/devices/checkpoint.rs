//! kubelet's device-plugin checkpoint (`/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint`):
//! the devices allocated to each container, keyed by pod UID. Read when kubelet serves no
//! pod-resources socket. Two shapes exist: `DeviceIDs` as a list (before Kubernetes 1.20)
//! and as a map from NUMA node to list (since); both are read.

use super::{DeviceError, DevicesByResource};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Deserialize)]
struct CheckpointFile {
    #[serde(rename = "Data")]
    data: CheckpointData,
}

#[derive(Deserialize)]
struct CheckpointData {
    #[serde(rename = "PodDeviceEntries", default)]
    entries: Option<Vec<PodDevicesEntry>>,
}

#[derive(Deserialize)]
struct PodDevicesEntry {
    #[serde(rename = "PodUID")]
    pod_uid: String,
    #[serde(rename = "ResourceName")]
    resource_name: String,
    #[serde(rename = "DeviceIDs", default)]
    device_ids: Option<DeviceIds>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DeviceIds {
    List(Vec<String>),
    PerNumaNode(BTreeMap<String, Vec<String>>),
}

impl DeviceIds {
    fn into_ids(self) -> Vec<String> {
        match self {
            DeviceIds::List(ids) => ids,
            DeviceIds::PerNumaNode(nodes) => nodes.into_values().flatten().collect(),
        }
    }
}

/// The devices of every container of the pod with UID `uid`, by resource.
pub fn pod_devices(path: &Path, uid: &str) -> Result<DevicesByResource, DeviceError> {
    let failed = |cause: String| DeviceError::Checkpoint { path: path.to_path_buf(), cause };
    if uid.is_empty() {
        return Err(failed(
            "the pod's UID is unknown (no K8S_POD_UID in CNI_ARGS), and entries are keyed by it".into(),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| failed(format!("read: {e}")))?;
    let file: CheckpointFile =
        serde_json::from_slice(&bytes).map_err(|e| failed(format!("not a kubelet checkpoint: {e}")))?;
    let mut found = DevicesByResource::new();
    for entry in file.data.entries.unwrap_or_default().into_iter().filter(|e| e.pod_uid == uid) {
        let ids = entry.device_ids.map(DeviceIds::into_ids).unwrap_or_default();
        found.entry(entry.resource_name).or_default().extend(ids);
    }
    log::debug!("checkpoint {}: pod {uid} has {found:?}", path.display());
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str, uid: &str) -> Result<DevicesByResource, DeviceError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet_internal_checkpoint");
        std::fs::write(&path, json).unwrap();
        pod_devices(&path, uid)
    }

    fn ids(found: &DevicesByResource, resource: &str) -> Vec<String> {
        found.get(resource).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    #[test]
    fn the_numa_shape_of_current_kubelets() {
        let json = r#"{"Data": {"PodDeviceEntries": [
            {"PodUID": "u1", "ContainerName": "app", "ResourceName": "intel.com/sriov",
             "DeviceIDs": {"1": ["0000:af:02.1"], "0": ["0000:03:02.2"]}, "AllocResp": "CgA="},
            {"PodUID": "u1", "ContainerName": "sidecar", "ResourceName": "intel.com/sriov",
             "DeviceIDs": {"-1": ["0000:03:02.0"]}, "AllocResp": "CgA="},
            {"PodUID": "u2", "ContainerName": "app", "ResourceName": "intel.com/sriov",
             "DeviceIDs": {"0": ["0000:03:02.7"]}, "AllocResp": "CgA="}],
            "RegisteredDevices": {"intel.com/sriov": ["0000:03:02.0"]}}, "Checksum": 1234}"#;
        let found = read(json, "u1").unwrap();
        assert_eq!(ids(&found, "intel.com/sriov"), ["0000:03:02.0", "0000:03:02.2", "0000:af:02.1"]);
    }

    #[test]
    fn the_list_shape_of_older_kubelets() {
        let json = r#"{"Data": {"PodDeviceEntries": [{"PodUID": "u1", "ContainerName": "app",
            "ResourceName": "intel.com/sriov", "DeviceIDs": ["0000:03:02.1", "0000:03:02.0"], "AllocResp": null}],
            "RegisteredDevices": null}, "Checksum": 1}"#;
        assert_eq!(ids(&read(json, "u1").unwrap(), "intel.com/sriov"), ["0000:03:02.0", "0000:03:02.1"]);
        let empty = r#"{"Data": {"PodDeviceEntries": null, "RegisteredDevices": null}, "Checksum": 1}"#;
        assert!(read(empty, "u1").unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_file_or_an_unknown_uid_is_an_error_naming_the_file() {
        let e = read("{\"Data\": ", "u1").unwrap_err();
        assert!(
            matches!(e, DeviceError::Checkpoint { .. }) && e.to_string().contains("kubelet_internal_checkpoint"),
            "{e}"
        );
        let e = read("{}", "").unwrap_err();
        assert!(e.to_string().contains("K8S_POD_UID"), "{e}");
    }
}
