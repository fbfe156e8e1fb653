//! Counters of what the server did, for tests and benchmarks that measure client behaviour
//! (retries, connection reuse, bytes moved).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// A snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Requests answered (faults and errors included, resets not).
    pub requests: u64,
    /// Requests by Kubernetes verb: get, list, watch, create, update, patch, delete, other.
    pub per_verb: BTreeMap<String, u64>,
    /// Bytes of HTTP responses written before TLS: head and body on HTTP/1.1, the DATA
    /// (bodies) alone on HTTP/2, whose compressed headers the h2 crate writes.
    pub response_bytes: u64,
    pub connections: u64,
    /// The most requests the server was answering at once (shows a client's concurrency).
    pub peak_in_flight: u64,
    #[serde(skip)]
    in_flight: u64,
}

#[derive(Default)]
pub(crate) struct StatsCounter(Mutex<Stats>);

impl StatsCounter {
    fn with(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn request(&self, verb: &str) {
        self.with(|s| {
            s.requests += 1;
            *s.per_verb.entry(verb.to_string()).or_default() += 1;
        });
    }

    pub fn bytes(&self, n: usize) {
        self.with(|s| s.response_bytes += n as u64);
    }

    /// A request is being answered until the matching [`StatsCounter::answered`].
    pub fn answering(&self) {
        self.with(|s| {
            s.in_flight += 1;
            s.peak_in_flight = s.peak_in_flight.max(s.in_flight);
        });
    }

    pub fn answered(&self) {
        self.with(|s| s.in_flight = s.in_flight.saturating_sub(1));
    }

    pub fn connection(&self) {
        self.with(|s| s.connections += 1);
    }

    pub fn snapshot(&self) -> Stats {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
