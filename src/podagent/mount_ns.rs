//! The mount namespace the node's CNI plugin runs in. kubelet's runtime runs plugins in the
//! host's filesystem, where the node's delegates and the libraries they link live; podagent's
//! image has neither, so the plugin is started in the host's mount namespace: the child joins
//! it (setns, between fork and exec) and execs the plugin from there. With `hostPID`,
//! `/proc/1/ns/mnt` is the host's; podagent run on the host itself is already there.
//!
//! Root cannot open `/proc/1/ns/mnt` where the node's init lives in another user namespace
//! (a sandboxed node, a node in a container). The container runtime runs its plugins in the
//! host's filesystem too, so its own mount namespace stands in: the runtime is the process
//! serving the CRI socket podagent already knows, found by the socket's peer credentials.
//!
//! Entering a namespace rather than chrooting into a mounted host root (as multus's thick
//! plugin does): no host-root mount to keep in the agent, the netns mounts the runtime makes
//! later are seen as the host sees them, and the child's `/proc`, `/sys` and `/run` are the
//! host's, exactly as under the runtime.

use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

/// Where the node's plugin runs (`--plugin-mount-namespace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginMountNamespace {
    /// podagent's own (`none`): podagent runs on the host itself.
    Own,
    /// The host's (`host`, the default): the one this namespace file names (PID 1's), or
    /// where it cannot be opened, the container runtime's.
    Host(PathBuf),
    /// Exactly the one this namespace file names, e.g. `/proc/<pid>/ns/mnt`.
    At(PathBuf),
}

/// The host's init's mount namespace, with `hostPID`.
pub const INIT_MOUNT_NAMESPACE: &str = "/proc/1/ns/mnt";

impl PluginMountNamespace {
    /// The flag's value: `host`, `none` or an absolute path.
    pub fn parse(value: &str) -> Result<PluginMountNamespace, String> {
        match value {
            "host" => Ok(PluginMountNamespace::Host(PathBuf::from(INIT_MOUNT_NAMESPACE))),
            "none" => Ok(PluginMountNamespace::Own),
            path if path.starts_with('/') => Ok(PluginMountNamespace::At(PathBuf::from(path))),
            other => Err(format!("{other:?}: host, none, or the absolute path of a mount namespace file")),
        }
    }

    /// Opens the namespace the plugin is to run in; `None`: podagent's own. `runtime_socket`
    /// is the container runtime's CRI socket, whose server stands in for the host.
    pub async fn open(&self, runtime_socket: Option<&Path>) -> Result<Option<MountNamespace>, String> {
        let host = match self {
            PluginMountNamespace::Own => return Ok(None),
            PluginMountNamespace::At(path) => return MountNamespace::open(path).map(Some),
            PluginMountNamespace::Host(path) => path,
        };
        let unopened = match MountNamespace::open(host) {
            Ok(ns) => return Ok(Some(ns)),
            Err(e) => e,
        };
        let runtime = runtime_mount_namespace(runtime_socket).await.map_err(|e| {
            format!("{unopened}; nor the container runtime's in its stead: {e} (pass --plugin-mount-namespace)")
        })?;
        log::warn!(
            "{} cannot be opened: the node's CNI plugin runs in the mount namespace of the container runtime, {runtime}",
            host.display()
        );
        Ok(Some(runtime.namespace))
    }
}

/// The mount namespace of the process serving the runtime's socket.
struct RuntimeNamespace {
    socket: PathBuf,
    pid: i32,
    namespace: MountNamespace,
}

impl fmt::Display for RuntimeNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} serving {} ({})", self.pid, self.socket.display(), self.namespace.path.display())
    }
}

async fn runtime_mount_namespace(socket: Option<&Path>) -> Result<RuntimeNamespace, String> {
    let socket = socket.ok_or("no container runtime socket was found to find it by")?;
    let pid = super::cri::serving_pid(socket).await?;
    let namespace = MountNamespace::open(Path::new(&format!("/proc/{pid}/ns/mnt")))?;
    Ok(RuntimeNamespace { socket: socket.to_path_buf(), pid, namespace })
}

#[derive(Debug)]
pub struct MountNamespace {
    path: PathBuf,
    /// Held open so the namespace stays reachable for every call, whatever happens to the path.
    file: File,
}

impl MountNamespace {
    /// Opens the namespace file (e.g. `/proc/1/ns/mnt`), failing at start-up, not on the
    /// first hot-plug, when it cannot be.
    pub fn open(path: &Path) -> Result<MountNamespace, String> {
        let file = File::open(path).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    " (podagent needs hostPID and a privileged container to open the host's; on a \
                     node whose PID 1 lives in another user namespace, give --plugin-mount-namespace \
                     a host process's, e.g. the container runtime's /proc/<pid>/ns/mnt)"
                }
                _ => "",
            };
            format!("opening mount namespace {}: {e}{hint}", path.display())
        })?;
        Ok(MountNamespace { path: path.to_path_buf(), file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `command`'s child join this namespace before it execs, so the program path and
    /// everything the child opens resolve in that namespace's filesystem.
    pub fn enter_in_child(&self, command: &mut std::process::Command) {
        let fd: RawFd = self.file.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only makes the setns
        // system call, which is async-signal-safe; `fd` stays open in the parent (self owns
        // it) and so in the child, which inherited it across fork.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNS) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn mount_ns_of(pid: u32) -> String {
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap().to_string_lossy().into_owned()
    }

    /// The child runs in the mount namespace it was given, not podagent's: a process in a
    /// namespace of its own (unshare -m) is the target, and the child reports its own.
    #[test]
    fn the_child_runs_in_the_mount_namespace_it_was_given() {
        let mut holder =
            match Command::new("unshare").args(["--mount", "--propagation", "private", "sleep", "30"]).spawn() {
                Ok(child) => child,
                Err(e) => panic!("unshare: {e}"),
            };
        // Wait until the holder has entered its new namespace (unshare execs sleep after it).
        let own = mount_ns_of(std::process::id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while mount_ns_of(holder.id()) == own && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let target = mount_ns_of(holder.id());
        assert_ne!(target, own, "unshare gave no new mount namespace");

        let ns = MountNamespace::open(Path::new(&format!("/proc/{}/ns/mnt", holder.id()))).unwrap();
        let mut command = Command::new("/bin/sh");
        command.args(["-c", "readlink /proc/self/ns/mnt"]).stdout(Stdio::piped());
        ns.enter_in_child(&mut command);
        let out = command.output().unwrap();
        let _ = holder.kill();
        let _ = holder.wait();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), target);
        assert_eq!(mount_ns_of(std::process::id()), own, "podagent itself stays where it was");
    }

    #[test]
    fn the_flag_names_the_host_podagent_s_own_or_a_namespace_file() {
        let parse = PluginMountNamespace::parse;
        assert_eq!(parse("host"), Ok(PluginMountNamespace::Host(INIT_MOUNT_NAMESPACE.into())));
        assert_eq!(parse("none"), Ok(PluginMountNamespace::Own));
        assert_eq!(parse("/proc/42/ns/mnt"), Ok(PluginMountNamespace::At("/proc/42/ns/mnt".into())));
        assert!(parse("proc/1/ns/mnt").unwrap_err().contains("absolute path"));
        assert!(parse("").is_err());
    }

    #[test]
    fn a_namespace_that_cannot_be_opened_fails_at_start_naming_it() {
        let err = MountNamespace::open(Path::new("/proc/999999999/ns/mnt")).unwrap_err();
        assert!(err.contains("/proc/999999999/ns/mnt"), "{err}");
    }
}
