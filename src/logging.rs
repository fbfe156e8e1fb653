//! Logging set-up shared by the binaries: a file at a level, never stdout; the plugin's file
//! kept to a bounded size by rotation.
//!
//! stdout belongs to the CNI result; anything else there breaks the runtime's parse.
//!
//! Rotation with one process per CNI call: every kactus process on the node appends to the
//! same file (`O_APPEND`, one write(2) per line, so lines of concurrent calls never mix), and
//! each looks at the size of the file it opened once, when it starts. One that finds it at
//! `maxSize` or more tries to rotate it under an exclusive `flock` on `<logFile>.lock` (a file
//! that is never removed, so every process locks the same inode), taken without waiting: a
//! process that cannot have it goes on logging, since another one is rotating right now.
//! Under the lock the rotation happens only if the path still names the very file this
//! process opened and that file is still full: of the processes that found it full, the first
//! to get the lock rotates and every later one sees a new file at the path and does nothing.
//! The rotation itself is renames (`<logFile>.1` the newest backup, up to `.<maxBackups>`,
//! the oldest removed), so a process that still holds the old file writes its last lines into
//! `.1`: nothing is lost, and the overshoot is the few lines of calls already running.

use log::LevelFilter;
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;
use simplelog::{ConfigBuilder, WriteLogger};
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the installed plugin logs unless told otherwise: under the host's `/var/log`, which
/// the node keeps across reboots and which node log collectors read.
pub const DEFAULT_PLUGIN_LOG_FILE: &str = "/var/log/kactus/kactus.log";

/// Parses a level name (`error`, `warn`, `info`, `debug`, `trace`, `off`; case-insensitive).
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    s.parse().ok()
}

/// A log file and how big it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    pub options: LogOptions,
}

/// multus's `logOptions`, which operators know: rotate at `maxSize` MiB, keep `maxBackups`
/// old files, drop those older than `maxAge` days. The file and its backups together hold at
/// most `(maxBackups + 1) * maxSize` (plus the lines of calls running at a rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// Bytes at which the file is rotated.
    pub max_size: u64,
    /// Backups kept; 0 keeps none (unlike multus, where 0 keeps all: the log stays bounded).
    pub max_backups: u32,
    pub max_age: Option<Duration>,
    /// Accepted for multus's configs; backups are not compressed (a warning says so).
    pub compress: bool,
}

/// 10 MiB and 5 backups: 60 MiB at most, some hundred thousand calls at `info`.
impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { max_size: 10 << 20, max_backups: 5, max_age: None, compress: false }
    }
}

impl LogOptions {
    /// The `logOptions` object (`maxSize` in MiB, `maxBackups`, `maxAge` in days, `compress`),
    /// each key optional; the error names the key.
    pub fn from_json(value: &Value) -> Result<LogOptions, String> {
        let Some(obj) = value.as_object() else { return Err("must be an object".into()) };
        let mut options = LogOptions::default();
        let count = |key: &str, max: u64| -> Result<Option<u64>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if n <= max => Ok(Some(n)),
                    _ => Err(format!("{key} must be a whole number from 0 to {max}")),
                },
            }
        };
        if let Some(mib) = count("maxSize", 1 << 20)? {
            if mib == 0 {
                return Err("maxSize must be at least 1 (MiB)".into());
            }
            options.max_size = mib << 20;
        }
        if let Some(n) = count("maxBackups", 1000)? {
            options.max_backups = n as u32;
        }
        options.max_age = count("maxAge", 100_000)?.filter(|&d| d > 0).map(|d| Duration::from_secs(d * 86_400));
        options.compress = match obj.get("compress") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("compress must be true or false".into()),
        };
        Ok(options)
    }
}

/// Sends logs to `file` (appended, rotated as its options say) or, without one, to stderr.
/// Failing to open the file falls back to stderr rather than failing the CNI call: logs must
/// never cost a pod.
pub fn init(file: Option<&LogFile>, level: LevelFilter) {
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
    let mut rotated = false;
    let sink: Box<dyn std::io::Write + Send> = match file {
        // One write(2) per line: the logger writes a line in many pieces, and every kactus
        // process on the node appends to the same file, so unbuffered pieces of concurrent
        // calls would interleave mid-line (and cost a system call each).
        Some(file) => match open_rotated(file) {
            Ok((f, r)) => {
                rotated = r;
                Box::new(std::io::LineWriter::with_capacity(8192, f))
            }
            Err(_) => Box::new(std::io::LineWriter::new(std::io::stderr())),
        },
        None => Box::new(std::io::LineWriter::new(std::io::stderr())),
    };
    let _ = WriteLogger::init(level, config, sink);
    if rotated && file.is_some_and(|f| f.options.compress) {
        log::warn!("logOptions.compress is not supported: log backups are kept uncompressed");
    }
}

/// Opens `file` for appending (its directory made 0700 if missing), rotating it first if it
/// is full; true when this process rotated it.
fn open_rotated(file: &LogFile) -> std::io::Result<(File, bool)> {
    if let Some(dir) = file.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let opened = open_private(&file.path)?;
    if opened.metadata()?.len() < file.options.max_size {
        return Ok((opened, false));
    }
    match rotate(file, &opened) {
        Ok(true) => Ok((open_private(&file.path)?, true)),
        // Another process rotated it, or is rotating it: the path names a new file (or will
        // in a moment, and this process's few lines go to the newest backup).
        Ok(false) => Ok((open_private(&file.path).unwrap_or(opened), false)),
        // Cannot rotate (a read-only dir?): log on, as before.
        Err(_) => Ok((opened, false)),
    }
}

/// The longest a process waits for another's rotation before logging on where it is.
const ROTATION_LOCK_WAIT: Duration = Duration::from_millis(200);

/// An exclusive `flock` on `lock`, tried until `wait` has passed.
fn lock_within(mut lock: File, wait: Duration) -> Option<Flock<File>> {
    let start = std::time::Instant::now();
    loop {
        match Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
            Ok(held) => return Some(held),
            Err((back, _)) if start.elapsed() < wait => {
                lock = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return None,
        }
    }
}

/// Rotates the log `opened` was opened from, if no other process does or did (see the
/// module's doc); true when this call did.
fn rotate(file: &LogFile, opened: &File) -> std::io::Result<bool> {
    let path = &file.path;
    let lock = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(suffixed(path, "lock"))?;
    // Another process may be rotating it this moment: wait for it a little (a rotation is a
    // few renames), so that this one then writes to the new file instead of piling lines onto
    // the full one; but never long, since logging must not hold up a CNI call.
    let _held = match lock_within(lock, ROTATION_LOCK_WAIT) {
        Some(held) => held,
        None => return Ok(false),
    };
    let now = match std::fs::metadata(path) {
        Ok(now) => now,
        // Renamed by the process that rotated it, not yet made anew by the next writer.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mine = opened.metadata()?;
    if (now.dev(), now.ino()) != (mine.dev(), mine.ino()) || now.len() < file.options.max_size {
        return Ok(false);
    }
    let backups = file.options.max_backups;
    // The oldest backup kept goes, and so do any beyond it (a larger maxBackups left them).
    let oldest = backups.max(1);
    for n in oldest.. {
        if !remove_if_present(&suffixed(path, &n.to_string()))? && n > oldest {
            break;
        }
    }
    for n in (1..backups).rev() {
        rename_if_present(&suffixed(path, &n.to_string()), &suffixed(path, &(n + 1).to_string()))?;
    }
    if backups == 0 {
        remove_if_present(path)?;
    } else {
        std::fs::rename(path, suffixed(path, "1"))?;
    }
    if let Some(age) = file.options.max_age {
        let oldest = SystemTime::now().checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        for n in 1..=backups {
            let backup = suffixed(path, &n.to_string());
            if std::fs::metadata(&backup).and_then(|m| m.modified()).is_ok_and(|t| t < oldest) {
                remove_if_present(&backup)?;
            }
        }
    }
    Ok(true)
}

/// `<path>.<suffix>`.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Removes `path`; false if there was nothing to remove.
fn remove_if_present(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn rename_if_present(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
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
    use serde_json::json;

    fn log_file(dir: &Path, max_size: u64, max_backups: u32) -> LogFile {
        LogFile {
            path: dir.join("logs").join("kactus.log"),
            options: LogOptions { max_size, max_backups, ..LogOptions::default() },
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

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

    #[test]
    fn log_options_read_as_multus_writes_them() {
        let o = LogOptions::from_json(&json!({"maxSize": 50, "maxBackups": 3, "maxAge": 7, "compress": true})).unwrap();
        assert_eq!((o.max_size, o.max_backups), (50 << 20, 3));
        assert_eq!((o.max_age, o.compress), (Some(Duration::from_secs(7 * 86_400)), true));
        assert_eq!(LogOptions::from_json(&json!({})).unwrap(), LogOptions::default());
        for (bad, key) in [
            (json!({"maxSize": 0}), "maxSize"),
            (json!({"maxBackups": -1}), "maxBackups"),
            (json!({"maxAge": "7d"}), "maxAge"),
        ] {
            let e = LogOptions::from_json(&bad).unwrap_err();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn a_full_log_is_rotated_into_numbered_backups_of_which_max_backups_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = log_file(dir.path(), 10, 2);
        for round in 0..4 {
            let (mut f, _) = open_rotated(&file).unwrap();
            std::io::Write::write_all(&mut f, format!("round {round} fills it\n").as_bytes()).unwrap();
        }
        let logs = dir.path().join("logs");
        assert_eq!(std::fs::metadata(&logs).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(names(&logs), ["kactus.log", "kactus.log.1", "kactus.log.2", "kactus.log.lock"]);
        let read = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap();
        assert_eq!(
            (read("kactus.log"), read("kactus.log.1")),
            ("round 3 fills it\n".into(), "round 2 fills it\n".into())
        );
        assert_eq!(read("kactus.log.2"), "round 1 fills it\n");
        for name in ["kactus.log", "kactus.log.1", "kactus.log.lock"] {
            assert_eq!(std::fs::metadata(logs.join(name)).unwrap().permissions().mode() & 0o777, 0o600, "{name}");
        }
        // Fewer backups asked for later: the surplus goes at the next rotation.
        let (_, rotated) = open_rotated(&log_file(dir.path(), 10, 0)).unwrap();
        assert!(rotated);
        assert_eq!(names(&logs), ["kactus.log", "kactus.log.lock"]);
    }

    #[test]
    fn of_many_processes_finding_the_log_full_exactly_one_rotates_it() {
        // Each opener stands for a kactus process that opened the full file before any of
        // them rotated it; they rotate in turn (the lock's loser would skip, which is the
        // same outcome), and only the first may: the rest find a new file at the path.
        let dir = tempfile::tempdir().unwrap();
        let file = log_file(dir.path(), 10, 5);
        std::fs::create_dir_all(file.path.parent().unwrap()).unwrap();
        std::fs::write(&file.path, "a full log file\n").unwrap();
        let opened: Vec<File> = (0..8).map(|_| open_private(&file.path).unwrap()).collect();
        let rotations = opened.iter().filter(|f| rotate(&file, f).unwrap()).count();
        assert_eq!(rotations, 1);
        assert_eq!(names(&dir.path().join("logs")), ["kactus.log.1", "kactus.log.lock"]);
        // And one that cannot have the lock (another holds it) leaves the file alone.
        std::fs::write(&file.path, "full again, and being rotated\n").unwrap();
        let lock = File::open(suffixed(&file.path, "lock")).unwrap();
        let _held = Flock::lock(lock, FlockArg::LockExclusive).unwrap();
        assert!(!rotate(&file, &open_private(&file.path).unwrap()).unwrap());
        assert!(file.path.exists());
    }

    #[test]
    fn concurrent_writers_rotating_keep_every_line_whole_and_the_log_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = log_file(dir.path(), 4096, 3);
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let file = file.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let (f, _) = open_rotated(&file).unwrap();
                        let mut f = std::io::LineWriter::new(f);
                        std::io::Write::write_all(
                            &mut f,
                            format!("writer {w} line {i:04} {}\n", "x".repeat(40)).as_bytes(),
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|w| w.join().unwrap());
        let logs = dir.path().join("logs");
        let mut total = 0;
        for name in names(&logs).iter().filter(|n| !n.ends_with(".lock")) {
            let text = std::fs::read_to_string(logs.join(name)).unwrap();
            assert!(text.lines().all(|l| l.starts_with("writer ") && l.ends_with(&"x".repeat(40))), "{name}: {text}");
            // Lines of writers that opened it while another was rotating it may follow: as
            // many as they write before the rotation's rename, which a loaded machine can
            // delay (seen: more than one line each at load 12). Bounded, never without end.
            assert!(text.len() < 4 * 4096, "{name} holds {} bytes", text.len());
            total += 1;
        }
        assert!(total <= 4, "{:?}", names(&logs));
    }
}
