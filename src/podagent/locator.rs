//! Finding a running pod's sandbox: the container ID the runtime gave kactus and the path
//! of its network namespace. Behind [`SandboxLocator`] so a CRI-based lookup (containerd /
//! CRI-O `PodSandboxStatus`) can stand beside the runtime-independent one here.

use crate::cni::env::{K8S_POD_NAME, K8S_POD_NAMESPACE, K8S_POD_UID};
use crate::kube::Pod;
use crate::plugin::cache::CacheEntry;
use std::fs;
use std::path::{Path, PathBuf};

/// The pod sandbox kactus set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub container_id: String,
    pub netns: PathBuf,
}

pub trait SandboxLocator: Send {
    fn locate(&self, pod: &Pod) -> Result<Sandbox, String>;
}

/// Reads kactus's own cache (`<cacheDir>/<containerID>/<ifname>.json`): each entry records
/// the container ID, the netns and the `K8S_POD_*` args it was added with. Needs no runtime
/// socket, and names exactly the container kactus will look up on the dynamic call.
pub struct KactusCacheLocator {
    pub cache_dir: PathBuf,
}

impl SandboxLocator for KactusCacheLocator {
    fn locate(&self, pod: &Pod) -> Result<Sandbox, String> {
        let meta = &pod.metadata;
        let dirs = fs::read_dir(&self.cache_dir)
            .map_err(|e| format!("read kactus cache dir {}: {e}", self.cache_dir.display()))?;
        let mut found: Vec<Sandbox> = Vec::new();
        for dir in dirs.flatten().filter(|d| d.file_type().is_ok_and(|t| t.is_dir())) {
            let Some(entry) = first_entry(&dir.path()) else { continue };
            let args = entry.args();
            let same_pod = args.get(K8S_POD_NAMESPACE) == Some(meta.namespace.as_str())
                && args.get(K8S_POD_NAME) == Some(meta.name.as_str())
                && args.get(K8S_POD_UID).is_none_or(|uid| meta.uid.is_empty() || uid == meta.uid);
            // A sandbox being torn down may linger in the cache with its netns gone.
            if same_pod && !entry.netns.is_empty() && Path::new(&entry.netns).exists() {
                found.push(Sandbox { container_id: entry.container_id, netns: PathBuf::from(entry.netns) });
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(format!(
                "no sandbox of pod {}/{} in kactus cache {}",
                meta.namespace,
                meta.name,
                self.cache_dir.display()
            )),
            n => Err(format!("{n} live sandboxes of pod {}/{} in the kactus cache", meta.namespace, meta.name)),
        }
    }
}

/// Any readable cache entry of one container: all of them carry the same pod and netns.
fn first_entry(dir: &Path) -> Option<CacheEntry> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .find_map(|p| serde_json::from_slice(&fs::read(p).ok()?).ok())
}
