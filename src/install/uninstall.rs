//! `kactus uninstall`: take kactus off a node without leaking what its pods hold.
//!
//! What the installer put there goes: `00-kactus.conflist` (so the runtime uses the node's own
//! network config again, which kactus never touched), `kactus.d/` with the plugin's kubeconfig
//! and token (and node-local's node file), `<cni-bin-dir>/kactus` and `node-local`, and
//! kactus's cache.
//!
//! Not while a pod on the node still has attachments. When such a pod is deleted the runtime
//! sends DEL to whatever config is first in the conf dir *then*: with kactus's config gone that
//! is the node's own network, which knows nothing of the pod's attachments, so their IPAM
//! leases (host-local files, whereabouts reservations) would never be released. So uninstall
//! waits, keeping kactus's config (and everything its DEL needs) in place, until kactus's cache
//! holds no pod with anything but the cluster network on eth0, and says which pods it waits
//! for; `--force` removes kactus anyway and names each attachment whose lease may leak. Pods
//! with only eth0 need nothing: the node's own plugin tears down what it made.
//!
//! A pod may start (and get attachments) while the config is being removed: after removing it
//! uninstall waits for kactus calls in flight (each holds its container's lock) and looks
//! again; if a pod got attachments meanwhile, the config is put back and uninstall waits on.
//!
//! podagent's data plane goes too: the tables and ClusterIP routes it made in each pod whose
//! network namespace kactus's cache names (podagent leaves them when it stops, so pods keep
//! working through its upgrade).
//!
//! Run by manifests/kactus-uninstall.yaml on every node (after the installer DaemonSet is
//! deleted: the installer would write the config back). The pod then idles, Ready once kactus
//! is off its node (`kactus uninstall --check` is the readiness probe).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::args::{UninstallArgs, KACTUS_SUBDIR};
use super::files::write_atomic;
use super::reconcile::CONFIG_MODE;
use super::run::{init_logging, install_signal_handlers, sleep_unless_terminated, terminated};
use super::InstallError;
use crate::plugin::cache::{self, ContainerCache, Role};

/// How long a kactus call exec'd just before the config went has to take its container's lock.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(500);

/// How long one pass waits for a kactus call in flight on a container (the plugin's default
/// `delegateTimeoutSeconds`); past it the pass reads the cache as it is, whose intent records
/// already name what the stuck call is making, and the next pass looks again.
const CALL_WAIT: Duration = Duration::from_secs(120);

/// A container whose DEL needs kactus: what it is and which attachments it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub container: String,
    /// `namespace/name` of its pod, when the cache says.
    pub pod: String,
    /// `network on device` for each cached call other than the cluster network.
    pub attachments: Vec<String>,
}

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pod = if self.pod.is_empty() { format!("container {}", self.container) } else { self.pod.clone() };
        write!(f, "{pod} ({})", self.attachments.join(", "))
    }
}

/// What one pass found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// kactus is off the node; the runtime now uses this config (None: no config is left).
    Removed { default_network: Option<PathBuf> },
    /// These pods' attachments still need kactus's DEL.
    Waiting(Vec<Pending>),
}

/// `kactus uninstall`: pass after pass until kactus is off the node, then idle until SIGTERM
/// (or return, with `--once`; `--check` only says whether it is off).
pub fn uninstall(args: &UninstallArgs) -> Result<(), InstallError> {
    init_logging(args.log_level);
    if args.check {
        return match installed_files(args).first() {
            None => Ok(()),
            Some(file) => Err(InstallError::StillInstalled { file: file.clone() }),
        };
    }
    if args.once {
        return match uninstall_once(args)? {
            Outcome::Removed { default_network } => {
                report_removed(default_network.as_deref());
                Ok(())
            }
            Outcome::Waiting(pending) => Err(InstallError::PodsNeedKactus { pods: list(&pending) }),
        };
    }
    install_signal_handlers()?;
    let mut last = String::new();
    while !terminated() {
        let news = match uninstall_once(args) {
            Ok(Outcome::Removed { default_network }) => {
                report_removed(default_network.as_deref());
                break;
            }
            Ok(Outcome::Waiting(pending)) => InstallError::PodsNeedKactus { pods: list(&pending) }.to_string(),
            Err(e) => e.to_string(),
        };
        if news != last {
            log::warn!("{news}; looking again every {}s", args.poll_interval().as_secs());
            last = news;
        }
        sleep_unless_terminated(args.poll_interval());
    }
    // A DaemonSet's pod may not end: stay, Ready (see --check), until it is deleted.
    while !terminated() {
        sleep_unless_terminated(Duration::from_secs(3600));
    }
    Ok(())
}

fn list(pending: &[Pending]) -> String {
    pending.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

fn report_removed(default_network: Option<&Path>) {
    match default_network {
        Some(config) => log::info!("kactus is off this node; the runtime now uses {}", config.display()),
        None => log::warn!("kactus is off this node, and no network config is left: the node is NotReady until one is"),
    }
}

/// One pass: remove kactus if no pod needs it (or `--force`), else say who does.
pub fn uninstall_once(args: &UninstallArgs) -> Result<Outcome, InstallError> {
    let config_path = args.config_path();
    let config = read_if_present(&config_path)?;
    let cache_dir = config.as_deref().and_then(cache_dir_of).unwrap_or_else(|| args.cache_dir.clone());

    let pending = pending_containers(&cache_dir, false);
    if !pending.is_empty() && !args.force {
        return Ok(Outcome::Waiting(pending));
    }
    if let Some(config) = &config {
        remove_file(&config_path)?;
        // Calls the runtime made just before: let them take their locks, wait for them, look.
        std::thread::sleep(IN_FLIGHT_GRACE);
        let pending = pending_containers(&cache_dir, true);
        if !pending.is_empty() && !args.force {
            write_atomic(&config_path, config, CONFIG_MODE)?;
            log::warn!("a pod got kactus attachments while its config was being removed: put it back");
            return Ok(Outcome::Waiting(pending));
        }
    }
    for gone in pending_containers(&cache_dir, false) {
        log::warn!("--force: {gone}: its attachments' addresses may never be released (their leases leak)");
    }
    remove_dir(&args.cni_conf_dir.join(KACTUS_SUBDIR))?;
    remove_file(&args.cni_bin_dir.join("kactus"))?;
    remove_file(&args.cni_bin_dir.join(super::NODE_LOCAL_BINARY))?;
    remove_leftover_temp_files(&args.cni_conf_dir);
    remove_leftover_temp_files(&args.cni_bin_dir);
    remove_data_plane(&cache_dir);
    remove_cache(&cache_dir)?;
    let default_network = super::default_network::config_files(&args.cni_conf_dir)
        .map_err(|e| InstallError::io("list directory", &args.cni_conf_dir, io::Error::other(e.to_string())))?
        .into_iter()
        .next();
    Ok(Outcome::Removed { default_network })
}

/// Takes podagent's data plane (the in-pod Service proxy and MultiNetworkPolicy tables, the
/// ClusterIP routes) out of every pod kactus's cache knows a network namespace of (`CNI_NETNS`
/// of its calls), before the cache goes. podagent never removes them itself (pods keep working
/// through its upgrade): this is the only place they go. Best effort: a namespace that is gone
/// took its rules with it, and one that cannot be entered is named in the log.
fn remove_data_plane(cache_dir: &Path) {
    let mut seen = std::collections::BTreeSet::new();
    for container in cache::cached_containers(cache_dir) {
        let Ok(record) = cache::peek(cache_dir, &container) else { continue };
        for call in &record.calls {
            if call.netns.is_empty() || !seen.insert(call.netns.clone()) {
                continue;
            }
            let netns = Path::new(&call.netns);
            if !netns.exists() {
                continue;
            }
            match crate::podagent::dataplane::program::remove_all(netns) {
                Ok(()) => log::info!("kactus's tables and ClusterIP routes removed from {}", netns.display()),
                Err(e) => log::warn!("container {container}: {e}"),
            }
        }
    }
}

/// What of kactus is still on the node (the config, the credentials, the binary).
pub fn installed_files(args: &UninstallArgs) -> Vec<PathBuf> {
    let binaries = ["kactus", super::NODE_LOCAL_BINARY].map(|b| args.cni_bin_dir.join(b));
    [args.config_path(), args.cni_conf_dir.join(KACTUS_SUBDIR)]
        .into_iter()
        .chain(binaries)
        .filter(|p| p.symlink_metadata().is_ok())
        .collect()
}

/// The `cacheDir` the installed config gives the plugin (a conflist's one plugin, or a conf).
fn cache_dir_of(config: &[u8]) -> Option<PathBuf> {
    let value: Value = serde_json::from_slice(config).ok()?;
    let plugin = value.get("plugins").and_then(|p| p.get(0)).unwrap_or(&value);
    let dir = plugin.get("cacheDir").or_else(|| plugin.get("cniDir"))?.as_str()?;
    Some(PathBuf::from(dir))
}

/// The containers whose DEL needs kactus: any recorded call but the cluster network's on eth0
/// (an `isPrimary` network on eth0 counts, so does a call whose ADD is in flight or never
/// completed, and so does a file that cannot be read). With `wait_for_calls`, each
/// container's lock is taken while it is read, so a call in flight is waited for (once the
/// config is gone no new one starts).
pub fn pending_containers(cache_dir: &Path, wait_for_calls: bool) -> Vec<Pending> {
    let mut pending = Vec::new();
    for container in cache::cached_containers(cache_dir) {
        // Waits for a kactus call on this container; only then is its cache what it will be.
        let held = wait_for_calls.then(|| ContainerCache::open(cache_dir, &container, CALL_WAIT));
        let mut found = Pending { container: container.clone(), pod: String::new(), attachments: Vec::new() };
        match cache::peek(cache_dir, &container) {
            Ok(record) => {
                for call in &record.calls {
                    let args = call.args();
                    if let (Some(ns), Some(name)) = (args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")) {
                        found.pod = format!("{ns}/{name}");
                    }
                    if call.kactus.role != Role::Master || !call.kactus.network.is_empty() {
                        found.attachments.push(format!("{} on {}", call.shown_network(), call.if_name));
                    }
                }
                found.attachments.extend(record.damaged.iter().map(|d| format!("unreadable {}", d.describe())));
            }
            Err(e) => found.attachments.push(format!("unreadable cache: {e}")),
        }
        drop(held);
        if !found.attachments.is_empty() {
            pending.push(found);
        }
    }
    pending
}

fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, InstallError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(InstallError::io("read", path, e)),
    }
}

/// Removes a file, durably (the directory is fsynced); an absent one is fine.
fn remove_file(path: &Path) -> Result<(), InstallError> {
    match fs::remove_file(path) {
        Ok(()) => super::files::sync_parent_dir(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(InstallError::io("remove", path, e)),
    }
}

fn remove_dir(path: &Path) -> Result<(), InstallError> {
    match fs::remove_dir_all(path) {
        Ok(()) => super::files::sync_parent_dir(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(InstallError::io("remove", path, e)),
    }
}

/// Removes the cache dir, or only what is in it where it is a mount point (the uninstall
/// DaemonSet mounts it from the host).
fn remove_cache(dir: &Path) -> Result<(), InstallError> {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.or_else(ignore_not_found).map_err(|e| InstallError::io("remove", &path, e))?;
    }
    match fs::remove_dir(dir) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
        removed => removed.or_else(ignore_not_found).map_err(|e| InstallError::io("remove", dir, e)),
    }
}

fn ignore_not_found(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Temp files an installer killed mid-write left behind.
fn remove_leftover_temp_files(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(super::files::is_temp_file_name) {
            let _ = fs::remove_file(&path);
        }
    }
}
