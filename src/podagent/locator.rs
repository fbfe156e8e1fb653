//! Finding a running pod's sandbox: the container ID the runtime gave kactus and the path
//! of its network namespace. Behind [`SandboxLocator`]: the runtime's own answer over CRI
//! (`cri/`), the runtime-independent kactus cache (here), or the first with the second as
//! fallback ([`AutoLocator`]), as `--sandbox-lookup` picks.

use super::cri::{self, CriError, CriLocator};
use crate::cni::env::{K8S_POD_NAME, K8S_POD_NAMESPACE, K8S_POD_UID};
use crate::kube::Pod;
use crate::plugin::cache::CacheEntry;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

/// The pod sandbox kactus set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub container_id: String,
    pub netns: PathBuf,
}

pub trait SandboxLocator: Send {
    fn locate(&self, pod: &Pod) -> Result<Sandbox, String>;
}

/// How podagent finds sandboxes (`--sandbox-lookup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxLookup {
    /// Only the container runtime, over its CRI socket.
    Cri,
    /// Only kactus's cache.
    Cache,
    /// The runtime when its socket answers, else kactus's cache.
    Auto,
}

/// The locator for a lookup mode. `cri_socket` defaults to the first runtime socket that
/// exists; `cri` without any is an error, `auto` without any uses the cache alone.
pub fn sandbox_locator(
    lookup: SandboxLookup,
    cri_socket: Option<PathBuf>,
    cache_dir: PathBuf,
) -> Result<Box<dyn SandboxLocator>, String> {
    let cache = KactusCacheLocator { cache_dir };
    let socket = cri_socket.or_else(cri::default_socket);
    let cri = |socket: PathBuf| CriLocator::new(socket, cri::CALL_TIMEOUT);
    Ok(match (lookup, socket) {
        (SandboxLookup::Cache, _) => Box::new(cache),
        (SandboxLookup::Cri, Some(socket)) => Box::new(cri(socket)?),
        (SandboxLookup::Cri, None) => {
            return Err(format!(
                "--sandbox-lookup cri: no runtime socket at {} (pass --cri-socket)",
                cri::DEFAULT_SOCKETS.join(" or ")
            ))
        }
        (SandboxLookup::Auto, Some(socket)) => Box::new(AutoLocator::new(cri(socket)?, cache)),
        (SandboxLookup::Auto, None) => {
            log::info!(
                "no runtime socket at {}: sandboxes are found in the kactus cache {}",
                cri::DEFAULT_SOCKETS.join(" or "),
                cache.cache_dir.display()
            );
            Box::new(cache)
        }
    })
}

/// Asks the runtime first; only when it cannot be reached at all (socket absent, refused,
/// no answer in time) does the kactus cache answer. A runtime that answers "no ready
/// sandbox" is final: the cache may still hold a sandbox the runtime has torn down.
pub struct AutoLocator {
    cri: CriLocator,
    cache: KactusCacheLocator,
    /// Which answered last (`ANSWERED_BY_*`), so each switch is logged once.
    answered_by: AtomicU8,
}

const ANSWERED_BY_NONE: u8 = 0;
const ANSWERED_BY_CRI: u8 = 1;
const ANSWERED_BY_CACHE: u8 = 2;

impl AutoLocator {
    pub fn new(cri: CriLocator, cache: KactusCacheLocator) -> AutoLocator {
        AutoLocator { cri, cache, answered_by: AtomicU8::new(ANSWERED_BY_NONE) }
    }

    fn answered(&self, by: u8, why: impl FnOnce() -> String) {
        if self.answered_by.swap(by, Ordering::Relaxed) != by {
            log::info!("{}", why());
        }
    }
}

impl SandboxLocator for AutoLocator {
    fn locate(&self, pod: &Pod) -> Result<Sandbox, String> {
        match self.cri.lookup(pod) {
            Ok(sandbox) => {
                self.answered(ANSWERED_BY_CRI, || {
                    format!("sandboxes are found over CRI at {}", self.cri.socket().display())
                });
                Ok(sandbox)
            }
            Err(CriError::Answered(e)) => Err(e),
            Err(CriError::Unreachable(e)) => {
                let sandbox = self.cache.locate(pod).map_err(|cache| format!("{e}; and from the cache: {cache}"))?;
                self.answered(ANSWERED_BY_CACHE, || {
                    format!("sandboxes are found in the kactus cache {} ({e})", self.cache.cache_dir.display())
                });
                Ok(sandbox)
            }
        }
    }
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
