//! Logging set-up shared by the binaries: a file at a level, never stdout.
//!
//! stdout belongs to the CNI result; anything else there breaks the runtime's parse.

use log::LevelFilter;
use simplelog::{ConfigBuilder, WriteLogger};
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
        Some(path) => match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Box::new(std::io::LineWriter::with_capacity(8192, f)),
            Err(_) => Box::new(std::io::LineWriter::new(std::io::stderr())),
        },
        None => Box::new(std::io::LineWriter::new(std::io::stderr())),
    };
    let _ = WriteLogger::init(level, config, sink);
}
