//! Network namespace helpers: run a closure inside a namespace without moving the caller.
//!
//! `setns(2)` applies to the calling thread only, so the work runs on a fresh thread that
//! enters the namespace and ends with it; the caller's thread never changes namespace.

use std::fs::File;
use std::io;
use std::path::Path;

/// Runs `f` on a new thread inside the network namespace at `path` and returns its value.
pub fn run_in<T, F>(path: &Path, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(path)?;
    let handle = std::thread::spawn(move || -> io::Result<T> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Ok(f())
    });
    handle.join().map_err(|_| io::Error::other("thread in network namespace panicked"))?
}

/// Whether a device of this name exists in the namespace at `path`.
pub fn link_exists(path: &Path, ifname: &str) -> io::Result<bool> {
    let name = ifname.to_string();
    run_in(path, move || nix::net::if_::if_nametoindex(name.as_str()).is_ok())
}

/// The kernel's index of a device in the namespace at `path`, if it exists.
pub fn link_index(path: &Path, ifname: &str) -> io::Result<Option<u32>> {
    let name = ifname.to_string();
    run_in(path, move || nix::net::if_::if_nametoindex(name.as_str()).ok())
}
