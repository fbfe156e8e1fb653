//! Fakes of the node's gRPC daemons (a container runtime's CRI, kubelet's pod-resources API):
//! a tonic server on a unix socket, in a thread of its own until dropped, answering the
//! real proto messages with what the test put in its state.

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tonic::server::NamedService;

/// A fake daemon's answer to one request.
pub type Answer = Pin<Box<dyn Future<Output = http::Response<Body>> + Send>>;

/// A fake daemon: the gRPC service it serves and how it answers a request to a method path
/// (`/package.Service/Method`).
pub trait FakeDaemon: Clone + Send + Sync + 'static {
    const SERVICE: &'static str;
    fn answer(self, path: &str, request: http::Request<Body>) -> Answer;
}

/// A daemon as tonic's server drives it.
#[derive(Clone)]
struct Served<D>(D);

impl<D: FakeDaemon> NamedService for Served<D> {
    const NAME: &'static str = D::SERVICE;
}

impl<D: FakeDaemon> tower::Service<http::Request<Body>> for Served<D> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path().to_string();
        let answer = self.0.clone().answer(&path, request);
        Box::pin(async move { Ok(answer.await) })
    }
}

/// A fake daemon serving on `path` until dropped.
pub struct UnixGrpcServer {
    pub path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UnixGrpcServer {
    pub fn start(path: &Path, daemon: impl FakeDaemon) -> UnixGrpcServer {
        let service = Served(daemon);
        let stop = Arc::new(AtomicBool::new(false));
        let (stopped, socket) = (stop.clone(), path.to_path_buf());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::bind(&socket).expect("bind fake gRPC socket");
                ready_tx.send(()).unwrap();
                let shutdown = async move {
                    while !stopped.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(listener), shutdown)
                    .await
                    .expect("fake gRPC server");
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).expect("fake gRPC server never listened");
        UnixGrpcServer { path: path.to_path_buf(), stop, thread: Some(thread) }
    }
}

impl Drop for UnixGrpcServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers one unary request with `answer`, decoding and encoding the prost messages.
pub async fn unary<Req, Resp>(
    request: http::Request<Body>,
    answer: impl FnOnce(Req) -> Result<Resp, tonic::Status> + Send + 'static,
) -> http::Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default());
    grpc.unary(Once(Some(answer)), request).await
}

struct Once<F>(Option<F>);

impl<Req, Resp, F> tonic::server::UnaryService<Req> for Once<F>
where
    F: FnOnce(Req) -> Result<Resp, tonic::Status>,
{
    type Response = Resp;
    type Future = std::future::Ready<Result<tonic::Response<Resp>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let answer = match self.0.take() {
            Some(f) => f(request.into_inner()).map(tonic::Response::new),
            None => Err(tonic::Status::internal("one answer per request")),
        };
        std::future::ready(answer)
    }
}
