//! The lease store, in host-local's on-disk format so an operator knows where to look:
//! `<dataDir>/<network>/` holds one file per leased address, named by the address
//! (`11.0.4.2`, `fd11:0:0:4::2`) and holding `<containerID>\r\n<ifname>`, a
//! `last_reserved_ip.<n>` file per range set, and `lock`, which every call on the network
//! holds (flock) for its whole read-modify-write; host-local locks the same file, so the two
//! never interleave on one directory.
//!
//! A lease file appears whole or not at all: it is written under a temporary name and
//! hard-linked into place, which fails if the address is taken. A file named like an address
//! whose content is not a lease is reported as corrupt, never reused and never guessed at.

use crate::cni::{code, CniError};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// host-local's separator between container ID and interface name.
const LINE_BREAK: &str = "\r\n";
const LAST_RESERVED: &str = "last_reserved_ip.";
/// Temporary files start with this; a name that is never an address nor host-local's.
const TEMP_PREFIX: &str = ".node-local-";
/// A lease file is two short lines, a `last_reserved_ip` file one; anything longer is not one.
const MAX_LEASE_BYTES: u64 = 512;
/// host-local's default `dataDir`: where leases live unless the config (or a seed-mode
/// template) says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// Whose address a lease file says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    /// Absent in files written by host-local before it recorded interfaces.
    pub ifname: Option<String>,
}

impl Owner {
    /// Whether this lease belongs to the attachment (`ifname`-less files match by container).
    pub fn is(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname.as_deref().is_none_or(|i| i == ifname)
    }
}

/// One leased address and its owner, or why the file could not be read as a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: IpAddr,
    pub owner: Result<Owner, String>,
}

/// The leases of one network on this node, locked for the lifetime of the value.
pub struct LeaseStore {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl LeaseStore {
    /// Creates `<dataDir>/<network>` if needed (0755, as host-local) and takes its lock,
    /// waiting for any other call on the network.
    pub fn lock(data_dir: &Path, network: &str) -> Result<LeaseStore, CniError> {
        let dir = data_dir.join(network);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| CniError::io(format!("create lease directory {}", dir.display()), e))?;
        Self::lock_dir(dir)
    }

    /// The store if the network has ever had a lease on this node: DEL and GC create nothing.
    pub fn lock_existing(data_dir: &Path, network: &str) -> Result<Option<LeaseStore>, CniError> {
        let dir = data_dir.join(network);
        if !dir.is_dir() {
            return Ok(None);
        }
        Self::lock_dir(dir).map(Some)
    }

    fn lock_dir(dir: PathBuf) -> Result<LeaseStore, CniError> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| CniError::io(format!("open lock {}", path.display()), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| CniError::io(format!("lock {}", path.display()), e.into()))?;
        Ok(LeaseStore { dir, _lock: lock })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every file named like an address, with its owner or why it is not a lease.
    pub fn leases(&self) -> Result<Vec<Lease>, CniError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| CniError::io(format!("read {}", self.dir.display()), e))?;
        let mut leases = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| CniError::io(format!("read {}", self.dir.display()), e))?;
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<IpAddr>().ok()) else { continue };
            leases.push(Lease { ip, owner: read_owner(&entry.path()) });
        }
        leases.sort_by_key(|l| l.ip);
        Ok(leases)
    }

    /// Leases `ip` to the attachment; `false` if the address is already leased.
    pub fn reserve(&self, ip: IpAddr, container_id: &str, ifname: &str) -> Result<bool, CniError> {
        let target = self.dir.join(ip.to_string());
        let temp = self.temp_path(&ip.to_string());
        let content = format!("{container_id}{LINE_BREAK}{ifname}");
        let linked = write_new(&temp, content.as_bytes()).and_then(|()| fs::hard_link(&temp, &target));
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(CniError::io(format!("write lease {}", target.display()), e)),
        }
    }

    /// Removes the lease of `ip` (gone already is fine).
    pub fn release(&self, ip: IpAddr) -> Result<(), CniError> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(CniError::io(format!("remove lease {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Releases every lease of the attachment; returns the addresses released.
    pub fn release_attachment(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, CniError> {
        let mut released = Vec::new();
        for lease in self.leases()? {
            if lease.owner.as_ref().is_ok_and(|o| o.is(container_id, ifname)) {
                self.release(lease.ip)?;
                released.push(lease.ip);
            }
        }
        Ok(released)
    }

    /// The address last handed out from range set `set`, where round-robin goes on from.
    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        crate::bounded::read_text(&self.dir.join(format!("{LAST_RESERVED}{set}")), MAX_LEASE_BYTES)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn set_last_reserved(&self, set: usize, ip: IpAddr) -> Result<(), CniError> {
        self.replace(&format!("{LAST_RESERVED}{set}"), ip.to_string().as_bytes(), false)
    }

    /// A state file of this network's directory, if it exists.
    pub fn read_file(&self, name: &str) -> Result<Option<String>, CniError> {
        let path = self.dir.join(name);
        match crate::bounded::read_text(&path, crate::bounded::MAX_SMALL_FILE) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::io(format!("read {}", path.display()), e)),
        }
    }

    /// Replaces a state file atomically (temp file and rename); `durable` fsyncs the file
    /// and the directory, for state that is costly to lose.
    pub fn replace(&self, name: &str, bytes: &[u8], durable: bool) -> Result<(), CniError> {
        let path = self.dir.join(name);
        let temp = self.temp_path(name);
        let written = (|| {
            write_new(&temp, bytes)?;
            if durable {
                File::open(&temp)?.sync_all()?;
            }
            fs::rename(&temp, &path)?;
            if durable {
                File::open(&self.dir)?.sync_all()?;
            }
            Ok(())
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written.map_err(|e: std::io::Error| CniError::io(format!("write {}", path.display()), e))
    }

    /// Removes temporary files a killed call left behind (only called under the lock, when
    /// no other call of ours can be writing one).
    pub fn remove_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{TEMP_PREFIX}{name}.{}", std::process::id()))
    }
}

/// Creates `path` (replacing a leftover of the same name) with `bytes`, mode 0644.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(path)?;
    file.write_all(bytes)
}

/// The owner a lease file names, or why it names none.
fn read_owner(path: &Path) -> Result<Owner, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_LEASE_BYTES {
        return Err(format!("{} bytes, not a lease", meta.len()));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|_| "not text".to_string())?;
    parse_owner(&text)
}

/// A lease file's content: `<container ID>\r\n<interface>`, or host-local's older
/// `<container ID>` alone.
pub fn parse_owner(text: &str) -> Result<Owner, String> {
    // host-local writes `\r\n`; a file edited by hand may have a plain `\n`.
    let mut lines = text.trim().lines();
    let container_id = lines.next().unwrap_or_default().trim();
    let ifname = lines.next().map(str::trim);
    let valid_id = !container_id.is_empty()
        && container_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let valid_if = ifname.is_none_or(|i| crate::cni::validate_ifname(i).is_ok());
    if !valid_id || !valid_if || lines.next().is_some() {
        return Err(format!("content {:?} is not \"<container ID>\\r\\n<interface>\"", truncate(text)));
    }
    Ok(Owner { container_id: container_id.to_string(), ifname: ifname.map(str::to_string) })
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

/// The error for leases that are not leases: the runtime's GC (and an ADD that needed one of
/// those addresses) reports them, naming the files and what to do.
pub fn corrupt_error(dir: &Path, corrupt: &[&Lease]) -> CniError {
    let files: Vec<String> = corrupt
        .iter()
        .map(|l| format!("{} ({})", dir.join(l.ip.to_string()).display(), l.owner.as_ref().err().map_or("", |e| e)))
        .collect();
    CniError::new(
        code::DECODING_FAILURE,
        format!(
            "{} lease file(s) are corrupt, so their addresses stay reserved: {}; remove a file once no pod \
             uses its address",
            corrupt.len(),
            files.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn leases_are_host_local_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::lock(dir.path(), "green").unwrap();
        assert!(store.reserve(ip("11.0.4.2"), "c1", "net1").unwrap());
        assert!(!store.reserve(ip("11.0.4.2"), "c2", "net1").unwrap(), "taken");
        assert!(store.reserve(ip("fd11:0:0:4::2"), "c1", "net1").unwrap());
        let net = dir.path().join("green");
        assert_eq!(fs::read_to_string(net.join("11.0.4.2")).unwrap(), "c1\r\nnet1");
        assert!(net.join("fd11:0:0:4::2").is_file());
        store.set_last_reserved(0, ip("11.0.4.2")).unwrap();
        assert_eq!(fs::read_to_string(net.join("last_reserved_ip.0")).unwrap(), "11.0.4.2");
        assert_eq!(store.last_reserved(0), Some(ip("11.0.4.2")));
        let names: Vec<String> =
            fs::read_dir(&net).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(!names.iter().any(|n| n.starts_with(TEMP_PREFIX)), "{names:?}");
        assert_eq!(store.release_attachment("c1", "net1").unwrap(), vec![ip("11.0.4.2"), ip("fd11:0:0:4::2")]);
        assert!(store.leases().unwrap().is_empty());
    }

    #[test]
    fn old_host_local_leases_without_interface_match_by_container() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::lock(dir.path(), "n").unwrap();
        fs::write(dir.path().join("n/10.0.0.5"), "c9\n").unwrap();
        let leases = store.leases().unwrap();
        assert_eq!(leases[0].owner, Ok(Owner { container_id: "c9".into(), ifname: None }));
        assert_eq!(store.release_attachment("c9", "eth0").unwrap(), vec![ip("10.0.0.5")]);
    }

    #[test]
    fn corrupt_files_are_named_not_guessed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LeaseStore::lock(dir.path(), "n").unwrap();
        fs::write(dir.path().join("n/10.0.0.5"), "").unwrap();
        fs::write(dir.path().join("n/10.0.0.6"), "c1\r\nnet1\r\nextra").unwrap();
        fs::write(dir.path().join("n/10.0.0.7"), [0xff, 0xfe, 0x00]).unwrap();
        fs::create_dir(dir.path().join("n/10.0.0.8")).unwrap();
        let leases = store.leases().unwrap();
        assert_eq!(leases.len(), 4);
        assert!(leases.iter().all(|l| l.owner.is_err()), "{leases:?}");
        let refs: Vec<&Lease> = leases.iter().collect();
        let e = corrupt_error(store.dir(), &refs);
        assert_eq!(e.code, 6);
        assert!(e.msg.contains("10.0.0.8 (not a regular file)"), "{}", e.msg);
        assert!(store.release_attachment("c1", "net1").unwrap().is_empty());
    }
}
