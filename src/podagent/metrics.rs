//! Health and counters on a local port: `GET /healthz` (200 once the first list of the
//! node's pods was reconciled) and `GET /metrics` in Prometheus text format.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Metrics {
    pub ready: AtomicBool,
    pub adds: AtomicU64,
    pub dels: AtomicU64,
    pub failures: AtomicU64,
    pub watch_restarts: AtomicU64,
    /// Pods compared (desired vs had), whether or not anything was done.
    pub reconciles: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, counter) in [
            ("podagent_adds_total", "Networks added to running pods.", &self.adds),
            ("podagent_dels_total", "Networks removed from running pods.", &self.dels),
            ("podagent_failures_total", "Failed pod reconciliations.", &self.failures),
            ("podagent_watch_restarts_total", "Pod watches reopened or relisted.", &self.watch_restarts),
            ("podagent_reconciles_total", "Pods compared with their annotations.", &self.reconciles),
        ] {
            let value = counter.load(Ordering::Relaxed);
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"));
        }
        out
    }
}

/// Serves on its own thread until the process ends.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(e) = answer(stream, &metrics) {
                log::debug!("metrics connection: {e}");
            }
        }
    });
}

fn answer(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers so the client sees a clean close.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or_default();
    let (status, body) = match path {
        "/healthz" | "/readyz" if metrics.ready.load(Ordering::Relaxed) => ("200 OK", "ok\n".to_string()),
        "/healthz" | "/readyz" => ("503 Service Unavailable", "pods not listed yet\n".to_string()),
        "/metrics" => ("200 OK", metrics.render()),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
