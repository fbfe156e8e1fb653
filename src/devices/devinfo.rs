//! NPWG device-info files (Device Information Specification 1.1): JSON maps with a `type`
//! (`pci`, `vdpa`, `vhost-user`, `memif`), a `version` and that type's block.
//!
//! A device plugin may describe each device it manages in
//! `<dir>/dp/<resourceName>-<deviceID>-device.json` (each `/` made `-`). Each attachment with
//! a device has its own file, `<dir>/cni/<namespace>-<network>-<containerID>_<ifname>` (as
//! multus names it), passed to delegates declaring the `CNIDeviceInfoFile` capability: before
//! the delegates run it holds a copy of the device plugin's file when there is one; a
//! delegate may write it when it is absent (the userspace CNIs describe their vhost-user
//! sockets so); after them, kactus reads it for network-status, and for a PCI device nobody
//! described writes the `pci` description itself. DEL removes it.

use super::{is_pci_address, AllocatedDevice};
use crate::cni::CniError;
use serde_json::{json, Value};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const SPEC_VERSION: &str = "1.1.0";

/// Larger files are not device-info.
const MAX_FILE_BYTES: u64 = 64 << 10;

/// The device plugin's file for one device.
pub fn device_plugin_file(dir: &Path, resource: &str, device_id: &str) -> PathBuf {
    let name = format!("{}-{}-device.json", resource.replace('/', "-"), device_id.replace('/', "-"));
    dir.join("dp").join(name)
}

/// The file of one attachment (`network` is `namespace/name`).
pub fn attachment_file(dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    dir.join("cni").join(format!("{network}-{container_id}_{ifname}").replace('/', "-"))
}

/// Before the delegates: the attachment's file holds the device plugin's description of the
/// device if it wrote a valid one, and nothing else (a file left by an earlier attempt goes).
pub fn prepare(device_info_dir: &Path, device: &AllocatedDevice) -> Result<(), CniError> {
    let dp = device_plugin_file(device_info_dir, &device.resource_name, &device.device_id);
    match read(&dp) {
        Ok(Some(info)) => {
            log::debug!("device-info of {} from {}", device.device_id, dp.display());
            write(&device.device_info_file, &info)
        }
        Ok(None) => remove(device),
        Err(e) => {
            log::warn!("ignoring the device plugin's device-info {}: {e}", dp.display());
            remove(device)
        }
    }
}

/// After the delegates: the attachment's device-info, as network-status shows it.
pub fn collect(device: &AllocatedDevice) -> Result<Option<Value>, CniError> {
    let path = &device.device_info_file;
    match read(path) {
        Ok(Some(info)) => return Ok(Some(info)),
        Ok(None) => {}
        Err(e) => {
            log::warn!("device-info {} is not usable: {e}", path.display());
            return Ok(None);
        }
    }
    if !is_pci_address(&device.device_id) {
        return Ok(None);
    }
    let info = json!({"type": "pci", "version": SPEC_VERSION, "pci": {"pci-address": device.device_id}});
    write(path, &info)?;
    Ok(Some(info))
}

/// Removes the attachment's file; one already gone is fine.
pub fn remove(device: &AllocatedDevice) -> Result<(), CniError> {
    let path = &device.device_info_file;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(CniError::io(format!("remove device-info {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

/// A valid device-info file's content; `None` when there is no file.
fn read(path: &Path) -> Result<Option<Value>, String> {
    let bytes = match crate::bounded::read(path, MAX_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let info: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    match info.get("type").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => Ok(Some(info)),
        _ => Err("no \"type\": not a device-info map".into()),
    }
}

/// Writes atomically (temp file, rename), making the directory if needed. Device-info is
/// no secret: readable by all, as device plugins and CNIs write it.
fn write(path: &Path, info: &Value) -> Result<(), CniError> {
    let failed = |e: std::io::Error| CniError::io(format!("write device-info {}", path.display()), e);
    let dir = path.parent().ok_or_else(|| failed(std::io::Error::other("no directory")))?;
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir).map_err(failed)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o644).open(&tmp)?;
        std::io::Write::write_all(&mut f, info.to_string().as_bytes())?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        failed(e)
    })
}

#[cfg(test)]
mod tests {
    use super::super::Source;
    use super::*;

    fn device(dir: &Path, id: &str) -> AllocatedDevice {
        AllocatedDevice {
            resource_name: "intel.com/sriov".into(),
            device_id: id.into(),
            source: Source::PodResources,
            device_info_file: attachment_file(dir, "default/sriov-a", "c1", "net1"),
            device_info: None,
        }
    }

    /// Writes `content` where the device plugin would describe device `id`.
    fn device_plugin_wrote(dir: &Path, id: &str, content: &str) -> PathBuf {
        let dp = device_plugin_file(dir, "intel.com/sriov", id);
        std::fs::create_dir_all(dp.parent().unwrap()).unwrap();
        std::fs::write(&dp, content).unwrap();
        dp
    }

    #[test]
    fn file_names_follow_the_spec_and_multus() {
        let dir = Path::new("/var/run/k8s.cni.cncf.io/devinfo");
        assert_eq!(
            device_plugin_file(dir, "intel.com/sriov", "0000:03:02.1"),
            Path::new("/var/run/k8s.cni.cncf.io/devinfo/dp/intel.com-sriov-0000:03:02.1-device.json")
        );
        assert_eq!(
            attachment_file(dir, "default/sriov-a", "c1", "net1"),
            Path::new("/var/run/k8s.cni.cncf.io/devinfo/cni/default-sriov-a-c1_net1")
        );
    }

    #[test]
    fn the_device_plugins_description_is_copied_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let dev = device(dir.path(), "0000:03:02.1");
        let info = json!({"type": "pci", "version": "1.1.0",
            "pci": {"pci-address": "0000:03:02.1", "pf-pci-address": "0000:03:00.0", "rdma-device": "mlx5_3"}});
        let dp = device_plugin_wrote(dir.path(), "0000:03:02.1", &info.to_string());
        prepare(dir.path(), &dev).unwrap();
        assert_eq!(collect(&dev).unwrap(), Some(info));
        remove(&dev).unwrap();
        assert!(!dev.device_info_file.exists());
        assert!(dp.exists(), "the device plugin's file is its own");
        remove(&dev).unwrap();
    }

    #[test]
    fn a_pci_device_nobody_described_gets_a_pci_description_and_others_none() {
        let dir = tempfile::tempdir().unwrap();
        let pci = device(dir.path(), "0000:03:02.1");
        prepare(dir.path(), &pci).unwrap();
        let want = json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:02.1"}});
        assert_eq!(collect(&pci).unwrap(), Some(want.clone()));
        let on_disk: Value = serde_json::from_slice(&std::fs::read(&pci.device_info_file).unwrap()).unwrap();
        assert_eq!(on_disk, want);
        let vhost = device(dir.path(), "vhost-7");
        std::fs::remove_file(&vhost.device_info_file).unwrap();
        assert_eq!(collect(&vhost).unwrap(), None);
    }

    #[test]
    fn what_a_delegate_wrote_wins_and_a_broken_plugin_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let dev = device(dir.path(), "0000:03:02.1");
        device_plugin_wrote(dir.path(), "0000:03:02.1", "{\"no\": \"type\"}");
        std::fs::create_dir_all(dev.device_info_file.parent().unwrap()).unwrap();
        std::fs::write(&dev.device_info_file, "stale").unwrap();
        prepare(dir.path(), &dev).unwrap();
        assert!(!dev.device_info_file.exists(), "an earlier attempt's file goes");
        // A vhost-user delegate describes its socket.
        let written = json!({"type": "vhost-user", "version": "1.1.0", "vhost-user": {"mode": "server", "path": "/var/run/vhost/net1.sock"}});
        std::fs::write(&dev.device_info_file, written.to_string()).unwrap();
        assert_eq!(collect(&dev).unwrap(), Some(written));
    }
}
