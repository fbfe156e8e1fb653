//! Reading an input, a file it names or the plugin's stdin, with a bound on its size.
//!
//! kactus runs as root on every pod start, and many files it reads are named by a config or
//! written by someone else (a kubeconfig and its token, a template, a lease, a device-info
//! file). One that names `/dev/zero`, a log file or a FIFO fed without end must cost a bounded
//! read and a clear error, not the node's memory or a hung call. Each reader states its bound.

use std::io::{Error, ErrorKind, Read};
use std::path::Path;

/// The most a small text file a config names may hold (a node-local template, a resolv.conf,
/// the node file, a state file): a few KiB when it is what it should be.
pub const MAX_SMALL_FILE: u64 = 1 << 20;

/// The bytes of `path`, refused when it holds more than `max`. Reads at most `max + 1`
/// bytes whatever the file claims to be (the size `stat` gives means nothing for a device).
pub fn read(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    read_from(std::fs::File::open(path)?, max)
}

/// All of `reader` (a pipe: the plugin's stdin), refused when it holds more than `max`.
pub fn read_from(reader: impl Read, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Error::new(ErrorKind::FileTooLarge, format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

/// [`read`], as UTF-8 text.
pub fn read_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read(path, max)?).map_err(|_| Error::new(ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_up_to_the_bound_is_read_and_a_longer_or_endless_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "abcd").unwrap();
        assert_eq!(read_text(&path, 4).unwrap(), "abcd");
        let err = read(&path, 3).unwrap_err();
        assert_eq!((err.kind(), err.to_string()), (ErrorKind::FileTooLarge, "larger than 3 bytes".to_string()));
        assert_eq!(read(Path::new("/dev/zero"), 1 << 10).unwrap_err().kind(), ErrorKind::FileTooLarge);
        std::fs::write(&path, b"\xff").unwrap();
        assert!(read_text(&path, 4).unwrap_err().to_string().contains("not UTF-8"));
    }
}
