//! Watch events: one JSON object per line, `{"type":"ADDED","object":{...}}`, as the
//! apiserver streams them on `?watch=1`.

use super::error::KubeError;
use super::types::Status;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};
use std::io::BufRead;
use std::marker::PhantomData;

/// One change to a watched collection.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<T> {
    Added(T),
    Modified(T),
    Deleted(T),
    /// Nothing changed, but the watch has seen everything up to this resourceVersion;
    /// a restart from here avoids a relist.
    Bookmark {
        resource_version: String,
    },
    /// The server ended the watch with a failure; code 410 means the resourceVersion is too
    /// old and the caller must relist.
    Error(Status),
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    object: serde_json::Value,
}

impl<T: DeserializeOwned> WatchEvent<T> {
    /// Parses one line of a watch stream.
    pub fn from_line(line: &str) -> Result<WatchEvent<T>, KubeError> {
        let decode = |e: serde_json::Error| KubeError::Decode { message: format!("watch event: {e}") };
        let raw: RawEvent = serde_json::from_str(line).map_err(decode)?;
        let object = || T::deserialize(&raw.object).map_err(decode);
        Ok(match raw.type_.as_str() {
            "ADDED" => WatchEvent::Added(object()?),
            "MODIFIED" => WatchEvent::Modified(object()?),
            "DELETED" => WatchEvent::Deleted(object()?),
            "BOOKMARK" => WatchEvent::Bookmark {
                resource_version: raw.object["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string(),
            },
            "ERROR" => WatchEvent::Error(Status::deserialize(&raw.object).map_err(decode)?),
            other => return Err(KubeError::Decode { message: format!("watch event of unknown type {other:?}") }),
        })
    }
}

/// Writes the apiserver's wire form, so a test server can stream what a real one does.
impl<T: Serialize> Serialize for WatchEvent<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a, O: Serialize> {
            #[serde(rename = "type")]
            type_: &'a str,
            object: O,
        }
        match self {
            WatchEvent::Added(o) => Wire { type_: "ADDED", object: o }.serialize(serializer),
            WatchEvent::Modified(o) => Wire { type_: "MODIFIED", object: o }.serialize(serializer),
            WatchEvent::Deleted(o) => Wire { type_: "DELETED", object: o }.serialize(serializer),
            WatchEvent::Bookmark { resource_version } => Wire {
                type_: "BOOKMARK",
                object: serde_json::json!({"metadata": {"resourceVersion": resource_version}}),
            }
            .serialize(serializer),
            WatchEvent::Error(status) => Wire {
                type_: "ERROR",
                object: serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "code": status.code, "reason": status.reason, "message": status.message,
                }),
            }
            .serialize(serializer),
        }
    }
}

/// The events of one open watch, in arrival order; ends when the server closes the stream.
///
/// A read failure mid-stream is yielded once as [`KubeError::Transient`] and ends the stream;
/// the caller restarts the watch from the last resourceVersion it saw.
pub struct WatchStream<T> {
    reader: Option<Box<dyn BufRead + Send>>,
    path: String,
    line: String,
    _events: PhantomData<fn() -> T>,
}

impl<T> WatchStream<T> {
    pub(crate) fn new(reader: Box<dyn BufRead + Send>, path: String) -> WatchStream<T> {
        WatchStream { reader: Some(reader), path, line: String::new(), _events: PhantomData }
    }
}

impl<T: DeserializeOwned> Iterator for WatchStream<T> {
    type Item = Result<WatchEvent<T>, KubeError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let reader = self.reader.as_mut()?;
            self.line.clear();
            match reader.read_line(&mut self.line) {
                Ok(0) => {
                    self.reader = None;
                    return None;
                }
                Ok(_) if self.line.trim().is_empty() => continue,
                Ok(_) => return Some(WatchEvent::from_line(self.line.trim())),
                Err(e) => {
                    self.reader = None;
                    return Some(Err(KubeError::Transient {
                        message: format!("watch {}: reading the stream: {e}", self.path),
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::types::Pod;

    #[test]
    fn parses_every_event_type() {
        let added = WatchEvent::<Pod>::from_line(
            r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"app1","resourceVersion":"5"}}}"#,
        )
        .unwrap();
        assert!(matches!(added, WatchEvent::Added(p) if p.metadata.name == "app1"));
        let modified = WatchEvent::<Pod>::from_line(
            r#"{"type":"MODIFIED","object":{"metadata":{"name":"app1","annotations":{"networks":"green"}}}}"#,
        )
        .unwrap();
        assert!(matches!(modified, WatchEvent::Modified(p) if p.metadata.annotations["networks"] == "green"));
        let deleted = WatchEvent::<Pod>::from_line(r#"{"type":"DELETED","object":{"metadata":{"name":"x"}}}"#).unwrap();
        assert!(matches!(deleted, WatchEvent::Deleted(_)));
        let bookmark = WatchEvent::<Pod>::from_line(
            r#"{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"12345"}}}"#,
        )
        .unwrap();
        assert_eq!(bookmark, WatchEvent::Bookmark { resource_version: "12345".into() });
        let gone = WatchEvent::<Pod>::from_line(
            r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1 (20)","reason":"Expired","code":410}}"#,
        )
        .unwrap();
        assert!(matches!(gone, WatchEvent::Error(s) if s.code == 410 && s.reason == "Expired"));
        assert!(WatchEvent::<Pod>::from_line(r#"{"type":"WHAT","object":{}}"#).is_err());
        assert!(WatchEvent::<Pod>::from_line("not json").is_err());
    }

    #[test]
    fn serializes_to_the_wire_form_and_back() {
        let events = vec![
            WatchEvent::Added(Pod::default()),
            WatchEvent::Bookmark { resource_version: "9".into() },
            WatchEvent::Error(Status { code: 410, reason: "Expired".into(), message: "too old".into() }),
        ];
        for event in events {
            let line = serde_json::to_string(&event).unwrap();
            assert_eq!(WatchEvent::<Pod>::from_line(&line).unwrap(), event, "{line}");
        }
    }

    #[test]
    fn stream_yields_lines_until_eof() {
        let body = "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}\n\n\
                    {\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}\n";
        let stream: WatchStream<Pod> = WatchStream::new(Box::new(std::io::Cursor::new(body)), "/api/v1/pods".into());
        let events: Vec<_> = stream.collect::<Result<_, _>>().unwrap();
        assert_eq!(events.len(), 2);
    }
}
