//! The fast path's protocol: what kactus asks podagent over its root-only unix socket
//! instead of the apiserver, and what podagent answers (DESIGN.md section 7, "Fast path").
//!
//! One request per connection, each way one frame: a 4-byte big-endian length, then that many
//! bytes of JSON carrying a `version`. A side that gets another version answers (or takes)
//! [`Answer::Refused`] with [`Refusal::Version`]: kactus then takes its in-process path, so a
//! kactus and a podagent of different releases never misread each other. `client.rs` is
//! kactus's side; podagent's server is `podagent/fastpath_server.rs`.

pub mod client;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// The protocol's version: both sides must speak exactly this one.
pub const VERSION: u32 = 1;

/// The largest frame either side reads (a pod's annotations and its networks' objects are
/// a few KiB; a frame above this is not ours).
pub const MAX_FRAME: usize = 4 << 20;

/// The socket's default path, as the installer writes it into kactus's config.
pub const DEFAULT_SOCKET: &str = "/run/kactus/podagent.sock";

/// One question, with the version it is asked in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub ask: Ask,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "camelCase")]
pub enum Ask {
    /// The pod's annotations and UID, and the configs of `networks` plus those the pod's
    /// networks annotation names (kactus may know its networks before podagent's answer,
    /// from the runtime's annotations).
    Resolve { pod: PodKey, networks: Vec<NetworkKey> },
    /// Write `status` (a `pods/status` merge patch: network-status and the attachments
    /// condition) now, and record `event` (podagent may do that after answering).
    Report { pod: PodKey, status: Value, event: Option<EventNote> },
}

/// A pod by namespace, name and UID: a pod of the same name with another UID is not it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// A network by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkKey {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventNote {
    /// `Normal` or `Warning`.
    pub kind: String,
    pub reason: String,
    pub message: String,
}

/// One answer, with the version it is given in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub version: u32,
    #[serde(flatten)]
    pub answer: Answer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "camelCase")]
pub enum Answer {
    Resolved { uid: String, annotations: BTreeMap<String, String>, networks: Vec<NetworkObject> },
    Reported,
    Refused { reason: Refusal, message: String },
}

/// A network as its source serves it: the whole object, which kactus parses and checks as
/// it parses what it reads itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkObject {
    pub namespace: String,
    pub name: String,
    pub source: NetworkSource,
    /// The object (`metadata` and `spec`); `null` when the source is [`NetworkSource::Absent`].
    #[serde(default)]
    pub object: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NetworkSource {
    /// A `k8s.cni.cncf.io/v1` NetworkAttachmentDefinition.
    Nad,
    /// A `kaloom.com/v1` Network (no NAD of that name).
    Kaloom,
    /// Neither exists (read live by podagent, not only missing from its cache).
    Absent,
}

/// Why podagent would not answer: every one sends kactus to its in-process path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Refusal {
    /// The request's version is not podagent's.
    Version,
    /// podagent answers as many requests at once as it is allowed: it says so, never queues.
    Busy,
    /// podagent's pod cache has not been listed yet.
    NotSynced,
    /// The pod (with this UID) is neither in the cache nor in the apiserver.
    PodNotFound,
    /// podagent could not read or write what was asked (the apiserver's error in `message`).
    Failed,
    /// The request was not one podagent understands.
    BadRequest,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Version => "version",
            Refusal::Busy => "busy",
            Refusal::NotSynced => "not-synced",
            Refusal::PodNotFound => "pod-not-found",
            Refusal::Failed => "failed",
            Refusal::BadRequest => "bad-request",
        }
    }
}

impl Reply {
    pub fn refused(reason: Refusal, message: impl Into<String>) -> Reply {
        Reply { version: VERSION, answer: Answer::Refused { reason, message: message.into() } }
    }
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too long"))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

/// Reads one frame, refusing one longer than [`MAX_FRAME`].
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// The version a frame says it is in (0 when it says none): read before the rest, so a
/// frame of another version is refused by its version, not by a field it lacks.
pub fn version_of(body: &[u8]) -> u32 {
    #[derive(Deserialize)]
    struct Versioned {
        #[serde(default)]
        version: u32,
    }
    serde_json::from_slice::<Versioned>(body).map(|v| v.version).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_round_trip_and_a_long_one_is_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"{\"version\":1}").unwrap();
        assert_eq!(read_frame(&mut buf.as_slice()).unwrap(), b"{\"version\":1}");
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(read_frame(&mut huge.as_slice()).is_err());
    }

    #[test]
    fn requests_and_replies_carry_their_version_on_the_wire() {
        let req = Request {
            version: VERSION,
            ask: Ask::Resolve {
                pod: PodKey { namespace: "default".into(), name: "app".into(), uid: "u1".into() },
                networks: vec![NetworkKey { namespace: "default".into(), name: "green".into() }],
            },
        };
        let wire = serde_json::to_value(&req).unwrap();
        assert_eq!(wire["version"], 1);
        assert_eq!(wire["ask"], "resolve");
        assert_eq!(serde_json::from_value::<Request>(wire).unwrap(), req);
        let reply = serde_json::to_vec(&Reply::refused(Refusal::Busy, "4 at once")).unwrap();
        assert_eq!(version_of(&reply), VERSION);
        assert_eq!(version_of(&serde_json::to_vec(&json!({"version": 9, "ask": "x"})).unwrap()), 9);
        assert_eq!(version_of(b"not json"), 0);
    }
}
