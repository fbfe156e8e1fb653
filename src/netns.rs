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

/// Which of `names` is the first to exist as a device in the namespace at `path`: one
/// entry into the namespace for the whole list.
pub fn first_existing(path: &Path, names: &[String]) -> io::Result<Option<usize>> {
    let names = names.to_vec();
    run_in(path, move || names.iter().position(|n| nix::net::if_::if_nametoindex(n.as_str()).is_ok()))
}

/// The kernel's index of a device in the namespace at `path`, if it exists.
pub fn link_index(path: &Path, ifname: &str) -> io::Result<Option<u32>> {
    let name = ifname.to_string();
    run_in(path, move || nix::net::if_::if_nametoindex(name.as_str()).ok())
}

/// Parses `00:11:22:33:44:55`.
pub fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut out {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Sets a device's MAC in the namespace at `path`, taking the device down around the change
/// (not every driver allows a live change) and restoring its up state.
pub fn set_mac(path: &Path, ifname: &str, mac: [u8; 6]) -> io::Result<()> {
    let name = ifname.to_string();
    run_in(path, move || set_mac_here(&name, mac))?
}

fn set_mac_here(ifname: &str, mac: [u8; 6]) -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the fd is owned and closed by OwnedFd.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh, valid descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = ifname.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let ioctl = |request: libc::Ioctl, req: &mut libc::ifreq| -> io::Result<()> {
        // SAFETY: req points to a valid ifreq for the SIOC* requests used here.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, req as *mut libc::ifreq) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    ioctl(libc::SIOCGIFFLAGS as libc::Ioctl, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let was_up = flags & libc::IFF_UP as libc::c_short != 0;
    if was_up {
        req.ifr_ifru.ifru_flags = flags & !(libc::IFF_UP as libc::c_short);
        ioctl(libc::SIOCSIFFLAGS as libc::Ioctl, &mut req)?;
    }
    // SAFETY: writing the hwaddr member of the union, which SIOCSIFHWADDR reads.
    unsafe {
        req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (dst, src) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *dst = src as libc::c_char;
        }
    }
    let set = ioctl(libc::SIOCSIFHWADDR as libc::Ioctl, &mut req);
    if was_up {
        req.ifr_ifru.ifru_flags = flags;
        ioctl(libc::SIOCSIFFLAGS as libc::Ioctl, &mut req)?;
    }
    set
}
