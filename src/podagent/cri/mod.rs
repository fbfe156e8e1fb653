//! Finding a pod's sandbox from the container runtime, over its CRI socket (containerd,
//! CRI-O): `ListPodSandbox` by the pod's UID label gives the ready sandbox's ID, which is
//! the `CNI_CONTAINERID` the runtime gave the CNI plugin; `PodSandboxStatus` (verbose) gives
//! the runtime spec the sandbox runs with, whose network namespace path is the `CNI_NETNS`.

pub mod api;

use super::sandbox::{Sandbox, SandboxLocator};
use crate::grpc::UnixGrpc;
use crate::podagent::pods::Pod;
use api::{PodSandboxState, POD_UID_LABEL};
use futures::future::BoxFuture;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where containerd and CRI-O listen, in the order they are tried.
pub const DEFAULT_SOCKETS: [&str; 2] = ["/run/containerd/containerd.sock", "/var/run/crio/crio.sock"];

/// Bound on connecting and on each call: a hung runtime must not hold up the reconcile loop.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The runtime's socket: the one given (`--cri-socket`), else the first of
/// [`DEFAULT_SOCKETS`] that exists.
pub fn runtime_socket(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| DEFAULT_SOCKETS.iter().map(PathBuf::from).find(|p| p.exists()))
}

/// The socket of a runtime endpoint as the ecosystem writes it (kubelet's
/// `--container-runtime-endpoint`, crictl's `-r`): `unix:///run/containerd/containerd.sock`,
/// or a bare path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, String> {
    let path = match endpoint.split_once("://") {
        None => endpoint,
        Some(("unix", path)) => path,
        Some((scheme, _)) => {
            return Err(format!(
            "{endpoint:?}: a CRI runtime is reached over a unix socket (unix:///path or a bare path), not {scheme}://"
        ))
        }
    };
    if path.is_empty() || !path.starts_with('/') {
        return Err(format!("{endpoint:?}: the runtime's socket must be an absolute path"));
    }
    Ok(PathBuf::from(path))
}

/// The pid of the process serving the runtime's socket (the runtime itself), from the peer
/// credentials of a connection to it: the kernel records who called `listen` (SO_PEERCRED),
/// so nothing is asked of the runtime and no `/proc` is scanned. The pid is as podagent's
/// PID namespace sees it: none without `hostPID` when the runtime is outside it.
pub async fn serving_pid(socket: &Path) -> Result<i32, String> {
    let connecting = tokio::net::UnixStream::connect(socket);
    let stream = tokio::time::timeout(CALL_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("connecting to {}: no answer within {CALL_TIMEOUT:?}", socket.display()))?
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    let credentials = stream.peer_cred().map_err(|e| format!("the peer of {}: {e}", socket.display()))?;
    match credentials.pid() {
        Some(pid) if pid > 0 => Ok(pid),
        _ => Err(format!(
            "the process serving {} is outside podagent's PID namespace (podagent needs hostPID)",
            socket.display()
        )),
    }
}

/// Why a CRI lookup failed: an unreachable runtime may be stood in for by another locator;
/// an answer ("no ready sandbox") is the runtime's word and is final.
pub use crate::grpc::GrpcError as CriError;

pub struct CriLocator {
    grpc: UnixGrpc,
}

impl CriLocator {
    pub fn new(socket: PathBuf, timeout: Duration) -> CriLocator {
        CriLocator { grpc: UnixGrpc::new(socket, timeout) }
    }

    pub fn socket(&self) -> &Path {
        self.grpc.socket()
    }

    /// The pod's ready sandbox, found by its UID.
    pub async fn lookup(&self, pod: &Pod) -> Result<Sandbox, CriError> {
        let meta = &pod.metadata;
        let uid = meta.uid.as_deref().unwrap_or_default();
        let context = |e: String| {
            let (namespace, name) =
                (meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default());
            format!("CRI {}: pod {namespace}/{name} (uid {uid}): {e}", self.socket().display())
        };
        if uid.is_empty() {
            return Err(CriError::Answered(context("the pod has no UID to look its sandbox up by".into())));
        }
        self.lookup_uid(uid).await.map_err(|e| match e {
            CriError::Unreachable(m) => CriError::Unreachable(context(m)),
            CriError::Answered(m) => CriError::Answered(context(m)),
        })
    }

    async fn lookup_uid(&self, uid: &str) -> Result<Sandbox, CriError> {
        let mut grpc = self.grpc.connect().await?;
        let filter = api::PodSandboxFilter {
            state: Some(api::PodSandboxStateValue { state: PodSandboxState::SandboxReady as i32 }),
            label_selector: [(POD_UID_LABEL.to_string(), uid.to_string())].into(),
            ..Default::default()
        };
        let list: api::ListPodSandboxResponse = self
            .grpc
            .call(&mut grpc, api::LIST_POD_SANDBOX, api::ListPodSandboxRequest { filter: Some(filter) })
            .await?;
        // Runtimes apply the filter; a sandbox being replaced may still be listed beside
        // its successor for a moment, and the newest is the one kubelet keeps.
        let sandbox = list
            .items
            .into_iter()
            .filter(|s| {
                s.state == PodSandboxState::SandboxReady as i32 && s.labels.get(POD_UID_LABEL).is_some_and(|u| u == uid)
            })
            .max_by_key(|s| s.created_at)
            .ok_or_else(|| CriError::Answered("no ready sandbox".into()))?;
        let request = api::PodSandboxStatusRequest { pod_sandbox_id: sandbox.id.clone(), verbose: true };
        let status: api::PodSandboxStatusResponse = self.grpc.call(&mut grpc, api::POD_SANDBOX_STATUS, request).await?;
        let netns =
            network_namespace(&status).map_err(|e| CriError::Answered(format!("sandbox {}: {e}", sandbox.id)))?;
        if !netns.exists() {
            return Err(CriError::Answered(format!(
                "sandbox {}: its netns {} is not visible here (is the host's /run/netns mounted?)",
                sandbox.id,
                netns.display()
            )));
        }
        Ok(Sandbox { container_id: sandbox.id, netns })
    }
}

impl SandboxLocator for CriLocator {
    fn locate<'a>(&'a self, pod: &'a Pod) -> BoxFuture<'a, Result<Sandbox, String>> {
        Box::pin(async move { self.lookup(pod).await.map_err(|e| e.message().to_string()) })
    }
}

/// The part of a verbose `PodSandboxStatus` `info["info"]` document podagent reads: the
/// OCI runtime spec of the sandbox, which both containerd and CRI-O include.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct SandboxInfo {
    runtime_spec: Option<RuntimeSpec>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RuntimeSpec {
    linux: LinuxSpec,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LinuxSpec {
    namespaces: Vec<LinuxNamespace>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LinuxNamespace {
    #[serde(rename = "type")]
    kind: String,
    path: String,
}

/// The network namespace path in a verbose sandbox status.
fn network_namespace(status: &api::PodSandboxStatusResponse) -> Result<PathBuf, String> {
    let info = status.info.get("info").ok_or("the verbose status has no \"info\" document")?;
    let info: SandboxInfo =
        serde_json::from_str(info).map_err(|e| format!("the verbose status \"info\" is not JSON: {e}"))?;
    let spec = info.runtime_spec.ok_or("the verbose status has no runtimeSpec")?;
    let network = spec.linux.namespaces.into_iter().find(|n| n.kind == "network");
    match network {
        Some(n) if !n.path.is_empty() => Ok(PathBuf::from(n.path)),
        // No path: the sandbox shares the node's namespace, which podagent never changes.
        _ => Err("no network namespace path in its runtime spec (a host-network pod?)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(info: &str) -> api::PodSandboxStatusResponse {
        api::PodSandboxStatusResponse { info: [("info".to_string(), info.to_string())].into(), ..Default::default() }
    }

    #[test]
    fn the_netns_comes_from_the_network_namespace_of_the_runtime_spec() {
        let info = r#"{"pid": 42, "runtimeSpec": {"linux": {"namespaces": [
            {"type": "pid"}, {"type": "ipc"}, {"type": "network", "path": "/var/run/netns/cni-1234"}]}}}"#;
        assert_eq!(network_namespace(&status(info)), Ok(PathBuf::from("/var/run/netns/cni-1234")));
    }

    #[test]
    fn runtime_endpoints_are_unix_urls_or_paths() {
        let containerd = Ok(PathBuf::from("/run/containerd/containerd.sock"));
        assert_eq!(socket_path("unix:///run/containerd/containerd.sock"), containerd);
        assert_eq!(socket_path("/run/containerd/containerd.sock"), containerd);
        assert!(socket_path("tcp://10.0.0.1:1234").unwrap_err().contains("unix socket"));
        assert!(socket_path("unix://").is_err());
        assert!(socket_path("run/x.sock").is_err());
    }

    #[test]
    fn a_host_network_sandbox_or_a_terse_status_has_no_netns() {
        let host = r#"{"runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}]}}}"#;
        assert!(network_namespace(&status(host)).unwrap_err().contains("host-network"));
        assert!(network_namespace(&api::PodSandboxStatusResponse::default()).unwrap_err().contains("no \"info\""));
        assert!(network_namespace(&status("{}")).unwrap_err().contains("runtimeSpec"));
    }
}
