//! Atomic file replacement on the host.
//!
//! kubelet's runtime may exec `/opt/cni/bin/kactus` or read `/etc/cni/net.d` at any moment, so
//! a file is never written in place: the new content goes to a temp file in the same
//! directory (same filesystem, so `rename` is atomic), is fsynced and given its mode, and is
//! then renamed over the old one. A running `kactus` keeps its old inode; writing in place
//! would instead fail with ETXTBSY or let the runtime read half a config.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::InstallError;

/// Suffix of temp files; not `.conf`/`.conflist`/`.json`, so runtimes never load one.
const TEMP_SUFFIX: &str = ".kactus-tmp";

/// Whether a file name is one of [`write_atomic`]'s temp files.
pub(crate) fn is_temp_file_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// The temp file used while replacing `path`: hidden, in the same directory.
fn temp_path_for(path: &Path) -> Result<PathBuf, InstallError> {
    let name = path.file_name().ok_or_else(|| {
        InstallError::io("write", path, io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}{TEMP_SUFFIX}", std::process::id()));
    Ok(path.with_file_name(temp_name))
}

/// Replaces `path` with `bytes` and `mode` atomically (temp file, fsync, chmod, rename,
/// fsync of the directory so the rename survives a power loss).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    write_atomic_from(path, &mut &bytes[..], mode)
}

/// [`write_atomic`] from a reader, so a binary is streamed rather than held in memory.
fn write_atomic_from(path: &Path, source: &mut dyn Read, mode: u32) -> Result<(), InstallError> {
    let temp = temp_path_for(path)?;
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)
            .map_err(|e| InstallError::io("create", &temp, e))?;
        io::copy(source, &mut file).map_err(|e| InstallError::io("write", &temp, e))?;
        // The umask may have narrowed the mode given to open().
        file.set_permissions(fs::Permissions::from_mode(mode)).map_err(|e| InstallError::io("chmod", &temp, e))?;
        file.sync_all().map_err(|e| InstallError::io("fsync", &temp, e))?;
        fs::rename(&temp, path).map_err(|e| InstallError::io("rename into place", path, e))
    })();
    if result.is_err() {
        // Best effort: a leftover temp file is harmless (runtimes ignore its suffix).
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_parent_dir(path)
}

/// Fsyncs the directory holding `path`, making a rename into it (or a removal) durable.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<(), InstallError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| InstallError::io("fsync directory", dir, e))
}

/// Writes `bytes` to `path` unless it already holds exactly them with `mode`; returns whether
/// anything changed. Unchanged files keep their mtime, so re-runs are invisible to watchers.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, InstallError> {
    match fs::read(path) {
        Ok(existing) if existing == bytes => {
            let meta = fs::metadata(path).map_err(|e| InstallError::io("stat", path, e))?;
            if meta.permissions().mode() & 0o7777 == mode {
                return Ok(false);
            }
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| InstallError::io("chmod", path, e))?;
            Ok(true)
        }
        Ok(_) => write_atomic(path, bytes, mode).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => write_atomic(path, bytes, mode).map(|()| true),
        Err(e) => Err(InstallError::io("read", path, e)),
    }
}

/// Mode of the installed binary: executable by the runtime, writable only by root.
pub const BINARY_MODE: u32 = 0o755;

/// Copies `src` to `<cni_bin_dir>/kactus` atomically with mode 0755, unless the installed
/// binary is already identical. Returns whether it was (re)installed.
pub fn install_binary(src: &Path, cni_bin_dir: &Path) -> Result<bool, InstallError> {
    install_binary_as(src, cni_bin_dir, "kactus")
}

/// [`install_binary`] under another name (the plugins shipped beside kactus).
pub fn install_binary_as(src: &Path, cni_bin_dir: &Path, name: &str) -> Result<bool, InstallError> {
    let dest = cni_bin_dir.join(name);
    if same_content(src, &dest)? {
        let meta = fs::metadata(&dest).map_err(|e| InstallError::io("stat", &dest, e))?;
        if meta.permissions().mode() & 0o7777 == BINARY_MODE {
            return Ok(false);
        }
    }
    fs::create_dir_all(cni_bin_dir).map_err(|e| InstallError::io("create directory", cni_bin_dir, e))?;
    let mut source = File::open(src).map_err(|e| InstallError::io("open binary", src, e))?;
    write_atomic_from(&dest, &mut source, BINARY_MODE)?;
    Ok(true)
}

/// Whether two files have the same bytes; a missing `b` counts as different. Compares in
/// chunks so a large binary is never held in memory twice.
fn same_content(a: &Path, b: &Path) -> Result<bool, InstallError> {
    let meta_a = fs::metadata(a).map_err(|e| InstallError::io("stat binary", a, e))?;
    let meta_b = match fs::metadata(b) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(InstallError::io("stat", b, e)),
    };
    if meta_a.len() != meta_b.len() {
        return Ok(false);
    }
    let mut file_a = File::open(a).map_err(|e| InstallError::io("open binary", a, e))?;
    let mut file_b = File::open(b).map_err(|e| InstallError::io("open", b, e))?;
    let mut buf_a = vec![0u8; 64 * 1024];
    let mut buf_b = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(&mut file_a, &mut buf_a).map_err(|e| InstallError::io("read", a, e))?;
        let m = read_full(&mut file_b, &mut buf_b).map_err(|e| InstallError::io("read", b, e))?;
        if n != m || buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; returns the number of bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The bytes of a rendered text file, ending with a newline as editors and `cat` expect.
pub(crate) fn with_newline(mut text: String) -> Vec<u8> {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.into_bytes()
}
