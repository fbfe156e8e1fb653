//! The plugin's kubeconfig: the apiserver, its CA (the installer pod's) and the plugin's own
//! token (see [`super::token`]).
//!
//! The kactus plugin runs on the host (exec'd by the runtime), where there is no in-cluster
//! environment, so it needs a kubeconfig file. The token is embedded, so one atomic rename
//! replaces server, CA and token together; the plugin reads the file afresh on every call.

use std::path::Path;

use base64::Engine;
use serde::Serialize;

use super::InstallError;
use crate::bounded;
use crate::kube::config::MAX_CREDENTIAL_FILE;

/// Mode of the kubeconfig: it holds a bearer token, so root only.
pub const KUBECONFIG_MODE: u32 = 0o600;

/// What the plugin's kubeconfig carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountCredentials {
    /// The plugin's bearer token.
    pub token: String,
    /// The apiserver CA bundle, PEM.
    pub ca_pem: Vec<u8>,
}

/// Reads `ca.crt` from the installer pod's service-account dir; it must not be empty.
pub fn read_ca(dir: &Path) -> Result<Vec<u8>, InstallError> {
    let ca_path = dir.join("ca.crt");
    let ca_pem = bounded::read(&ca_path, MAX_CREDENTIAL_FILE).map_err(|e| InstallError::ServiceAccount {
        what: "CA",
        path: ca_path.clone(),
        reason: e.to_string(),
    })?;
    if ca_pem.iter().all(u8::is_ascii_whitespace) {
        return Err(InstallError::ServiceAccount { what: "CA", path: ca_path, reason: "file is empty".into() });
    }
    Ok(ca_pem)
}

/// The token in a kubeconfig this installer wrote (its one user's), if it can be read.
pub fn token_in(path: &Path) -> Option<String> {
    let text = bounded::read_text(path, MAX_CREDENTIAL_FILE).ok()?;
    let config: serde_json::Value = serde_saphyr::from_str(&text).ok()?;
    let token = config["users"][0]["user"]["token"].as_str()?.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// `https://HOST:PORT`, with an IPv6 literal host in brackets (`https://[fd00::1]:443`).
pub fn api_server_url(host: &str, port: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// The apiserver URL from `KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT`, which
/// kubelet sets in every pod (and which work with hostNetwork, unlike DNS names).
pub fn api_server_from_env() -> Result<String, InstallError> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST")
        .map_err(|_| InstallError::ApiServer("KUBERNETES_SERVICE_HOST is not set".into()))?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    if host.trim().is_empty() {
        return Err(InstallError::ApiServer("KUBERNETES_SERVICE_HOST is empty".into()));
    }
    Ok(api_server_url(host.trim(), port.trim()))
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    clusters: [Named<'a, Cluster<'a>>; 1],
    users: [Named<'a, User<'a>>; 1],
    contexts: [Named<'a, Context<'a>>; 1],
    current_context: &'a str,
}

#[derive(Serialize)]
struct Named<'a, T> {
    name: &'a str,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct Cluster<'a> {
    cluster: ClusterSpec<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterSpec<'a> {
    server: &'a str,
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct User<'a> {
    user: UserSpec<'a>,
}

#[derive(Serialize)]
struct UserSpec<'a> {
    token: &'a str,
}

#[derive(Serialize)]
struct Context<'a> {
    context: ContextSpec<'a>,
}

#[derive(Serialize)]
struct ContextSpec<'a> {
    cluster: &'a str,
    user: &'a str,
}

/// Renders a self-contained kubeconfig (CA inline as `certificate-authority-data`, token
/// inline) for `server`. `path` is only used in the error message.
pub fn render_kubeconfig(
    server: &str,
    credentials: &ServiceAccountCredentials,
    path: &Path,
) -> Result<String, InstallError> {
    let config = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: [Named {
            name: "kactus-cluster",
            value: Cluster {
                cluster: ClusterSpec {
                    server,
                    certificate_authority_data: base64::engine::general_purpose::STANDARD.encode(&credentials.ca_pem),
                },
            },
        }],
        users: [Named { name: "kactus", value: User { user: UserSpec { token: &credentials.token } } }],
        contexts: [Named {
            name: "kactus-context",
            value: Context { context: ContextSpec { cluster: "kactus-cluster", user: "kactus" } },
        }],
        current_context: "kactus-context",
    };
    serde_saphyr::to_string(&config)
        .map_err(|e| InstallError::RenderKubeconfig { path: path.to_path_buf(), reason: e.to_string() })
}
