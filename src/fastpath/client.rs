//! kactus's side of the fast path: one request, one answer, within a hard bound. Whatever
//! goes wrong is a [`Fallback`] naming why, and the caller takes the in-process path at once:
//! nothing here waits for podagent to come up, retries, or queues.

use super::{read_frame, version_of, write_frame, Answer, Ask, Reply, Request, VERSION};
use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The bound on a whole question (connect, ask, answer): podagent answers from memory in
/// well under a millisecond; one that takes longer than this is better bypassed.
pub const RESOLVE_BOUND: Duration = Duration::from_millis(250);

/// The bound on a report: podagent writes network-status to the apiserver before answering,
/// one round trip on its warm connection.
pub const REPORT_BOUND: Duration = Duration::from_secs(2);

/// Why kactus takes its in-process path (logged, so an operator sees which).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fallback {
    #[error("no socket at {0} (podagent is not running on this node)")]
    Absent(String),
    #[error("podagent refused the connection (not listening)")]
    ConnectionRefused,
    #[error("podagent speaks protocol version {theirs}, kactus {VERSION}")]
    Version { theirs: u32 },
    #[error("podagent is busy ({0})")]
    Busy(String),
    #[error("podagent's caches are not synced yet ({0})")]
    NotSynced(String),
    #[error("no answer from podagent within {0:?}")]
    Timeout(Duration),
    #[error("podagent refused: {reason}: {message}")]
    Refused { reason: &'static str, message: String },
    #[error("podagent's answer does not serve this call: {0}")]
    Unusable(String),
    #[error("talking to podagent: {0}")]
    Io(String),
}

/// Asks `ask` on the socket at `socket`, all of it within `bound`.
pub fn ask(socket: &Path, ask: Ask, bound: Duration) -> Result<Answer, Fallback> {
    let deadline = Instant::now() + bound;
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Fallback::Absent(socket.display().to_string()),
        ErrorKind::ConnectionRefused => Fallback::ConnectionRefused,
        _ => Fallback::Io(format!("connect to {}: {e}", socket.display())),
    })?;
    let body = serde_json::to_vec(&Request { version: VERSION, ask }).map_err(|e| Fallback::Io(e.to_string()))?;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let io = |e: std::io::Error| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Fallback::Timeout(bound),
        _ => Fallback::Io(e.to_string()),
    };
    stream.set_write_timeout(Some(left())).map_err(io)?;
    // A podagent that refuses at once (busy) answers without reading the request: its answer
    // is still there to read when the write fails.
    let written = write_frame(&mut stream, &body).map_err(io);
    stream.set_read_timeout(Some(left())).map_err(io)?;
    let answer = match read_frame(&mut stream) {
        Ok(answer) => answer,
        Err(e) => return Err(written.err().unwrap_or_else(|| io(e))),
    };
    if Instant::now() > deadline {
        return Err(Fallback::Timeout(bound));
    }
    let theirs = version_of(&answer);
    if theirs != VERSION {
        return Err(Fallback::Version { theirs });
    }
    let reply: Reply =
        serde_json::from_slice(&answer).map_err(|e| Fallback::Io(format!("podagent's answer does not decode: {e}")))?;
    match reply.answer {
        Answer::Refused { reason, message } => Err(match reason {
            super::Refusal::Version => Fallback::Version { theirs: 0 },
            super::Refusal::Busy => Fallback::Busy(message),
            super::Refusal::NotSynced => Fallback::NotSynced(message),
            other => Fallback::Refused { reason: other.as_str(), message },
        }),
        answer => Ok(answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastpath::{PodKey, Refusal};
    use std::os::unix::net::UnixListener;

    fn pod() -> Ask {
        Ask::Resolve {
            pod: PodKey { namespace: "default".into(), name: "a".into(), uid: "u".into() },
            networks: Vec::new(),
        }
    }

    /// A one-shot server answering `reply` (or nothing, holding the connection) to one request.
    fn serve(dir: &Path, reply: Option<Vec<u8>>) -> std::path::PathBuf {
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let _ = read_frame(&mut conn);
            match reply {
                Some(r) => write_frame(&mut conn, &r).unwrap(),
                None => std::thread::sleep(Duration::from_secs(2)),
            }
        });
        path
    }

    #[test]
    fn each_failure_is_a_fallback_naming_its_reason_and_none_waits() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(ask(&dir.path().join("none"), pod(), RESOLVE_BOUND), Err(Fallback::Absent(_))));

        // A socket file nobody listens on: refused.
        let dead = dir.path().join("dead.sock");
        drop(UnixListener::bind(&dead).unwrap());
        assert_eq!(ask(&dead, pod(), RESOLVE_BOUND), Err(Fallback::ConnectionRefused));

        let d = tempfile::tempdir().unwrap();
        let other = serde_json::to_vec(&serde_json::json!({"version": 2, "answer": "reported"})).unwrap();
        assert_eq!(ask(&serve(d.path(), Some(other)), pod(), RESOLVE_BOUND), Err(Fallback::Version { theirs: 2 }));

        let d = tempfile::tempdir().unwrap();
        let busy = serde_json::to_vec(&Reply::refused(Refusal::Busy, "8 at once")).unwrap();
        assert_eq!(ask(&serve(d.path(), Some(busy)), pod(), RESOLVE_BOUND), Err(Fallback::Busy("8 at once".into())));

        let d = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let silent = serve(d.path(), None);
        assert_eq!(ask(&silent, pod(), Duration::from_millis(50)), Err(Fallback::Timeout(Duration::from_millis(50))));
        assert!(started.elapsed() < Duration::from_secs(2), "waited for the silent server");
    }
}
