//! The on-disk record of what ADD did, so DEL and CHECK can repeat it exactly.
//!
//! One file per delegate call under `<cacheDir>/<containerID>/<ifname>.json`, in libcni's
//! `cniCacheV1` shape (so existing tools read it) plus a `kactus` block. Writes are atomic
//! (temp file, rename, fsync) and made durable before ADD reports success. Writes and removals
//! run in order on one I/O thread of the cache while the next delegate works: on this
//! project's test VM each file operation costs ~0.3 ms of journalled metadata, once per
//! delegate. A per-container `flock` serialises calls for one container.

use crate::cni::{CniArgs, CniError, NetworkConfig};
use base64::Engine;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
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
    /// The allocated device backing the attachment: CHECK and DEL use this one, never a
    /// new lookup, and its DEL removes its device-info file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<crate::devices::AllocatedDevice>,
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
    /// The I/O thread with writes and removals not yet known done (see [`ContainerCache::write`]).
    io: Mutex<Option<IoThread>>,
    /// The first failure of a background write or removal, kept until it is reported.
    failed: Mutex<Option<CniError>>,
}

/// One file operation of the cache's I/O thread.
enum FileOp {
    /// Write `bytes` to `tmp`, rename it to `path`, fsync it.
    Write {
        dir: PathBuf,
        tmp: PathBuf,
        path: PathBuf,
        bytes: Vec<u8>,
    },
    Remove(PathBuf),
}

struct IoThread {
    ops: mpsc::Sender<FileOp>,
    done: JoinHandle<Result<(), CniError>>,
}

/// Runs the operations in the order given; the first failure is the answer.
fn run_file_ops(ops: impl IntoIterator<Item = FileOp>) -> Result<(), CniError> {
    let mut first = None;
    for op in ops {
        let outcome = match op {
            FileOp::Write { dir, tmp, path, bytes } => {
                let write = || -> std::io::Result<()> {
                    fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
                    let mut f = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
                    f.write_all(&bytes)?;
                    fs::rename(&tmp, &path)?;
                    f.sync_all()
                };
                write().map_err(|e| CniError::io(format!("write cache {}", path.display()), e))
            }
            FileOp::Remove(path) => match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(CniError::io(format!("remove {}", path.display()), e))
                }
                _ => Ok(()),
            },
        };
        if let Err(e) = outcome {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
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
                    io: Mutex::new(None),
                    failed: Mutex::new(None),
                });
            }
        }
    }

    /// Every cached call, oldest first. Unreadable files are skipped with a warning rather
    /// than blocking DEL of the rest.
    pub fn entries(&self) -> Vec<CacheEntry> {
        self.settle();
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

    /// Records one call atomically: a crash leaves the old file or the new one, never half of
    /// one. The write happens on the cache's I/O thread, in order with the other writes and
    /// removals, while the caller goes on (the next delegate runs); [`ContainerCache::sync`]
    /// waits for it and reports a failure, and every read waits for it first.
    pub fn write(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let bytes = serde_json::to_vec_pretty(entry).map_err(|e| CniError::io("encode cache entry", e.into()))?;
        self.in_background(FileOp::Write {
            dir: self.dir.clone(),
            tmp: self.dir.join(format!(".{}.json.tmp", entry.if_name)),
            path: self.dir.join(format!("{}.json", entry.if_name)),
            bytes,
        });
        Ok(())
    }

    /// Removes a call's record, in the background like [`ContainerCache::write`]; a failure
    /// is reported by [`ContainerCache::settled`].
    pub fn remove(&self, ifname: &str) {
        self.in_background(FileOp::Remove(self.dir.join(format!("{ifname}.json"))));
    }

    fn in_background(&self, op: FileOp) {
        let mut io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        let thread = io.get_or_insert_with(|| {
            let (ops, queue) = mpsc::channel();
            IoThread { ops, done: std::thread::spawn(move || run_file_ops(queue)) }
        });
        if let Err(mpsc::SendError(op)) = thread.ops.send(op) {
            // The thread is gone (it panicked): do the operation here.
            if let Err(e) = run_file_ops([op]) {
                self.fail(e);
            }
        }
    }

    /// Waits until every write and removal asked for so far is done.
    fn settle(&self) {
        let thread = self.io.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(IoThread { ops, done }) = thread {
            drop(ops);
            let outcome =
                done.join().unwrap_or_else(|_| Err(CniError::io("cache I/O", std::io::Error::other("panicked"))));
            if let Err(e) = outcome {
                self.fail(e);
            }
        }
    }

    fn fail(&self, e: CniError) {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
    }

    /// Waits for the writes and removals asked for so far and reports the first that failed.
    pub fn settled(&self) -> Result<(), CniError> {
        self.settle();
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).take().map_or(Ok(()), Err)
    }

    /// Makes every entry written so far durable: waits for the writes (each fsynced), then
    /// syncs the container's directory and the cache dir (the renames). ADD calls it before it
    /// reports success, so every entry the runtime can know about survives a crash of the node.
    pub fn sync(&self) -> Result<(), CniError> {
        self.settled()?;
        for dir in [Some(self.dir.as_path()), self.dir.parent()].into_iter().flatten() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| CniError::io(format!("sync cache dir {}", dir.display()), e))?;
        }
        Ok(())
    }

    /// Removes the container's directory and lock file once no entry is left.
    pub fn remove_if_empty(self) {
        if self.entries().is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
            let _ = fs::remove_file(&self.lock_path);
        }
    }
}

impl Drop for ContainerCache {
    /// The lock is released only once the I/O asked for under it is done.
    fn drop(&mut self) {
        self.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ifname: &str, seq: u64) -> CacheEntry {
        CacheEntry {
            kind: "cniCacheV1".into(),
            container_id: "c1".into(),
            config: String::new(),
            if_name: ifname.into(),
            network_name: "n".into(),
            netns: String::new(),
            cni_args: Vec::new(),
            capability_args: Map::new(),
            result: Value::Null,
            kactus: KactusMeta {
                seq,
                role: Role::Attachment,
                network: String::new(),
                key: String::new(),
                is_default: false,
                gateways: Vec::new(),
                replaced_routes: Vec::new(),
                device: None,
            },
        }
    }

    #[test]
    fn background_writes_and_removals_keep_their_order_and_reads_wait_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ContainerCache::lock(dir.path(), "c1").unwrap();
        cache.write(&entry("a", 0)).unwrap();
        cache.write(&entry("b", 1)).unwrap();
        cache.remove("a");
        cache.write(&entry("c", 2)).unwrap();
        let names: Vec<String> = cache.entries().into_iter().map(|e| e.if_name).collect();
        assert_eq!(names, ["b", "c"]);
        cache.sync().unwrap();
        let on_disk = fs::read_dir(dir.path().join("c1")).unwrap().count();
        assert_eq!(on_disk, 2, "no temp file left");
    }

    #[test]
    fn a_failed_background_write_is_reported_by_sync_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        // The container's directory cannot be made: a file has its name.
        fs::write(dir.path().join("c1"), b"").unwrap();
        let cache = ContainerCache::lock(dir.path(), "c1").unwrap();
        cache.write(&entry("a", 0)).unwrap();
        assert!(cache.entries().is_empty(), "a read settles, and keeps the failure");
        let err = cache.sync().unwrap_err();
        assert!(err.msg.contains("write cache"), "{}", err.msg);
    }
}
