//! The plugin's way to the apiserver: its client, built from the kactus config, and what an
//! apiserver failure means in CNI terms (the one mapping from `KubeError` to a CNI code).

use super::config::KactusConfig;
use crate::cni::{code, CniError};
use crate::kube::{self, KubeError};

/// A client with the config's kubeconfig (in-cluster credentials without one) and
/// `apiTimeoutSeconds` per request.
pub fn kube_client(cfg: &KactusConfig) -> Result<kube::Client, CniError> {
    let opts = kube::ClientOptions { timeout: cfg.api_timeout, ..Default::default() };
    kube::Client::new(cfg.kubeconfig.as_deref(), opts).map_err(|e| kube_error(e, "connect to the apiserver"))
}

/// Maps apiserver failures to CNI codes: transient ones to 11 so the runtime retries. An
/// answer that does not decode (a proxy's error page, a body cut short, JSON that is not the
/// object asked for) is one too: it says nothing about the object, and the next may be whole.
pub fn kube_error(e: KubeError, what: &str) -> CniError {
    let c = match &e {
        _ if e.is_transient() => code::TRY_AGAIN_LATER,
        KubeError::Decode { .. } => code::TRY_AGAIN_LATER,
        KubeError::Config { .. } => code::INVALID_NETWORK_CONFIG,
        _ => code::APISERVER,
    };
    CniError::new(c, format!("{what}: {e}"))
}
