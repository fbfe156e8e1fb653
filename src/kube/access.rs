//! How the plugin's lean client reaches the apiserver, from the settings the crate's one
//! loader read ([`super::config::load`]): the URL, the roots to trust, the client certificate
//! and how each request proves who we are.
//!
//! Certificates are taken once, when the client is built; a bearer token that lives in a file
//! is re-read on every request (see [`Auth::TokenFile`]), because the kubelet and the installer
//! rotate tokens under running processes. The precedence of credentials is kube-rs's own, so a
//! kubeconfig means the same to the plugin as to the daemons: username and password, then an
//! inline token, then a token file, then the client certificate alone.

use super::config::{Source, MAX_CREDENTIAL_FILE};
use super::error::KubeError;
use base64::Engine;
use secrecy::ExposeSecret;
use std::path::{Path, PathBuf};

/// Everything needed to reach one apiserver as one identity.
#[derive(Debug, Clone)]
pub(crate) struct ClusterAccess {
    /// `https://host:port` (maybe with a path prefix), without a trailing slash.
    pub server: String,
    /// DER certificates the server certificate must chain to; the only trusted roots.
    pub roots: Option<Vec<Vec<u8>>>,
    pub insecure_skip_tls_verify: bool,
    /// Name to verify the server certificate against instead of the URL's host.
    pub tls_server_name: Option<String>,
    pub client_cert: Option<ClientIdentity>,
    pub auth: Auth,
    /// Says where the credentials came from, for "the apiserver rejected ..." messages.
    pub credential_source: String,
    /// Says where the settings came from, for TLS setup errors.
    pub origin: String,
}

/// Client-certificate authentication: PEM certificate chain and private key.
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity { .. }")
    }
}

/// How a request proves its identity in the `Authorization` header.
#[derive(Clone)]
pub(crate) enum Auth {
    None,
    Token(String),
    /// Re-read on every request so a rotated token is picked up without a restart.
    TokenFile(PathBuf),
    Basic {
        username: String,
        password: String,
    },
}

/// Secrets stay out of `{:?}` so they cannot reach a log by accident.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::TokenFile(path) => write!(f, "TokenFile({})", path.display()),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

impl Auth {
    /// The `Authorization` header value for the next request, reading token files now.
    pub(crate) fn header_value(&self) -> Result<Option<String>, KubeError> {
        match self {
            Auth::None => Ok(None),
            Auth::Token(token) => Ok(Some(format!("Bearer {token}"))),
            Auth::TokenFile(path) => {
                let token = crate::bounded::read_text(path, MAX_CREDENTIAL_FILE)
                    .map_err(|e| KubeError::config(format!("reading token file {}: {e}", path.display())))?;
                let token = token.trim();
                if token.is_empty() {
                    return Err(KubeError::config(format!("token file {} is empty", path.display())));
                }
                Ok(Some(format!("Bearer {token}")))
            }
            Auth::Basic { username, password } => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
                Ok(Some(format!("Basic {encoded}")))
            }
        }
    }
}

impl ClusterAccess {
    /// What the lean client needs of a loaded `kube::Config`. Credential plugins (`exec`,
    /// `auth-provider`) are refused with the fix: the plugin runs on every pod start, and a
    /// cloud CLI per CNI call would put its latency (and its failures) on the pod's start-up.
    pub(crate) fn from_config(config: &kube::Config, source: &Source) -> Result<ClusterAccess, KubeError> {
        let fail = |what: String| KubeError::config(format!("{source}: {what}"));
        let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
        if !(server.starts_with("https://") || server.starts_with("http://")) {
            return Err(fail(format!("server {server:?} is not an http(s) URL")));
        }
        let user = &config.auth_info;
        let cert = data_or_file(user.client_certificate_data.as_deref(), user.client_certificate.as_deref())
            .map_err(|e| fail(format!("client-certificate: {e}")))?;
        let key_data = user.client_key_data.as_ref().map(|k| k.expose_secret().to_string());
        let key = data_or_file(key_data.as_deref(), user.client_key.as_deref())
            .map_err(|e| fail(format!("client-key: {e}")))?;
        let client_cert = match (cert, key) {
            (Some(cert_pem), Some(key_pem)) => Some(ClientIdentity { cert_pem, key_pem }),
            (None, None) => None,
            (Some(_), None) => return Err(fail("a client certificate without client-key or client-key-data".into())),
            (None, Some(_)) => {
                return Err(fail("a client key without client-certificate or client-certificate-data".into()))
            }
        };
        let (auth, credential_source) = if let (Some(username), Some(password)) = (&user.username, &user.password) {
            let auth = Auth::Basic { username: username.clone(), password: password.expose_secret().to_string() };
            (auth, format!("the password of user {username:?} in {source}"))
        } else if let Some(token) = &user.token {
            (Auth::Token(token.expose_secret().trim().to_string()), format!("the token in {source}"))
        } else if let Some(file) = &user.token_file {
            (Auth::TokenFile(PathBuf::from(file)), format!("token file {file}"))
        } else if user.exec.is_some() || user.auth_provider.is_some() {
            return Err(fail(
                "the user runs an exec or auth-provider credential plugin, which the kactus CNI plugin \
                 does not run on pod start-up (podagent and kactus-endpoints do); give it a token, \
                 tokenFile or client certificate, as `kactus install` does"
                    .into(),
            ));
        } else if client_cert.is_some() {
            (Auth::None, format!("the client certificate in {source}"))
        } else {
            (Auth::None, format!("anonymous access via {source} (no user credentials)"))
        };
        Ok(ClusterAccess {
            server,
            roots: config.root_cert.clone(),
            insecure_skip_tls_verify: config.accept_invalid_certs,
            tls_server_name: config.tls_server_name.clone().filter(|n| !n.is_empty()),
            client_cert,
            auth,
            credential_source,
            origin: source.to_string(),
        })
    }
}

/// An inline `*-data` value (base64), else the file (already absolute: the loader resolved it).
fn data_or_file(data: Option<&str>, file: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    if let Some(data) = data.map(str::trim).filter(|d| !d.is_empty()) {
        let compact: String = data.split_whitespace().collect();
        return base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(Some)
            .map_err(|e| super::redact::base64(&e));
    }
    match file.map(str::trim).filter(|f| !f.is_empty()) {
        None => Ok(None),
        Some(file) => crate::bounded::read(Path::new(file), MAX_CREDENTIAL_FILE)
            .map(Some)
            .map_err(|e| format!("reading {file}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::load;
    use super::*;

    fn ca_pem() -> String {
        rcgen::generate_simple_self_signed(vec!["kubernetes".into()]).unwrap().cert.pem()
    }

    /// A kubeconfig in a fresh temp dir: (dir, path).
    fn kubeconfig(user: &str, cluster_extra: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: kactus\n\
             contexts:\n- name: kactus\n  context:\n    cluster: local\n    user: kactus\n    namespace: kube-system\n\
             clusters:\n- name: local\n  cluster:\n    server: https://127.0.0.1:6443/\n{cluster_extra}\
             users:\n- name: kactus\n  user:\n{user}"
        );
        let path = dir.path().join("kubeconfig.yaml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn access(path: &Path) -> Result<ClusterAccess, KubeError> {
        let (config, source) = load(Some(path))?;
        ClusterAccess::from_config(&config, &source)
    }

    #[test]
    fn inline_token_and_ca_data() {
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem());
        let (_dir, path) = kubeconfig("    token: abc123\n", &format!("    certificate-authority-data: {ca}\n"));
        let access = access(&path).unwrap();
        assert_eq!(access.server, "https://127.0.0.1:6443");
        assert_eq!(access.roots.as_ref().map(Vec::len), Some(1));
        assert!(!access.insecure_skip_tls_verify);
        assert_eq!(access.auth.header_value().unwrap().as_deref(), Some("Bearer abc123"));
        assert!(!format!("{access:?}").contains("abc123"), "token leaked into Debug");
    }

    #[test]
    fn token_file_and_ca_file_are_relative_to_the_kubeconfig_and_the_token_is_reread_per_request() {
        let (dir, path) = kubeconfig("    tokenFile: token\n", "    certificate-authority: ca.crt\n");
        std::fs::write(dir.path().join("ca.crt"), ca_pem()).unwrap();
        std::fs::write(dir.path().join("token"), "first\n").unwrap();
        let access = access(&path).unwrap();
        assert_eq!(access.roots.as_ref().map(Vec::len), Some(1));
        assert_eq!(access.auth.header_value().unwrap().as_deref(), Some("Bearer first"));
        std::fs::write(dir.path().join("token"), "rotated").unwrap();
        assert_eq!(access.auth.header_value().unwrap().as_deref(), Some("Bearer rotated"));
        assert!(access.credential_source.contains("token file"));
    }

    #[test]
    fn an_inline_token_wins_over_a_token_file_as_for_the_daemons() {
        let (dir, path) =
            kubeconfig("    tokenFile: token\n    token: inline\n", "    insecure-skip-tls-verify: true\n");
        std::fs::write(dir.path().join("token"), "from-file").unwrap();
        assert_eq!(access(&path).unwrap().auth.header_value().unwrap().as_deref(), Some("Bearer inline"));
    }

    #[test]
    fn client_certificate_data_and_insecure_flag() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let user = format!("    client-certificate-data: {}\n    client-key-data: {}\n", b64("CERT"), b64("KEY"));
        let (_dir, path) = kubeconfig(&user, "    insecure-skip-tls-verify: true\n    tls-server-name: kubernetes\n");
        let access = access(&path).unwrap();
        assert!(access.insecure_skip_tls_verify);
        assert_eq!(access.tls_server_name.as_deref(), Some("kubernetes"));
        let identity = access.client_cert.unwrap();
        assert_eq!(identity.cert_pem, b"CERT");
        assert_eq!(identity.key_pem, b"KEY");
        assert!(matches!(access.auth, Auth::None));
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let (_dir, path) = kubeconfig("    client-key: missing.key\n    client-certificate-data: Q0VSVA==\n", "");
        let err = access(&path).unwrap_err().to_string();
        assert!(err.contains("client-key") && err.contains("missing.key"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");

        let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n";
        let (_dir, path) = kubeconfig(exec, "    insecure-skip-tls-verify: true\n");
        let err = access(&path).unwrap_err().to_string();
        assert!(err.contains("exec or auth-provider credential plugin"), "{err}");
    }

    /// Issue 22: the token file is read on every request; one that names something without
    /// end must not be read without end.
    #[test]
    fn a_token_file_larger_than_the_bound_is_refused_by_name() {
        let (dir, path) = kubeconfig("    tokenFile: token\n", "    insecure-skip-tls-verify: true\n");
        std::fs::write(dir.path().join("token"), "t".repeat(MAX_CREDENTIAL_FILE as usize + 1)).unwrap();
        let err = access(&path).unwrap().auth.header_value().unwrap_err().to_string();
        assert!(err.contains("token file") && err.contains("larger than 1048576 bytes"), "{err}");
        let err = Auth::TokenFile("/dev/zero".into()).header_value().unwrap_err().to_string();
        assert!(err.contains("/dev/zero") && err.contains("larger than"), "{err}");
    }
}
