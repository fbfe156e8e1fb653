//! `GET /healthz` (200 once the daemon is ready, 503 with the reason before) and
//! `GET /metrics` (the daemon's counters, Prometheus text through `prometheus-client`), served
//! by hyper on the daemon's runtime.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// Whether the daemon is ready, and if not, why (the 503's body).
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Binds `addr` now (a taken port fails the start) and serves on a task of the current runtime.
pub async fn serve(addr: SocketAddr, registry: Registry, ready: Readiness) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("listen on {addr}: {e}"))?;
    let registry = Arc::new(registry);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::debug!("health: accept: {e}");
                    continue;
                }
            };
            let (registry, ready) = (registry.clone(), ready.clone());
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let answer = answer(request.uri().path(), &registry, &ready);
                async move { Ok::<_, Infallible>(answer) }
            });
            tokio::spawn(async move {
                // One request per connection, closed after the answer: probes and scrapers
                // reconnect anyway, and a client reading to EOF gets one.
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    log::debug!("health: connection: {e}");
                }
            });
        }
    });
    Ok(())
}

fn answer(path: &str, registry: &Registry, ready: &Readiness) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/healthz" | "/readyz" => match ready() {
            Ok(()) => (StatusCode::OK, "text/plain", "ok\n".to_string()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{why}\n")),
        },
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, registry) {
                Ok(()) => (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", text),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("encoding metrics: {e}\n")),
            }
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
