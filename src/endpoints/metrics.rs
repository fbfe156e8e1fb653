//! Counters and the health endpoint: `GET /healthz` (200 once every watch has listed,
//! 503 before) and `GET /metrics` in the Prometheus text format.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Reconciles of one Service finished without error.
    pub syncs: Counter,
    /// EndpointSlice creates, updates and deletes that succeeded.
    pub slice_writes: Counter,
    /// Reconciles that failed (and were requeued) and Events that could not be written.
    pub failures: Counter,
    /// Watches reopened, after a server timeout, an error or a relist.
    pub watch_restarts: Counter,
    /// Whether this replica reconciles (always, without leader election).
    leader: std::sync::atomic::AtomicBool,
}

impl Metrics {
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, counter) in [
            ("endpoints_syncs_total", "Service reconciles completed.", &self.syncs),
            ("endpoints_slice_writes_total", "EndpointSlice creates, updates and deletes.", &self.slice_writes),
            ("endpoints_failures_total", "Failed reconciles and event writes.", &self.failures),
            ("endpoints_watch_restarts_total", "Watches reopened.", &self.watch_restarts),
        ] {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n", counter.get()));
        }
        let leader = u8::from(self.leader.load(Ordering::SeqCst));
        out.push_str(&format!(
            "# HELP endpoints_leader Whether this replica reconciles.\n# TYPE endpoints_leader gauge\nendpoints_leader {leader}\n"
        ));
        out
    }
}

/// Serves `/healthz` and `/metrics` on `listener`, one request per connection, forever.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>, healthy: impl Fn() -> bool) {
    for stream in listener.incoming().flatten() {
        if let Err(e) = answer(stream, &metrics, &healthy) {
            log::debug!("metrics request: {e}");
        }
    }
}

fn answer(mut stream: TcpStream, metrics: &Metrics, healthy: &impl Fn() -> bool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/healthz" if healthy() => ("200 OK", "ok\n".to_string()),
        "/healthz" => ("503 Service Unavailable", "watches not listed yet\n".to_string()),
        "/metrics" => ("200 OK", metrics.render()),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
