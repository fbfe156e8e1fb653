//! HTTP/2, for clients that choose `h2` in ALPN (reqwest, kubectl; curl may): the `h2` crate's
//! server, driven by the connection's own thread, with every stream answered by the same
//! synchronous router as HTTP/1.1 on the runtime's blocking pool, so many requests share one
//! connection. Watch events go out as DATA frames as they happen; an injected reset resets
//! the stream (the HTTP/1.1 side closes the connection, which on HTTP/2 would fail the other
//! streams too).

use std::future::poll_fn;
use std::io;
use std::sync::Arc;

use ::h2::server::SendResponse;
use ::h2::{Reason, RecvStream, SendStream};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};

use super::http::{Request, MAX_BODY};
use super::router::Reply;
use super::server::{unreadable_request, Shared};
use super::watch::{self, WatchRequest};

/// Event lines a watch may have queued ahead of a slow client before it waits.
const WATCH_BACKLOG: usize = 16;

/// Serves one connection's streams until the client closes it or the server stops (which
/// shuts the socket down under it).
pub async fn serve_connection<T>(shared: Arc<Shared>, io: T) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = ::h2::server::handshake(io).await.map_err(io::Error::other)?;
    while let Some(accepted) = connection.accept().await {
        let (request, respond) = accepted.map_err(io::Error::other)?;
        tokio::spawn(serve_stream(shared.clone(), request, respond));
    }
    Ok(())
}

async fn serve_stream(shared: Arc<Shared>, request: http::Request<RecvStream>, mut respond: SendResponse<Bytes>) {
    let (head, body) = request.into_parts();
    let target = head.uri.path_and_query().map_or("/", |target| target.as_str());
    let headers = head
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    let mut req = Request::new(head.method.as_str(), target, headers);
    let (method, path) = (req.method.clone(), req.path.clone());
    let reply = match read_body(body).await {
        Ok(body) => {
            req.body = body;
            if shared.delays() {
                // The injected latency sleeps, which must not stall the runtime's workers.
                let answering = shared.clone();
                match tokio::task::spawn_blocking(move || answering.answer(&req)).await {
                    Ok(reply) => reply,
                    Err(e) => {
                        log::warn!("testapi: {method} {path}: handler failed: {e}");
                        Reply::Reset
                    }
                }
            } else {
                // The router only takes short locks on the in-memory store: answering here
                // spares a hand-off to another thread per request, which the benchmark
                // would otherwise count as the client's time.
                shared.answer(&req)
            }
        }
        Err(error) => error,
    };
    let code = match &reply {
        Reply::Json { code, .. } | Reply::Text(code, _) | Reply::Raw(code, _) => code.to_string(),
        Reply::Watch(_) => "200 (watch)".to_string(),
        Reply::Reset => "reset".to_string(),
    };
    log::debug!("testapi: h2 {method} {path} -> {code}");
    if let Err(e) = send_reply(&shared, reply, &mut respond).await {
        log::debug!("testapi: h2 {method} {path}: {e}");
    }
}

/// The request body, or the reply that refuses it.
async fn read_body(mut body: RecvStream) -> Result<Vec<u8>, Reply> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|_| Reply::Reset)?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_BODY {
            return Err(unreadable_request(413, "request body too large".into()).into());
        }
    }
    Ok(bytes)
}

async fn send_reply(shared: &Arc<Shared>, reply: Reply, respond: &mut SendResponse<Bytes>) -> Result<(), ::h2::Error> {
    match reply {
        Reply::Reset => {
            respond.send_reset(Reason::INTERNAL_ERROR);
            Ok(())
        }
        Reply::Json { code, body, headers } => {
            let body = serde_json::to_vec(&body).unwrap_or_default();
            send_whole(shared, respond, code, "application/json", &headers, body).await
        }
        Reply::Text(code, text) => {
            send_whole(shared, respond, code, "text/plain; charset=utf-8", &[], text.into_bytes()).await
        }
        Reply::Raw(code, body) => send_whole(shared, respond, code, "application/json", &[], body).await,
        Reply::Watch(watch) => send_watch(shared, watch, respond).await,
    }
}

async fn send_whole(
    shared: &Shared,
    respond: &mut SendResponse<Bytes>,
    code: u16,
    content_type: &str,
    extra: &[(&str, String)],
    body: Vec<u8>,
) -> Result<(), ::h2::Error> {
    let mut stream = respond.send_response(response_head(code, content_type, extra), body.is_empty())?;
    shared.stats.bytes(body.len());
    send_data(&mut stream, body.into(), true).await
}

/// Streams the watch from a blocking task, one DATA frame per event line, then ends the stream.
async fn send_watch(
    shared: &Arc<Shared>,
    watch: Box<WatchRequest>,
    respond: &mut SendResponse<Bytes>,
) -> Result<(), ::h2::Error> {
    let mut stream = respond.send_response(response_head(200, "application/json", &[]), false)?;
    let (lines, mut queued) = tokio::sync::mpsc::channel::<Vec<u8>>(WATCH_BACKLOG);
    let watching = shared.clone();
    tokio::task::spawn_blocking(move || {
        let mut send = |line| lines.blocking_send(line).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe));
        watch::stream(&watching.store, &watch, &mut send, &|| watching.running())
    });
    // Returning early (client gone) drops `queued`, which ends the watch at its next event.
    while let Some(line) = queued.recv().await {
        shared.stats.bytes(line.len());
        send_data(&mut stream, line.into(), false).await?;
    }
    stream.send_data(Bytes::new(), true)
}

/// Sends `data` as the peer's flow-control window allows (h2 would otherwise buffer it all).
async fn send_data(stream: &mut SendStream<Bytes>, mut data: Bytes, end_of_stream: bool) -> Result<(), ::h2::Error> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(granted) => granted?,
            None => return Err(Reason::CANCEL.into()),
        };
        let chunk = data.split_to(granted.min(data.len()));
        stream.send_data(chunk, end_of_stream && data.is_empty())?;
    }
    Ok(())
}

fn response_head(code: u16, content_type: &str, extra: &[(&str, String)]) -> http::Response<()> {
    let mut response = http::Response::new(());
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(CONTENT_TYPE, value);
    }
    for (name, value) in extra {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.insert(name, value);
        }
    }
    response
}
