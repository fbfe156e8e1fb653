//! Logging set-up shared by the binaries: a file at a level, never stdout.
//!
//! stdout belongs to the CNI result; anything else there breaks the runtime's parse.

use log::LevelFilter;
use simplelog::{ConfigBuilder, WriteLogger};
use std::fs::File;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Parses a level name (`error`, `warn`, `info`, `debug`, `trace`, `off`; case-insensitive).
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    s.parse().ok()
}

/// Sends logs to `file` (appended) or, without one, to stderr. Failing to open the file
/// falls back to stderr rather than failing the CNI call: logs must never cost a pod.
pub fn init(file: Option<&Path>, level: LevelFilter) {
    // The HTTP and TLS stacks log every connection at debug: what kactus and kube-rs say about
    // each request is enough, and their failures reach the log as kactus's errors.
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .add_filter_ignore_str("hyper")
        .add_filter_ignore_str("rustls")
        .add_filter_ignore_str("tower")
        .add_filter_ignore_str("h2")
        .build();
    let sink: Box<dyn std::io::Write + Send> = match file {
        // One write(2) per line: the logger writes a line in many pieces, and every kactus
        // process on the node appends to the same file, so unbuffered pieces of concurrent
        // calls would interleave mid-line (and cost a system call each).
        Some(path) => match open_private(path) {
            Ok(f) => Box::new(std::io::LineWriter::with_capacity(8192, f)),
            Err(_) => Box::new(std::io::LineWriter::new(std::io::stderr())),
        },
        None => Box::new(std::io::LineWriter::new(std::io::stderr())),
    };
    let _ = WriteLogger::init(level, config, sink);
}

/// Opens the log for appending, readable by its owner only: it names pods, networks and
/// addresses, and a world-writable log lets anyone forge what an operator reads. A file left
/// wider by an older version (or made by hand) is narrowed too.
fn open_private(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_created_private_and_an_existing_wide_one_is_narrowed() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.log");
        open_private(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o600);
        let wide = dir.path().join("wide.log");
        std::fs::write(&wide, "old line\n").unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o666)).unwrap();
        open_private(&wide).unwrap();
        assert_eq!(std::fs::metadata(&wide).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
