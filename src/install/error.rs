//! The installer's error type: every message names the path involved and what to do about it,
//! because the only reader is an operator looking at `kubectl logs` of the DaemonSet pod.

use std::path::PathBuf;

/// Everything that can stop `kactus install` from putting kactus in place on a node.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file or directory could not be read, written or renamed.
    #[error("{action} {path}: {source} (check that the host directory is mounted read-write into the pod)")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The binary to install could not be located.
    #[error("cannot locate the running kactus binary: {0} (pass --binary PATH)")]
    CurrentExe(#[source] std::io::Error),

    /// No default network config exists yet in the conf dir.
    #[error(
        "no default network config in {conf_dir}: waiting for a .conf, .conflist or .json \
         other than kactus's own (install the cluster network, e.g. flannel or calico, \
         or pass --master-config PATH)"
    )]
    NoDefaultNetwork { conf_dir: PathBuf },

    /// The default network config exists but is not a CNI config kactus can wrap.
    #[error(
        "default network config {path} is not usable: {reason} (fix or remove the file, or pass --master-config PATH)"
    )]
    InvalidDefaultNetwork { path: PathBuf, reason: String },

    /// The service-account CA is missing or empty.
    #[error("service-account {what} {path}: {reason} (the pod needs an automounted service-account token; see manifests/kactus-ds.yaml)")]
    ServiceAccount { what: &'static str, path: PathBuf, reason: String },

    /// No token for the plugin's service account could be had from the TokenRequest API.
    #[error("token for the plugin's service account {account}: {reason}")]
    PluginToken { account: String, reason: String },

    /// The apiserver address could not be determined.
    #[error("apiserver address unknown: {0} (run in a pod, or pass --api-server https://HOST:PORT)")]
    ApiServer(String),

    /// Rendering the kubeconfig failed (should not happen with valid input).
    #[error("render kubeconfig {path}: {reason}")]
    RenderKubeconfig { path: PathBuf, reason: String },

    /// `kactus uninstall --check`: kactus is still on the node.
    #[error("kactus is still installed: {file} exists")]
    StillInstalled { file: PathBuf },

    /// `kactus uninstall` waits: these pods' attachments need kactus's DEL.
    #[error(
        "not removing kactus yet: pods on this node have kactus attachments, whose addresses only \
         kactus can release when the pods go: {pods} (delete or move them; --force removes kactus \
         anyway and their leases leak)"
    )]
    PodsNeedKactus { pods: String },

    /// Installing the SIGTERM handler failed.
    #[error("install the SIGTERM handler: {0}")]
    Signal(#[source] nix::Error),
}

impl InstallError {
    /// Wraps an I/O error with the action and the path it concerned.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        InstallError::Io { action, path: path.into(), source }
    }
}
