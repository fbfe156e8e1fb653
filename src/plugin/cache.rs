//! The on-disk record of what ADD did, so DEL and CHECK can repeat it exactly.
//!
//! One file per delegate call under `<cacheDir>/<containerID>/<ifname>.json`, in libcni's
//! `cniCacheV1` shape (so existing tools read it) plus a `kactus` block. Writes are atomic
//! (temp file, rename) and made durable before ADD reports success: each entry's fsync runs in
//! the background while the next delegate works, and [`ContainerCache::sync`] waits for them.
//! A per-container `flock` serialises calls for one container.

use crate::cni::{CniArgs, CniError, NetworkConfig};
use base64::Engine;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;

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
    /// Order of creation; DEL runs newest first.
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
}

/// One cached delegate call, in libcni's `cniCacheV1` shape.
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

/// Container IDs with a cache under `cache_dir` (what GC weighs against the runtime's list).
pub fn cached_containers(cache_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(cache_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    ids.sort();
    ids
}

/// The cache of one container, held under its lock for the life of the value.
pub struct ContainerCache {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: Flock<File>,
    /// fsyncs of entries written but not yet known durable (see [`ContainerCache::write`]).
    syncing: Mutex<Vec<(PathBuf, JoinHandle<std::io::Result<()>>)>>,
}

impl ContainerCache {
    /// Opens (creating `cacheDir` 0700) and locks the cache of `container_id`. Waits for a
    /// concurrent call on the same container; other containers are not blocked.
    pub fn lock(cache_dir: &Path, container_id: &str) -> Result<ContainerCache, CniError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cache_dir)
            .map_err(|e| CniError::io(format!("create cache dir {}", cache_dir.display()), e))?;
        let lock_path = cache_dir.join(format!("{container_id}.lock"));
        // The lock file is removed when the container's cache goes away; a waiter that wins
        // the lock on the removed file retries on the new one.
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&lock_path)
                .map_err(|e| CniError::io(format!("open lock {}", lock_path.display()), e))?;
            let lock = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| CniError::io(format!("lock {}", lock_path.display()), e.into()))?;
            let same = match (lock.metadata(), fs::metadata(&lock_path)) {
                (Ok(held), Ok(now)) => held.ino() == now.ino() && held.dev() == now.dev(),
                _ => false,
            };
            if same {
                return Ok(ContainerCache {
                    dir: cache_dir.join(container_id),
                    lock_path,
                    _lock: lock,
                    syncing: Mutex::new(Vec::new()),
                });
            }
        }
    }

    /// Every cached call, oldest first. Unreadable files are skipped with a warning rather
    /// than blocking DEL of the rest.
    pub fn entries(&self) -> Vec<CacheEntry> {
        let mut out = Vec::new();
        let Ok(dir) = fs::read_dir(&self.dir) else { return out };
        for item in dir.flatten() {
            let path = item.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<CacheEntry>(&b).map_err(|e| e.to_string()))
            {
                Ok(entry) => out.push(entry),
                Err(e) => log::warn!("skipping unreadable cache file {}: {e}", path.display()),
            }
        }
        out.sort_by_key(|e| e.kactus.seq);
        out
    }

    /// The attachment a dynamic call (`K8S_POD_NETWORK=name`) means: by attachment key
    /// (`green`, `green#1`, `mep/mp1`), else by `namespace/name`, else by bare network name.
    /// Only attachments: a dynamic call never touches eth0 or the config's delegates.
    pub fn dynamic_entry(&self, name: &str) -> Option<CacheEntry> {
        let attachments: Vec<CacheEntry> =
            self.entries().into_iter().filter(|e| e.kactus.role == Role::Attachment).collect();
        let suffix = format!("/{name}");
        let by_key = attachments.iter().position(|e| e.kactus.key == name);
        let by_ref = || attachments.iter().position(|e| e.kactus.network == name);
        let by_name = || attachments.iter().position(|e| e.kactus.network.ends_with(&suffix));
        by_key.or_else(by_ref).or_else(by_name).and_then(|i| attachments.into_iter().nth(i))
    }

    pub fn next_seq(&self) -> u64 {
        self.entries().iter().map(|e| e.kactus.seq + 1).max().unwrap_or(0)
    }

    /// Records one call atomically: a crash of kactus leaves the old file or the new one,
    /// never half of one. The file is renamed into place at once, so a DEL after a killed ADD
    /// finds it; its fsync runs on a thread of its own, overlapping the next delegate, and
    /// [`ContainerCache::sync`] waits for it. The benchmark showed the fsyncs, one per entry
    /// in line with the delegates, as the largest share of kactus's own cost per attachment.
    pub fn write(&self, entry: &CacheEntry) -> Result<(), CniError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| CniError::io(format!("create {}", self.dir.display()), e))?;
        let path = self.dir.join(format!("{}.json", entry.if_name));
        let tmp = self.dir.join(format!(".{}.json.tmp", entry.if_name));
        let bytes = serde_json::to_vec_pretty(entry).map_err(|e| CniError::io("encode cache entry", e.into()))?;
        let write = || -> std::io::Result<File> {
            let mut f = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
            f.write_all(&bytes)?;
            fs::rename(&tmp, &path)?;
            Ok(f)
        };
        let file = write().map_err(|e| CniError::io(format!("write cache {}", path.display()), e))?;
        let fsync = std::thread::spawn(move || file.sync_all());
        self.syncing.lock().unwrap_or_else(|p| p.into_inner()).push((path, fsync));
        Ok(())
    }

    /// Makes every entry written so far durable: waits for their fsyncs, then syncs the
    /// container's directory and the cache dir (the renames). ADD calls it before it reports
    /// success, so every entry the runtime can know about survives a crash of the node.
    pub fn sync(&self) -> Result<(), CniError> {
        let pending = std::mem::take(&mut *self.syncing.lock().unwrap_or_else(|p| p.into_inner()));
        for (path, fsync) in pending {
            fsync
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("fsync thread panicked")))
                .map_err(|e| CniError::io(format!("sync cache {}", path.display()), e))?;
        }
        for dir in [Some(self.dir.as_path()), self.dir.parent()].into_iter().flatten() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| CniError::io(format!("sync cache dir {}", dir.display()), e))?;
        }
        Ok(())
    }

    pub fn remove(&self, ifname: &str) -> Result<(), CniError> {
        let path = self.dir.join(format!("{ifname}.json"));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CniError::io(format!("remove {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Removes the container's directory and lock file once no entry is left.
    pub fn remove_if_empty(self) {
        if self.entries().is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
            let _ = fs::remove_file(&self.lock_path);
        }
    }
}
