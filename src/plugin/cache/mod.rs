//! The on-disk record of what ADD did and is about to do, so DEL and CHECK can repeat it
//! exactly, whatever failed in between.
//!
//! `<cacheDir>/<containerID>/` holds one entry per delegate call, `<ifname>.json`, in libcni's
//! `cniCacheV1` shape (so existing tools read it) plus a `kactus` block, and the intent records
//! `<seq>.intent` written before the calls they list run (see [`Intent`]). Every file is
//! written atomically (temp file, rename) and made durable before ADD reports success.
//!
//! The container's directory is also its lock (`flock` on it serialises calls for one
//! container), so a call that finds no cache creates nothing, a read-only `cacheDir` can still
//! be read and torn down from, and nothing kactus makes outlives the container: the directory
//! goes when its last call is deleted.

mod entry;
mod io;
mod record;

pub use entry::{CacheEntry, Intent, KactusMeta, Role};
pub use record::{Damaged, Record};

use crate::cni::{error::code, CniError};
use io::{Background, FileOp};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Container IDs with a cache under `cache_dir` (what GC weighs against the runtime's list):
/// directories named as a container ID can be, holding only files kactus writes there. Any
/// other directory is not a container's cache, whatever put it there, and GC leaves it alone.
pub fn cached_containers(cache_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(cache_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|id| crate::cni::env::valid_container_id(id))
        .filter(|id| holds_only_own_files(&cache_dir.join(id)))
        .collect();
    ids.sort();
    ids
}

/// Whether every entry of `dir` is a regular file kactus writes in a container's cache.
fn holds_only_own_files(dir: &Path) -> bool {
    let Ok(listing) = fs::read_dir(dir) else { return false };
    listing
        .flatten()
        .all(|e| e.file_type().is_ok_and(|t| t.is_file()) && e.file_name().to_str().is_some_and(record::is_own_file))
}

/// A container's cache as it is now, read without its lock (a call in flight may be changing
/// it): a look from outside the plugin, such as `kactus uninstall`'s.
pub fn peek(cache_dir: &Path, container_id: &str) -> Result<Record, CniError> {
    record::read(&cache_dir.join(container_id))
}

/// Removes `<cacheDir>/<containerID>.lock`, the lock file of kactus before the lock moved
/// to the container's directory, so nodes upgraded with such files left lose them.
pub fn remove_legacy_lock(cache_dir: &Path, container_id: &str) {
    let _ = fs::remove_file(cache_dir.join(format!("{container_id}.lock")));
}

/// Container IDs of the lock files older versions left in `cache_dir` (GC removes those of
/// containers no longer alive).
pub fn legacy_locks(cache_dir: &Path) -> Vec<String> {
    fs::read_dir(cache_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".lock").map(String::from))
        .collect()
}

/// The cache of one container, held under its lock for the life of the value.
pub struct ContainerCache {
    dir: PathBuf,
    _lock: Flock<File>,
    /// Writes, removals and fsyncs running while the caller goes on.
    io: Background,
}

impl ContainerCache {
    /// ADD's: creates `cacheDir` (0700) and the container's directory, and locks it. Waits for
    /// a concurrent call on the same container, at most `wait` (see [`ContainerCache::open`]);
    /// other containers are not blocked.
    pub fn create(cache_dir: &Path, container_id: &str, wait: Duration) -> Result<ContainerCache, CniError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cache_dir)
            .map_err(|e| CniError::io(format!("create cache dir {}", cache_dir.display()), e))?;
        let dir = cache_dir.join(container_id);
        let deadline = Instant::now() + wait;
        loop {
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(CniError::io(format!("create cache {}", dir.display()), e))
                }
                _ => {}
            }
            // Removed again by a DEL before the lock was had: make it anew.
            if let Some(cache) = ContainerCache::lock(dir.clone(), deadline)? {
                return Ok(cache);
            }
        }
    }

    /// DEL's, CHECK's and GC's: the container's cache, locked, or `None` when it has none.
    /// Creates nothing and writes nothing, so it works on a read-only `cacheDir`.
    ///
    /// A concurrent call on the container is waited for at most `wait`, then this fails with
    /// code 11 naming the lock: a call stuck beyond every bound of its own must not hold the
    /// runtime's next call (its DEL) forever, and the runtime retries a code 11.
    pub fn open(cache_dir: &Path, container_id: &str, wait: Duration) -> Result<Option<ContainerCache>, CniError> {
        ContainerCache::lock(cache_dir.join(container_id), Instant::now() + wait)
    }

    /// Locks the directory `dir`, waiting until `deadline` at the latest; `None` if it does
    /// not exist (any more).
    fn lock(dir: PathBuf, deadline: Instant) -> Result<Option<ContainerCache>, CniError> {
        let what = |e: std::io::Error| CniError::io(format!("lock cache {}", dir.display()), e);
        loop {
            let file = match OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(&dir) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(what(e)),
            };
            let lock = lock_until(file, deadline).map_err(|e| match e {
                LockError::Held(waited) => CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!(
                        "another kactus call on this container still holds the lock of its cache {} after {:.1?}",
                        dir.display(),
                        waited
                    ),
                ),
                LockError::Failed(e) => what(e),
            })?;
            // The directory is removed under its lock when the container's cache goes: a
            // waiter that wins the lock on a removed directory looks again.
            let held = lock.metadata().map_err(what)?;
            match fs::metadata(&dir) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some(ContainerCache { dir, _lock: lock, io: Background::default() }))
                }
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(what(e)),
            }
        }
    }

    /// Everything recorded, once the writes asked for so far are done.
    pub fn read(&self) -> Result<Record, CniError> {
        self.io.settle();
        record::read(&self.dir)
    }

    /// Records calls about to be exec'd, before the first of them runs: the record is renamed
    /// into place now (a kactus killed after this leaves it whole, so the runtime's DEL
    /// reaches every call) and fsynced on the I/O thread with the entries.
    pub fn intend(&self, calls: &[CacheEntry]) -> Result<(), CniError> {
        let Some(first) = calls.first() else { return Ok(()) };
        let name = record::intent_file(first.kactus.seq);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let bytes = serde_json::to_vec(&Intent::new(calls)).map_err(|e| CniError::io("encode intent", e.into()))?;
        let file = io::write_atomically(&tmp, &path, &bytes).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            CniError::io(format!("write cache {}", path.display()), e)
        })?;
        self.io.run(FileOp::Sync(file, path));
        Ok(())
    }

    /// Records one completed call atomically. The write happens on the cache's I/O thread, in
    /// order with the other writes and removals, while the caller goes on (the next delegate
    /// runs); [`ContainerCache::sync`] waits for it and reports a failure, and every read
    /// waits for it first.
    pub fn write(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let bytes = serde_json::to_vec_pretty(entry).map_err(|e| CniError::io("encode cache entry", e.into()))?;
        let name = record::entry_file(&entry.if_name);
        self.io.run(FileOp::Write { tmp: self.dir.join(format!(".{name}.tmp")), path: self.dir.join(name), bytes });
        Ok(())
    }

    /// Removes the entry of a call whose DEL succeeded, on the I/O thread while the next DEL
    /// runs (each removal costs ~0.3 ms of journalled metadata, more on a busy disk). Its item
    /// in the intent records stays until the cache goes (or [`ContainerCache::forget`]): a
    /// kactus killed now repeats that DEL later, which delegates must tolerate.
    pub fn remove_entry(&self, call: &CacheEntry) {
        self.io.run(FileOp::Remove(self.dir.join(record::entry_file(&call.if_name))));
    }

    /// Drops calls whose DEL succeeded (or that never ran): their entries, and their items in
    /// the intent records (a record left empty is removed). A record that cannot be rewritten
    /// is kept whole: a later DEL then repeats DELs that already succeeded, which delegates
    /// must tolerate, rather than miss one that did not.
    pub fn forget(&self, gone: &[CacheEntry]) -> Result<(), CniError> {
        if gone.is_empty() {
            return Ok(());
        }
        self.io.settle();
        let seqs: BTreeSet<u64> = gone.iter().map(|c| c.kactus.seq).collect();
        let mut result = Ok(());
        for call in gone {
            // The device's entry, unless it is another call's (one this call did not replace).
            let path = self.dir.join(record::entry_file(&call.if_name));
            let other = fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<CacheEntry>(&bytes).ok())
                .is_some_and(|entry| !seqs.contains(&entry.kactus.seq));
            if !other {
                self.io.run(FileOp::Remove(path));
            }
        }
        for (path, intent) in self.intents() {
            let calls: Vec<CacheEntry> =
                intent.calls.iter().filter(|c| !seqs.contains(&c.kactus.seq)).cloned().collect();
            if calls.len() == intent.calls.len() {
                continue;
            }
            if calls.is_empty() {
                self.io.run(FileOp::Remove(path));
                continue;
            }
            let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().unwrap_or_default().to_string_lossy()));
            let rewritten = serde_json::to_vec(&Intent::new(&calls))
                .map_err(|e| CniError::io("encode intent", e.into()))
                .and_then(|bytes| {
                    io::write_atomically(&tmp, &path, &bytes)
                        .map_err(|e| CniError::io(format!("rewrite intent {}", path.display()), e))
                });
            if let Err(e) = rewritten {
                let _ = fs::remove_file(&tmp);
                result = result.and(Err(e));
            }
        }
        self.io.settled().and(result)
    }

    /// The readable intent records, by path.
    fn intents(&self) -> Vec<(PathBuf, Intent)> {
        let Ok(listing) = fs::read_dir(&self.dir) else { return Vec::new() };
        listing
            .flatten()
            .map(|item| item.path())
            .filter(|p| p.extension().is_some_and(|e| e == "intent"))
            .filter_map(|p| {
                let intent = serde_json::from_slice::<Intent>(&fs::read(&p).ok()?).ok()?;
                Some((p, intent))
            })
            .collect()
    }

    /// Waits for the writes and removals asked for so far and reports the first that failed.
    pub fn settled(&self) -> Result<(), CniError> {
        self.io.settled()
    }

    /// Makes every record written so far durable: waits for the writes and fsyncs, then
    /// syncs the container's directory and the cache dir (the renames and the directory
    /// itself). ADD calls it before it reports success, so every call the runtime can know
    /// about survives a crash of the node.
    pub fn sync(&self) -> Result<(), CniError> {
        self.settled()?;
        for dir in [Some(self.dir.as_path()), self.dir.parent()].into_iter().flatten() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| CniError::io(format!("sync cache dir {}", dir.display()), e))?;
        }
        Ok(())
    }

    /// Removes the container's cache, every file in it: its calls are all deleted.
    pub fn remove(self) -> Result<(), CniError> {
        self.io.settle();
        if let Some(cache_dir) = self.dir.parent() {
            if let Some(id) = self.dir.file_name().and_then(|n| n.to_str()) {
                remove_legacy_lock(cache_dir, id);
            }
        }
        // Only what kactus wrote goes: a file someone else put here is not kactus's to delete
        // (and a cache directory that is not one must never become a recursive delete).
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CniError::io(format!("read cache {}", self.dir.display()), e)),
        };
        for item in listing.flatten() {
            let own = item.file_type().is_ok_and(|t| t.is_file())
                && item.file_name().to_str().is_some_and(record::is_own_file);
            if own {
                match fs::remove_file(item.path()) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(CniError::io(format!("remove cache file {}", item.path().display()), e))
                    }
                    _ => {}
                }
            }
        }
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                // Everything kactus recorded is gone; what is left is someone else's.
                log::warn!("cache {} holds files kactus did not write: left in place", self.dir.display());
                Ok(())
            }
            Err(e) => Err(CniError::io(format!("remove cache {}", self.dir.display()), e)),
        }
    }

    /// Removes the container's cache if nothing is recorded in it (an ADD that failed before
    /// making anything, or whose rollback succeeded). Best effort: an empty directory misleads
    /// nothing, and the next DEL removes it.
    pub fn remove_if_unused(self) {
        if self.read().is_ok_and(|r| r.is_empty()) {
            if let Err(e) = self.remove() {
                log::warn!("{e}");
            }
        }
    }
}

/// Why a lock was not had.
enum LockError {
    /// Another holds it still, after this long.
    Held(Duration),
    Failed(std::io::Error),
}

/// Takes an exclusive `flock` on `file`, trying again until `deadline` while another holds
/// it. flock(2) has no timeout of its own: a blocking lock would wait for ever on a holder
/// that never lets go. The looks grow apart (at most 20 ms): a wait only happens while
/// another call runs on the same container, which takes far longer than that.
fn lock_until(file: File, deadline: Instant) -> Result<Flock<File>, LockError> {
    let started = Instant::now();
    let mut file = file;
    let mut pause = Duration::from_micros(200);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((back, Errno::EWOULDBLOCK | Errno::EINTR)) => file = back,
            Err((_, e)) => return Err(LockError::Failed(e.into())),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LockError::Held(started.elapsed()));
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

impl Drop for ContainerCache {
    /// The lock is released only once the I/O asked for under it is done.
    fn drop(&mut self) {
        self.io.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A bound no test reaches unless the lock is stuck.
    const WAIT: Duration = Duration::from_secs(30);

    fn entry(ifname: &str, seq: u64) -> CacheEntry {
        CacheEntry::sample(ifname, seq, json!({"cniVersion": "1.0.0"}))
    }

    fn intended(ifname: &str, seq: u64) -> CacheEntry {
        CacheEntry::sample(ifname, seq, Value::Null)
    }

    /// Removing a container's cache deletes what kactus wrote there and nothing else: never a
    /// recursive delete of whatever the directory holds.
    #[test]
    fn removal_deletes_only_kactus_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ContainerCache::create(dir.path(), "c1", WAIT).unwrap();
        cache.intend(&[intended("eth0", 0)]).unwrap();
        cache.write(&entry("eth0", 0)).unwrap();
        fs::create_dir(dir.path().join("c1").join("sub")).unwrap();
        fs::write(dir.path().join("c1").join("sub").join("keep.json"), b"{}").unwrap();
        fs::write(dir.path().join("c1").join("keep.txt"), b"x").unwrap();
        cache.remove().unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path().join("c1"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into())
            .collect();
        left.sort();
        assert_eq!(left, vec!["keep.txt", "sub"]);
        assert!(dir.path().join("c1").join("sub").join("keep.json").exists());
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn background_writes_and_removals_keep_their_order_and_reads_wait_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ContainerCache::create(dir.path(), "c1", WAIT).unwrap();
        cache.write(&entry("a", 0)).unwrap();
        cache.write(&entry("b", 1)).unwrap();
        cache.forget(&[entry("a", 0)]).unwrap();
        cache.write(&entry("c", 2)).unwrap();
        let names: Vec<String> = cache.read().unwrap().calls.into_iter().map(|e| e.if_name).collect();
        assert_eq!(names, ["b", "c"]);
        cache.sync().unwrap();
        assert_eq!(files(&dir.path().join("c1")), ["b.json", "c.json"], "no temp file left");
    }

    #[test]
    fn a_failed_background_write_is_reported_by_sync_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ContainerCache::create(dir.path(), "c1", WAIT).unwrap();
        // The entry cannot be renamed into place: a directory has its name.
        fs::create_dir(dir.path().join("c1").join("a.json")).unwrap();
        cache.write(&entry("a", 0)).unwrap();
        let err = cache.sync().unwrap_err();
        assert!(err.msg.contains("write cache"), "{}", err.msg);
        assert_eq!(files(&dir.path().join("c1")), ["a.json"], "the temp file is removed");
    }

    #[test]
    fn forgetting_calls_shrinks_their_intent_records_and_removes_empty_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ContainerCache::create(dir.path(), "c1", WAIT).unwrap();
        cache.intend(&[intended("eth0", 0), intended("a", 1)]).unwrap();
        cache.intend(&[intended("b", 2), intended("c", 3)]).unwrap();
        cache.write(&entry("eth0", 0)).unwrap();
        cache.forget(&[intended("eth0", 0), intended("b", 2)]).unwrap();
        assert_eq!(files(&dir.path().join("c1")), ["0.intent", "2.intent"]);
        let left: Vec<(String, u64)> =
            cache.read().unwrap().calls.into_iter().map(|c| (c.if_name, c.kactus.seq)).collect();
        assert_eq!(left, [("a".to_string(), 1), ("c".to_string(), 3)]);
        cache.forget(&[intended("a", 1), intended("c", 3)]).unwrap();
        assert!(cache.read().unwrap().is_empty());
        cache.remove_if_unused();
        assert!(files(dir.path()).is_empty(), "the container's directory goes with its last call");
    }

    #[test]
    fn open_creates_nothing_and_a_waiter_on_a_removed_cache_finds_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ContainerCache::open(dir.path(), "c1", WAIT).unwrap().is_none());
        assert!(files(dir.path()).is_empty());
        let cache = ContainerCache::create(dir.path(), "c1", WAIT).unwrap();
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || ContainerCache::open(&path, "c1", WAIT).unwrap().is_some());
        std::thread::sleep(std::time::Duration::from_millis(50));
        cache.remove().unwrap();
        assert!(!waiter.join().unwrap(), "the waiter got the lock of a removed cache");
        assert!(files(dir.path()).is_empty());
    }

    #[test]
    fn a_call_waiting_for_a_lock_held_by_a_stuck_call_gives_up_with_code_11() {
        // Issue 22: a DEL waited for ever behind an ADD that never finished.
        let dir = tempfile::tempdir().unwrap();
        let stuck = ContainerCache::create(dir.path(), "c1", WAIT).unwrap();
        let err = ContainerCache::open(dir.path(), "c1", Duration::from_millis(200)).err().expect("the lock is held");
        assert_eq!(err.code, code::TRY_AGAIN_LATER, "{}", err.msg);
        let lock = dir.path().join("c1").display().to_string();
        assert!(err.msg.contains("still holds the lock of its cache") && err.msg.contains(&lock), "{}", err.msg);
        let err = ContainerCache::create(dir.path(), "c1", Duration::from_millis(200)).err().expect("the lock is held");
        assert_eq!(err.code, code::TRY_AGAIN_LATER, "{}", err.msg);
        drop(stuck);
        assert!(ContainerCache::open(dir.path(), "c1", WAIT).unwrap().is_some(), "free once the holder is done");
    }
}
