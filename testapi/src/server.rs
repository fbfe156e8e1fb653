//! The running server: an accept thread, one thread per connection, and the handle tests and
//! the binary hold. Each connection's thread does the TLS handshake, then serves HTTP/2 when
//! the client chose `h2` in ALPN ([`super::h2`], on a small tokio runtime) and keep-alive
//! HTTP/1.1 over blocking rustls otherwise.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use super::discovery::Emulation;
use super::faults::Faults;
use super::h2;
use super::http::{write_response, ChunkedWriter, HttpError, Request, RequestReader};
use super::router::{self, Context, Reply};
use super::stats::{Stats, StatsCounter};
use super::status::ApiError;
use super::store::Store;
use super::tls::TlsIdentity;
use super::tokens::Tokens;
use super::watch;

/// How long a blocked read waits before checking whether the server is stopping.
const READ_SLICE: Duration = Duration::from_millis(250);
/// A client that stops reading for this long is dropped rather than holding a thread.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP/2 streams are answered on this runtime's blocking pool; its workers drive the sockets.
const RUNTIME_THREADS: usize = 2;
/// How long stopping waits for the runtime's tasks (watches end within a poll slice).
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(2);

/// State shared by the handle and every connection thread.
pub(super) struct Shared {
    pub(super) store: Arc<Store>,
    faults: Faults,
    pub(super) stats: StatsCounter,
    token: String,
    emulation: Emulation,
    tokens: Tokens,
    tls: tokio_rustls::TlsAcceptor,
    runtime: tokio::runtime::Handle,
    stopping: AtomicBool,
    /// Open connections, so stopping can close them (and end their watches) at once.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
}

impl Shared {
    pub(super) fn running(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst)
    }

    /// Whether answers are delayed (the latency or hold fault is set), so the caller knows
    /// whether [`Shared::answer`] may sleep.
    pub(super) fn delays(&self) -> bool {
        self.faults.delays()
    }

    /// The router's reply to `req`, after the injected latency where it applies; the same
    /// for HTTP/1.1 and HTTP/2.
    pub(super) fn answer(&self, req: &Request) -> Reply {
        let ctx = Context {
            store: &self.store,
            faults: &self.faults,
            stats: &self.stats,
            token: &self.token,
            emulation: &self.emulation,
            tokens: &self.tokens,
        };
        self.stats.answering();
        let (reply, delayed) = router::handle(&ctx, req);
        self.faults.wait_for_holds(&req.path);
        if delayed {
            let latency = self.faults.latency();
            if !latency.is_zero() {
                thread::sleep(latency);
            }
        }
        self.stats.answered();
        reply
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running test apiserver; it stops on drop or [`TestApiServer::shutdown`].
pub struct TestApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    accept_thread: Option<JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestApiServer {
    /// Serves on an already-bound listener, so tests can bind it inside a network namespace
    /// and hand it over.
    pub fn start(listener: TcpListener, token: &str) -> io::Result<TestApiServer> {
        let identity = TlsIdentity::generate()?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("testapi-rt")
            .enable_io()
            .build()?;
        let store = Arc::new(Store::new());
        let shared = Arc::new(Shared {
            faults: Faults::new(store.clone()),
            store,
            stats: StatsCounter::default(),
            token: token.to_string(),
            emulation: Emulation::default(),
            tokens: Tokens::default(),
            tls: identity.config.into(),
            runtime: runtime.handle().clone(),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
        });
        let accept_shared = shared.clone();
        let accept_thread = thread::Builder::new()
            .name("testapi-accept".into())
            .spawn(move || accept_loop(&accept_shared, &listener))?;
        Ok(TestApiServer {
            shared,
            addr,
            ca_pem: identity.ca_pem,
            accept_thread: Some(accept_thread),
            runtime: Some(runtime),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT` (a wildcard bind is reached through loopback).
    pub fn url(&self) -> String {
        let ip = match self.addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
            ip if ip.is_unspecified() => "[::1]".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        format!("https://{ip}:{}", self.addr.port())
    }

    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// A kubeconfig for this server: its CA inline and the bearer token.
    pub fn kubeconfig_yaml(&self) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kactus-test\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: kactus-test\n  user:\n    token: {}\ncontexts:\n- name: kactus-test\n  context:\n    cluster: kactus-test\n    user: kactus-test\n    namespace: default\ncurrent-context: kactus-test\n",
            self.url(),
            self.shared.token
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] with mode 0600, as it holds the token.
    pub fn write_kubeconfig(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        file.write_all(self.kubeconfig_yaml().as_bytes())
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Plays Kubernetes 1.`minor`: `/version` says so, and the group versions that release
    /// did not serve answer 404 (1.20: no `discovery.k8s.io/v1`).
    pub fn emulate_kubernetes_minor(&self, minor: u32) {
        self.shared.emulation.set_minor(minor);
    }

    /// Plays a cluster without the CRD of `qualified` (`network-attachment-definitions.k8s.cni.cncf.io`,
    /// as on seed 001's own install): 404 with a `NotFound` Status for every verb on its
    /// paths, as a real apiserver answers for a resource it does not serve; left out of
    /// discovery. Objects of that kind already in the store stay there, unseen.
    pub fn uninstall_crd(&self, qualified: &str) {
        self.shared.emulation.uninstall(qualified);
    }

    /// Installs the CRD of `qualified` again after [`Server::uninstall_crd`].
    pub fn install_crd(&self, qualified: &str) {
        self.shared.emulation.install(qualified);
    }

    /// The service-account tokens this server issued (TokenRequest).
    pub fn tokens(&self) -> &Tokens {
        &self.shared.tokens
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    pub fn shutdown(self) {
        drop(self);
    }

    fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Hung answers end now rather than at their bound.
        self.shared.faults.clear();
        for stream in self.shared.connections().values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(accept_thread) = self.accept_thread.take() {
            let _ = accept_thread.join();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
        }
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    while shared.running() {
        wait_readable(listener, READ_SLICE);
        let tcp = match listener.accept() {
            Ok((tcp, _)) => tcp,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("testapi: accept: {e}");
                thread::sleep(READ_SLICE);
                continue;
            }
        };
        shared.stats.connection();
        let id = shared.next_connection.fetch_add(1, Ordering::SeqCst);
        let conn_shared = shared.clone();
        let spawned = thread::Builder::new().name(format!("testapi-conn-{id}")).spawn(move || {
            if let Err(e) = serve_connection(&conn_shared, id, tcp) {
                log::debug!("testapi: connection {id}: {e}");
            }
            conn_shared.connections().remove(&id);
        });
        if let Err(e) = spawned {
            log::warn!("testapi: spawn connection thread: {e}");
        }
    }
}

/// Blocks until the listener has a connection to accept or `timeout` passes, so the accept
/// loop notices shutdown without a busy loop (std has no accept with timeout).
fn wait_readable(listener: &TcpListener, timeout: Duration) {
    let mut fd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: `fd` is one valid pollfd that outlives the call; poll only writes `revents`.
    unsafe { libc::poll(&mut fd, 1, timeout.as_millis() as libc::c_int) };
}

/// Handshakes on the runtime (ALPN decides the protocol), then serves the connection on this
/// thread until the client leaves or the server stops.
fn serve_connection(shared: &Arc<Shared>, id: u64, tcp: TcpStream) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    shared.connections().insert(id, tcp.try_clone()?);
    if !shared.running() {
        return Ok(());
    }
    tcp.set_nonblocking(true)?;
    let tls = shared.runtime.block_on(async { shared.tls.accept(tokio::net::TcpStream::from_std(tcp)?).await })?;
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        // The connection runs as a task on the runtime's workers, like the streams it spawns:
        // a stream's answer then goes out from the worker that made it, without waking this
        // thread for every frame.
        let serving = shared.runtime.spawn(h2::serve_connection(shared.clone(), tls));
        return shared.runtime.block_on(serving).map_err(io::Error::other)?;
    }
    let (tcp, tls) = tls.into_inner();
    let tcp = tcp.into_std()?;
    tcp.set_nonblocking(false)?;
    tcp.set_read_timeout(Some(READ_SLICE))?;
    tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
    serve_http1(shared, rustls::StreamOwned::new(tls, tcp))
}

/// Keep-alive HTTP/1.1, one request at a time.
fn serve_http1(
    shared: &Shared,
    mut stream: rustls::StreamOwned<rustls::ServerConnection, TcpStream>,
) -> io::Result<()> {
    let mut reader = RequestReader::new();
    let keep_going = || shared.running();
    loop {
        let req = match reader.read_request(&mut stream, &keep_going) {
            Ok(Some(req)) => req,
            Ok(None) => break,
            Err(HttpError::Bad(code, message)) => {
                let error = unreadable_request(code, message);
                write_json(shared, &mut stream, code, &[], &error.body, false)?;
                break;
            }
            Err(HttpError::Io(e)) => return Err(e),
        };
        let keep_alive = !req.wants_close();
        let code = match shared.answer(&req) {
            Reply::Reset => {
                log::debug!("testapi: {} {} -> reset", req.method, req.path);
                break;
            }
            Reply::Json { code, body, headers } => {
                write_json(shared, &mut stream, code, &headers, &body, keep_alive)?;
                code
            }
            Reply::Text(code, text) => {
                let n =
                    write_response(&mut stream, code, "text/plain; charset=utf-8", &[], text.as_bytes(), keep_alive)?;
                shared.stats.bytes(n);
                code
            }
            Reply::Raw(code, body) => {
                let n = write_response(&mut stream, code, "application/json", &[], &body, keep_alive)?;
                shared.stats.bytes(n);
                code
            }
            Reply::Watch(watch_req) => {
                let mut writer = ChunkedWriter::start(&mut stream, "application/json", keep_alive)?;
                let streamed = watch::stream(&shared.store, &watch_req, &mut |line| writer.chunk(&line), &keep_going);
                let result = streamed.and_then(|()| writer.finish());
                shared.stats.bytes(*result.as_ref().unwrap_or(&0));
                result?;
                200
            }
        };
        log::debug!("testapi: {} {} -> {code}", req.method, req.path);
        if !keep_alive {
            break;
        }
    }
    stream.conn.send_close_notify();
    let _ = stream.flush();
    Ok(())
}

/// The `Status` for a request that could not be read (bad head, body too large).
pub(super) fn unreadable_request(code: u16, message: String) -> ApiError {
    let mut error = ApiError::bad_request(message);
    error.code = code;
    error.body["code"] = code.into();
    error
}

fn write_json<W: Write>(
    shared: &Shared,
    out: &mut W,
    code: u16,
    headers: &[(&'static str, String)],
    body: &Value,
    keep_alive: bool,
) -> io::Result<()> {
    let body = serde_json::to_vec(body).map_err(io::Error::other)?;
    let n = write_response(out, code, "application/json", headers, &body, keep_alive)?;
    shared.stats.bytes(n);
    Ok(())
}
