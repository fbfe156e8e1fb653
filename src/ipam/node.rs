//! Which node this is. A CNI plugin runs on the node with no pod identity of its own, so the
//! installer (`kactus install`, with `NODE_NAME` from the downward API) writes a small file
//! beside kactus's kubeconfig naming the node and the kubeconfig to reach the apiserver with:
//!
//! ```json
//! {"nodeName": "node1", "kubeconfig": "/etc/cni/net.d/kactus.d/kactus-kubeconfig.yaml"}
//! ```
//!
//! The installer writes it afresh when its pod starts, so a new file (a new installer pod,
//! which a Node deleted and registered again gets) is also the signal to check the node's
//! slices against the apiserver again: the file's identity is part of the local record.

use crate::cni::{code, CniError};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the installer writes the node file, and where the plugin looks without `nodeFile`.
pub const DEFAULT_NODE_FILE: &str = "/etc/cni/net.d/kactus.d/node.json";
/// Its name inside the installer's `kactus.d` directory.
pub const NODE_FILE_NAME: &str = "node.json";

/// The node file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeFile {
    pub node_name: String,
    pub kubeconfig: PathBuf,
}

/// The node file as read, with what identifies this copy of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub name: String,
    pub kubeconfig: PathBuf,
    /// Device, inode and modification time of the file: a rewrite changes it.
    pub fingerprint: String,
}

impl NodeIdentity {
    pub fn read(path: &Path) -> Result<NodeIdentity, CniError> {
        let missing = |e: std::io::Error| {
            CniError::invalid_config(format!(
                "no node identity: {} ({e}); `kactus install` writes it from the NODE_NAME of its pod \
                 (set the DaemonSet's NODE_NAME from spec.nodeName), or point ipam.nodeFile at a file \
                 {{\"nodeName\": ..., \"kubeconfig\": ...}}",
                path.display()
            ))
        };
        let meta = std::fs::metadata(path).map_err(missing)?;
        let text = crate::bounded::read_text(path, crate::bounded::MAX_SMALL_FILE).map_err(missing)?;
        let file: NodeFile = serde_json::from_str(&text).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                format!("node file {} is not {{\"nodeName\", \"kubeconfig\"}}: {e}", path.display()),
            )
        })?;
        if file.node_name.is_empty() {
            return Err(CniError::invalid_config(format!("node file {}: nodeName is empty", path.display())));
        }
        let fingerprint = format!("{}:{}:{}.{}", meta.dev(), meta.ino(), meta.mtime(), meta.mtime_nsec());
        Ok(NodeIdentity { name: file.node_name, kubeconfig: file.kubeconfig, fingerprint })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_installer_file_and_notices_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NODE_FILE_NAME);
        let err = NodeIdentity::read(&path).unwrap_err();
        assert!(err.code == 7 && err.msg.contains("NODE_NAME"), "{}", err.msg);
        std::fs::write(&path, r#"{"nodeName": "node1", "kubeconfig": "/k"}"#).unwrap();
        let first = NodeIdentity::read(&path).unwrap();
        assert_eq!((first.name.as_str(), first.kubeconfig.as_path()), ("node1", Path::new("/k")));
        let tmp = dir.path().join("new");
        std::fs::write(&tmp, r#"{"nodeName": "node1", "kubeconfig": "/k"}"#).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_ne!(NodeIdentity::read(&path).unwrap().fingerprint, first.fingerprint);
        std::fs::write(&path, "{").unwrap();
        assert_eq!(NodeIdentity::read(&path).unwrap_err().code, 6);
    }
}
