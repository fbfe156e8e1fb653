//! A container's cache read back: entries and intent records merged into one call per device,
//! and the files nothing could be recovered from.

use super::entry::{CacheEntry, Intent, Role};
use crate::attachment::DynamicTarget;
use crate::cni::CniError;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// What the cache knows about one container.
#[derive(Debug, Default)]
pub struct Record {
    /// Every call kactus made or was about to make, one per device (the newest), oldest
    /// first. A call without a result never completed (or only its intent is readable).
    pub calls: Vec<CacheEntry>,
    /// Files that could not be read and that no other file makes up for.
    pub damaged: Vec<Damaged>,
}

/// A file of the cache that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum Damaged {
    /// `<ifname>.json`, and no intent record holds a call for that device: its file name is
    /// all that is left of it.
    Entry { ifname: String, path: PathBuf, why: String },
    /// An intent record: the calls it held are unknown, except those whose entries are read.
    Intent { path: PathBuf, why: String },
    /// The container's whole directory, gone while its devices are not (a node whose cache
    /// did not survive, an operator's cleanup): every call it held is unknown.
    Directory { path: PathBuf },
}

impl Damaged {
    pub fn path(&self) -> &Path {
        match self {
            Damaged::Entry { path, .. } | Damaged::Intent { path, .. } | Damaged::Directory { path } => path,
        }
    }

    /// "cache entry <path> (<why>)", for messages.
    pub fn describe(&self) -> String {
        match self {
            Damaged::Entry { path, why, .. } => format!("cache entry {} ({why})", path.display()),
            Damaged::Intent { path, why } => format!("intent record {} ({why})", path.display()),
            Damaged::Directory { path } => format!("cache directory {} (missing)", path.display()),
        }
    }
}

/// Whether `name` is a file kactus writes in a container's cache: an entry, an intent record,
/// or the temp file of one of their atomic writes. Nothing else there is kactus's to remove.
pub fn is_own_file(name: &str) -> bool {
    name.ends_with(".json") || name.ends_with(".intent") || (name.starts_with('.') && name.ends_with(".tmp"))
}

/// The file name of a call's entry (libcni's layout: one per interface).
pub fn entry_file(ifname: &str) -> String {
    format!("{ifname}.json")
}

/// The file name of the intent record whose first call has `seq`.
pub fn intent_file(seq: u64) -> String {
    format!("{seq}.intent")
}

/// Reads the container's directory `dir` (missing: an empty record). Temp files of writes
/// a killed process left unfinished are ignored (they go with the directory).
pub fn read(dir: &Path) -> Result<Record, CniError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Record::default()),
        Err(e) => return Err(CniError::io(format!("read cache {}", dir.display()), e)),
    };
    let mut newest: BTreeMap<String, CacheEntry> = BTreeMap::new();
    let mut keep = |call: CacheEntry| {
        let wins = newest.get(&call.if_name).is_none_or(|old| {
            call.kactus.seq > old.kactus.seq || (call.kactus.seq == old.kactus.seq && call.is_complete())
        });
        if wins {
            newest.insert(call.if_name.clone(), call);
        }
    };
    let mut damaged = Vec::new();
    for item in listing.flatten() {
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        if let Some(ifname) = name.strip_suffix(".json") {
            match parse::<CacheEntry>(&path, CacheEntry::KIND, |e| &e.kind) {
                Ok(entry) => keep(entry),
                Err(why) => damaged.push(Damaged::Entry { ifname: ifname.to_string(), path, why }),
            }
        } else if name.ends_with(".intent") {
            match parse::<Intent>(&path, Intent::KIND, |i| &i.kind) {
                Ok(intent) => intent.calls.into_iter().for_each(&mut keep),
                Err(why) => damaged.push(Damaged::Intent { path, why }),
            }
        }
    }
    // An entry file whose call an intent record holds is made up for by that copy.
    damaged.retain(|d| match d {
        Damaged::Entry { ifname, path, why } if newest.contains_key(ifname) => {
            log::warn!("cache entry {} is unreadable ({why}); using its intent record", path.display());
            false
        }
        _ => true,
    });
    let mut calls: Vec<CacheEntry> = newest.into_values().collect();
    calls.sort_by_key(|c| c.kactus.seq);
    Ok(Record { calls, damaged })
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, kind: &str, kind_of: fn(&T) -> &String) -> Result<T, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let value: T = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    match kind_of(&value) {
        k if k == kind => Ok(value),
        k => Err(format!("kind {k:?} is not {kind:?}")),
    }
}

impl Record {
    /// Nothing recorded, nothing damaged.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.damaged.is_empty()
    }

    /// The calls whose ADD completed (what the pod has, for network-status and CHECK).
    pub fn completed(&self) -> impl Iterator<Item = &CacheEntry> {
        self.calls.iter().filter(|c| c.is_complete())
    }

    /// The `seq` for the next call made in this container.
    pub fn next_seq(&self) -> u64 {
        self.calls.iter().map(|c| c.kactus.seq + 1).max().unwrap_or(0)
    }

    /// The attachment a dynamic DEL or CHECK names (see [`DynamicTarget::position`]). Only
    /// attachments: a dynamic call never touches eth0 or the config's delegates.
    pub fn find_dynamic(&self, target: &DynamicTarget) -> Option<&CacheEntry> {
        let attachments = self.attachments();
        let candidates =
            attachments.iter().map(|c| (c.kactus.key.as_str(), c.kactus.network.as_str(), c.if_name.as_str()));
        target.position(candidates).map(|i| attachments[i])
    }

    /// The attachment a dynamic ADD repeats: only that key or network (see
    /// [`DynamicTarget::exact_position`]), so `mp1` in a pod that has `mep/mp1` is a new one.
    pub fn find_repeat(&self, target: &DynamicTarget) -> Option<&CacheEntry> {
        let attachments = self.attachments();
        let candidates =
            attachments.iter().map(|c| (c.kactus.key.as_str(), c.kactus.network.as_str(), c.if_name.as_str()));
        target.exact_position(candidates).map(|i| attachments[i])
    }

    fn attachments(&self) -> Vec<&CacheEntry> {
        self.calls.iter().filter(|c| c.kactus.role == Role::Attachment).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn call(ifname: &str, seq: u64, result: Value) -> CacheEntry {
        CacheEntry::sample(ifname, seq, result)
    }

    fn write(dir: &Path, name: &str, value: &impl serde::Serialize) {
        fs::write(dir.join(name), serde_json::to_vec(value).unwrap()).unwrap();
    }

    #[test]
    fn entries_complete_intents_and_the_newest_call_of_a_device_wins() {
        let dir = tempfile::tempdir().unwrap();
        let done = json!({"cniVersion": "1.0.0"});
        write(dir.path(), &intent_file(0), &Intent::new(&[call("eth0", 0, Value::Null), call("a", 1, Value::Null)]));
        write(dir.path(), &entry_file("eth0"), &call("eth0", 0, done.clone()));
        // A later dynamic ADD of `a` again, killed before its entry was written.
        write(dir.path(), &intent_file(5), &Intent::new(&[call("a", 5, Value::Null)]));
        fs::write(dir.path().join(".b.json.tmp"), b"{half").unwrap();
        let record = read(dir.path()).unwrap();
        let seen: Vec<(&str, u64, bool)> =
            record.calls.iter().map(|c| (c.if_name.as_str(), c.kactus.seq, c.is_complete())).collect();
        assert_eq!(seen, [("eth0", 0, true), ("a", 5, false)]);
        assert!(record.damaged.is_empty());
        assert_eq!(record.next_seq(), 6);
    }

    #[test]
    fn a_damaged_entry_is_made_up_for_by_its_intent_and_otherwise_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &intent_file(0), &Intent::new(&[call("eth0", 0, Value::Null)]));
        fs::write(dir.path().join(entry_file("eth0")), b"{\"kind\": \"cniCa").unwrap();
        fs::write(dir.path().join(entry_file("net1")), b"").unwrap();
        fs::write(dir.path().join(intent_file(3)), b"garbage").unwrap();
        let record = read(dir.path()).unwrap();
        assert_eq!(record.calls.len(), 1, "eth0 from its intent");
        let mut damaged: Vec<String> =
            record.damaged.iter().map(|d| d.path().file_name().unwrap().to_string_lossy().into_owned()).collect();
        damaged.sort();
        assert_eq!(damaged, ["3.intent", "net1.json"]);
    }
}
