//! The client's parsers, reachable without a kubeconfig file or an apiserver, for the fuzz
//! targets in `fuzz/` and their corpus replay (`tests/fuzz_corpora.rs`). Not an API: its shapes
//! follow what those targets check.

use super::access::{Auth, ClusterAccess};
use super::config;
use super::error::KubeError;
use std::path::Path;

/// What a kubeconfig resolved to, in the terms the fuzz target checks.
#[derive(Debug)]
pub struct KubeconfigView {
    /// The apiserver URL the client would call.
    pub server: String,
    /// The `Authorization` header of an inline token or password (token files are not read).
    pub authorization: Option<Result<Option<String>, KubeError>>,
    /// The inline secret (token or password), which must never show in `debug`.
    pub secret: Option<String>,
    /// The resolved access as `{:?}` prints it, i.e. as a log line would show it.
    pub debug: String,
    /// Whether the client's TLS setup (CA, client certificate and key) can be built from it.
    pub tls: Result<(), KubeError>,
}

/// Parses and resolves a kubeconfig's text as if it were the file `path`, and builds the
/// TLS setup the client would use, without connecting.
pub fn kubeconfig(text: &str, path: &Path) -> Result<KubeconfigView, KubeError> {
    let (config, source) = config::from_text(text, path)?;
    let access = ClusterAccess::from_config(&config, &source)?;
    let (secret, authorization) = match &access.auth {
        Auth::Token(token) => (Some(token.clone()), Some(access.auth.header_value())),
        Auth::Basic { password, .. } => (Some(password.clone()), Some(access.auth.header_value())),
        Auth::None | Auth::TokenFile(_) => (None, None),
    };
    let tls = match access.server.starts_with("https://") {
        true => super::tls::client_config(&access).map(drop),
        false => Ok(()),
    };
    Ok(KubeconfigView { server: access.server.clone(), authorization, secret, debug: format!("{access:?}"), tls })
}

/// The error a failed answer becomes (`status`, the request's `path`, the raw `body`).
pub fn error_from_response(status: u16, path: &str, credentials: &str, body: &str) -> KubeError {
    KubeError::from_response(status, path, credentials, body)
}
