//! Where the apiserver is and how to prove who we are: a kubeconfig file's current context,
//! or the pod's in-cluster service-account credentials.
//!
//! Certificates are read once, when the client is built; bearer tokens that live in files are
//! only located here and re-read on every request (see [`Auth::TokenFile`]), because the
//! kubelet rotates projected service-account tokens under running processes.

use super::error::KubeError;
use base64::Engine;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The directory where Kubernetes mounts a pod's service-account credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Everything needed to reach one apiserver as one identity.
#[derive(Debug, Clone)]
pub(crate) struct ClusterAccess {
    /// `https://host:port` (maybe with a path prefix), without a trailing slash.
    pub server: String,
    /// PEM roots that the server certificate must chain to; the only trusted roots.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_skip_tls_verify: bool,
    /// Name to verify the server certificate against instead of the URL's host.
    pub tls_server_name: Option<String>,
    pub client_cert: Option<ClientIdentity>,
    pub auth: Auth,
    /// The namespace of the context, or of the pod's service account.
    pub namespace: Option<String>,
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
                let token = std::fs::read_to_string(path)
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

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct Kubeconfig {
    current_context: String,
    contexts: Vec<NamedContext>,
    clusters: Vec<NamedCluster>,
    users: Vec<NamedUser>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Context {
    cluster: String,
    user: String,
    namespace: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NamedUser {
    name: String,
    user: User,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    username: Option<String>,
    password: Option<String>,
    /// Present only to explain that credential plugins are not supported.
    exec: Option<IgnoredAny>,
    auth_provider: Option<IgnoredAny>,
}

/// Reads a kubeconfig and resolves its current context.
pub(crate) fn from_kubeconfig(path: &Path) -> Result<ClusterAccess, KubeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| KubeError::config(format!("reading kubeconfig {}: {e}", path.display())))?;
    from_text(&text, path)
}

/// Parses a kubeconfig's text as if read from `path` (relative file names are resolved
/// beside it) and resolves its current context.
pub(crate) fn from_text(text: &str, path: &Path) -> Result<ClusterAccess, KubeError> {
    let config: Kubeconfig = serde_saphyr::from_str(text)
        .map_err(|e| KubeError::config(format!("parsing kubeconfig {}: {e}", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    resolve(config, path, dir)
}

fn resolve(config: Kubeconfig, file: &Path, dir: &Path) -> Result<ClusterAccess, KubeError> {
    let file_name = file.display();
    let fail = |what: String| KubeError::config(format!("kubeconfig {file_name}: {what}"));

    if config.current_context.is_empty() {
        return Err(fail("current-context is not set".into()));
    }
    let context = &config
        .contexts
        .iter()
        .find(|c| c.name == config.current_context)
        .ok_or_else(|| fail(format!("current-context {:?} is not among contexts", config.current_context)))?
        .context;
    let cluster = &config
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .ok_or_else(|| {
            fail(format!("cluster {:?} of context {:?} is not among clusters", context.cluster, config.current_context))
        })?
        .cluster;
    let cluster_field = |field: &str| format!("cluster {:?} field {field}", context.cluster);
    // A context without a user is legal (anonymous access, or an insecure test server).
    let user = if context.user.is_empty() {
        User::default()
    } else {
        let found = config.users.into_iter().find(|u| u.name == context.user);
        found
            .ok_or_else(|| {
                fail(format!("user {:?} of context {:?} is not among users", context.user, config.current_context))
            })?
            .user
    };
    let user_field = |field: &str| format!("user {:?} field {field}", context.user);

    let server = cluster.server.trim_end_matches('/').to_string();
    if server.is_empty() {
        return Err(fail(format!("{} is missing", cluster_field("server"))));
    }
    if !(server.starts_with("https://") || server.starts_with("http://")) {
        return Err(fail(format!("{} {server:?} is not an http(s) URL", cluster_field("server"))));
    }

    let ca_pem =
        read_data_or_file(cluster.certificate_authority_data.as_deref(), cluster.certificate_authority.as_deref(), dir)
            .map_err(|(suffix, e)| {
                let field = format!("certificate-authority{suffix}");
                fail(format!("{}: {e}", cluster_field(&field)))
            })?;

    let cert = read_data_or_file(user.client_certificate_data.as_deref(), user.client_certificate.as_deref(), dir)
        .map_err(|(field, e)| fail(format!("{}: {e}", user_field(&format!("client-certificate{field}")))))?;
    let key = read_data_or_file(user.client_key_data.as_deref(), user.client_key.as_deref(), dir)
        .map_err(|(field, e)| fail(format!("{}: {e}", user_field(&format!("client-key{field}")))))?;
    let client_cert = match (cert, key) {
        (Some(cert_pem), Some(key_pem)) => Some(ClientIdentity { cert_pem, key_pem }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(fail(format!(
                "{} has client-certificate but neither client-key nor client-key-data",
                user_field("client-key")
            )))
        }
        (None, Some(_)) => {
            return Err(fail(format!(
                "{} has client-key but neither client-certificate nor client-certificate-data",
                user_field("client-certificate")
            )))
        }
    };

    // As client-go does, a token file wins over an inline token: the file is the one kept fresh.
    let (auth, credential_source) = if let Some(token_file) = non_empty(&user.token_file) {
        let token_path = dir.join(token_file);
        let source = format!("token file {}", token_path.display());
        (Auth::TokenFile(token_path), source)
    } else if let Some(token) = non_empty(&user.token) {
        let source = format!("the token of user {:?} in {file_name}", context.user);
        (Auth::Token(token.to_string()), source)
    } else if let Some(username) = non_empty(&user.username) {
        let source = format!("the password of user {:?} in {file_name}", context.user);
        let password = user.password.clone().unwrap_or_default();
        let auth = Auth::Basic { username: username.to_string(), password };
        (auth, source)
    } else if client_cert.is_some() {
        let source = format!("the client certificate of user {:?} in {file_name}", context.user);
        (Auth::None, source)
    } else if user.exec.is_some() || user.auth_provider.is_some() {
        return Err(fail(format!(
            "user {:?} uses an exec or auth-provider credential plugin, which kactus does not \
             run; give it a token, tokenFile or client certificate",
            context.user
        )));
    } else {
        (Auth::None, format!("anonymous access via {file_name} (no user credentials)"))
    };

    Ok(ClusterAccess {
        server,
        ca_pem,
        insecure_skip_tls_verify: cluster.insecure_skip_tls_verify,
        tls_server_name: non_empty(&cluster.tls_server_name).map(str::to_string),
        client_cert,
        auth,
        namespace: non_empty(&context.namespace).map(str::to_string),
        credential_source,
        origin: format!("kubeconfig {file_name} cluster {:?}", context.cluster),
    })
}

/// In-cluster credentials: the service's environment and the mounted service-account files.
pub(crate) fn in_cluster() -> Result<ClusterAccess, KubeError> {
    in_cluster_from(
        std::env::var("KUBERNETES_SERVICE_HOST").ok(),
        std::env::var("KUBERNETES_SERVICE_PORT").ok(),
        Path::new(SERVICE_ACCOUNT_DIR),
    )
}

fn in_cluster_from(host: Option<String>, port: Option<String>, dir: &Path) -> Result<ClusterAccess, KubeError> {
    let (Some(host), Some(port)) = (non_empty(&host), non_empty(&port)) else {
        return Err(KubeError::config(
            "no kubeconfig given and not in a cluster: KUBERNETES_SERVICE_HOST and \
             KUBERNETES_SERVICE_PORT are not set",
        ));
    };
    // An IPv6 service address needs brackets in a URL.
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    service_account_at(format!("https://{host}:{port}"), dir)
}

/// The service account mounted at `dir` (token re-read per request, CA, namespace), for the
/// apiserver at `server`.
pub(crate) fn service_account_at(server: String, dir: &Path) -> Result<ClusterAccess, KubeError> {
    let ca_path = dir.join("ca.crt");
    let ca_pem = std::fs::read(&ca_path)
        .map_err(|e| KubeError::config(format!("reading in-cluster CA {}: {e}", ca_path.display())))?;
    let token_path = dir.join("token");
    if !token_path.exists() {
        return Err(KubeError::config(format!("in-cluster token {} does not exist", token_path.display())));
    }
    let namespace =
        std::fs::read_to_string(dir.join("namespace")).ok().map(|ns| ns.trim().to_string()).filter(|ns| !ns.is_empty());
    Ok(ClusterAccess {
        server: server.trim_end_matches('/').to_string(),
        ca_pem: Some(ca_pem),
        insecure_skip_tls_verify: false,
        tls_server_name: None,
        client_cert: None,
        credential_source: format!("service account token {}", token_path.display()),
        auth: Auth::TokenFile(token_path),
        namespace,
        origin: format!("in-cluster service account {}", dir.display()),
    })
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Reads an inline `*-data` (base64) value, else a file relative to the kubeconfig's
/// directory. On failure returns the suffix of the field at fault (`-data` or none).
fn read_data_or_file(
    data: Option<&str>,
    file: Option<&str>,
    dir: &Path,
) -> Result<Option<Vec<u8>>, (&'static str, String)> {
    if let Some(data) = data.map(str::trim).filter(|d| !d.is_empty()) {
        let compact: String = data.split_whitespace().collect();
        return base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(Some)
            .map_err(|e| ("-data", format!("is not valid base64: {e}")));
    }
    match file.map(str::trim).filter(|f| !f.is_empty()) {
        None => Ok(None),
        Some(file) => {
            let path = dir.join(file);
            std::fs::read(&path).map(Some).map_err(|e| ("", format!("reading {}: {e}", path.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kactus-kubeconfig-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_kubeconfig(dir: &Path, user: &str, cluster_extra: &str) -> PathBuf {
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: kactus\n\
             contexts:\n- name: kactus\n  context:\n    cluster: local\n    user: kactus\n    namespace: kube-system\n\
             clusters:\n- name: local\n  cluster:\n    server: https://127.0.0.1:6443/\n{cluster_extra}\
             users:\n- name: kactus\n  user:\n{user}"
        );
        let path = dir.join("kubeconfig.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn inline_token_and_ca_data() {
        let dir = temp_dir("token");
        let ca = base64::engine::general_purpose::STANDARD.encode("PEM CA");
        let path = write_kubeconfig(&dir, "    token: abc123\n", &format!("    certificate-authority-data: {ca}\n"));
        let access = from_kubeconfig(&path).unwrap();
        assert_eq!(access.server, "https://127.0.0.1:6443");
        assert_eq!(access.ca_pem.as_deref(), Some(&b"PEM CA"[..]));
        assert_eq!(access.namespace.as_deref(), Some("kube-system"));
        assert!(!access.insecure_skip_tls_verify);
        assert_eq!(access.auth.header_value().unwrap().as_deref(), Some("Bearer abc123"));
        assert!(!format!("{access:?}").contains("abc123"), "token leaked into Debug");
    }

    #[test]
    fn token_file_is_relative_to_the_kubeconfig_and_reread_per_request() {
        let dir = temp_dir("tokenfile");
        std::fs::write(dir.join("ca.crt"), "PEM CA FILE").unwrap();
        std::fs::write(dir.join("token"), "first\n").unwrap();
        let path =
            write_kubeconfig(&dir, "    tokenFile: token\n    token: ignored\n", "    certificate-authority: ca.crt\n");
        let access = from_kubeconfig(&path).unwrap();
        assert_eq!(access.ca_pem.as_deref(), Some(&b"PEM CA FILE"[..]));
        assert_eq!(access.auth.header_value().unwrap().as_deref(), Some("Bearer first"));
        std::fs::write(dir.join("token"), "rotated").unwrap();
        assert_eq!(access.auth.header_value().unwrap().as_deref(), Some("Bearer rotated"));
        assert!(access.credential_source.contains("token file"));
    }

    #[test]
    fn client_certificate_data_and_insecure_flag() {
        let dir = temp_dir("clientcert");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let user = format!("    client-certificate-data: {}\n    client-key-data: {}\n", b64("CERT"), b64("KEY"));
        let path =
            write_kubeconfig(&dir, &user, "    insecure-skip-tls-verify: true\n    tls-server-name: kubernetes\n");
        let access = from_kubeconfig(&path).unwrap();
        assert!(access.insecure_skip_tls_verify);
        assert_eq!(access.tls_server_name.as_deref(), Some("kubernetes"));
        let identity = access.client_cert.unwrap();
        assert_eq!(identity.cert_pem, b"CERT");
        assert_eq!(identity.key_pem, b"KEY");
        assert!(matches!(access.auth, Auth::None));
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let dir = temp_dir("errors");
        let path = dir.join("kc.yaml");
        std::fs::write(&path, "apiVersion: v1\nkind: Config\nclusters: []\n").unwrap();
        let err = from_kubeconfig(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("current-context is not set"), "{err}");

        let path = write_kubeconfig(&dir, "    client-key: missing.key\n    client-certificate-data: Q0VSVA==\n", "");
        let err = from_kubeconfig(&path).unwrap_err().to_string();
        assert!(err.contains("field client-key"), "{err}");
        assert!(err.contains("missing.key"), "{err}");

        let path = write_kubeconfig(&dir, "    token: t\n", "    certificate-authority-data: '%%%'\n");
        let err = from_kubeconfig(&path).unwrap_err().to_string();
        assert!(err.contains("certificate-authority-data: is not valid base64"), "{err}");

        let err = from_kubeconfig(&dir.join("nope.yaml")).unwrap_err().to_string();
        assert!(err.contains("nope.yaml"), "{err}");
    }

    #[test]
    fn in_cluster_reads_the_service_account_dir() {
        let dir = temp_dir("incluster");
        std::fs::write(dir.join("ca.crt"), "CA").unwrap();
        std::fs::write(dir.join("token"), "sa-token").unwrap();
        std::fs::write(dir.join("namespace"), "kube-system\n").unwrap();
        let access = in_cluster_from(Some("fd00::1".into()), Some("443".into()), &dir).unwrap();
        assert_eq!(access.server, "https://[fd00::1]:443");
        assert_eq!(access.namespace.as_deref(), Some("kube-system"));
        assert_eq!(access.auth.header_value().unwrap().as_deref(), Some("Bearer sa-token"));

        let err = in_cluster_from(None, None, &dir).unwrap_err().to_string();
        assert!(err.contains("KUBERNETES_SERVICE_HOST"), "{err}");
    }
}
