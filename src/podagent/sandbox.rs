//! A running pod's sandbox: the container ID the runtime gave kactus and the path of its
//! network namespace, and the [`SandboxLocator`]s that find it. Here the runtime-independent
//! one, kactus's own cache; the runtime's answer over CRI is in `cri/`, the choice between
//! them in `locator`.

use super::pods::Pod;
use crate::cni::env::{K8S_POD_NAME, K8S_POD_NAMESPACE, K8S_POD_UID};
use crate::plugin::cache::CacheEntry;
use futures::future::BoxFuture;
use std::fs;
use std::path::{Path, PathBuf};

/// The pod sandbox kactus set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub container_id: String,
    pub netns: PathBuf,
}

/// Finds a pod's sandbox; awaited on the daemon's runtime, several pods at once (blocking
/// work goes to the blocking pool).
pub trait SandboxLocator: Send + Sync {
    fn locate<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, Result<Sandbox, String>>;
}

/// Reads kactus's own cache (`<cacheDir>/<containerID>/<ifname>.json`): each entry records
/// the container ID, the netns and the `K8S_POD_*` args it was added with. Needs no runtime
/// socket, and names exactly the container kactus will look up on the dynamic call.
#[derive(Clone)]
pub struct KactusCacheLocator {
    pub cache_dir: PathBuf,
}

impl SandboxLocator for KactusCacheLocator {
    fn locate<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, Result<Sandbox, String>> {
        let (cache, pod) = (self.clone(), pod.clone());
        Box::pin(async move {
            // A directory read per sandbox of the node: on the blocking pool.
            tokio::task::spawn_blocking(move || cache.scan(&pod))
                .await
                .map_err(|e| format!("reading the kactus cache did not finish: {e}"))?
        })
    }
}

impl KactusCacheLocator {
    fn scan(&self, pod: &Pod) -> Result<Sandbox, String> {
        let (namespace, name) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref());
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let dirs = fs::read_dir(&self.cache_dir)
            .map_err(|e| format!("read kactus cache dir {}: {e}", self.cache_dir.display()))?;
        let mut found: Vec<Sandbox> = Vec::new();
        for dir in dirs.flatten().filter(|d| d.file_type().is_ok_and(|t| t.is_dir())) {
            let Some(entry) = first_entry(&dir.path()) else { continue };
            let args = entry.args();
            let same_pod = args.get(K8S_POD_NAMESPACE) == namespace
                && args.get(K8S_POD_NAME) == name
                && args.get(K8S_POD_UID).is_none_or(|cached| uid.is_empty() || cached == uid);
            // A sandbox being torn down may linger in the cache with its netns gone.
            if same_pod && !entry.netns.is_empty() && Path::new(&entry.netns).exists() {
                found.push(Sandbox { container_id: entry.container_id, netns: PathBuf::from(entry.netns) });
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(format!(
                "no sandbox of pod {}/{} in kactus cache {}",
                namespace.unwrap_or_default(),
                name.unwrap_or_default(),
                self.cache_dir.display()
            )),
            n => Err(format!(
                "{n} live sandboxes of pod {}/{} in the kactus cache",
                namespace.unwrap_or_default(),
                name.unwrap_or_default()
            )),
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
