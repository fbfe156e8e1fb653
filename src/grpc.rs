//! Unary gRPC calls to a daemon of the node over its unix socket, each bounded in time: the
//! container runtime's CRI (podagent finding sandboxes) and kubelet's pod-resources API (the
//! plugin finding a pod's allocated devices). Messages are prost structs written from the
//! daemons' `.proto` files, with their field tags; what the caller never reads is left out
//! and protobuf decoding skips it.

use hyper_util::rt::TokioIo;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};

/// Largest answer accepted: kubelet's own limit on pod-resources answers (a node with many
/// pods and devices), well above what a runtime's sandbox list reaches.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Why a call failed: a daemon that could not be asked at all (socket absent or refusing, no
/// answer in time, the service not served) may be stood in for by another source; an
/// answer ("not found", "permission denied") is the daemon's word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcError {
    Unreachable(String),
    Answered(String),
}

impl GrpcError {
    pub fn message(&self) -> &str {
        match self {
            GrpcError::Unreachable(m) | GrpcError::Answered(m) => m,
        }
    }
}

/// A client of one unix socket. Its calls run on whichever tokio runtime polls them: the
/// daemon's own for podagent (so nothing here owns a runtime that could be dropped inside
/// async code), a runtime made for the call by [`block_on`] for the blocking plugin.
pub struct UnixGrpc {
    socket: PathBuf,
    timeout: Duration,
}

impl UnixGrpc {
    pub fn new(socket: PathBuf, timeout: Duration) -> UnixGrpc {
        UnixGrpc { socket, timeout }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A connection to the socket, bounded by the call timeout.
    pub async fn connect(&self) -> Result<Grpc<Channel>, GrpcError> {
        let socket = self.socket.clone();
        // The URI only names the HTTP/2 authority; the connector below ignores it.
        let endpoint = Endpoint::from_static("http://localhost");
        let connecting = endpoint.connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.map(TokioIo::new) }
        }));
        let channel = self
            .bounded("connect", connecting)
            .await?
            .map_err(|e| GrpcError::Unreachable(format!("connect: {}", crate::kube::error_chain(&e))))?;
        Ok(Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// One unary call of `path` (`/package.Service/Method`), bounded by the call timeout.
    pub async fn call<Req, Resp>(
        &self,
        grpc: &mut Grpc<Channel>,
        path: &'static str,
        request: Req,
    ) -> Result<Resp, GrpcError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let method = path.rsplit('/').next().unwrap_or(path);
        let call = async {
            grpc.ready().await.map_err(|e| tonic::Status::unavailable(crate::kube::error_chain(&e)))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            grpc.unary(tonic::Request::new(request), http::uri::PathAndQuery::from_static(path), codec).await
        };
        match self.bounded(method, call).await? {
            Ok(response) => Ok(response.into_inner()),
            // A daemon without the service (or one going away) cannot be asked at all.
            Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unimplemented) => {
                Err(GrpcError::Unreachable(format!("{method}: {}: {}", s.code(), s.message())))
            }
            Err(s) => Err(GrpcError::Answered(format!("{method}: {}: {}", s.code(), s.message()))),
        }
    }

    async fn bounded<T>(&self, what: &str, f: impl Future<Output = T>) -> Result<T, GrpcError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| GrpcError::Unreachable(format!("{what}: no answer within {:?}", self.timeout)))
    }
}

/// Runs a sequence of calls (say, a list then a status on one connection) to completion from
/// blocking code that has no runtime (the plugin): on a single-threaded runtime made for them
/// and dropped here, in that same blocking code. Never called from async code (a runtime
/// cannot be started, nor dropped, inside another): the daemons await the calls instead.
pub fn block_on<F: Future>(calls: F) -> Result<F::Output, GrpcError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| GrpcError::Unreachable(format!("start the gRPC client runtime: {e}")))?;
    Ok(runtime.block_on(calls))
}
